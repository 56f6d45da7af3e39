"""Attack stage: per-record membership scores, higher meaning "more likely a member".

Every attack has one signature: a capture bundle and the options of its
family in, an AttackResult (one score per record of the target, and the
settings used) out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgemia.attacks import confidence, entropy, label_only, lira, loss, rmia, shadow
from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.options import AttackOption, parse_attack_options
from edgemia.errors import InputError


@dataclass
class AttackResult:
    """One attack's scores on a bundle and the settings it used or calibrated."""

    scores: np.ndarray  # float64 [n], one per record of the target
    parameters: dict = field(default_factory=dict)  # for the report, e.g. {"gamma": 1.0, "a": 0.3}


@dataclass(frozen=True)
class Attack:
    """An attack's name, description, what its bundle must contain, and its scoring function."""

    name: str
    description: str
    run: Callable[[CaptureBundle, dict], AttackResult]  # bundle, options of its family
    family: str | None = None  # the prefix of its options, such as "lira"
    needs: str | None = None  # "references", "perturbed" or None


def _plain(score: Callable[[CaptureBundle], np.ndarray]):
    return lambda bundle, options: AttackResult(np.asarray(score(bundle), dtype=np.float64))


def _configured(score: Callable[..., tuple[np.ndarray, dict]]):
    """Call `score` with the family's options as keyword arguments (max-rows becomes max_rows)."""

    def run(bundle: CaptureBundle, options: dict) -> AttackResult:
        return AttackResult(*score(bundle, **{key.replace("-", "_"): value for key, value in options.items()}))

    return run


_ATTACK_LIST = [
    Attack(loss.NAME, loss.DESCRIPTION, _plain(loss.score)),
    Attack(confidence.NAME, confidence.DESCRIPTION, _plain(confidence.score)),
    Attack(entropy.ENTROPY, entropy.DESCRIPTIONS[entropy.ENTROPY], _plain(entropy.score_entropy)),
    Attack(
        entropy.MODIFIED_ENTROPY, entropy.DESCRIPTIONS[entropy.MODIFIED_ENTROPY],
        _plain(entropy.score_modified_entropy),
    ),
    Attack(label_only.GAP, label_only.DESCRIPTIONS[label_only.GAP], _plain(label_only.score_gap)),
    Attack(
        label_only.AUGMENT, label_only.DESCRIPTIONS[label_only.AUGMENT],
        lambda bundle, options: AttackResult(*label_only.score_augment(bundle)), needs="perturbed",
    ),
    Attack(lira.ONLINE, lira.DESCRIPTIONS[lira.ONLINE], _configured(lira.score_online), lira.FAMILY, "references"),
    Attack(lira.OFFLINE, lira.DESCRIPTIONS[lira.OFFLINE], _configured(lira.score_offline), lira.FAMILY, "references"),
    Attack(rmia.ONLINE, rmia.DESCRIPTIONS[rmia.ONLINE], _configured(rmia.score_online), rmia.FAMILY, "references"),
    Attack(rmia.OFFLINE, rmia.DESCRIPTIONS[rmia.OFFLINE], _configured(rmia.score_offline), rmia.FAMILY, "references"),
    Attack(
        shadow.NAME, shadow.DESCRIPTION, _configured(shadow.score),
        shadow.FAMILY, "references",
    ),
]
ATTACKS: dict[str, Attack] = {attack.name: attack for attack in _ATTACK_LIST}
DESCRIPTIONS = {name: attack.description for name, attack in ATTACKS.items()}
# Attacks that need reference-<k>.npz captures in the bundle.
REFERENCE_ATTACKS = tuple(name for name, attack in ATTACKS.items() if attack.needs == "references")
# Attacks that need perturbed-<j>.npz captures in the bundle.
PERTURBED_ATTACKS = tuple(name for name, attack in ATTACKS.items() if attack.needs == "perturbed")
OPTION_FAMILIES: dict[str, dict[str, AttackOption]] = {
    lira.FAMILY: lira.OPTIONS,
    rmia.FAMILY: rmia.OPTIONS,
    shadow.FAMILY: shadow.OPTIONS,
}


def check_attack_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise InputError(
            f"unknown attack {', '.join(repr(n) for n in unknown)}; valid attacks: {', '.join(ATTACKS)}"
        )


def attack_options(items: list[str] | None = None) -> dict[str, dict[str, object]]:
    """Parse `--attack-option` items (KEY=VALUE) into every family's options, defaults filled in."""
    return parse_attack_options(list(items or []), OPTION_FAMILIES)


def score_attack(name: str, bundle: CaptureBundle, options: dict[str, dict] | None = None) -> AttackResult:
    """Run attack `name` on `bundle`: one membership score per record, and its settings.

    `options` is the result of attack_options(); None uses every default.
    """
    check_attack_names([name])
    attack = ATTACKS[name]
    options = options if options is not None else attack_options()
    family_options = options.get(attack.family, {}) if attack.family else {}
    return attack.run(bundle, family_options)


def run_attack(name: str, bundle: CaptureBundle) -> np.ndarray:
    """Return one membership score per record of `bundle.target`."""
    return score_attack(name, bundle).scores
