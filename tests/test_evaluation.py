"""Statistics over a bundle: slices, disparate vulnerability, newly exposed records, the records section."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from edgemia.attacks.bundle import load_bundle
from edgemia.evaluation import evaluate_bundles, newly_exposed, records_section
from edgemia.stats.bootstrap import stratified_resamples
from edgemia.stats.compare import auc_standard_error
from edgemia.stats.roc import attack_metrics
from edgemia.stats.slices import slice_report
from synthetic import bundle_from_phi, capture_from_phi, gaussian_population, write_bundle


def _bundle_with_groups(seed=60, n=400):
    target_phi, member, reference_phi, in_mask = gaussian_population(n, 4, seed=seed)
    bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
    rng = np.random.default_rng(seed)
    bundle.groups = {"sex": rng.choice(np.array(["female", "male"]), n), "age_band": rng.integers(0, 3, n)}
    return bundle


def test_slices_match_direct_computation():
    rng = np.random.default_rng(61)
    member = rng.random(600) < 0.5
    group = rng.choice(np.array(["a", "b", "c"]), 600)
    # Group "c" leaks more: its members' scores are shifted further.
    scores = rng.normal(member * np.where(group == "c", 1.5, 0.3), 1.0)
    labels = rng.integers(0, 2, 600)
    correct = rng.random(600) < 0.9
    rows, gaps = slice_report(scores, member, labels, correct, {"group": group})

    by_key = {(row["attribute"], row["value"]): row for row in rows}
    assert set(by_key) == {("class", 0), ("class", 1), ("prediction", "correct"), ("prediction", "misclassified"),
                           ("group", "a"), ("group", "b"), ("group", "c")}
    for (attribute, value), row in by_key.items():
        mask = {"class": labels == value, "group": group == value}.get(attribute)
        if attribute == "prediction":
            mask = correct if value == "correct" else ~correct
        assert row["n_members"] == int((member & mask).sum())
        assert row["auc"] == pytest.approx(roc_auc_score(member[mask], scores[mask]), abs=1e-12)
        assert row["auc_standard_error"] == pytest.approx(auc_standard_error(scores[mask], member[mask]))
        assert row["tpr_at_fpr"]["0.01"] == attack_metrics(scores[mask], member[mask]).tpr_at_fpr[0.01]

    (group_gap,) = [gap for gap in gaps if gap["attribute"] == "group"]
    aucs = {value: by_key["group", value]["auc"] for value in "abc"}
    assert group_gap["most_vulnerable"] == "c"
    assert group_gap["least_vulnerable"] == min(aucs, key=aucs.get)
    assert group_gap["gap"] == pytest.approx(max(aucs.values()) - min(aucs.values()))
    assert group_gap["p_value"] < 0.01


def test_slice_without_members_not_measurable():
    member = np.array([True, True, False, False, False])
    rows, gaps = slice_report(np.arange(5.0), member, np.zeros(5, int), np.ones(5, bool), {})
    misclassified = next(row for row in rows if row["value"] == "misclassified")
    assert misclassified == {
        "attribute": "prediction", "value": "misclassified", "n_members": 0, "n_nonmembers": 0, "measurable": False,
    }
    assert all(gap["attribute"] != "prediction" for gap in gaps)


def test_standard_error_matches_simulation():
    # DeLong's standard error of one AUC against the spread of AUCs over simulated data sets.
    member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    aucs, errors = [], []
    for seed in range(300):
        scores = np.random.default_rng(seed).normal(member * 0.8, 1.0)
        aucs.append(roc_auc_score(member, scores))
        errors.append(auc_standard_error(scores, member))
    assert np.mean(errors) == pytest.approx(np.std(aucs), rel=0.1)


def test_newly_exposed_records():
    member = np.array([True] * 5 + [False] * 100)
    record_id = np.arange(105) + 1000
    baseline_scores = np.r_[[9.0, 1.0, 1.0, 1.0, 1.0], np.linspace(0.0, 2.0, 100)]
    # 1% of 100 non-members allows one false positive, but the top non-member (2.0) adds no member,
    # so the float threshold is the top member's score, 9.0.
    baseline = attack_metrics(baseline_scores, member)
    assert baseline.threshold_at_fpr[0.01] == 9.0
    variant_scores = baseline_scores.copy()
    variant_scores[[1, 2]] = 9.5  # two members cross the threshold
    variant_scores[0] = 0.5  # one member falls below it
    variant_scores[50] = 10.0  # one non-member crosses it
    exposed = newly_exposed(variant_scores, baseline_scores, baseline, member, record_id)
    assert exposed == {
        "fpr_level": 0.01,
        "float_threshold": 9.0,
        "record_ids": [1001, 1002],
        "n_members": 2,
        "n_nonmembers": 1,
        "n_members_no_longer_exposed": 1,
    }


def test_newly_exposed_not_measurable_with_few_nonmembers():
    member = np.array([True, True, False, False])
    scores = np.array([3.0, 2.0, 1.0, 0.0])
    assert newly_exposed(scores, scores, attack_metrics(scores, member), member, np.arange(4)) is None


def test_evaluate_bundles_compares_with_float(tmp_path):
    float_bundle = _bundle_with_groups()
    int8_bundle = _bundle_with_groups()
    # The int8 variant's target leaks more: its phi moves further for members.
    int8_bundle.target = capture_from_phi(
        float_bundle.target.logits[:, 1].astype(np.float64) + 0.8 * float_bundle.member
    )
    bundles = {("float", "native"): write_and_load(tmp_path / "float", float_bundle),
               ("int8", "native"): write_and_load(tmp_path / "int8", int8_bundle)}
    resamples = stratified_resamples(float_bundle.member, 300, seed=0)
    evaluations = evaluate_bundles(bundles, ["loss", "lira-online"], resamples)

    loss = evaluations["int8", "native"].rows["loss"]
    versus = loss["versus_float"]
    assert versus["auc_difference"] > 0.05
    assert versus["auc_difference_bootstrap_p_value"] < 0.01
    assert set(versus["tpr_at_fpr_difference_p_value"]) == {"0.0", "0.001", "0.01"}
    assert versus["newly_exposed"]["n_members"] > 0
    assert "versus_float" not in evaluations["float", "native"].rows["loss"]
    assert {row["attribute"] for row in loss["slices"]} == {"class", "prediction", "sex", "age_band"}
    assert {gap["attribute"] for gap in loss["disparate_vulnerability"]} == {"prediction", "sex", "age_band"}

    section = records_section(bundles, evaluations)
    assert section["record_id"] == list(range(400))
    assert section["groups"]["sex"][:3] == float_bundle.groups["sex"][:3].tolist()
    assert section["groups"]["age_band"] == float_bundle.groups["age_band"].tolist()
    np.testing.assert_array_equal(section["scores"]["int8"]["native"]["loss"], evaluations["int8", "native"].scores["loss"])


def write_and_load(directory, bundle):
    return load_bundle(write_bundle(directory, bundle))


def test_bundle_round_trip_keeps_groups_and_perturbed(tmp_path):
    bundle = _bundle_with_groups()
    bundle.perturbed = [capture_from_phi(np.full(400, 1.0)), capture_from_phi(np.full(400, -1.0))]
    loaded = write_and_load(tmp_path / "bundle", bundle)
    assert loaded.n_perturbed == 2
    np.testing.assert_array_equal(loaded.groups["sex"], bundle.groups["sex"])
    np.testing.assert_array_equal(loaded.perturbed[1].logits[:, 1], -1.0)


def test_perturbed_files_numbered_without_gaps(tmp_path):
    from edgemia.errors import InputError

    bundle = _bundle_with_groups()
    bundle.perturbed = [capture_from_phi(np.zeros(400))]
    directory = write_bundle(tmp_path / "bundle", bundle)
    (directory / "perturbed-0.npz").rename(directory / "perturbed-2.npz")
    missing = directory / "perturbed-0.npz"
    with pytest.raises(InputError, match=rf"{missing}: perturbed copy capture not found, but perturbed-2\.npz exists"):
        load_bundle(directory)


def test_gaussian_gap_closed_form():
    # Sanity check of the closed form used elsewhere: a unit shift gives AUC Phi(1 / sqrt 2).
    rng = np.random.default_rng(62)
    member = np.r_[np.ones(50000, bool), np.zeros(50000, bool)]
    assert roc_auc_score(member, rng.normal(member * 1.0, 1.0)) == pytest.approx(norm.cdf(2**-0.5), abs=0.005)


def _attack_stage_peak(out, n_bundles: int, n_references: int) -> tuple[int, dict]:
    """Peak Python memory of the audit's attack stage over `n_bundles` bundles written under `out`."""
    import contextlib
    import tracemalloc
    from types import SimpleNamespace

    from edgemia.audit import _evaluate_captures
    from edgemia.references import capture_dir
    from synthetic import multiclass_bundle

    combinations = [(name, "native", "tflite") for name in ("float", "int8", "int4", "int16x8")[:n_bundles]]
    for index, (name, backend, model_format) in enumerate(combinations):
        bundle = multiclass_bundle(1500, n_references, 10, index, 1.0)
        write_bundle(capture_dir(out, name, backend, model_format), bundle)

    @contextlib.contextmanager
    def stage(label, total):
        yield lambda: None

    config = SimpleNamespace(bootstrap=0, seed=0, attack_options=[], attacks=["loss", "lira-online", "rmia"])
    tracemalloc.start()
    try:
        bundles, _ = _evaluate_captures(
            config, out, combinations, {name: name for name, _, _ in combinations}, bundle.member, stage
        )
        return tracemalloc.get_traced_memory()[1], bundles
    finally:
        tracemalloc.stop()


def test_attack_stage_holds_one_bundle_of_references_at_a_time(tmp_path):
    one, _ = _attack_stage_peak(tmp_path / "one", 1, 32)
    four, bundles = _attack_stage_peak(tmp_path / "four", 4, 32)
    loaded = load_bundle(tmp_path / "one" / "captures" / "float" / "native-tflite")
    reference_bytes = sum(reference.logits.nbytes + reference.raw.nbytes for reference in loaded.references)
    # Holding every bundle's reference captures at once added three bundles' worth to the peak.
    assert four - one < 0.5 * reference_bytes
    assert all(bundle.n_references == 32 and not bundle.references for bundle in bundles.values())
