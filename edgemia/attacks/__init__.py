"""Attack stage: per-record membership scores, higher meaning "more likely a member"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgemia.attacks import confidence, lira, loss, rmia
from edgemia.attacks.bundle import CaptureBundle
from edgemia.errors import InputError


@dataclass
class AttackResult:
    """One attack's scores on a bundle and the settings it used or calibrated."""

    scores: np.ndarray  # float64 [n], one per record of the target
    parameters: dict = field(default_factory=dict)  # for the report, e.g. {"gamma": 1.0, "a": 0.3}


def _without_parameters(score: Callable[[CaptureBundle], np.ndarray]):
    return lambda bundle: AttackResult(score(bundle))


def _with_parameters(score: Callable[[CaptureBundle], tuple[np.ndarray, dict]]):
    return lambda bundle: AttackResult(*score(bundle))


ATTACKS: dict[str, Callable[[CaptureBundle], AttackResult]] = {
    loss.NAME: _without_parameters(loss.score),
    confidence.NAME: _without_parameters(confidence.score),
    lira.ONLINE: _with_parameters(lira.score_online),
    lira.OFFLINE: _with_parameters(lira.score_offline),
    rmia.ONLINE: _with_parameters(rmia.score_online),
    rmia.OFFLINE: _with_parameters(rmia.score_offline),
}
DESCRIPTIONS = {
    loss.NAME: loss.DESCRIPTION,
    confidence.NAME: confidence.DESCRIPTION,
    **lira.DESCRIPTIONS,
    **rmia.DESCRIPTIONS,
}
# Attacks that need reference-<k>.npz captures in the bundle.
REFERENCE_ATTACKS = (lira.ONLINE, lira.OFFLINE, rmia.ONLINE, rmia.OFFLINE)


def check_attack_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise InputError(
            f"unknown attack {', '.join(repr(n) for n in unknown)}; valid attacks: {', '.join(ATTACKS)}"
        )


def score_attack(name: str, bundle: CaptureBundle) -> AttackResult:
    """Run attack `name` on `bundle`: one membership score per record, and its settings."""
    check_attack_names([name])
    return ATTACKS[name](bundle)


def run_attack(name: str, bundle: CaptureBundle) -> np.ndarray:
    """Return one membership score per record of `bundle.target`."""
    return score_attack(name, bundle).scores
