"""Attacks and their statistics on capture bundles, and the paired comparison with float.

An attack row (one per attack, in report.json under variants[].attacks[])
has the ROC metrics `name`, `auc`, `tpr_at_fpr`, `fpr_achieved`,
`balanced_accuracy`, `advantage`, `ppv`, `ppv_at_fpr` and
`epsilon_lower_bound` (each defined in edgemia.stats.roc), and adds:

- `parameters`: the attack's settings, including calibrated ones (RMIA's a).
- `ci`: bootstrap percentile intervals, {"confidence", "auc", "tpr_at_fpr",
  "balanced_accuracy", "advantage", "ppv", "ppv_at_fpr",
  "epsilon_lower_bound"}, each [low, high] and None where the rate is not
  measurable. Absent when the bootstrap is switched off.
- `slices` and `disparate_vulnerability`: the metrics per class, per
  prediction outcome and per subgroup, and the largest AUC gap within each
  attribute (see edgemia.stats.slices).
- `versus_float` (compressed variants only): the same attack on the float
  variant and backend, on the same records. `auc_difference`,
  `auc_difference_standard_error` and `auc_difference_p_value` come from
  DeLong's test. `tpr_at_fpr_difference` is the difference of the two
  TPRs. With the bootstrap, `auc_difference_ci` and
  `tpr_at_fpr_difference_ci` are paired bootstrap intervals, and
  `auc_difference_bootstrap_p_value` and `tpr_at_fpr_difference_p_value`
  paired bootstrap p-values. `newly_exposed` lists the members that the
  variant newly exposes (see newly_exposed). Every difference is variant
  minus float, so a positive value means the variant leaks more.

The report's top-level `records` contains each record's score under every
variant, backend and attack (see records_section).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from edgemia.attacks import (
    ATTACKS,
    PERTURBED_ATTACKS,
    REFERENCE_ATTACKS,
    attack_options,
    check_attack_names,
    score_attack,
)
from edgemia.attacks.bundle import CaptureBundle
from edgemia.stats.bootstrap import DEFAULT_CONFIDENCE, MetricDraws, metric_draws
from edgemia.stats.compare import delong_test
from edgemia.stats.roc import AttackMetrics, attack_metrics
from edgemia.stats.slices import slice_report
from edgemia.util import atomic_save_npz, sha256_file

logger = logging.getLogger(__name__)

BASELINE = "float"
# The FPR level whose float threshold decides which records a variant newly exposes.
EXPOSURE_FPR = 0.01


@dataclass
class BundleEvaluation:
    """Every attack's scores, metrics, report row and bootstrap draws on one bundle."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, AttackMetrics] = field(default_factory=dict)
    rows: dict[str, dict] = field(default_factory=dict)
    draws: dict[str, MetricDraws] = field(default_factory=dict)


def default_attacks(n_references: int, n_perturbed: int = 1) -> list[str]:
    """Return every attack that a bundle with these reference and perturbed captures supports."""
    names = []
    for name in ATTACKS:
        if name in REFERENCE_ATTACKS and n_references == 0:
            continue
        if name in PERTURBED_ATTACKS and n_perturbed == 0:
            continue
        names.append(name)
    return names


def _correct(bundle: CaptureBundle) -> np.ndarray:
    return np.argmax(bundle.target.logits, axis=1) == bundle.target.labels


def evaluate_bundle(
    bundle: CaptureBundle,
    attacks: list[str],
    resamples: np.ndarray | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    advance: Callable[[], None] = lambda: None,
    options: dict[str, dict] | None = None,
) -> BundleEvaluation:
    """Run `attacks` on `bundle` and compute their metrics and slices, with intervals when `resamples` is given."""
    check_attack_names(attacks)
    options = options if options is not None else attack_options()
    correct = _correct(bundle)
    evaluation = BundleEvaluation()
    for name in attacks:
        result = score_attack(name, bundle, options)
        metrics = attack_metrics(result.scores, bundle.member)
        row = {"name": name, **metrics.to_dict(), "parameters": result.parameters}
        if resamples is not None:
            draws = metric_draws(result.scores, bundle.member, resamples)
            row["ci"] = {"confidence": confidence, **draws.intervals(confidence)}
            evaluation.draws[name] = draws
        row["slices"], row["disparate_vulnerability"] = slice_report(
            result.scores, bundle.member, bundle.target.labels, correct, bundle.groups
        )
        evaluation.scores[name] = result.scores
        evaluation.metrics[name] = metrics
        evaluation.rows[name] = row
        logger.info("%s: attack %s, AUC %.4f", bundle.location, name, metrics.auc)
        advance()
    return evaluation


def newly_exposed(
    scores: np.ndarray, baseline_scores: np.ndarray, baseline: AttackMetrics, member: np.ndarray, record_id: np.ndarray
) -> dict | None:
    """Records above the float model's EXPOSURE_FPR threshold under the variant and below it under float.

    The threshold is the float scores' threshold of the TPR at EXPOSURE_FPR
    (a record is flagged when its score is at or above it). Returns None when
    that rate is not measurable. `record_ids` lists the newly exposed
    members; non-members that cross the threshold are false positives and
    only counted.
    """
    threshold = baseline.threshold_at_fpr.get(EXPOSURE_FPR)
    if EXPOSURE_FPR not in baseline.threshold_at_fpr or baseline.tpr_at_fpr.get(EXPOSURE_FPR) is None:
        return None
    flagged_now = scores >= threshold
    flagged_before = baseline_scores >= threshold
    newly = flagged_now & ~flagged_before
    return {
        "fpr_level": EXPOSURE_FPR,
        # None when float flags no record at this level (its threshold is above every score).
        "float_threshold": None if not np.isfinite(threshold) else float(threshold),
        "record_ids": [int(i) for i in record_id[newly & member]],
        "n_members": int((newly & member).sum()),
        "n_nonmembers": int((newly & ~member).sum()),
        "n_members_no_longer_exposed": int((flagged_before & ~flagged_now & member).sum()),
    }


