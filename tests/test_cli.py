"""The command line as a user meets it: exit codes, messages and files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
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
    code = (
        "import sys\n"
        "from edgemia.cli import main\n"
        f"rc = main(['capture', '--model', {str(out / 'artifacts' / 'int8.tflite')!r}, "
        f"'--data', {str(out / 'data' / 'records.npz')!r}, '--backend', 'native', "
        f"'--out', {str(tmp_path / 'c.npz')!r}])\n"
        "assert rc == 0, rc\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print('LOADED', loaded)\n"
    )
    # Started in tmp_path so that the installed package is imported, not the source tree.
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
