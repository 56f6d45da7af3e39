"""The default audit end to end: real training, real TFLite and ONNX files, LiteRT, ONNX Runtime and the native kernel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from edgemia.attacks.bundle import load_bundle
from edgemia.data.records import load_records
from edgemia.runtime.capture import load_capture, run_capture
from edgemia.runtime.io import quantize_input
from edgemia.runtime.litert import LiteRTSession
from edgemia.runtime.native import NativeSession
from edgemia.runtime.tflite_model import read_tflite
from edgemia.util import sha256_file

pytestmark = pytest.mark.slow

ALL_ATTACKS = [
    "loss", "confidence", "entropy", "modified-entropy", "label-gap", "label-augment",
    "lira-online", "lira-offline", "rmia", "rmia-offline", "shadow",
]


def test_native_int8_equals_litert_on_every_record(default_run):
    out, _ = default_run
    records = load_records(out / "data" / "records.npz")
    assert len(records) == 1797
    model = read_tflite(out / "artifacts" / "int8.tflite")
    x = quantize_input(records.x, model.input())
    expected = LiteRTSession(model, threads=2).run(x)
    for threads in (1, 2, 5):
        raw = NativeSession(model, threads=threads).run(x)
        assert raw.dtype == np.int8
        np.testing.assert_array_equal(raw, expected)


def test_native_float_close_to_litert(default_run):
    out, _ = default_run
    records = load_records(out / "data" / "records.npz")
    model = read_tflite(out / "artifacts" / "float.tflite")
    native = NativeSession(model).run(records.x)
    litert = LiteRTSession(model).run(records.x)
    np.testing.assert_allclose(native, litert, rtol=0, atol=1e-4)
    assert (native.argmax(1) == litert.argmax(1)).all()


def test_int8_model_is_full_integer(default_run):
    out, _ = default_run
    model = read_tflite(out / "artifacts" / "int8.tflite")
    assert model.input().dtype == np.int8
    assert model.output().dtype == np.int8
    kinds = {op.kind for op in model.operators}
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= kinds
    for op in model.operators:
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            assert model.tensors[op.inputs[1]].dtype == np.int8


def test_report_json_fields(default_run):
    out, report = default_run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["schema_version"] == 1
    assert on_disk["dataset"]["name"] == "digits"
    assert on_disk["dataset"]["n_members"] == 898
    assert on_disk["dataset"]["n_nonmembers"] == 899
    combos = [(v["name"], v["backend"], v["format"]) for v in on_disk["variants"]]
    expected = [
        (name, backend, model_format)
        for name in ("float", "int8", "int4", "prune:0.5", "prune:0.8+int8")
        for backend, model_format in (("litert", "tflite"), ("onnxruntime", "onnx"), ("native", "tflite"),
                                      ("native", "onnx"))
        # The native kernel does not run 4-bit TFLite weights.
        if (name, backend, model_format) != ("int4", "native", "tflite")
    ]
    assert combos == expected
    assert on_disk["skipped"] == [
        {"variant": "int4", "backend": "native", "format": "tflite", "reason": on_disk["skipped"][0]["reason"]}
    ]
    assert "int4" in on_disk["skipped"][0]["reason"]
    for variant in on_disk["variants"]:
        artifact = variant["artifact"]
        assert sha256_file(out / artifact["path"]) == artifact["sha256"]
        assert (out / artifact["path"]).stat().st_size == artifact["bytes"]
        assert set(variant["accuracy"]) == {"members", "nonmembers"}
        assert [a["name"] for a in variant["attacks"]] == ALL_ATTACKS
        for attack in variant["attacks"]:
            assert 0.0 <= attack["auc"] <= 1.0
            # 899 non-members cannot resolve an FPR of 0.1%.
            assert attack["tpr_at_fpr"]["0.001"] is None
            assert attack["fpr_achieved"]["0.001"] is None
            assert attack["fpr_achieved"]["0.01"] <= 0.01
            assert attack["fpr_achieved"]["0.0"] == 0.0
            assert 0.0 <= attack["ppv_at_fpr"]["0.01"] <= 1.0
            assert attack["epsilon_lower_bound"] >= 0.0
            assert 0.5 <= attack["balanced_accuracy"] <= 1.0
            assert attack["advantage"] >= 0.0
    assert (out / "report.md").read_text().startswith("# edgemia audit: digits")


def test_target_overfits(default_run):
    _, report = default_run
    accuracy = report["target"]["accuracy"]
    assert accuracy["members"] == 1.0
    assert 0.9 < accuracy["nonmembers"] < accuracy["members"]


def test_int8_backends_agree_in_report(default_run):
    _, report = default_run
    rows = {(row["variant"], row["format"]): row for row in report["backend_agreement"]}
    for key in (("int8", "tflite"), ("int8", "onnx"), ("prune:0.8+int8", "tflite"), ("prune:0.8+int8", "onnx")):
        assert rows[key]["identical_records"] == rows[key]["n_records"] == 1797, key
    native, litert = (
        next(v for v in report["variants"] if v["name"] == "int8" and v["backend"] == b and v["format"] == "tflite")
        for b in ("native", "litert")
    )
    # Identical scores give identical rows, except the comparison with float, whose
    # two backends differ by about 1e-5 in their logits.
    def without_comparison(rows):
        return [{key: value for key, value in row.items() if key != "versus_float"} for row in rows]

    assert without_comparison(native["attacks"]) == without_comparison(litert["attacks"])


def test_capture_bundle_files(default_run):
    out, _ = default_run
    capture, extras = load_capture(out / "captures" / "int8" / "native-tflite" / "target.npz")
    assert capture.logits.dtype == np.float32
    assert capture.logits.shape == (1797, 10)
    assert capture.raw.dtype == np.int8
    assert extras["member"].sum() == 898
    assert capture.meta["backend"] == "native"
    assert capture.meta["numerics"] == "litert"
    assert capture.meta["model_sha256"] == sha256_file(out / "artifacts" / "int8.tflite")
    for key in ("isa", "threads", "inference_seconds", "host", "edgemia_version"):
        assert key in capture.meta


def test_capture_is_repeatable(default_run):
    out, _ = default_run
    records = load_records(out / "data" / "records.npz")
    first = run_capture(out / "artifacts" / "int8.tflite", records, "native", threads=1)
    second = run_capture(out / "artifacts" / "int8.tflite", records, "native", threads=2)
    np.testing.assert_array_equal(first.raw, second.raw)
    np.testing.assert_array_equal(first.logits, second.logits)


def test_reference_bundles_complete(default_run):
    out, report = default_run
    assert report["references"]["count"] == 16
    for row in report["variants"]:
        slug = row["name"].replace(":", "_")
        bundle = load_bundle(out / "captures" / slug / f"{row['backend']}-{row['format']}")
        assert bundle.n_references == 16
        # Every record is IN for exactly 8 of the 16 reference models.
        assert (bundle.in_mask.sum(axis=0) == 8).all()
        for reference in bundle.references:
            assert reference.meta["backend"] == row["backend"]
            assert reference.meta["model_file"].endswith(f".{row['format']}")
        assert bundle.references[3].meta["reference"]["k"] == 3


def test_reference_models_share_recipe_and_masks(default_run):
    out, report = default_run
    float_bundle = load_bundle(out / "captures" / "float" / "native-tflite")
    int8_bundle = load_bundle(out / "captures" / "int8" / "litert-tflite")
    np.testing.assert_array_equal(float_bundle.in_mask, int8_bundle.in_mask)
    for model in report["references"]["models"]:
        int8_model = read_tflite(out / model["artifacts"]["int8"]["path"])
        assert int8_model.input().dtype == np.int8
        assert model["accuracy"]["in"] == 1.0
        assert model["n_in"] == int(float_bundle.in_mask[model["k"]].sum())
    seeds = {model["training_seed"] for model in report["references"]["models"]}
    assert len(seeds) == 16


def test_reference_attacks_in_report(default_run):
    _, report = default_run
    for variant in report["variants"]:
        rows = {attack["name"]: attack for attack in variant["attacks"]}
        assert list(rows) == ALL_ATTACKS
        for attack in rows.values():
            low, high = attack["ci"]["auc"]
            assert low <= attack["auc"] <= high
            assert attack["ci"]["tpr_at_fpr"]["0.001"] is None
            assert ("versus_float" in attack) == (variant["name"] != "float")
        assert rows["rmia-offline"]["parameters"]["a"] in [round(0.1 * i, 1) for i in range(11)]
        # Calibrating per record separates members better than a global loss threshold.
        assert rows["lira-online"]["auc"] > rows["loss"]["auc"]
        assert rows["rmia"]["auc"] > rows["loss"]["auc"]
        assert rows["lira-online"]["parameters"]["variance"] == "fixed"  # auto, with 16 reference models
        assert rows["label-augment"]["parameters"] == {"queries": 5}


def test_lira_beats_loss_at_low_fpr(default_run):
    _, report = default_run
    for variant in report["variants"]:
        if variant["name"] == "float":
            rows = {attack["name"]: attack for attack in variant["attacks"]}
            assert rows["lira-online"]["tpr_at_fpr"]["0.01"] > rows["loss"]["tpr_at_fpr"]["0.01"]


def test_perturbed_captures_and_records(default_run):
    out, report = default_run
    bundle = load_bundle(out / "captures" / "int8" / "native-tflite")
    assert bundle.n_perturbed == 4
    assert bundle.perturbed[0].meta["perturbation"] == report["perturbation"]["description"]
    shifted = load_records(out / "data" / "perturbed-0.npz")
    records = load_records(out / "data" / "records.npz")
    np.testing.assert_array_equal(shifted.x[:, :, 1:], records.x[:, :, :-1])
    section = report["records"]
    assert len(section["record_id"]) == 1797
    assert section["member"] == bundle.member.tolist()
    with np.load(out / "captures" / "int8" / "native-tflite" / "scores.npz") as scores:
        assert section["scores"]["int8"]["native-tflite"]["lira-online"] == scores["lira-online"].tolist()


def test_newly_exposed_and_slices(default_run):
    _, report = default_run
    int8 = next(v for v in report["variants"]
                if v["name"] == "int8" and v["backend"] == "native" and v["format"] == "tflite")
    for attack in int8["attacks"]:
        exposed = attack["versus_float"]["newly_exposed"]
        assert exposed["n_members"] == len(exposed["record_ids"])
        assert {row["attribute"] for row in attack["slices"]} == {"class", "prediction"}
        assert sum(row["n_members"] for row in attack["slices"] if row["attribute"] == "class") == 898


def test_int8_comparison_with_float(default_run):
    _, report = default_run
    def row(name):
        return next(v for v in report["variants"]
                    if v["name"] == name and v["backend"] == "native" and v["format"] == "onnx")

    int8 = row("int8")
    float_rows = {attack["name"]: attack for attack in row("float")["attacks"]}
    for attack in int8["attacks"]:
        versus = attack["versus_float"]
        assert versus["auc_difference"] == pytest.approx(attack["auc"] - float_rows[attack["name"]]["auc"], abs=1e-12)
        assert 0.0 <= versus["auc_difference_p_value"] <= 1.0
        low, high = versus["auc_difference_ci"]
        assert low <= high


def test_attack_command_reproduces_report(default_run, tmp_path):
    out, report = default_run
    result = run_cli("attack", "--captures", str(out / "captures"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["schema_version"] == report["schema_version"]
    assert written["records"]["scores"] == report["records"]["scores"]
    ours_by_key = {(row["name"], row["backend"], row["format"]): row for row in written["variants"]}
    assert set(ours_by_key) == {(row["name"], row["backend"], row["format"]) for row in report["variants"]}
    for theirs in report["variants"]:
        ours = ours_by_key[theirs["name"], theirs["backend"], theirs["format"]]
        assert ours["accuracy"] == theirs["accuracy"]
        for our_attack, their_attack in zip(ours["attacks"], theirs["attacks"]):
            assert our_attack == their_attack
    with np.load(tmp_path / "int8" / "native-tflite" / "scores.npz") as scores:
        assert set(scores.files) == {"record_id", "member", *ALL_ATTACKS}


def test_every_variant_reports_accuracy(default_run):
    _, report = default_run
    accuracy = {}
    for row in report["variants"]:
        assert set(row["accuracy"]) == {"members", "nonmembers"}
        accuracy[row["name"], row["backend"], row["format"]] = row["accuracy"]
    assert {name for name, _, _ in accuracy} == {"float", "int8", "int4", "prune:0.5", "prune:0.8+int8"}
    for (name, backend, model_format), values in accuracy.items():
        assert values["nonmembers"] > 0.9, (name, backend, model_format)


def test_int8_accuracy_close_to_float(default_run):
    _, report = default_run
    rows = {(row["name"], row["backend"], row["format"]): row["accuracy"] for row in report["variants"]}
    for backend, model_format in (("litert", "tflite"), ("onnxruntime", "onnx")):
        for split in ("members", "nonmembers"):
            drop = rows["float", backend, model_format][split] - rows["int8", backend, model_format][split]
            assert abs(drop) <= 0.015, (backend, model_format, split)


def test_pruned_sparsity_in_report(default_run):
    out, report = default_run
    for name, target in (("prune:0.5", 0.5), ("prune:0.8+int8", 0.8)):
        summary = report["compression"][name]
        zeros = sum(row["zeros"] for row in summary["layer_sparsity"])
        size = sum(row["size"] for row in summary["layer_sparsity"])
        assert abs(zeros / size - target) <= 0.01
        for entry in summary["files"].values():
            assert entry["weight_sparsity"]["sparsity"] >= target - 0.01
            assert sha256_file(out / entry["path"]) == entry["sha256"]
        assert (out / summary["keras_model"]["path"]).is_file()
    for entry in report["compression"]["float"]["files"].values():
        assert entry["max_abs_difference_from_keras"] < 1e-3


def test_int4_files_in_report(default_run):
    _, report = default_run
    files = report["compression"]["int4"]["files"]
    assert "com.microsoft.MatMulNBits" in files["onnx"]["operators"]
    assert files["tflite"]["bytes"] < report["compression"]["float"]["files"]["tflite"]["bytes"]
