"""`edgemia device run` against a real sshd on 127.0.0.1 (tests/sshd.py).

The "board" is this machine, reached over SSH with the x86-64-v3 profile,
so its native captures run the avx2 GEMM path whatever path the host's
captures ran. All paths of one numerics mode return identical bytes, so
every device capture must equal the host's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from report_schema import assert_matches_schema
from edgemia.runtime.capture import load_capture
from sshd import TestServer

pytestmark = pytest.mark.slow

DEVICE = "x86-64-v3"
# A python3 for the board that counts the captures started and stalls the
# 4th, so that the test can drop the connection while it runs.
COUNTING_PYTHON = """#!/bin/sh
case "$*" in
  *" capture "*)
    count=$(cat "{counter}" 2>/dev/null || echo 0)
    count=$((count + 1))
    echo "$count" > "{counter}"
    if [ "$count" = 4 ]; then sleep 60; fi ;;
esac
exec "{python}" "$@"
"""


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audit") / "run"
    result = run_cli("audit", "--out", str(out), "--epochs", "2", "--reference-models", "4",
                     "--variants", "float,int8", "--backends", "native", "--bootstrap", "40")
    assert result.returncode == 0, result.stderr
    return out


def _run_arguments(server: TestServer, run_dir: Path, remote: Path) -> list[str]:
    return ["device", "run", str(run_dir), "--device", DEVICE, *server.connection_arguments(),
            "--remote-dir", str(remote), "--backends", "native"]


def _device_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(f"captures/*/device_{DEVICE}_native-*/*.npz"))


def test_device_run_adds_identical_rows(audit_run, server, tmp_path):
    result = run_cli(*_run_arguments(server, audit_run, tmp_path / "remote"))
    assert result.returncode == 0, result.stderr

    report = assert_matches_schema(audit_run / "report.json")
    rows = [row for row in report["variants"] if row["backend"] == f"device:{DEVICE}:native"]
    assert sorted((row["name"], row["format"]) for row in rows) == [
        ("float", "onnx"), ("float", "tflite"), ("int8", "onnx"), ("int8", "tflite")
    ]
    assert all(row["capture"]["isa"] == "avx2" for row in rows)
    int8_tflite = next(row for row in rows if row["name"] == "int8" and row["format"] == "tflite")
    assert "versus_float" in int8_tflite["attacks"][0]

    agreement = report["device_agreement"]
    assert len(agreement) == 4
    for row in agreement:
        assert row["host_backend"] == "native"
        assert row["identical_records"] == row["n_records"]
        assert row["n_references"] == 4
        assert row["captures_identical"]
        assert row["max_abs_logit_difference"] == 0.0
        assert not row["leakage_differs"]
        assert all(attack["identical_scores"] for attack in row["attacks"])
    assert report["devices"][0]["board"]["machine"] == "x86_64"
    assert report["devices"][0]["captures"] == len(_device_files(audit_run)) - 4  # scores.npz per bundle

    markdown = (audit_run / "report.md").read_text()
    assert "## Devices" in markdown
    assert f"device:{DEVICE}:native" in (audit_run / "report.html").read_text()
    assert f"device:{DEVICE}:native" in markdown
    assert "identical (every capture byte-equal)" in markdown

    # Each device capture equals the host's capture of the same file.
    for path in _device_files(audit_run):
        if path.name == "scores.npz":
            continue
        host_path = path.parent.parent / path.parent.name.replace(f"device_{DEVICE}_", "") / path.name
        device, _ = load_capture(path)
        host, _ = load_capture(host_path)
        np.testing.assert_array_equal(device.raw, host.raw, err_msg=str(path))
        assert device.meta["device"]["name"] == DEVICE


def test_lost_connection_keeps_finished_captures(audit_run, server, tmp_path):
    counter = tmp_path / "captures-started"
    script = server.bin / "python3"
    script.write_text(COUNTING_PYTHON.format(counter=counter, python=sys.executable))
    script.chmod(0o755)
    for path in _device_files(audit_run):
        path.unlink()

    def fourth_started() -> bool:
        return counter.is_file() and counter.read_text().strip() == "4"

    watcher = server.kill_sessions_when(fourth_started, timeout=300.0)
    result = run_cli(*_run_arguments(server, audit_run, tmp_path / "remote"))
    watcher.join()
    assert result.returncode == 4, result.stderr
    assert "lost the connection" in result.stderr
    assert "The 3 captures finished so far are kept" in result.stderr
    kept = _device_files(audit_run)
    assert len(kept) == 3
    assert not list(audit_run.glob("captures/*/*/.*partial*"))

    result = run_cli(*_run_arguments(server, audit_run, tmp_path / "remote"))
    assert result.returncode == 0, result.stderr
    report = json.loads((audit_run / "report.json").read_text())
    device = report["devices"][0]
    assert device["reused"] == 3
    assert device["captures"] == 4 * (1 + 4 + report["perturbation"]["copies"]) - 3
