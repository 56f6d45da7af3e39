"""Per-record signals computed from logits, shared by the attacks."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities in float64, exact to the last bit for confident predictions.

    The naive z - max - log(sum(exp(z - max))) rounds log p to exactly 0 for
    every record whose top logit leads by more than about 37, because
    1 + 1e-17 == 1 in float64. Overfit models produce such margins on most
    of their training records, and the loss and confidence attacks would
    then see ties where the model still separates members from non-members.
    Writing the normalizer as log1p of the non-top terms keeps those
    differences (down to about 1e-308).
    """
    z = np.asarray(logits, dtype=np.float64)
    top = np.argmax(z, axis=1)
    rows = np.arange(z.shape[0])
    shifted = z - z[rows, top][:, np.newaxis]
    others = np.exp(shifted)
    others[rows, top] = 0.0
    return shifted - np.log1p(others.sum(axis=1, keepdims=True))


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's signal phi = log p_y - log(1 - p_y), in float64, over the last axis of `logits`.

    `logits` is [..., n, C] and `labels` [n]. Written as z_y - logsumexp of
    the other logits, phi is exact where p_y rounds to 1 or to 0, so no
    epsilon inside the logarithms is needed.
    """
    z = np.asarray(logits, dtype=np.float64)
    index = np.broadcast_to(np.asarray(labels)[:, np.newaxis], z.shape[:-1] + (1,))
    true_logit = np.take_along_axis(z, index, axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, index, -np.inf, axis=-1)
    top = others.max(axis=-1)
    log_sum_others = top + np.log(np.exp(others - top[..., np.newaxis]).sum(axis=-1))
    return true_logit - log_sum_others


def log_true_probability(phi: np.ndarray) -> np.ndarray:
    """log p_y from phi: p_y is the logistic function of phi, so log p_y = -log(1 + e^-phi)."""
    return -np.logaddexp(0.0, -phi)


def log_other_probability(phi: np.ndarray) -> np.ndarray:
    """log(1 - p_y) from phi, exact where p_y rounds to 1."""
    return -np.logaddexp(0.0, phi)
