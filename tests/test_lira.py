"""LiRA: its signal, online and offline scores, against the published formulas and a closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax as scipy_log_softmax
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from edgemia.attacks import attack_options, score_attack
from edgemia.attacks.lira import offline_scores, online_scores
from edgemia.attacks.signals import logit_scaled_confidence
from edgemia.errors import InputError
from synthetic import bundle_from_phi, gaussian_population, multiclass_bundle


def _fixed_bundle():
    return multiclass_bundle(n_records=120, n_references=8, n_classes=5, seed=40, boost=1.5)


def _phi_by_formula(logits, labels):
    """phi = log p_y - log(sum of the other classes' p), from a float64 softmax."""
    p = np.exp(scipy_log_softmax(np.asarray(logits, dtype=np.float64), axis=-1))
    rows = np.arange(labels.size)
    p_true = p[..., rows, labels]
    return np.log(p_true) - np.log(p.sum(axis=-1) - p_true)


def _lira_by_formula(bundle, variance, offline=None):
    """LiRA record by record: medians, standard deviations, and scipy's normal density and CDF."""
    labels = bundle.target.labels
    target = _phi_by_formula(bundle.target.logits, labels)
    references = np.array([_phi_by_formula(r.logits, labels) for r in bundle.references])
    in_mask = bundle.in_mask
    global_in, global_out = references[in_mask].std(), references[~in_mask].std()
    scores = np.empty(labels.size)
    for i in range(labels.size):
        inside, outside = references[in_mask[:, i], i], references[~in_mask[:, i], i]
        sigma_in, sigma_out = (inside.std(), outside.std()) if variance == "per-record" else (global_in, global_out)
        if offline is None:
            scores[i] = norm.logpdf(target[i], np.median(inside), sigma_in) - norm.logpdf(
                target[i], np.median(outside), sigma_out
            )
        elif offline == "one-sided-tail":
            scores[i] = norm.cdf(target[i], np.median(outside), sigma_out)  # Pr[Z <= phi]
        else:
            scores[i] = -norm.logpdf(target[i], np.median(outside), sigma_out)
    return scores


def test_signal_matches_softmax_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(300, 7))
    labels = rng.integers(0, 7, 300)
    np.testing.assert_allclose(
        logit_scaled_confidence(logits, labels), _phi_by_formula(logits, labels), rtol=1e-9, atol=1e-9
    )


def test_signal_exact_for_confident_records():
    # p_y = 1 - 2e^-50 rounds to 1 in float64; phi = 50 - log 2 stays exact.
    logits = np.array([[50.0, 0.0, 0.0]])
    assert logit_scaled_confidence(logits, np.array([0]))[0] == pytest.approx(50.0 - np.log(2.0), rel=1e-15)


def test_signal_over_stacked_models():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 50, 3))
    labels = rng.integers(0, 3, 50)
    stacked = logit_scaled_confidence(logits, labels)
    for k in range(4):
        np.testing.assert_array_equal(stacked[k], logit_scaled_confidence(logits[k], labels))


