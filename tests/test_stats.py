"""ROC metrics against scikit-learn on the same scores, including heavy ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from edgemia.stats.roc import (
    advantage,
    attack_metrics,
    auc,
    balanced_accuracy,
    epsilon_lower_bound,
    roc_curve,
    tpr_at_fpr,
)


def _cases():
    rng = np.random.default_rng(7)
    member = rng.random(2000) < 0.5
    yield "continuous", rng.normal(member * 0.4, 1.0), member
    # Few distinct values, as int8 logits give: most scores tie.
    yield "five levels", rng.integers(0, 5, size=2000) + member * (rng.random(2000) < 0.2), member
    yield "int8 grid", np.round(rng.normal(member * 0.3, 1.0) / 0.25) * 0.25, member
    yield "all tied", np.zeros(2000), member
    member_small = np.array([True, False, True, False, False])
    yield "tiny", np.array([0.9, 0.1, 0.1, 0.9, 0.5]), member_small


@pytest.mark.parametrize("name,scores,member", list(_cases()), ids=[c[0] for c in _cases()])
def test_roc_matches_sklearn(name, scores, member):
    curve = roc_curve(scores, member)
    fpr, tpr, thresholds = sklearn_roc_curve(member, scores, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve.tpr, tpr, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(curve.thresholds[1:], thresholds[1:])


@pytest.mark.parametrize("name,scores,member", list(_cases()), ids=[c[0] for c in _cases()])
def test_auc_matches_sklearn(name, scores, member):
    assert auc(roc_curve(scores, member)) == pytest.approx(roc_auc_score(member, scores), abs=1e-12)


@pytest.mark.parametrize("name,scores,member", list(_cases()), ids=[c[0] for c in _cases()])
def test_threshold_metrics_match_sklearn_curve(name, scores, member):
    fpr, tpr, _ = sklearn_roc_curve(member, scores, drop_intermediate=False)
    curve = roc_curve(scores, member)
    n_nonmembers = int((~member).sum())
    for level in (0.0, 0.001, 0.01, 0.1, 0.5):
        point = tpr_at_fpr(curve, level)
        if 0 < level < 1 / n_nonmembers:
            assert point is None
            continue
        allowed = fpr <= level + 1e-12
        assert point == pytest.approx((tpr[allowed].max(), fpr[allowed][np.argmax(tpr[allowed])]))
    assert balanced_accuracy(curve) == pytest.approx(np.max(1 - (fpr + (1 - tpr)) / 2))
    assert advantage(curve) == pytest.approx(np.max(tpr - fpr))


def test_rate_below_resolution_not_measurable():
    rng = np.random.default_rng(1)
    member = np.r_[np.ones(899, bool), np.zeros(899, bool)]
    metrics = attack_metrics(rng.normal(size=member.size), member)
    assert metrics.tpr_at_fpr[0.001] is None
    assert metrics.fpr_achieved[0.001] is None
    assert metrics.tpr_at_fpr[0.01] is not None
    assert metrics.fpr_achieved[0.01] <= 0.01


def test_fpr_exactly_at_level_included():
    # 1000 non-members: a vertex at exactly 10 false positives is FPR 0.01 and counts.
    member = np.r_[np.ones(5, bool), np.zeros(1000, bool)]
    scores = np.r_[np.full(5, 2.0), np.full(10, 3.0), np.zeros(990)]
    tpr, fpr = tpr_at_fpr(roc_curve(scores, member), 0.01)
    assert fpr == 0.01
    assert tpr == 1.0


def test_perfect_separation():
    member = np.array([True, True, False, False])
    metrics = attack_metrics(np.array([3.0, 2.0, 1.0, 0.0]), member)
    assert metrics.auc == 1.0
    assert metrics.advantage == 1.0
    assert metrics.balanced_accuracy == 1.0


def test_invalid_scores_rejected():
    member = np.array([True, False])
    with pytest.raises(ValueError, match="NaN"):
        roc_curve(np.array([np.nan, 0.0]), member)
    with pytest.raises(ValueError, match="at least one member and one non-member"):
        roc_curve(np.array([1.0, 0.0]), np.array([True, True]))


@pytest.mark.parametrize("name,scores,member", list(_cases()), ids=[c[0] for c in _cases()])
def test_ppv_matches_sklearn_precision(name, scores, member):
    precision, recall, _ = precision_recall_curve(member, scores)
    metrics = attack_metrics(scores, member)
    # sklearn appends (precision 1, recall 0) with no record flagged; edgemia leaves that point out.
    assert metrics.ppv == pytest.approx(precision[recall > 0].max())
    fpr, tpr, thresholds = sklearn_roc_curve(member, scores, drop_intermediate=False)
    n_members, n_nonmembers = int(member.sum()), int((~member).sum())
    for level in (0.0, 0.01):
        if 0 < level < 1 / n_nonmembers:
            assert metrics.ppv_at_fpr[level] is None
            continue
        allowed = np.flatnonzero(fpr <= level + 1e-12)
        best = allowed[np.argmax(tpr[allowed])]  # first vertex with the largest TPR
        flagged = tpr[best] * n_members + fpr[best] * n_nonmembers
        expected = 0.0 if flagged == 0 else tpr[best] * n_members / flagged
        assert metrics.ppv_at_fpr[level] == pytest.approx(expected)


def _epsilon_by_formula(scores, member, confidence=0.95):
    """Loop over thresholds with scipy's beta quantiles: the Clopper-Pearson bounds written out."""
    n_members, n_nonmembers = int(member.sum()), int((~member).sum())
    tail = (1 - confidence) / 2

    def lower(k, n):
        return 0.0 if k == 0 else beta.ppf(tail, k, n - k + 1)

    def upper(k, n):
        return 1.0 if k == n else beta.ppf(1 - tail, k + 1, n - k)

    best = 0.0
    for threshold in np.r_[np.inf, np.unique(scores)]:
        tp = int((scores[member] >= threshold).sum())
        fp = int((scores[~member] >= threshold).sum())
        tn, fn = n_nonmembers - fp, n_members - tp
        for numerator, denominator in ((lower(tp, n_members), upper(fp, n_nonmembers)),
                                       (lower(tn, n_nonmembers), upper(fn, n_members))):
            if numerator > 0:
                best = max(best, np.log(numerator / denominator))
    return best


@pytest.mark.parametrize("name,scores,member", list(_cases())[:3], ids=[c[0] for c in _cases()][:3])
def test_epsilon_matches_formula(name, scores, member):
    assert epsilon_lower_bound(roc_curve(scores, member)) == pytest.approx(
        _epsilon_by_formula(scores, member), rel=1e-9, abs=1e-12
    )


def test_epsilon_of_separable_scores():
    # 50 members above 50 non-members: the best threshold flags all members and no non-member,
    # so eps >= log(TPR_low / FPR_high) with the Clopper-Pearson bounds of 50/50 and 0/50.
    member = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    scores = np.r_[np.ones(50), np.zeros(50)]
    expected = np.log(beta.ppf(0.025, 50, 1) / beta.ppf(0.975, 1, 50))
    assert epsilon_lower_bound(roc_curve(scores, member)) == pytest.approx(expected, rel=1e-9)
    assert epsilon_lower_bound(roc_curve(np.zeros(100), member)) == 0.0