def compare_with_baseline(
    evaluation: BundleEvaluation,
    baseline: BundleEvaluation,
    bundle: CaptureBundle,
    confidence: float = DEFAULT_CONFIDENCE,
) -> None:
    """Add `versus_float` to each attack row of `evaluation` that the baseline also ran."""
    member = bundle.member
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
            differences = evaluation.draws[name].minus(baseline.draws[name])
            intervals = differences.intervals(confidence)
            p_values = differences.p_values()
            comparison["auc_difference_ci"] = intervals["auc"]
            comparison["tpr_at_fpr_difference_ci"] = intervals["tpr_at_fpr"]
            comparison["auc_difference_bootstrap_p_value"] = p_values["auc"]
            comparison["tpr_at_fpr_difference_p_value"] = p_values["tpr_at_fpr"]
        comparison["newly_exposed"] = newly_exposed(
            evaluation.scores[name], baseline.scores[name], baseline.metrics[name], member, bundle.target.record_id
        )
        row["versus_float"] = comparison


def evaluate_bundles(
    bundles: dict[tuple[str, ...], CaptureBundle],
    attacks: list[str],
    resamples: np.ndarray | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    advance: Callable[[], None] = lambda: None,
    options: dict[str, dict] | None = None,
) -> dict[tuple[str, ...], BundleEvaluation]:
    """Attack every bundle, then compare each compressed variant with float.

    A bundle's key starts with its variant name; the rest (the backend, and
    in the audit the model format) says where it ran. A compressed variant is
    compared with the float bundle whose key differs only in the variant.
    All bundles must cover the same records with the same members, so that
    the resamples and the comparisons are paired.
    """
    evaluations = {
        key: evaluate_bundle(bundle, attacks, resamples, confidence, advance, options)
        for key, bundle in bundles.items()
    }
    compare_bundles(bundles, evaluations, confidence)
    return evaluations


def compare_bundles(
    bundles: Mapping[tuple[str, ...], CaptureBundle],
    evaluations: dict[tuple[str, ...], BundleEvaluation],
    confidence: float = DEFAULT_CONFIDENCE,
) -> None:
    """Compare each compressed variant's evaluation with float's on the same backend and format.

    Only the targets' captures and the members are read, so the bundles'
    reference captures may already be dropped.
    """
    for key, evaluation in evaluations.items():
        variant, where = key[0], key[1:]
        baseline = (BASELINE, *where)
        if variant != BASELINE and baseline in evaluations:
            compare_with_baseline(evaluation, evaluations[baseline], bundles[key], confidence)


def records_section(
    bundles: dict[tuple[str, ...], CaptureBundle], evaluations: dict[tuple[str, ...], BundleEvaluation]
) -> dict:
    """Each record's id, membership, label, subgroups and score under every variant, bundle and attack.

    `scores[variant][where][attack]` lists one score per record, in the
    order of `record_id`. `where` is the rest of the bundle's key joined
    with '-': the backend, or backend and format as in litert-tflite.
    """
    first = next(iter(bundles.values()))
    scores: dict[str, dict[str, dict[str, list[float]]]] = {}
    for key, evaluation in evaluations.items():
        scores.setdefault(key[0], {})["-".join(part for part in key[1:] if part)] = {
            name: values.tolist() for name, values in evaluation.scores.items()
        }
    return {
        "record_id": first.target.record_id.tolist(),
        "member": first.member.tolist(),
        "label": first.target.labels.tolist(),
        "groups": {attribute: values.tolist() for attribute, values in first.groups.items()},
        "scores": scores,
    }


def variant_row(name: str, backend: str, bundle: CaptureBundle, capture_path: Path, out: Path) -> dict:
    """Report entry of one variant on one backend, before its attack rows are added.

    `capture_path` is the bundle's target.npz, named relative to `out` when inside it.
    """
    capture_path = Path(capture_path)
    try:
        reported_path = str(capture_path.resolve().relative_to(Path(out).resolve()))
    except ValueError:
        reported_path = str(capture_path)
    meta = bundle.target.meta
    member, labels = bundle.member, bundle.target.labels
    predicted = np.argmax(bundle.target.logits, axis=1)
    return {
        "name": name,
        "backend": backend,
        "capture": {
            "path": reported_path,
            "sha256": sha256_file(capture_path),
            "numerics": meta.get("numerics"),
            "isa": meta.get("isa"),
            "threads": meta.get("threads"),
            "inference_seconds": meta.get("inference_seconds"),
        },
        "accuracy": {
            "members": float(np.mean(predicted[member] == labels[member])),
            "nonmembers": float(np.mean(predicted[~member] == labels[~member])),
        },
    }


def write_scores(directory: Path, bundle: CaptureBundle, evaluation: BundleEvaluation) -> Path:
    """Write each attack's per-record scores to directory/scores.npz, keyed by attack name."""
    path = Path(directory) / "scores.npz"
    atomic_save_npz(path, record_id=bundle.target.record_id, member=bundle.member, **evaluation.scores)
    return path
