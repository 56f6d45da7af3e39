"""Loss-threshold attack (Yeom et al., CSF 2018).

A record is called a member when the model's cross-entropy loss on it is low.
The membership score is the negated loss, log p_y, so that higher means
"more likely a member".
"""

from __future__ import annotations

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.signals import log_softmax

NAME = "loss"
DESCRIPTION = "loss threshold: score = log p(true label)"


def score(bundle: CaptureBundle) -> np.ndarray:
    target = bundle.target
    log_p = log_softmax(target.logits)
    return log_p[np.arange(len(target)), target.labels]
