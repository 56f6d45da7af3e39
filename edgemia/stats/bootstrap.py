"""Bootstrap confidence intervals of attack metrics, resampled within members and non-members.

Each resample draws, with replacement, as many members from the members and
as many non-members from the non-members as the data has. Every resample
therefore has the data's FPR resolution, and a rate that cannot be measured
on the data cannot be measured on any resample. An audit draws the resamples
once and reuses them for every variant, backend and attack, so the
difference of two variants' metrics on one resample is a paired difference
on the same records. Intervals are percentile intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemia.stats.roc import (
    FPR_LEVELS,
    RocCurve,
    advantage,
    auc,
    balanced_accuracy,
    check_scores,
    max_false_positives,
    true_positives_at,
)

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# Mixed into the seed so that resampling never reuses the split's or training's random stream.
_RESAMPLE_STREAM = 0xB0075
# Resamples evaluated together; bounds the count arrays to about chunk * n_records values.
_CHUNK = 100


def stratified_resamples(member: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Draw record indices [B, n]: each row resamples the members and the non-members separately."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    member = np.asarray(member, dtype=bool)
    rng = np.random.default_rng([_RESAMPLE_STREAM, seed])
    members, nonmembers = np.flatnonzero(member), np.flatnonzero(~member)
    return np.concatenate(
        [
            members[rng.integers(0, members.size, size=(n_resamples, members.size))],
            nonmembers[rng.integers(0, nonmembers.size, size=(n_resamples, nonmembers.size))],
        ],
        axis=1,
    )


def _interval(draws: np.ndarray, confidence: float) -> list[float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return [float(low), float(high)]


@dataclass
class MetricDraws:
    """Metric values on each bootstrap resample, one array [B] per metric."""

    auc: np.ndarray
    tpr_at_fpr: dict[float, np.ndarray | None]  # None: not measurable with this many non-members
    balanced_accuracy: np.ndarray
    advantage: np.ndarray

    def minus(self, baseline: MetricDraws) -> MetricDraws:
        """Return the paired differences self - baseline, resample by resample."""
        tpr = {}
        for level, values in self.tpr_at_fpr.items():
            other = baseline.tpr_at_fpr.get(level)
            tpr[level] = None if values is None or other is None else values - other
        return MetricDraws(
            auc=self.auc - baseline.auc,
            tpr_at_fpr=tpr,
            balanced_accuracy=self.balanced_accuracy - baseline.balanced_accuracy,
            advantage=self.advantage - baseline.advantage,
        )

    def intervals(self, confidence: float = DEFAULT_CONFIDENCE) -> dict:
        """Return percentile intervals [low, high] in the report's layout (FPR levels as strings)."""
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
        return {
            "auc": _interval(self.auc, confidence),
            "tpr_at_fpr": {
                str(level): None if values is None else _interval(values, confidence)
                for level, values in self.tpr_at_fpr.items()
            },
            "balanced_accuracy": _interval(self.balanced_accuracy, confidence),
            "advantage": _interval(self.advantage, confidence),
        }


def metric_draws(
    scores: np.ndarray, member: np.ndarray, resamples: np.ndarray, levels=FPR_LEVELS
) -> MetricDraws:
    """Compute each metric of `scores` on every resample (rows of record indices).

    Scores are ranked once. Each resample's ROC counts then come from counting
    its records per distinct score, with no sorting per resample.
    """
    scores, member = check_scores(scores, member)
    n_members = int(member.sum())
    n_nonmembers = member.size - n_members
    if (member[resamples].sum(axis=1) != n_members).any():
        raise ValueError("every resample must contain as many members as the data (stratified resamples)")

    distinct, inverse = np.unique(scores, return_inverse=True)
    n_groups = distinct.size
    group = (n_groups - 1) - inverse  # 0 for the highest score
    thresholds = np.r_[np.inf, distinct[::-1]]
    parts: dict[str, list] = {"auc": [], "balanced_accuracy": [], "advantage": []}
    true_positives: dict[float, list] = {level: [] for level in levels}

    for start in range(0, resamples.shape[0], _CHUNK):
        block = resamples[start : start + _CHUNK]
        slots = group[block] + n_groups * np.arange(block.shape[0])[:, np.newaxis]
        is_member = member[block]
        size = block.shape[0] * n_groups
        members_per_group = np.bincount(slots[is_member], minlength=size).reshape(-1, n_groups)
        nonmembers_per_group = np.bincount(slots[~is_member], minlength=size).reshape(-1, n_groups)
        zeros = np.zeros((block.shape[0], 1), dtype=np.int64)
        curve = RocCurve(
            thresholds=thresholds,
            true_positives=np.hstack([zeros, np.cumsum(members_per_group, axis=1)]),
            false_positives=np.hstack([zeros, np.cumsum(nonmembers_per_group, axis=1)]),
            n_members=n_members,
            n_nonmembers=n_nonmembers,
        )
        parts["auc"].append(auc(curve))
        parts["balanced_accuracy"].append(balanced_accuracy(curve))
        parts["advantage"].append(advantage(curve))
        for level in levels:
            allowed = max_false_positives(level, n_nonmembers)
            if allowed is not None:
                true_positives[level].append(true_positives_at(curve, allowed))

    return MetricDraws(
        auc=np.concatenate(parts["auc"]),
        tpr_at_fpr={
            level: np.concatenate(counts) / n_members if counts else None
            for level, counts in true_positives.items()
        },
        balanced_accuracy=np.concatenate(parts["balanced_accuracy"]),
        advantage=np.concatenate(parts["advantage"]),
    )
