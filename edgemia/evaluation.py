"""Attacks and their statistics on one capture bundle, and the paired comparison with a baseline.

An attack row (one per attack, in report.json under variants[].attacks[])
has the ROC metrics `name`, `auc`, `tpr_at_fpr`, `fpr_achieved`,
`balanced_accuracy` and `advantage` (see edgemia.stats.roc), and adds:

- `parameters`: the attack's settings, including calibrated ones (RMIA's a).
- `ci`: bootstrap percentile intervals, {"confidence", "auc", "tpr_at_fpr",
  "balanced_accuracy", "advantage"}, each [low, high] and None where the rate
  is not measurable. Absent when the bootstrap is switched off.
- `versus_float` (compressed variants only): the same attack on the float
  variant and backend, on the same records. `auc_difference`,
  `auc_difference_standard_error` and `auc_difference_p_value` come from
  DeLong's test. `tpr_at_fpr_difference` is the difference of the two
  TPRs, and `auc_difference_ci` and `tpr_at_fpr_difference_ci` are paired
  bootstrap intervals (absent without the bootstrap). Every difference is
  variant minus float, so a positive value means the variant leaks more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgemia.attacks import ATTACKS, REFERENCE_ATTACKS, check_attack_names, score_attack
from edgemia.attacks.bundle import CaptureBundle, load_bundle
from edgemia.errors import InputError
from edgemia.stats.bootstrap import DEFAULT_CONFIDENCE, MetricDraws, metric_draws, stratified_resamples
from edgemia.stats.compare import delong_test
from edgemia.stats.roc import attack_metrics
from edgemia.util import atomic_save_npz, atomic_write_json

logger = logging.getLogger(__name__)


@dataclass
class BundleEvaluation:
    """Every attack's scores, report row and bootstrap draws on one bundle."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    rows: dict[str, dict] = field(default_factory=dict)
    draws: dict[str, MetricDraws] = field(default_factory=dict)


def default_attacks(n_references: int) -> list[str]:
    """Return every attack name, or only those that need no reference models when there are none."""
    return [name for name in ATTACKS if n_references > 0 or name not in REFERENCE_ATTACKS]


def evaluate_bundle(
    bundle: CaptureBundle,
    attacks: list[str],
    resamples: np.ndarray | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    advance: Callable[[], None] = lambda: None,
) -> BundleEvaluation:
    """Run `attacks` on `bundle` and compute their metrics, with intervals when `resamples` is given."""
    check_attack_names(attacks)
    evaluation = BundleEvaluation()
    for name in attacks:
        result = score_attack(name, bundle)
        metrics = attack_metrics(result.scores, bundle.member)
        row = {"name": name, **metrics.to_dict(), "parameters": result.parameters}
        if resamples is not None:
            draws = metric_draws(result.scores, bundle.member, resamples)
            row["ci"] = {"confidence": confidence, **draws.intervals(confidence)}
            evaluation.draws[name] = draws
        evaluation.scores[name] = result.scores
        evaluation.rows[name] = row
        logger.info("%s: attack %s, AUC %.4f", bundle.location, name, metrics.auc)
        advance()
    return evaluation


def compare_with_baseline(
    evaluation: BundleEvaluation,
    baseline: BundleEvaluation,
    member: np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
) -> None:
    """Add `versus_float` to each attack row of `evaluation` that the baseline also ran."""
    for name, row in evaluation.rows.items():
        if name not in baseline.rows:
            continue
        other = baseline.rows[name]
        comparison = delong_test(evaluation.scores[name], baseline.scores[name], member).to_dict()
        comparison["tpr_at_fpr_difference"] = {
            level: None if value is None or other["tpr_at_fpr"][level] is None else value - other["tpr_at_fpr"][level]
            for level, value in row["tpr_at_fpr"].items()
        }
        if name in evaluation.draws and name in baseline.draws:
            intervals = evaluation.draws[name].minus(baseline.draws[name]).intervals(confidence)
            comparison["auc_difference_ci"] = intervals["auc"]
            comparison["tpr_at_fpr_difference_ci"] = intervals["tpr_at_fpr"]
        row["versus_float"] = comparison


def write_scores(directory: Path, bundle: CaptureBundle, evaluation: BundleEvaluation) -> Path:
    """Write each attack's per-record scores to directory/scores.npz, keyed by attack name."""
    path = Path(directory) / "scores.npz"
    atomic_save_npz(path, record_id=bundle.target.record_id, member=bundle.member, **evaluation.scores)
    return path


def attack_bundle(
    directory: Path,
    attacks: list[str] | None,
    n_resamples: int,
    seed: int,
    out: Path | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Attack the capture bundle in `directory`; write scores.npz and attack.json into `out`.

    `attacks` None runs every attack the bundle supports, and `n_resamples`
    0 skips the bootstrap. Returns the content of attack.json.
    """
    if attacks is not None:
        if not attacks:
            raise InputError("the attack list is empty")
        check_attack_names(attacks)
    bundle = load_bundle(directory)
    attacks = attacks if attacks is not None else default_attacks(bundle.n_references)
    resamples = stratified_resamples(bundle.member, n_resamples, seed) if n_resamples else None
    evaluation = evaluate_bundle(bundle, attacks, resamples, confidence)

    out = Path(out) if out is not None else Path(directory)
    scores_path = write_scores(out, bundle, evaluation)
    n_nonmembers = int((~bundle.member).sum())
    result = {
        "bundle": str(directory),
        "backend": bundle.target.meta.get("backend"),
        "n_members": int(bundle.member.sum()),
        "n_nonmembers": n_nonmembers,
        "n_references": bundle.n_references,
        "fpr_resolution": 1.0 / n_nonmembers,
        "bootstrap": {"resamples": n_resamples, "confidence": confidence, "seed": seed} if n_resamples else None,
        "scores": str(scores_path),
        "attacks": list(evaluation.rows.values()),
    }
    atomic_write_json(out / "attack.json", result)
    return result
