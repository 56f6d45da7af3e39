"""Entropy and modified-entropy attacks (Song and Mittal, "Systematic Evaluation of Privacy
Risks of Machine Learning Models", USENIX Security 2021).

Both call a record a member when the model's prediction on it is certain:

    entropy:           H(p) = -sum_j p_j log p_j                      (label-free)
    modified entropy:  Mentr(p, y) = -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j)

The modified entropy also uses the label: it is low only when the model is
confident and right, and grows without bound as p_y falls to 0. The score is
the negated value, so that higher means "more likely a member". Both are
computed from log-probabilities in float64 and keep their value where p_y
rounds to 1, through log(1 - p_y) = -log(1 + e^phi) with phi = log p_y - log(1 - p_y).
"""

from __future__ import annotations

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.signals import log_other_probability, log_softmax, logit_scaled_confidence

ENTROPY = "entropy"
MODIFIED_ENTROPY = "modified-entropy"
DESCRIPTIONS = {
    ENTROPY: "entropy: score = -H(p), label-free",
    MODIFIED_ENTROPY: "modified entropy (Song and Mittal): score = -[-(1 - p_y) log p_y - "
    "sum_{j != y} p_j log(1 - p_j)]",
}


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy of the softmax of each row, in nats."""
    log_p = log_softmax(logits)
    return -np.sum(np.exp(log_p) * log_p, axis=1)


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song and Mittal's modified entropy of each row with its label.

    Every log(1 - p_j) comes from phi_j = log p_j - log(1 - p_j) of class j,
    so the value stays finite and exact where some p_j rounds to 1 (O(n C^2)).
    """
    logits = np.asarray(logits, dtype=np.float64)
    n, n_classes = logits.shape
    labels = np.asarray(labels)
    rows = np.arange(n)
    log_p = log_softmax(logits)
    log_complement = np.empty_like(log_p)  # log(1 - p_j)
    for j in range(n_classes):
        log_complement[:, j] = log_other_probability(logit_scaled_confidence(logits, np.full(n, j)))
    wrong = -np.exp(log_p) * log_complement
    wrong[rows, labels] = 0.0
    true_term = -np.exp(log_complement[rows, labels]) * log_p[rows, labels]
    return true_term + wrong.sum(axis=1)


def score_entropy(bundle: CaptureBundle) -> np.ndarray:
    return -entropy(bundle.target.logits)


def score_modified_entropy(bundle: CaptureBundle) -> np.ndarray:
    return -modified_entropy(bundle.target.logits, bundle.target.labels)
