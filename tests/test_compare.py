"""DeLong's paired AUC test against a direct implementation of the 1988 formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from edgemia.stats.compare import delong_test, midranks


def _direct_delong(scores_a, scores_b, member):
    """Placement values from all member/non-member pairs, then the 2x2 covariance matrices."""
    components = []
    for scores in (scores_a, scores_b):
        x, y = scores[member][:, np.newaxis], scores[~member][np.newaxis, :]
        psi = (x > y) + 0.5 * (x == y)
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    v10 = np.array([c[0] for c in components])
    v01 = np.array([c[1] for c in components])
    s10, s01 = np.cov(v10), np.cov(v01)
    contrast = np.array([1.0, -1.0])
    variance = contrast @ s10 @ contrast / v10.shape[1] + contrast @ s01 @ contrast / v01.shape[1]
    difference = v10[0].mean() - v10[1].mean()
    return difference, np.sqrt(variance), 2 * norm.sf(abs(difference) / np.sqrt(variance))


@pytest.mark.parametrize("values", [[3, 1, 2], [1, 1, 2, 2, 2, 0], np.round(np.random.default_rng(0).normal(size=500), 1)])
def test_midranks_match_scipy(values):
    np.testing.assert_array_equal(midranks(np.asarray(values)), rankdata(values))


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
def test_delong_matches_direct_formulas(ties):
    rng = np.random.default_rng(1)
    member = rng.random(600) < 0.4
    scores_a = rng.normal(member * 0.6, 1.0)
    scores_b = scores_a + rng.normal(0.0, 0.7, 600)
    if ties:
        scores_a, scores_b = np.round(scores_a), np.round(scores_b)
    result = delong_test(scores_a, scores_b, member)
    difference, standard_error, p_value = _direct_delong(scores_a, scores_b, member)
    assert result.difference == pytest.approx(difference, abs=1e-12)
    assert result.difference == pytest.approx(
        roc_auc_score(member, scores_a) - roc_auc_score(member, scores_b), abs=1e-12
    )
    assert result.standard_error == pytest.approx(standard_error, rel=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


def test_identical_scores_give_p_one():
    rng = np.random.default_rng(2)
    member = rng.random(100) < 0.5
    scores = rng.normal(size=100)
    result = delong_test(scores, scores, member)
    assert result.difference == 0.0
    assert result.standard_error == 0.0
    assert result.p_value == 1.0


def test_clear_difference_is_significant():
    rng = np.random.default_rng(3)
    member = rng.random(2000) < 0.5
    strong = rng.normal(member * 1.5, 1.0)
    weak = strong + rng.normal(0.0, 3.0, 2000)
    assert delong_test(strong, weak, member).p_value < 1e-6
