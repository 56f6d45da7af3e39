"""The command line as a user meets it: exit codes, messages and files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, run_main_without_tensorflow
from edgemia.runtime.capture import load_capture


def test_unknown_dataset_lists_valid_names(tmp_path):
    result = run_cli("audit", "--dataset", "mnist", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown data set 'mnist'" in result.stderr
    assert "digits, breast-cancer" in result.stderr


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--variants", "float,int3", "valid variants: float, int8"),
        ("--backends", "litert,onnx", "valid backends: native, litert"),
        ("--attacks", "loss,label-only", "valid attacks: loss, confidence, lira, lira-offline, rmia, rmia-offline"),
    ],
)
def test_unknown_list_entry_lists_valid_names(tmp_path, option, value, message):
    result = run_cli("audit", option, value, "--out", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr


def test_negative_seed_is_usage_error(tmp_path):
    result = run_cli("audit", "--seed", "-1", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "negative" in result.stderr


def test_unknown_capture_backend(tmp_path):
    result = run_cli("capture", "--model", "m.tflite", "--data", "r.npz", "--backend", "tpu",
                     "--out", str(tmp_path / "c.npz"))
    assert result.returncode == 2
    assert "valid backends: native, litert" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "litert"])
def test_capture_command_writes_contract_file(default_run, tmp_path, backend):
    out, _ = default_run
    target = tmp_path / "capture.npz"
    result = run_cli("capture", "--model", str(out / "artifacts" / "int8.tflite"),
                     "--data", str(out / "data" / "members.npz"), "--backend", backend,
                     "--threads", "2", "--out", str(target))
    assert result.returncode == 0, result.stderr
    capture, extras = load_capture(target)
    assert capture.logits.shape == (898, 10)
    assert capture.labels.dtype == np.int64
    assert capture.meta["backend"] == backend
    assert capture.meta["threads"] == 2
    assert extras == {}
    with np.load(target) as archive:
        assert set(archive.files) == {"logits", "labels", "record_id", "raw", "meta"}
        assert json.loads(str(archive["meta"]))["model_sha256"] == capture.meta["model_sha256"]


@pytest.mark.slow
def test_capture_does_not_import_tensorflow(default_run, tmp_path):
    out, _ = default_run
    argv = ["capture", "--model", str(out / "artifacts" / "int8.tflite"), "--data",
            str(out / "data" / "records.npz"), "--backend", "native", "--out", str(tmp_path / "c.npz")]
    result = run_main_without_tensorflow(argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


@pytest.fixture()
def synthetic_bundle(tmp_path):
    from synthetic import bundle_from_phi, gaussian_population, write_bundle

    target_phi, member, reference_phi, in_mask = gaussian_population(200, 4, seed=30)
    return write_bundle(tmp_path / "bundle", bundle_from_phi(target_phi, member, reference_phi, in_mask))


def test_attack_command_writes_scores(synthetic_bundle, tmp_path):
    out = tmp_path / "results"
    result = run_cli("attack", str(synthetic_bundle), "--bootstrap", "200", "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = json.loads((out / "attack.json").read_text())
    assert [row["name"] for row in written["attacks"]] == [
        "loss", "confidence", "lira", "lira-offline", "rmia", "rmia-offline"
    ]
    assert written["bootstrap"] == {"resamples": 200, "confidence": 0.95, "seed": 0}
    with np.load(out / "scores.npz") as scores:
        assert scores["lira"].shape == (200,)
    assert "rmia-offline" in result.stdout


def test_attack_command_without_references(synthetic_bundle):
    for path in synthetic_bundle.glob("reference-*.npz"):
        path.unlink()
    result = run_cli("attack", str(synthetic_bundle), "--bootstrap", "0")
    assert result.returncode == 0, result.stderr
    written = json.loads((synthetic_bundle / "attack.json").read_text())
    assert [row["name"] for row in written["attacks"]] == ["loss", "confidence"]
    assert written["bootstrap"] is None
    assert "ci" not in written["attacks"][0]

    result = run_cli("attack", str(synthetic_bundle), "--attacks", "lira")
    assert result.returncode == 2
    assert f"{synthetic_bundle}: attack 'lira' needs reference models" in result.stderr


def test_attack_command_bad_bundle(synthetic_bundle):
    path = synthetic_bundle / "reference-1.npz"
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "in_mask"}
    np.savez(path, **arrays)
    result = run_cli("attack", str(synthetic_bundle))
    assert result.returncode == 2
    assert f"{path}: field 'in_mask' is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_attack_command_unknown_attack(synthetic_bundle):
    result = run_cli("attack", str(synthetic_bundle), "--attacks", "loss,label-only")
    assert result.returncode == 2
    assert "unknown attack 'label-only'" in result.stderr


def test_attack_command_does_not_import_tensorflow(synthetic_bundle):
    result = run_main_without_tensorflow(["attack", str(synthetic_bundle), "--bootstrap", "50"], cwd=synthetic_bundle)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_audit_reference_attacks_need_references(tmp_path):
    result = run_cli("audit", "--references", "0", "--attacks", "loss,rmia", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "attacks rmia need at least 4 reference models" in result.stderr


def test_audit_odd_reference_count(tmp_path):
    result = run_cli("audit", "--references", "3", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "even number of at least 2, got 3" in result.stderr
