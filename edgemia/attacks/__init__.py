"""Attack stage: per-record membership scores, higher meaning "more likely a member"."""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgemia.attacks import confidence, loss
from edgemia.attacks.bundle import CaptureBundle
from edgemia.errors import InputError

ATTACKS: dict[str, Callable[[CaptureBundle], np.ndarray]] = {
    loss.NAME: loss.score,
    confidence.NAME: confidence.score,
}
DESCRIPTIONS = {loss.NAME: loss.DESCRIPTION, confidence.NAME: confidence.DESCRIPTION}


def check_attack_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise InputError(
            f"unknown attack {', '.join(repr(n) for n in unknown)}; valid attacks: {', '.join(ATTACKS)}"
        )


def run_attack(name: str, bundle: CaptureBundle) -> np.ndarray:
    """Return one membership score per record of `bundle.target`."""
    check_attack_names([name])
    return ATTACKS[name](bundle)
