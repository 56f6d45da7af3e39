"""The default audit end to end: real training, real TFLite files, LiteRT and the native kernel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgemia.data.records import load_records
from edgemia.runtime.capture import load_capture, run_capture
from edgemia.runtime.io import quantize_input
from edgemia.runtime.litert import LiteRTSession
from edgemia.runtime.native import NativeSession
from edgemia.runtime.tflite_model import read_tflite
from edgemia.util import sha256_file

pytestmark = pytest.mark.slow


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
    combos = {(v["name"], v["backend"]) for v in on_disk["variants"]}
    assert combos == {("float", "litert"), ("float", "native"), ("int8", "litert"), ("int8", "native")}
    for variant in on_disk["variants"]:
        artifact = variant["artifact"]
        assert sha256_file(out / artifact["path"]) == artifact["sha256"]
        assert (out / artifact["path"]).stat().st_size == artifact["bytes"]
        assert set(variant["accuracy"]) == {"members", "nonmembers"}
        assert {a["name"] for a in variant["attacks"]} == {"loss", "confidence"}
        for attack in variant["attacks"]:
            assert 0.0 <= attack["auc"] <= 1.0
            # 899 non-members cannot resolve an FPR of 0.1%.
            assert attack["tpr_at_fpr"]["0.001"] is None
            assert attack["fpr_achieved"]["0.001"] is None
            assert attack["fpr_achieved"]["0.01"] <= 0.01
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
    rows = {row["variant"]: row for row in report["backend_agreement"]}
    assert rows["int8"]["identical_records"] == rows["int8"]["n_records"] == 1797
    native, litert = (
        next(v for v in report["variants"] if v["name"] == "int8" and v["backend"] == b)
        for b in ("native", "litert")
    )
    assert native["attacks"] == litert["attacks"]


def test_capture_bundle_files(default_run):
    out, _ = default_run
    capture, extras = load_capture(out / "captures" / "int8" / "native" / "target.npz")
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
