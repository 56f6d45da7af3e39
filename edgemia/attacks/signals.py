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
