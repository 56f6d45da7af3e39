"""Bootstrap intervals: per-resample metrics, scipy's bootstrap, and coverage of a known AUC."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap, norm, rankdata

from edgemia.stats.bootstrap import (
    MAX_RESAMPLES,
    MIN_RESAMPLES,
    StratifiedResamples,
    check_resample_count,
    metric_draws,
    stratified_resamples,
)
from edgemia.errors import InputError
from edgemia.stats.roc import attack_metrics


def _scores(n=400, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    member = rng.random(n) < 0.5
    scores = rng.normal(member * 0.5, 1.0)
    if ties:
        scores = np.round(scores / 0.5) * 0.5  # few distinct values, as int8 outputs give
    return scores, member


def _mann_whitney_auc(members, nonmembers):
    """AUC from the rank sum of the members (ties get midranks, so they count one half)."""
    ranks = rankdata(np.r_[members, nonmembers])
    m, n = members.size, nonmembers.size
    return (ranks[:m].sum() - m * (m + 1) / 2) / (m * n)


def test_resamples_keep_both_counts():
    _, member = _scores()
    resamples = stratified_resamples(member, 50, seed=1)
    assert resamples.shape == (50, member.size)
    assert (member[resamples].sum(axis=1) == member.sum()).all()
    np.testing.assert_array_equal(resamples, stratified_resamples(member, 50, seed=1))
    assert not np.array_equal(resamples, stratified_resamples(member, 50, seed=2))


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
def test_draws_equal_metrics_of_each_resample(ties):
    scores, member = _scores(ties=ties)
    resamples = stratified_resamples(member, 30, seed=3)
    draws = metric_draws(scores, member, resamples, levels=(0.0, 0.001, 0.01, 0.1))
    assert draws.tpr_at_fpr[0.001] is None  # about 200 non-members cannot resolve 0.1%
    for b, rows in enumerate(resamples):
        direct = attack_metrics(scores[rows], member[rows], levels=(0.0, 0.01, 0.1))
        assert draws.auc[b] == pytest.approx(direct.auc, abs=1e-12)
        assert draws.balanced_accuracy[b] == pytest.approx(direct.balanced_accuracy, abs=1e-12)
        assert draws.advantage[b] == pytest.approx(direct.advantage, abs=1e-12)
        assert draws.ppv[b] == pytest.approx(direct.ppv, abs=1e-12)
        assert draws.epsilon_lower_bound[b] == pytest.approx(direct.epsilon_lower_bound, abs=1e-12)
        for level in (0.0, 0.01, 0.1):
            assert draws.tpr_at_fpr[level][b] == pytest.approx(direct.tpr_at_fpr[level], abs=1e-12)
            assert draws.ppv_at_fpr[level][b] == pytest.approx(direct.ppv_at_fpr[level], abs=1e-12)


def test_auc_interval_matches_scipy_bootstrap():
    scores, member = _scores(seed=4)
    ours = metric_draws(scores, member, stratified_resamples(member, 4000, seed=5)).intervals(0.95)["auc"]

    # scipy resamples each sample separately when given several: the same stratified scheme.
    reference = bootstrap(
        (scores[member], scores[~member]), _mann_whitney_auc, n_resamples=4000, method="percentile",
        vectorized=False, random_state=6,
    ).confidence_interval
    assert ours[0] == pytest.approx(reference.low, abs=0.01)
    assert ours[1] == pytest.approx(reference.high, abs=0.01)


def test_paired_difference_matches_scipy_bootstrap():
    scores, member = _scores(seed=7)
    rng = np.random.default_rng(8)
    other = scores + rng.normal(0.0, 0.5, scores.size)  # correlated with `scores`, slightly weaker
    resamples = stratified_resamples(member, 4000, seed=9)
    ours = metric_draws(scores, member, resamples).minus(metric_draws(other, member, resamples))
    low, high = ours.intervals(0.95)["auc"]

    def difference(member_rows, nonmember_rows):
        return _mann_whitney_auc(scores[member_rows], scores[nonmember_rows]) - _mann_whitney_auc(
            other[member_rows], other[nonmember_rows]
        )

    reference = bootstrap(
        (np.flatnonzero(member), np.flatnonzero(~member)), difference, n_resamples=4000,
        method="percentile", vectorized=False, random_state=10,
    ).confidence_interval
    assert low == pytest.approx(reference.low, abs=0.01)
    assert high == pytest.approx(reference.high, abs=0.01)


def test_interval_covers_known_auc():
    # Binormal scores with a unit shift have AUC Phi(1 / sqrt(2)). With 1,000 simulated data sets the
    # coverage's standard error is 0.7 points, so a 95% interval must cover in 920 to 980 of them.
    true_auc = norm.cdf(1.0 / np.sqrt(2.0))
    member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    covered = 0
    for repetition in range(1000):
        rng = np.random.default_rng(1000 + repetition)
        scores = rng.normal(member * 1.0, 1.0)
        resamples = stratified_resamples(member, 400, seed=repetition)
        low, high = metric_draws(scores, member, resamples, levels=()).intervals(0.95)["auc"]
        covered += low <= true_auc <= high
    assert 920 <= covered <= 980


def test_non_stratified_resamples_rejected():
    scores, member = _scores(n=20)
    with pytest.raises(ValueError, match="stratified"):
        metric_draws(scores, member, np.zeros((2, 20), dtype=np.int64))


def test_bootstrap_p_value():
    from edgemia.stats.bootstrap import bootstrap_p_value

    assert bootstrap_p_value(np.zeros(99)) == 1.0
    assert bootstrap_p_value(np.full(99, 0.1)) == pytest.approx(2 * 1 / 100)
    rng = np.random.default_rng(11)
    centered = rng.normal(0.0, 1.0, 4000)
    assert bootstrap_p_value(centered) > 0.5
    shifted = rng.normal(2.0, 1.0, 4000)  # 0 sits 2 standard deviations below the center
    assert bootstrap_p_value(shifted) == pytest.approx(2 * norm.cdf(-2.0), abs=0.01)


def test_paired_p_values_of_identical_scores():
    scores, member = _scores(seed=12)
    resamples = stratified_resamples(member, 200, seed=13)
    draws = metric_draws(scores, member, resamples)
    p_values = draws.minus(draws).p_values()
    assert p_values["auc"] == 1.0
    assert p_values["tpr_at_fpr"]["0.01"] == 1.0


def _resamples_in_one_draw(member, n_resamples, seed):
    """The resamples as drawn before the block-wise draw: all member rows in one call, then all non-member rows."""
    rng = np.random.default_rng([0xB0075, seed])
    members, nonmembers = np.flatnonzero(member), np.flatnonzero(~member)
    return np.concatenate(
        [
            members[rng.integers(0, members.size, size=(n_resamples, members.size))],
            nonmembers[rng.integers(0, nonmembers.size, size=(n_resamples, nonmembers.size))],
        ],
        axis=1,
    )


@pytest.mark.parametrize("n_resamples", [1, 24, 25, 26, 1000])
def test_blockwise_resamples_equal_one_draw(n_resamples):
    _, member = _scores(n=301, seed=14)
    expected = _resamples_in_one_draw(member, n_resamples, seed=15)
    lazy = StratifiedResamples(member, n_resamples, seed=15)
    np.testing.assert_array_equal(np.concatenate(list(lazy.blocks())), expected)
    # A second pass draws the same rows again.
    np.testing.assert_array_equal(np.concatenate(list(lazy.blocks())), expected)
    np.testing.assert_array_equal(stratified_resamples(member, n_resamples, seed=15), expected)


def test_blockwise_draws_equal_array_draws():
    scores, member = _scores(seed=16, ties=True)
    lazy = metric_draws(scores, member, StratifiedResamples(member, 300, seed=17))
    whole = metric_draws(scores, member, stratified_resamples(member, 300, seed=17))
    assert lazy.intervals() == whole.intervals()
    np.testing.assert_array_equal(lazy.auc, whole.auc)


def test_blockwise_draws_bounded_memory():
    import tracemalloc

    scores, member = _scores(n=4000, seed=18)
    n_resamples = 4000  # the whole index array would take 4000 x 4000 x 8 bytes = 128 MB
    tracemalloc.start()
    try:
        draws = metric_draws(scores, member, StratifiedResamples(member, n_resamples, seed=19), levels=(0.01,))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert draws.auc.shape == (n_resamples,)
    assert peak < 32 * 2**20


@pytest.mark.parametrize("count", [-1, 1, 2, MIN_RESAMPLES - 1, MAX_RESAMPLES + 1])
def test_resample_count_out_of_range(count):
    with pytest.raises(InputError, match=f"--bootstrap {count} .*use 0 to switch the intervals off"):
        check_resample_count(count)


@pytest.mark.parametrize("count", [0, MIN_RESAMPLES, 1000, MAX_RESAMPLES])
def test_resample_count_in_range(count):
    check_resample_count(count)


def test_minimum_resamples_cover_point_estimate():
    # With 1 resample the interval misses the AUC of the data for each of these seeds, with 2 for 8 of them.
    scores, member = _scores(seed=20)
    point = attack_metrics(scores, member, levels=()).auc
    for seed in range(20):
        resamples = stratified_resamples(member, MIN_RESAMPLES, seed)
        low, high = metric_draws(scores, member, resamples, levels=()).intervals()["auc"]
        assert low <= point <= high
