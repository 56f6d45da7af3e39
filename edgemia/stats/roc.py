"""ROC metrics of a membership attack.

Conventions: members are the positive class and a higher score means "more
likely a member". The ROC curve has one vertex per distinct score (no
interpolation, no dropped vertices), starting at (FPR, TPR) = (0, 0).

auc, balanced_accuracy and advantage also take a batch of curves (count
arrays [B, V], as the bootstrap builds them) and then return one value per
curve. A batched curve may repeat a vertex where a resample has no record
at some score, which changes none of the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# FPR levels reported for every attack.
FPR_LEVELS = (0.001, 0.01)


@dataclass
class RocCurve:
    """ROC vertices with the integer counts behind them."""

    thresholds: np.ndarray  # float64, decreasing; the first is +inf
    true_positives: np.ndarray  # int64 [V] (or [B, V]), members scored >= threshold
    false_positives: np.ndarray  # int64 [V] (or [B, V]), non-members scored >= threshold
    n_members: int
    n_nonmembers: int

    @property
    def tpr(self) -> np.ndarray:
        return self.true_positives / self.n_members

    @property
    def fpr(self) -> np.ndarray:
        return self.false_positives / self.n_nonmembers


def check_scores(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert scores (float64, finite) and member labels (bool, both classes)."""
    scores = np.asarray(scores, dtype=np.float64)
    member = np.asarray(member, dtype=bool)
    if scores.ndim != 1 or scores.shape != member.shape:
        raise ValueError(f"scores {scores.shape} and member {member.shape} must be 1-D of equal length")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain {int((~np.isfinite(scores)).sum())} NaN or infinite values")
    if member.all() or not member.any():
        raise ValueError("member must contain at least one member and one non-member")
    return scores, member


def roc_curve(scores: np.ndarray, member: np.ndarray) -> RocCurve:
    """Compute the ROC vertices of `scores` against the `member` labels."""
    scores, member = check_scores(scores, member)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    sorted_member = member[order]
    # The last index of each run of equal scores: one vertex per distinct score.
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_member, dtype=np.int64)[ends]
    false_positives = (ends + 1) - true_positives
    return RocCurve(
        thresholds=np.r_[np.inf, sorted_scores[ends]],
        true_positives=np.r_[0, true_positives].astype(np.int64),
        false_positives=np.r_[0, false_positives].astype(np.int64),
        n_members=int(member.sum()),
        n_nonmembers=int((~member).sum()),
    )


def auc(curve: RocCurve) -> float | np.ndarray:
    """Area under the ROC curve: the Mann-Whitney statistic with ties counted one half.

    Computed from the integer counts: each non-member in a group of tied
    scores is beaten by the members above the group and ties with the
    members inside it.
    """
    tp_group = np.diff(curve.true_positives, axis=-1)
    fp_group = np.diff(curve.false_positives, axis=-1)
    tp_above = curve.true_positives[..., :-1]
    twice_wins = np.sum(fp_group * (2 * tp_above + tp_group), axis=-1, dtype=np.int64)
    return _float_or_array(twice_wins / (2.0 * curve.n_members * curve.n_nonmembers))


def _float_or_array(values: np.ndarray) -> float | np.ndarray:
    return float(values) if np.ndim(values) == 0 else values


def max_false_positives(level: float, n_nonmembers: int) -> int | None:
    """Return the most false positives an FPR of at most `level` allows, or None if not measurable.

    None when 0 < level < 1 / n_nonmembers: so few non-members cannot resolve
    that rate, and reading the curve there would report the TPR at zero false
    positives under another name.
    """
    if level < 0 or level > 1:
        raise ValueError(f"FPR level {level} is outside [0, 1]")
    if 0 < level < 1.0 / n_nonmembers:
        return None
    # Integer comparison avoids float error at rates such as 9/900 == 0.01.
    return int(np.floor(level * n_nonmembers + 1e-9))


def true_positives_at(curve: RocCurve, false_positives: int) -> np.ndarray:
    """Return the most true positives among vertices with at most `false_positives`, per curve."""
    allowed = curve.false_positives <= false_positives
    return np.where(allowed, curve.true_positives, 0).max(axis=-1)


def tpr_at_fpr(curve: RocCurve, level: float) -> tuple[float, float] | None:
    """Return (TPR, achieved FPR): the largest TPR among vertices with FPR at most `level`.

    The achieved FPR is the smallest FPR at which that TPR is reached, that
    is, the FPR of the threshold an attacker would pick. Returns None when
    the level is not measurable (see max_false_positives).
    """
    allowed = max_false_positives(level, curve.n_nonmembers)
    if allowed is None:
        return None
    true_positives = int(true_positives_at(curve, allowed))
    first = int(np.searchsorted(curve.true_positives, true_positives, side="left"))
    return (
        float(true_positives / curve.n_members),
        float(curve.false_positives[first] / curve.n_nonmembers),
    )


def balanced_accuracy(curve: RocCurve) -> float | np.ndarray:
    """Best balanced accuracy of a threshold: max over vertices of (TPR + 1 - FPR) / 2."""
    return _float_or_array(np.max((curve.tpr + 1.0 - curve.fpr) / 2.0, axis=-1))


def advantage(curve: RocCurve) -> float | np.ndarray:
    """Membership advantage: max over vertices of TPR - FPR, without absolute value."""
    return _float_or_array(np.max(curve.tpr - curve.fpr, axis=-1))


@dataclass
class AttackMetrics:
    """Headline metrics of one attack on one variant and backend."""

    auc: float
    tpr_at_fpr: dict[float, float | None]  # None: not measurable
    fpr_achieved: dict[float, float | None]
    balanced_accuracy: float
    advantage: float
    n_members: int
    n_nonmembers: int

    def to_dict(self) -> dict:
        return {
            "auc": self.auc,
            "tpr_at_fpr": {str(level): value for level, value in self.tpr_at_fpr.items()},
            "fpr_achieved": {str(level): value for level, value in self.fpr_achieved.items()},
            "balanced_accuracy": self.balanced_accuracy,
            "advantage": self.advantage,
        }


def attack_metrics(scores: np.ndarray, member: np.ndarray, levels=FPR_LEVELS) -> AttackMetrics:
    """Compute the headline metrics of `scores` against the `member` labels."""
    curve = roc_curve(scores, member)
    tpr, fpr = {}, {}
    for level in levels:
        point = tpr_at_fpr(curve, level)
        tpr[level], fpr[level] = point if point is not None else (None, None)
    return AttackMetrics(
        auc=auc(curve),
        tpr_at_fpr=tpr,
        fpr_achieved=fpr,
        balanced_accuracy=balanced_accuracy(curve),
        advantage=advantage(curve),
        n_members=curve.n_members,
        n_nonmembers=curve.n_nonmembers,
    )
