"""LiRA: its signal, online and offline scores, against the published formulas and a closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from edgemia.attacks import score_attack
from edgemia.attacks.lira import offline_scores, online_scores
from edgemia.attacks.signals import logit_scaled_confidence
from edgemia.errors import InputError
from synthetic import bundle_from_phi, gaussian_population


def _pooled_std(values, mask):
    """Root of the pooled within-record variance, written out record by record."""
    squares, degrees = 0.0, 0
    for i in range(values.shape[1]):
        sample = values[mask[:, i], i]
        squares += float(((sample - sample.mean()) ** 2).sum())
        degrees += sample.size - 1
    return np.sqrt(squares / degrees)


def test_signal_matches_softmax_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(300, 7))
    labels = rng.integers(0, 7, 300)
    log_p = scipy_log_softmax(logits, axis=1)
    true = log_p[np.arange(300), labels]
    expected = true - np.log1p(-np.exp(true))
    np.testing.assert_allclose(logit_scaled_confidence(logits, labels), expected, rtol=1e-9, atol=1e-9)


def test_signal_exact_for_confident_records():
    # p_y = 1 - 2e^-50 rounds to 1 in float64; phi = 50 - log 2 stays exact.
    logits = np.array([[50.0, 0.0, 0.0]])
    assert logit_scaled_confidence(logits, np.array([0]))[0] == pytest.approx(50.0 - np.log(2.0), rel=1e-15)


def test_signal_over_stacked_models():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 50, 3))
    labels = rng.integers(0, 3, 50)
    stacked = logit_scaled_confidence(logits, labels)
    for k in range(4):
        np.testing.assert_array_equal(stacked[k], logit_scaled_confidence(logits[k], labels))


def test_online_matches_formula():
    target_phi, _, reference_phi, in_mask = gaussian_population(200, 8, seed=2)
    scores = online_scores(target_phi, reference_phi, in_mask)
    std_in, std_out = _pooled_std(reference_phi, in_mask), _pooled_std(reference_phi, ~in_mask)
    for i in range(200):
        mu_in = np.median(reference_phi[in_mask[:, i], i])
        mu_out = np.median(reference_phi[~in_mask[:, i], i])
        expected = norm.logpdf(target_phi[i], mu_in, std_in) - norm.logpdf(target_phi[i], mu_out, std_out)
        assert scores[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_online_per_record_variance_matches_formula():
    target_phi, _, reference_phi, in_mask = gaussian_population(100, 8, seed=3)
    scores = online_scores(target_phi, reference_phi, in_mask, variance="per-record")
    for i in range(100):
        inside, outside = reference_phi[in_mask[:, i], i], reference_phi[~in_mask[:, i], i]
        expected = norm.logpdf(target_phi[i], np.median(inside), inside.std()) - norm.logpdf(
            target_phi[i], np.median(outside), outside.std()
        )
        assert scores[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_offline_orders_like_one_sided_probability():
    target_phi, _, reference_phi, in_mask = gaussian_population(300, 8, seed=4)
    scores = offline_scores(target_phi, reference_phi, in_mask)
    std_out = _pooled_std(reference_phi, ~in_mask)
    mu_out = np.array([np.median(reference_phi[~in_mask[:, i], i]) for i in range(300)])
    # The one-sided offline statistic of Carlini et al. (2022): Pr[Z < phi] for Z ~ N(mu_out, sigma_out^2).
    np.testing.assert_allclose(norm.cdf(scores), norm.cdf(target_phi, mu_out, std_out), rtol=1e-9, atol=1e-12)


def test_calibration_beats_global_threshold():
    # Records differ in difficulty (spread 3) far more than membership shifts them (1).
    # Per-record calibration recovers the Neyman-Pearson AUC Phi(shift / sqrt(2)).
    target_phi, member, reference_phi, in_mask = gaussian_population(4000, 64, seed=5)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    ideal = norm.cdf(1.0 / np.sqrt(2.0))
    uncalibrated = norm.cdf(1.0 / np.sqrt(2.0 * (1.0 + 9.0)))
    assert roc_auc_score(member, score_attack("loss", bundle).scores) == pytest.approx(uncalibrated, abs=0.03)
    assert roc_auc_score(member, score_attack("lira-online", bundle).scores) == pytest.approx(ideal, abs=0.03)
    assert roc_auc_score(member, score_attack("lira-offline", bundle).scores) == pytest.approx(ideal, abs=0.03)


def test_parameters_reported():
    target_phi, member, reference_phi, in_mask = gaussian_population(50, 4, seed=6)
    result = score_attack("lira-online", bundle_from_phi(target_phi, member, reference_phi, in_mask))
    assert result.parameters == {"variance": "pooled", "reference_models": 4}


def test_record_never_left_out_rejected():
    target_phi, member, reference_phi, in_mask = gaussian_population(40, 4, seed=7)
    in_mask[:, 13] = True
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    for attack in ("lira-online", "lira-offline"):
        with pytest.raises(InputError) as error:
            score_attack(attack, bundle)
        message = str(error.value)
        assert f"attack '{attack}'" in message
        assert "left out" in message
        assert "record_id 13 at row 13" in message
        assert "OUT for 0 of 4" in message


def test_online_needs_in_models():
    target_phi, member, reference_phi, in_mask = gaussian_population(40, 4, seed=8)
    in_mask[:, 5] = False
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    with pytest.raises(InputError, match="trained on each record.*record_id 5 at row 5"):
        score_attack("lira-online", bundle)
    score_attack("lira-offline", bundle)  # offline needs OUT models only


def test_signals_without_spread_rejected():
    member = np.array([True, False] * 10)
    in_mask = np.tile(np.array([[True], [False], [True], [False]]), (1, 20))
    reference_phi = np.ones((4, 20))
    bundle = bundle_from_phi(np.zeros(20), member, reference_phi, in_mask)
    with pytest.raises(InputError, match="do not vary"):
        score_attack("lira-offline", bundle)


def test_no_references_rejected():
    bundle = bundle_from_phi(np.zeros(4), [True, False, True, False], np.zeros((0, 4)), np.zeros((0, 4), bool))
    with pytest.raises(InputError, match="needs reference models.*--references"):
        score_attack("lira-online", bundle)
