"""Label-only attacks, for devices that return only the top-1 label (Choquette-Choo, Tramer,
Carlini and Papernot, "Label-Only Membership Inference Attacks", ICML 2021).

- `label-gap`: the gap attack. A record is called a member when the model
  labels it correctly, so the score is 1 or 0. On a balanced set its
  advantage is the difference between the accuracy on members and on
  non-members.
- `label-augment`: the data-augmentation attack. The model also labels
  perturbed copies of each record (captured as perturbed-<j>.npz in the
  bundle), and the score is the fraction of the record and its copies that
  it labels correctly: training records tend to stay correct under small
  shifts or noise. The attack sweeps a threshold over this fraction, as the
  paper's threshold attack does, and needs no reference models.
"""

from __future__ import annotations

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.errors import InputError

GAP = "label-gap"
AUGMENT = "label-augment"
DESCRIPTIONS = {
    GAP: "label-only gap: score = 1 if the top-1 label is correct, else 0",
    AUGMENT: "label-only augmentation: fraction of the record and its perturbed copies whose "
    "top-1 label is correct",
}


def _correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.argmax(logits, axis=1) == labels


def score_gap(bundle: CaptureBundle) -> np.ndarray:
    return _correct(bundle.target.logits, bundle.target.labels).astype(np.float64)


def score_augment(bundle: CaptureBundle) -> tuple[np.ndarray, dict]:
    """Return the fraction of correct labels over the record and its perturbed copies."""
    if bundle.n_perturbed == 0:
        raise InputError(
            f"{bundle.location}: attack '{AUGMENT}' needs captures of perturbed copies of the records "
            "(perturbed-<j>.npz), but the bundle has none; run the audit, which writes them, or capture "
            "the target on perturbed records files yourself"
        )
    labels = bundle.target.labels
    correct = _correct(bundle.target.logits, labels).astype(np.float64)
    for capture in bundle.perturbed:
        correct += _correct(capture.logits, labels)
    queries = bundle.n_perturbed + 1
    return correct / queries, {"queries": queries}
