"""Threshold attacks: their scores and the log-softmax they rest on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from edgemia.attacks import attack_options, run_attack, score_attack
from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.signals import log_softmax
from edgemia.errors import InputError
from edgemia.runtime.capture import Capture


def _capture(logits, labels):
    logits = np.asarray(logits, dtype=np.float32)
    n = logits.shape[0]
    return Capture(logits=logits, labels=np.asarray(labels), record_id=np.arange(n), raw=logits)


def test_log_softmax_matches_scipy():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=5.0, size=(200, 10))
    np.testing.assert_allclose(log_softmax(logits), scipy_log_softmax(logits, axis=1), rtol=1e-12, atol=1e-12)


def test_log_softmax_keeps_tiny_losses():
    # Margins of 40 and 60: the losses are about e^-40 and e^-60, far below float64 epsilon of 1.
    logits = np.array([[40.0, 0.0, 0.0], [60.0, 0.0, 0.0]])
    top = log_softmax(logits)[:, 0]
    assert top[0] == pytest.approx(-2 * np.exp(-40.0), rel=1e-12)
    assert top[1] == pytest.approx(-2 * np.exp(-60.0), rel=1e-12)
    assert top[1] > top[0]


def test_loss_score_is_log_probability_of_label():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    bundle = CaptureBundle(target=_capture(logits, [0, 0, 1]), member=[True, False, True])
    expected = scipy_log_softmax(logits, axis=1)[[0, 1, 2], [0, 0, 1]]
    np.testing.assert_allclose(run_attack("loss", bundle), expected, rtol=1e-6)


def test_confidence_score_ignores_label():
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    with_labels_a = CaptureBundle(target=_capture(logits, [0, 0]), member=[True, False])
    with_labels_b = CaptureBundle(target=_capture(logits, [1, 1]), member=[True, False])
    np.testing.assert_array_equal(run_attack("confidence", with_labels_a), run_attack("confidence", with_labels_b))


def test_unknown_attack_lists_valid_names():
    bundle = CaptureBundle(target=_capture([[1.0, 0.0], [0.0, 1.0]], [0, 1]), member=[True, False])
    with pytest.raises(InputError, match="valid attacks: loss, confidence"):
        run_attack("label-only", bundle)


def test_bundle_needs_both_classes():
    with pytest.raises(InputError, match="at least one member and one non-member"):
        CaptureBundle(target=_capture([[1.0, 0.0], [0.0, 1.0]], [0, 1]), member=[True, True])


def _softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_entropy_matches_formula():
    rng = np.random.default_rng(20)
    logits = rng.normal(scale=3.0, size=(100, 6))
    bundle = CaptureBundle(target=_capture(logits, rng.integers(0, 6, 100)), member=np.arange(100) < 50)
    p = _softmax(bundle.target.logits)
    np.testing.assert_allclose(run_attack("entropy", bundle), (p * np.log(p)).sum(axis=1), rtol=1e-9)


def test_modified_entropy_matches_formula():
    rng = np.random.default_rng(21)
    logits = rng.normal(scale=3.0, size=(100, 6))
    labels = rng.integers(0, 6, 100)
    bundle = CaptureBundle(target=_capture(logits, labels), member=np.arange(100) < 50)
    p = _softmax(bundle.target.logits)
    expected = []
    for row, y in zip(p, labels):
        value = -(1 - row[y]) * np.log(row[y])
        value -= sum(row[j] * np.log(1 - row[j]) for j in range(6) if j != y)
        expected.append(-value)
    np.testing.assert_allclose(run_attack("modified-entropy", bundle), expected, rtol=1e-9)


def test_modified_entropy_keeps_extreme_records():
    # p_y rounds to 1 in the first record and a wrong class's p rounds to 1 in the second.
    logits = np.array([[60.0, 0.0, 0.0], [0.0, 60.0, 0.0], [55.0, 0.0, 0.0]])
    bundle = CaptureBundle(target=_capture(logits, [0, 0, 0]), member=[True, False, True])
    scores = run_attack("modified-entropy", bundle)
    assert np.isfinite(scores).all()
    assert scores[0] > scores[2] > scores[1]  # more confident and right scores higher
    # -(1 - p_0) log p_0 is about 60; the wrong class 1 adds -p_1 log(1 - p_1) = -log(2 e^-60) = 60 - log 2.
    assert scores[1] == pytest.approx(-(60.0 + 60.0 - np.log(2.0)), rel=1e-12)


def test_label_gap_scores_correctness():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 3.0]])
    bundle = CaptureBundle(target=_capture(logits, [0, 0, 1]), member=[True, False, True])
    np.testing.assert_array_equal(run_attack("label-gap", bundle), [1.0, 0.0, 1.0])


def test_label_augment_counts_correct_copies():
    labels = [0, 0, 1, 1]
    target = _capture([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], labels)
    copies = [
        _capture([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]], labels),
        _capture([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]], labels),
    ]
    bundle = CaptureBundle(target=target, member=[True, False, True, False], perturbed=copies)
    result = score_attack("label-augment", bundle)
    np.testing.assert_allclose(result.scores, [3 / 3, 1 / 3, 2 / 3, 1 / 3])
    assert result.parameters == {"queries": 3}


def test_label_augment_needs_perturbed_captures():
    bundle = CaptureBundle(target=_capture([[1.0, 0.0], [0.0, 1.0]], [0, 1]), member=[True, False])
    with pytest.raises(InputError, match="needs captures of perturbed copies"):
        run_attack("label-augment", bundle)


def test_shadow_separates_members():
    from synthetic import bundle_from_phi, gaussian_population

    # No spread between records: the shadow classifiers learn the shift of IN models.
    target_phi, member, reference_phi, in_mask = gaussian_population(2000, 8, seed=22, shift=2.0, spread=0.0)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    result = score_attack("shadow", bundle)
    assert roc_auc_score(member, result.scores) == pytest.approx(norm.cdf(2.0 / np.sqrt(2.0)), abs=0.03)
    assert result.parameters["training_rows"] == {"1": 16000}
    assert ((result.scores >= 0) & (result.scores <= 1)).all()


def test_shadow_caps_training_rows():
    from synthetic import bundle_from_phi, gaussian_population

    target_phi, member, reference_phi, in_mask = gaussian_population(2000, 8, seed=23)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    result = score_attack("shadow", bundle, attack_options(["shadow.max-rows=1000"]))
    assert result.parameters["training_rows"] == {"1": 1000}


def test_perturbed_capture_must_match_records():
    target = _capture([[1.0, 0.0], [0.0, 1.0]], [0, 1])
    other = Capture(logits=target.logits, labels=target.labels, record_id=np.array([5, 6]), raw=target.logits)
    with pytest.raises(InputError, match="perturbed-0.npz: covers other records"):
        CaptureBundle(target=target, member=[True, False], perturbed=[other])
