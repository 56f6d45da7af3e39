"""Threshold attacks: their scores and the log-softmax they rest on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax

from edgemia.attacks import run_attack
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
