"""Confidence-threshold attack (Salem et al., NDSS 2019).

A record is called a member when the model's top predicted probability is
high. The attacker needs no label. The score is the log of the top softmax
probability, which orders records exactly as the probability does but keeps
resolution where the probability rounds to 1.
"""

from __future__ import annotations

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.signals import log_softmax

NAME = "confidence"
DESCRIPTION = "confidence threshold: score = log max_k p(k), label-free"


def score(bundle: CaptureBundle) -> np.ndarray:
    return log_softmax(bundle.target.logits).max(axis=1)
