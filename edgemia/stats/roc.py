"""ROC metrics of a membership attack.

Conventions: members are the positive class and a higher score means "more
likely a member". The ROC curve has one vertex per distinct score (no
interpolation, no dropped vertices), starting at (FPR, TPR) = (0, 0).

auc, balanced_accuracy, advantage, ppv, ppv_at and epsilon_lower_bound also
take a batch of curves (count arrays [B, V], as the bootstrap builds them)
and then return one value per curve. A batched curve may repeat a vertex
where a resample has no record at some score, which changes none of the
metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import functools

import numpy as np
from scipy.special import betaincinv

# FPR levels reported for every attack. At 0 the TPR is the fraction of members
# scored above every non-member.
FPR_LEVELS = (0.0, 0.001, 0.01)
# Confidence of the Clopper-Pearson intervals behind the epsilon lower bound.
EPSILON_CONFIDENCE = 0.95


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


def vertex_at(curve: RocCurve, false_positives: int) -> np.ndarray:
    """Return the index of the first vertex with the most true positives within `false_positives`, per curve.

    That vertex is the threshold an attacker would pick: the largest TPR at
    the smallest FPR that reaches it.
    """
    allowed = curve.false_positives <= false_positives
    return np.argmax(np.where(allowed, curve.true_positives, -1), axis=-1)


def ppv(curve: RocCurve) -> float | np.ndarray:
    """Best positive predictive value of a threshold: max over vertices of TP / (TP + FP).

    This is TF-Privacy's PPV, max TPR / (TPR + r FPR) with r the ratio of
    non-members to members. The vertex (0, 0), where no record is flagged, is
    left out. The value is 1 whenever the highest score belongs to a member.
    """
    flagged = curve.true_positives + curve.false_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(flagged > 0, curve.true_positives / np.maximum(flagged, 1), -np.inf)
    return _float_or_array(precision.max(axis=-1))


def ppv_at(curve: RocCurve, false_positives: int) -> float | np.ndarray:
    """TP / (TP + FP) at the vertex of vertex_at; 0 where that vertex flags no record."""
    index = np.expand_dims(vertex_at(curve, false_positives), -1)
    true_positives = np.take_along_axis(curve.true_positives, index, axis=-1)[..., 0]
    false_positives_there = np.take_along_axis(curve.false_positives, index, axis=-1)[..., 0]
    flagged = true_positives + false_positives_there
    return _float_or_array(np.where(flagged > 0, true_positives / np.maximum(flagged, 1), 0.0))


@functools.lru_cache(maxsize=16)
def log_clopper_pearson_tables(n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Logs of the lower and upper Clopper-Pearson bounds of a proportion k / n, for every k in 0..n.

    The bounds are those of the two-sided interval at `confidence`: the
    (1 - confidence) / 2 quantile of Beta(k, n - k + 1) and the
    (1 + confidence) / 2 quantile of Beta(k + 1, n - k), with 0 and 1 at the
    ends. Cached, because the bootstrap needs them for every resample.
    """
    k = np.arange(n + 1, dtype=np.float64)
    tail = (1.0 - confidence) / 2.0
    lower = np.zeros(n + 1)
    upper = np.ones(n + 1)
    lower[1:] = betaincinv(k[1:], n - k[1:] + 1, tail)
    upper[:-1] = betaincinv(k[:-1] + 1, n - k[:-1], 1.0 - tail)
    with np.errstate(divide="ignore"):
        return np.log(lower), np.log(upper)


def epsilon_lower_bound(curve: RocCurve, confidence: float = EPSILON_CONFIDENCE) -> float | np.ndarray:
    """Empirical epsilon lower bound: max over thresholds of the bound a threshold test proves.

    An epsilon-DP training algorithm (delta = 0) forces TPR <= e^eps FPR and
    TNR <= e^eps FNR at every threshold. With Clopper-Pearson bounds at
    `confidence` for each rate, a threshold proves
    eps >= max(log(TPR_low / FPR_high), log(TNR_low / FNR_high)), and the
    bound is the largest of these over all vertices, and 0 if none is positive.
    NOTE: taking the max over thresholds makes the joint confidence lower than
    `confidence`; a held-out choice of threshold would restore it.
    """
    log_member_low, log_member_high = log_clopper_pearson_tables(curve.n_members, confidence)
    log_nonmember_low, log_nonmember_high = log_clopper_pearson_tables(curve.n_nonmembers, confidence)
    true_positives, false_positives = curve.true_positives, curve.false_positives
    flagged = (log_member_low[true_positives] - log_nonmember_high[false_positives]).max(axis=-1)
    # TNR from the non-members left below the threshold, FNR from the members left below it.
    cleared = (
        log_nonmember_low[curve.n_nonmembers - false_positives] - log_member_high[curve.n_members - true_positives]
    ).max(axis=-1)
    return _float_or_array(np.maximum(np.maximum(flagged, cleared), 0.0))


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
    ppv: float = float("nan")
    ppv_at_fpr: dict[float, float | None] = field(default_factory=dict)  # None: not measurable
    epsilon_lower_bound: float = float("nan")
    threshold_at_fpr: dict[float, float | None] = field(default_factory=dict)  # score threshold of each TPR

    def to_dict(self) -> dict:
        return {
            "auc": self.auc,
            "tpr_at_fpr": {str(level): value for level, value in self.tpr_at_fpr.items()},
            "fpr_achieved": {str(level): value for level, value in self.fpr_achieved.items()},
            "balanced_accuracy": self.balanced_accuracy,
            "advantage": self.advantage,
            "ppv": self.ppv,
            "ppv_at_fpr": {str(level): value for level, value in self.ppv_at_fpr.items()},
            "epsilon_lower_bound": self.epsilon_lower_bound,
        }


def attack_metrics(scores: np.ndarray, member: np.ndarray, levels=FPR_LEVELS) -> AttackMetrics:
    """Compute the headline metrics of `scores` against the `member` labels."""
    curve = roc_curve(scores, member)
    tpr, fpr, precision, thresholds = {}, {}, {}, {}
    for level in levels:
        point = tpr_at_fpr(curve, level)
        tpr[level], fpr[level] = point if point is not None else (None, None)
        allowed = max_false_positives(level, curve.n_nonmembers)
        precision[level] = None if allowed is None else ppv_at(curve, allowed)
        thresholds[level] = None if allowed is None else float(curve.thresholds[vertex_at(curve, allowed)])
    return AttackMetrics(
        auc=auc(curve),
        tpr_at_fpr=tpr,
        fpr_achieved=fpr,
        balanced_accuracy=balanced_accuracy(curve),
        advantage=advantage(curve),
        n_members=curve.n_members,
        n_nonmembers=curve.n_nonmembers,
        ppv=ppv(curve),
        ppv_at_fpr=precision,
        epsilon_lower_bound=epsilon_lower_bound(curve),
        threshold_at_fpr=thresholds,
    )
