"""Leakage per slice of the records: per class, correct versus misclassified, per subgroup.

A slice row restricts an attack's scores to the slice's records, members and
non-members alike, and reports the AUC with DeLong's standard error, the TPR
at each FPR level, and the advantage. A slice with fewer than
MIN_SLICE_RECORDS members or non-members is listed with its counts and no
metrics. For each attribute, the disparate vulnerability is the largest AUC
gap between two of its measurable subgroups, with a normal-approximation
p-value from the two standard errors (disjoint records, so independent).
NOTE: that p-value does not correct for picking the largest of several
gaps, so it overstates the evidence when an attribute has many subgroups.
"""

from __future__ import annotations

import math

import numpy as np

from edgemia.stats.compare import auc_standard_error
from edgemia.stats.roc import FPR_LEVELS, advantage, auc, roc_curve, tpr_at_fpr

MIN_SLICE_RECORDS = 2
CLASS_ATTRIBUTE = "class"
CORRECTNESS_ATTRIBUTE = "prediction"


def record_slices(labels: np.ndarray, correct: np.ndarray, groups: dict[str, np.ndarray]):
    """Yield (attribute, value, mask) for every class, both prediction outcomes and every subgroup."""
    for label in np.unique(labels):
        yield CLASS_ATTRIBUTE, _json_value(label), labels == label
    yield CORRECTNESS_ATTRIBUTE, "correct", correct
    yield CORRECTNESS_ATTRIBUTE, "misclassified", ~correct
    for attribute, values in groups.items():
        for value in np.unique(values):
            yield attribute, _json_value(value), values == value


def _json_value(value):
    return value.item() if isinstance(value, np.generic) else value


def slice_row(scores: np.ndarray, member: np.ndarray, levels=FPR_LEVELS) -> dict:
    """Metrics of the scores of one slice's records, or only the counts when too few."""
    n_members, n_nonmembers = int(member.sum()), int((~member).sum())
    row: dict = {"n_members": n_members, "n_nonmembers": n_nonmembers}
    if n_members < MIN_SLICE_RECORDS or n_nonmembers < MIN_SLICE_RECORDS:
        row["measurable"] = False
        return row
    curve = roc_curve(scores, member)
    rates = {}
    for level in levels:
        point = tpr_at_fpr(curve, level)
        rates[str(level)] = None if point is None else point[0]
    row.update(
        measurable=True,
        auc=auc(curve),
        auc_standard_error=auc_standard_error(scores, member),
        tpr_at_fpr=rates,
        advantage=advantage(curve),
    )
    return row


def slice_report(
    scores: np.ndarray, member: np.ndarray, labels: np.ndarray, correct: np.ndarray, groups: dict[str, np.ndarray]
) -> tuple[list[dict], list[dict]]:
    """Return the slice rows and, per attribute, the largest AUC gap between its subgroups."""
    rows = []
    for attribute, value, mask in record_slices(labels, correct, groups):
        rows.append({"attribute": attribute, "value": value, **slice_row(scores[mask], member[mask])})
    gaps = []
    for attribute in dict.fromkeys(row["attribute"] for row in rows):
        measurable = [row for row in rows if row["attribute"] == attribute and row["measurable"]]
        if len(measurable) < 2:
            continue
        most = max(measurable, key=lambda row: row["auc"])
        least = min(measurable, key=lambda row: row["auc"])
        gap = most["auc"] - least["auc"]
        standard_error = math.hypot(most["auc_standard_error"], least["auc_standard_error"])
        p_value = 1.0 if standard_error == 0.0 else math.erfc(abs(gap) / standard_error / math.sqrt(2.0))
        gaps.append(
            {
                "attribute": attribute,
                "metric": "auc",
                "most_vulnerable": most["value"],
                "least_vulnerable": least["value"],
                "gap": gap,
                "gap_standard_error": standard_error,
                "p_value": p_value,
            }
        )
    return rows, gaps
