"""Paired comparison of two attacks' AUCs on the same records: DeLong's test.

DeLong, DeLong and Clarke-Pearson, "Comparing the areas under two or more
correlated receiver operating characteristic curves: a nonparametric
approach", Biometrics 44(3), 1988. Each member gets the fraction of
non-members it outscores (ties counting one half), and each non-member the
fraction of members that outscore it. The AUC is the mean of either, and the
covariance of these placement values across records gives the variance of the
difference of two correlated AUCs. Midranks compute them in O(n log n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def midranks(values: np.ndarray) -> np.ndarray:
    """Rank values from 1 to n, giving tied values the mean of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values) != 0) + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks start..end-1, shifted to start at 1
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _placements(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the members' and the non-members' placement values."""
    members, nonmembers = scores[member], scores[~member]
    all_ranks = midranks(scores)
    member_placements = (all_ranks[member] - midranks(members)) / nonmembers.size
    nonmember_placements = 1.0 - (all_ranks[~member] - midranks(nonmembers)) / members.size
    return member_placements, nonmember_placements


@dataclass
class AucComparison:
    """Difference of two AUCs on the same records, with DeLong's standard error and p-value."""

    difference: float  # AUC of the first scores minus AUC of the second
    standard_error: float
    p_value: float  # two-sided, normal approximation; 1.0 when both are identical

    def to_dict(self) -> dict:
        return {
            "auc_difference": self.difference,
            "auc_difference_standard_error": self.standard_error,
            "auc_difference_p_value": self.p_value,
        }


def delong_test(scores_a: np.ndarray, scores_b: np.ndarray, member: np.ndarray) -> AucComparison:
    """Test whether two score vectors over the same records have the same AUC."""
    member = np.asarray(member, dtype=bool)
    scores_a = np.asarray(scores_a, dtype=np.float64)
    scores_b = np.asarray(scores_b, dtype=np.float64)
    if scores_a.shape != member.shape or scores_b.shape != member.shape:
        raise ValueError(
            f"scores {scores_a.shape} and {scores_b.shape} and member {member.shape} must have equal shapes"
        )
    n_members, n_nonmembers = int(member.sum()), int((~member).sum())
    if n_members < 2 or n_nonmembers < 2:
        raise ValueError("DeLong's test needs at least two members and two non-members")

    members_a, nonmembers_a = _placements(scores_a, member)
    members_b, nonmembers_b = _placements(scores_b, member)
    difference = float(members_a.mean() - members_b.mean())
    variance = (
        np.var(members_a - members_b, ddof=1) / n_members
        + np.var(nonmembers_a - nonmembers_b, ddof=1) / n_nonmembers
    )
    standard_error = math.sqrt(max(float(variance), 0.0))
    if standard_error == 0.0:
        # Identical placements give an exact difference: zero, or (for a degenerate pair) certain.
        p_value = 1.0 if difference == 0.0 else 0.0
    else:
        p_value = math.erfc(abs(difference) / standard_error / math.sqrt(2.0))
    return AucComparison(difference=difference, standard_error=standard_error, p_value=p_value)


def auc_standard_error(scores: np.ndarray, member: np.ndarray) -> float:
    """DeLong's standard error of one AUC: from the variances of the placement values."""
    member = np.asarray(member, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_members, n_nonmembers = int(member.sum()), int((~member).sum())
    if n_members < 2 or n_nonmembers < 2:
        raise ValueError("the AUC's standard error needs at least two members and two non-members")
    member_placements, nonmember_placements = _placements(scores, member)
    variance = np.var(member_placements, ddof=1) / n_members + np.var(nonmember_placements, ddof=1) / n_nonmembers
    return math.sqrt(max(float(variance), 0.0))
