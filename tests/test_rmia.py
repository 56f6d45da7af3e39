"""RMIA: scores and the offline calibration against a direct pairwise implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from edgemia.attacks import attack_options, score_attack
from edgemia.attacks.rmia import A_GRID, calibrate_offline_a, log_reference_probability, pairwise_scores
from edgemia.errors import InputError
from synthetic import bundle_from_phi, gaussian_population, multiclass_bundle


def _pairwise_rmia(p_target, reference_p, mask, population, gamma, a=1.0):
    """The published score, record by record: mean over z != x of 1[LR(x, z) > gamma]."""
    prior = np.array([reference_p[mask[:, i], i].mean() for i in range(p_target.size)])
    prior = ((1.0 + a) * prior + (1.0 - a)) / 2.0
    ratio = p_target / prior
    scores = np.empty(p_target.size)
    for x in range(p_target.size):
        others = [z for z in np.flatnonzero(population) if z != x]
        scores[x] = np.mean(ratio[x] / ratio[others] > gamma)
    return scores


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_online_matches_pairwise_definition(gamma):
    target_phi, member, reference_phi, in_mask = gaussian_population(300, 8, seed=10, spread=1.0)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    scores = pairwise_scores(
        np.log(expit(target_phi)) - log_reference_probability(reference_phi, np.ones_like(in_mask)),
        ~member,
        gamma,
    )
    expected = _pairwise_rmia(expit(target_phi), expit(reference_phi), np.ones_like(in_mask), ~member, gamma)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    if gamma == 1.0:
        np.testing.assert_allclose(score_attack("rmia", bundle).scores, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
def test_offline_prior_matches_formula(a):
    _, _, reference_phi, in_mask = gaussian_population(200, 6, seed=11, spread=1.0)
    out_mask = ~in_mask
    expected = [
        np.log(((1 + a) * expit(reference_phi[out_mask[:, i], i]).mean() + (1 - a)) / 2) for i in range(200)
    ]
    np.testing.assert_allclose(log_reference_probability(reference_phi, out_mask, a), expected, rtol=1e-12)


def test_prior_keeps_precision_near_one():
    # p = 1 - e^-phi rounds to 1, but log Pr = log(1 - mean e^-phi) ~ -mean e^-phi stays exact.
    phi = np.array([[40.0], [45.0], [50.0], [55.0]])
    expected = -np.mean(np.exp(-phi))
    log_prior = log_reference_probability(phi, np.ones_like(phi, dtype=bool))
    assert log_prior[0] == pytest.approx(expected, rel=1e-9)


def test_prior_keeps_precision_near_zero():
    phi = np.array([[-800.0], [-801.0]])
    log_prior = log_reference_probability(phi, np.ones_like(phi, dtype=bool))
    assert log_prior[0] == pytest.approx(np.logaddexp(-800.0, -801.0) - np.log(2.0), rel=1e-12)


def test_calibration_matches_leave_one_out_search():
    _, _, reference_phi, in_mask = gaussian_population(120, 6, seed=12, spread=1.0)
    a, mean_auc = calibrate_offline_a(reference_phi, in_mask)
    expected = {}
    for candidate in A_GRID:
        aucs = []
        for j in range(6):
            others = np.arange(6) != j
            scores = _pairwise_rmia(
                expit(reference_phi[j]), expit(reference_phi[others]), ~in_mask[others], ~in_mask[j], 1.0, candidate
            )
            aucs.append(roc_auc_score(in_mask[j], scores))
        expected[candidate] = np.mean(aucs)
    assert mean_auc == pytest.approx(expected, abs=1e-12)
    assert a == max(A_GRID, key=expected.get)


def test_offline_uses_calibrated_a():
    target_phi, member, reference_phi, in_mask = gaussian_population(150, 6, seed=13, spread=1.0)
    result = score_attack("rmia-offline", bundle_from_phi(target_phi, member, reference_phi, in_mask))
    a = result.parameters["a"]
    assert a in A_GRID
    expected = _pairwise_rmia(expit(target_phi), expit(reference_phi), ~in_mask, ~member, 1.0, a)
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)


def test_online_separates_members():
    target_phi, member, reference_phi, in_mask = gaussian_population(2000, 16, seed=14, spread=1.0, shift=2.0)
    scores = score_attack("rmia", bundle_from_phi(target_phi, member, reference_phi, in_mask)).scores
    assert roc_auc_score(member, scores) > 0.8


def test_offline_record_never_left_out_rejected():
    target_phi, member, reference_phi, in_mask = gaussian_population(30, 4, seed=15)
    in_mask[:, 7] = True
    with pytest.raises(InputError, match="attack 'rmia-offline'.*record_id 7 at row 7"):
        score_attack("rmia-offline", bundle_from_phi(target_phi, member, reference_phi, in_mask))


def test_gamma_must_be_positive():
    with pytest.raises(ValueError, match="gamma"):
        pairwise_scores(np.zeros(4), np.array([True, True, False, False]), gamma=0.0)


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_single_query_score_follows_ratio(gamma):
    # With one query per record, the fraction of dominated z cannot fall as the ratio grows.
    rng = np.random.default_rng(16)
    log_ratio = rng.normal(size=500)
    population = rng.random(500) < 0.5
    scores = pairwise_scores(log_ratio, population, gamma)
    order = np.argsort(log_ratio)
    ours = scores[order]
    # Records inside the population skip themselves, so compare counts of dominated z.
    counts = np.round(ours * np.where(population[order], population.sum() - 1, population.sum()))
    assert (np.diff(counts) >= 0).all()


def test_single_nonmember_rejected():
    target_phi, member, reference_phi, in_mask = gaussian_population(20, 4, seed=17)
    member = np.ones(20, bool)
    member[3] = False
    with pytest.raises(InputError, match="attack 'rmia' compares records .* at least 2 of them, got 1"):
        score_attack("rmia", bundle_from_phi(target_phi, member, reference_phi, in_mask))


def _multiclass_bundle():
    return multiclass_bundle(n_records=150, n_references=6, n_classes=4, seed=50, boost=2.0)


def _true_probability(capture):
    logits = capture.logits.astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p[np.arange(len(capture)), capture.labels]


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_online_matches_formula_on_fixed_captures(gamma):
    bundle = _multiclass_bundle()
    result = score_attack("rmia", bundle, attack_options([f"rmia.gamma={gamma}"]))
    reference_p = np.array([_true_probability(r) for r in bundle.references])
    expected = _pairwise_rmia(
        _true_probability(bundle.target), reference_p, np.ones_like(bundle.in_mask), ~bundle.member, gamma
    )
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)
    assert result.parameters["gamma"] == gamma


def test_offline_fixed_a_matches_formula():
    bundle = _multiclass_bundle()
    result = score_attack("rmia-offline", bundle, attack_options(["rmia.a=0.4", "rmia.gamma=1.5"]))
    reference_p = np.array([_true_probability(r) for r in bundle.references])
    expected = _pairwise_rmia(_true_probability(bundle.target), reference_p, ~bundle.in_mask, ~bundle.member, 1.5, 0.4)
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)
    assert result.parameters["a"] == 0.4
    assert "a_calibration_auc" not in result.parameters


def test_pairwise_scores_sort_instead_of_matrix():
    # 400,000 records against 200,000 population records: a records-by-population
    # matrix would need 80 billion entries; sorting needs a few megabytes.
    rng = np.random.default_rng(18)
    log_ratio = rng.normal(size=400_000)
    population = np.arange(400_000) % 2 == 0
    scores = pairwise_scores(log_ratio, population, gamma=1.0)
    assert scores.shape == (400_000,)
    ranks = np.argsort(np.argsort(log_ratio[population]))
    np.testing.assert_allclose(scores[population], ranks / (population.sum() - 1), atol=1e-12)