@pytest.mark.parametrize("variance", ["per-record", "fixed"])
def test_online_matches_formula(variance):
    bundle = _fixed_bundle()
    options = attack_options([f"lira.variance={variance}"])
    scores = score_attack("lira-online", bundle, options).scores
    np.testing.assert_allclose(scores, _lira_by_formula(bundle, variance), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variance", ["per-record", "fixed"])
def test_offline_tail_matches_formula(variance):
    bundle = _fixed_bundle()
    scores = score_attack("lira-offline", bundle, attack_options([f"lira.variance={variance}"])).scores
    # The score is the z-score; the paper's statistic is its normal CDF.
    np.testing.assert_allclose(
        norm.cdf(scores), _lira_by_formula(bundle, variance, "one-sided-tail"), rtol=1e-6, atol=1e-9
    )


def test_offline_log_density_matches_formula():
    bundle = _fixed_bundle()
    options = attack_options(["lira.offline=log-density", "lira.variance=per-record"])
    scores = score_attack("lira-offline", bundle, options).scores
    np.testing.assert_allclose(scores, _lira_by_formula(bundle, "per-record", "log-density"), rtol=1e-6, atol=1e-6)


def test_pooled_variance_matches_formula():
    target_phi, _, reference_phi, in_mask = gaussian_population(200, 8, seed=2)
    scores = online_scores(target_phi, reference_phi, in_mask, variance="pooled")

    def pooled(mask):
        squares = sum(((reference_phi[mask[:, i], i] - reference_phi[mask[:, i], i].mean()) ** 2).sum() for i in range(200))
        return np.sqrt(squares / (mask.sum() - 200))

    std_in, std_out = pooled(in_mask), pooled(~in_mask)
    for i in range(200):
        mu_in = np.median(reference_phi[in_mask[:, i], i])
        mu_out = np.median(reference_phi[~in_mask[:, i], i])
        expected = norm.logpdf(target_phi[i], mu_in, std_in) - norm.logpdf(target_phi[i], mu_out, std_out)
        assert scores[i] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_closed_form_optimum():
    # Records differ in difficulty (spread 3) far more than membership shifts them (shift 1, noise 1).
    # With each record's difficulty known, the best test has AUC Phi(shift / (sqrt(2) noise)); LiRA
    # estimates the difficulty from 128 reference models and must come within 0.01 of it.
    target_phi, member, reference_phi, in_mask = gaussian_population(20000, 128, seed=5)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    optimum = norm.cdf(1.0 / np.sqrt(2.0))
    uncalibrated = norm.cdf(1.0 / np.sqrt(2.0 * (1.0 + 9.0)))
    assert roc_auc_score(member, score_attack("loss", bundle).scores) == pytest.approx(uncalibrated, abs=0.01)
    assert roc_auc_score(member, score_attack("lira-online", bundle).scores) == pytest.approx(optimum, abs=0.01)
    assert roc_auc_score(member, score_attack("lira-offline", bundle).scores) == pytest.approx(optimum, abs=0.01)


def test_offline_fewer_models_matches_direct_call():
    target_phi, member, reference_phi, in_mask = gaussian_population(300, 8, seed=4)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    np.testing.assert_allclose(
        score_attack("lira-offline", bundle).scores, offline_scores(target_phi, reference_phi, in_mask, "fixed"),
        rtol=1e-12,
    )


def test_parameters_reported():
    target_phi, member, reference_phi, in_mask = gaussian_population(50, 4, seed=6)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    rule = "auto: fixed below 64 reference models, else per-record"
    assert score_attack("lira-online", bundle).parameters == {
        "variance": "fixed", "reference_models": 4, "variance_rule": rule}
    offline = score_attack("lira-offline", bundle, attack_options(["lira.offline=log-density"])).parameters
    assert offline == {"variance": "fixed", "offline": "log-density", "reference_models": 4, "variance_rule": rule}
    chosen = score_attack("lira-online", bundle, attack_options(["lira.variance=per-record"])).parameters
    assert chosen == {"variance": "per-record", "reference_models": 4}


@pytest.mark.parametrize("n_references,variance", [(4, "fixed"), (63, "fixed"), (64, "per-record"), (80, "per-record")])
def test_auto_variance_by_reference_count(n_references, variance):
    target_phi, member, reference_phi, in_mask = gaussian_population(60, n_references, seed=11)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    for attack in ("lira-online", "lira-offline"):
        auto = score_attack(attack, bundle)
        explicit = score_attack(attack, bundle, attack_options([f"lira.variance={variance}"]))
        assert auto.parameters["variance"] == variance
        np.testing.assert_array_equal(auto.scores, explicit.scores)


def test_record_never_left_out_rejected():
    target_phi, member, reference_phi, in_mask = gaussian_population(40, 4, seed=7)
    in_mask[:, 13] = True
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    for attack in ("lira-online", "lira-offline"):
        with pytest.raises(InputError) as error:
            score_attack(attack, bundle)
        message = str(error.value)
        assert f"attack '{attack}'" in message
        assert "left out" in message
        assert "record_id 13 at row 13" in message
        assert "OUT for 0 of 4" in message


def test_online_needs_two_in_models_per_record():
    target_phi, member, reference_phi, in_mask = gaussian_population(40, 4, seed=8)
    in_mask[:, 5] = [True, False, False, False]
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    with pytest.raises(InputError, match=r"at least 2 reference model\(s\) that trained on each record.*record_id 5 at row 5"):
        score_attack("lira-online", bundle, attack_options(["lira.variance=per-record"]))
    # A global variance, which `auto` picks for 4 models, needs only one IN model per record.
    score_attack("lira-online", bundle, attack_options(["lira.variance=fixed"]))
    score_attack("lira-online", bundle)


def test_signals_without_spread_rejected():
    member = np.array([True, False] * 10)
    in_mask = np.tile(np.array([[True], [False], [True], [False]]), (1, 20))
    reference_phi = np.ones((4, 20))
    bundle = bundle_from_phi(np.zeros(20), member, reference_phi, in_mask)
    for variance in ("fixed", "pooled"):
        with pytest.raises(InputError, match="equal|do not vary"):
            score_attack("lira-offline", bundle, attack_options([f"lira.variance={variance}"]))


def test_no_references_rejected():
    bundle = bundle_from_phi(np.zeros(4), [True, False, True, False], np.zeros((0, 4)), np.zeros((0, 4), bool))
    with pytest.raises(InputError, match="needs reference models"):
        score_attack("lira-online", bundle)
