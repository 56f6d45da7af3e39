"""Keyed tasks: the verified store, reuse and resume of audits, and the local and Ray executors."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from edgemia.errors import InputError
from edgemia.tasks import TaskCounts, TaskStore, array_digest, make_executor, task_key

# A small audit: a few seconds per model on the smallest built-in data set.
SMALL_AUDIT = (
    "audit", "--dataset", "breast-cancer", "--epochs", "3", "--reference-models", "4",
    "--variants", "float,int8", "--backends", "native", "--bootstrap", "100",
)


def _metrics(report: dict) -> dict:
    """Everything in a report that an audit computes from its models, without timings."""
    return {
        "target_accuracy": report["target"]["accuracy"],
        "references": [(model["k"], model["accuracy"], model["n_in"]) for model in report["references"]["models"]],
        "variants": [
            (row["name"], row["backend"], row["format"], row["accuracy"], row["attacks"])
            for row in report["variants"]
        ],
        "records": report["records"],
        "skipped": report["skipped"],
    }


def _manifests(out: Path, kind: str) -> list[Path]:
    paths = []
    for path in sorted((out / "tasks").glob("*.json")):
        if json.loads(path.read_text())["kind"] == kind:
            paths.append(path)
    return paths


# -- store and keys (fast) ---------------------------------------------------


def _process_id(item: int) -> tuple[int, int]:
    return item, os.getpid()


def test_local_executor_replaces_workers_per_batch(monkeypatch):
    from edgemia.tasks import executors

    monkeypatch.setattr(executors, "TASKS_PER_WORKER", 2)
    results = executors.LocalExecutor(2).map(_process_id, list(range(8)))
    assert [item for item, _ in results] == list(range(8))
    # Batches of 2 workers x 2 tasks: no worker process serves two batches.
    batches = [{pid for _, pid in results[start:start + 4]} for start in range(0, 8, 4)]
    assert not batches[0] & batches[1]
    assert os.getpid() not in batches[0] | batches[1]


def test_store_reuses_unchanged_files(tmp_path):
    store = TaskStore(tmp_path)
    file = tmp_path / "artifacts" / "model.bin"
    file.parent.mkdir()
    file.write_bytes(b"weights")
    store.save("k1", "demo", "demo task", [file], {"value": 3})
    assert store.verified_result("k1", "demo task") == {"value": 3}
    assert store.verified_result("other", "demo task") is None


def test_store_rejects_changed_bytes(tmp_path, caplog):
    store = TaskStore(tmp_path)
    file = tmp_path / "model.bin"
    file.write_bytes(b"weights")
    store.save("k1", "demo", "demo task", [file], {"value": 3})
    file.write_bytes(b"weightz")
    with caplog.at_level(logging.WARNING):
        assert store.verified_result("k1", "demo task") is None
    assert str(file) in caplog.text
    assert "changed" in caplog.text


def test_store_rejects_missing_file(tmp_path, caplog):
    store = TaskStore(tmp_path)
    file = tmp_path / "model.bin"
    file.write_bytes(b"weights")
    store.save("k1", "demo", "demo task", [file], {})
    file.unlink()
    with caplog.at_level(logging.WARNING):
        assert store.verified_result("k1", "demo task") is None
    assert str(file) in caplog.text


def test_store_rejects_broken_manifest(tmp_path, caplog):
    store = TaskStore(tmp_path)
    store.directory.mkdir()
    store.manifest_path("k1").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert store.verified_result("k1", "demo task") is None
    assert "unreadable task manifest" in caplog.text


def test_task_key_depends_on_inputs():
    base = task_key("reference-training", {"k": 1, "seed": 0})
    assert base == task_key("reference-training", {"seed": 0, "k": 1})
    assert base != task_key("reference-training", {"k": 2, "seed": 0})
    assert base != task_key("target-training", {"k": 1, "seed": 0})


def test_array_digest_ignores_file_bytes_but_not_values():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert array_digest(x) == array_digest(x.copy())
    assert array_digest(x) != array_digest(x.astype(np.float64))
    assert array_digest(x) != array_digest(x.reshape(3, 2))
    assert array_digest(x, None) != array_digest(x)


def test_counts_sum_kinds():
    counts = TaskCounts()
    counts.reused["a"] += 2
    counts.computed["b"] += 1
    assert counts.to_dict() == {
        "reused": 2, "computed": 1, "kinds": {"a": {"reused": 2, "computed": 0}, "b": {"reused": 0, "computed": 1}},
    }


def test_executor_names_checked():
    with pytest.raises(InputError, match="unknown executor 'dask'"):
        make_executor("dask", 2)
    with pytest.raises(InputError, match="needs --executor ray"):
        make_executor("local", 2, "127.0.0.1:6379")


def test_ray_address_without_ray_executor_exits_2(tmp_path):
    result = run_cli(*SMALL_AUDIT, "--out", str(tmp_path / "run"), "--ray-address", "127.0.0.1:6379")
    assert result.returncode == 2
    assert "--ray-address 127.0.0.1:6379 needs --executor ray" in result.stderr


def test_unknown_executor_exits_2(tmp_path):
    result = run_cli(*SMALL_AUDIT, "--out", str(tmp_path / "run"), "--executor", "dask")
    assert result.returncode == 2
    assert "dask" in result.stderr


def test_local_executor_keeps_order():
    executor = make_executor("local", 2)
    with executor:
        assert executor.map(abs, [-3, 1, -2]) == [3, 1, 2]


# -- whole audits (slow) -------------------------------------------------------


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted small audit with the local executor and one worker."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    # Wide enough that the console writes each log record on one line.
    result = run_cli(*SMALL_AUDIT, "--jobs", "1", "--out", str(out), env={**os.environ, "COLUMNS": "1000"})
    assert result.returncode == 0, result.stderr
    (out.parent / "stderr.txt").write_text(result.stderr)
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["computed"] == 15
    assert report["tasks"]["reused"] == 0
    return out, report


@pytest.mark.slow
def test_reference_clamping_warned_once(baseline):
    out, report = baseline
    lines = (out.parent / "stderr.txt").read_text().splitlines()
    shares = [model["input_clamped"]["int8"] for model in report["references"]["models"]]
    assert report["references"]["models"][0]["input_clamped"]["float"] == 0.0
    # The int8 reference models of this audit clamp a few input values, so the summary line is expected.
    assert sum(share > 0 for share in shares) >= 1
    summaries = [line for line in lines if "reference models were clamped" in line]
    assert len(summaries) == 1
    assert f"int8: the int8 inputs of {sum(share > 0 for share in shares)} of 4 reference models" in summaries[0]
    assert f"up to {100 * max(shares):.2f}% of the values" in summaries[0]
    # The per-capture warning comes from the int8 target's capture alone: not from each reference
    # model, nor from each perturbed copy of the records.
    per_capture = [line for line in lines if "of the input values lie outside the int8 input range" in line]
    assert len(per_capture) <= 1


@pytest.mark.slow
def test_report_gives_peak_memory(baseline):
    _, report = baseline
    peak = report["peak_memory_mb"]
    # The audit process imports TensorFlow, which alone takes a few hundred MB.
    assert 200 < peak["audit"] < 24 * 1024
    assert peak["workers"] >= 0


def _rerun(baseline, tmp_path: Path, **changes: str):
    """Copy the baseline run and run the small audit into the copy again; return (run directory, result).

    `changes` maps an option of SMALL_AUDIT (without its dashes) to a new value.
    """
    out = tmp_path / "run"
    shutil.copytree(baseline[0], out)
    options = [*SMALL_AUDIT]
    for name, value in changes.items():
        options[options.index(f"--{name.replace('_', '-')}") + 1] = value
    result = run_cli(*options, "--jobs", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_rerun_reuses_every_task(baseline, tmp_path):
    out, result = _rerun(baseline, tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["reused"] == 15
    assert report["tasks"]["computed"] == 0
    assert "Tasks: 15 reused from the run directory, 0 computed." in result.stdout
    assert _metrics(report) == _metrics(baseline[1])


@pytest.mark.slow
def test_more_variants_train_no_model(baseline, tmp_path):
    out, _ = _rerun(baseline, tmp_path, variants="float,int8,int8-dynamic")
    report = json.loads((out / "report.json").read_text())
    kinds = report["tasks"]["kinds"]
    assert kinds["target-training"] == {"reused": 1, "computed": 0}
    assert kinds["reference-training"] == {"reused": 4, "computed": 0}
    assert kinds["target-variant"] == {"reused": 2, "computed": 1}
    assert kinds["reference-variant"] == {"reused": 8, "computed": 4}
    earlier = _metrics(baseline[1])["variants"]
    assert [row for row in _metrics(report)["variants"] if row[0] != "int8-dynamic"] == earlier


@pytest.mark.slow
def test_attack_skips_variants_dropped_from_audit(baseline, tmp_path):
    out, _ = _rerun(baseline, tmp_path, variants="float")
    # The int8 captures stay for a later rerun to reuse, but they are not part of this run.
    assert (out / "captures" / "int8").is_dir()
    attacked = tmp_path / "attack"
    result = run_cli("attack", "--captures", str(out / "captures"), "--out", str(attacked), "--bootstrap", "0")
    assert result.returncode == 0, result.stderr
    report = json.loads((attacked / "report.json").read_text())
    assert {row["name"] for row in report["variants"]} == {"float"}
    assert "variant int8 is not among the variants of the audit's last run" in " ".join(result.stderr.split())


@pytest.mark.slow
def test_more_reference_models_train_only_the_new_ones(baseline, tmp_path):
    out, _ = _rerun(baseline, tmp_path, reference_models="6")
    report = json.loads((out / "report.json").read_text())
    kinds = report["tasks"]["kinds"]
    assert kinds["reference-training"] == {"reused": 4, "computed": 2}
    assert kinds["reference-variant"] == {"reused": 8, "computed": 4}
    earlier = {model["k"]: model for model in baseline[1]["references"]["models"]}
    for model in report["references"]["models"][:4]:
        assert (model["accuracy"], model["n_in"]) == (earlier[model["k"]]["accuracy"], earlier[model["k"]]["n_in"])


@pytest.mark.slow
def test_changed_artifact_recomputed(baseline, tmp_path, caplog):
    from edgemia.audit import AuditConfig, run_audit

    out = tmp_path / "run"
    shutil.copytree(baseline[0], out)
    changed = out / "artifacts" / "references" / "2" / "int8.tflite"
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed.write_bytes(bytes(data))

    config = AuditConfig(
        out=out, dataset="breast-cancer", epochs=3, references=4, variants=["float", "int8"],
        backends=["native"], bootstrap=100, jobs=1,
    )
    with caplog.at_level(logging.WARNING, logger="edgemia.tasks.store"):
        report = run_audit(config)
    assert str(changed) in caplog.text
    assert "int8 of reference model 2" in caplog.text
    kinds = report["tasks"]["kinds"]
    assert kinds["reference-variant"] == {"reused": 7, "computed": 1}
    assert kinds["reference-training"] == {"reused": 4, "computed": 0}
    assert kinds["target-training"] == {"reused": 1, "computed": 0}
    assert _metrics(report) == _metrics(baseline[1])


@pytest.mark.slow
def test_sigkill_during_references_resumes(baseline, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "edgemia", *SMALL_AUDIT, "--jobs", "2", "--out", str(out)]
    # A session of its own, so that the kill reaches the worker processes too.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not _manifests(out, "reference-training") if (out / "tasks").is_dir() else True:
            assert process.poll() is None, "the audit ended before a reference model was trained"
            assert time.monotonic() < deadline, "no reference model was trained within 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    trained_before_kill = len(_manifests(out, "reference-training"))
    assert 1 <= trained_before_kill < 4
    assert not (out / "report.json").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"

    result = run_cli(*SMALL_AUDIT, "--jobs", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    kinds = report["tasks"]["kinds"]
    assert kinds["reference-training"] == {"reused": trained_before_kill, "computed": 4 - trained_before_kill}
    assert kinds["target-training"] == {"reused": 1, "computed": 0}
    assert kinds["target-variant"] == {"reused": 2, "computed": 0}
    assert _metrics(report) == _metrics(baseline[1])


@pytest.mark.slow
def test_interrupt_during_references_exits(tmp_path):
    out = tmp_path / "run"
    options = [*SMALL_AUDIT]
    options[options.index("--reference-models") + 1] = "8"
    command = [sys.executable, "-m", "edgemia", *options, "--jobs", "2", "--out", str(out)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "tasks").is_dir() or not _manifests(out, "target-variant"):
            assert process.poll() is None, "the audit ended before the reference-model stage"
            assert time.monotonic() < deadline, "the reference-model stage did not start within 300 s"
            time.sleep(0.05)
        time.sleep(2)  # the workers are training now
        # As `timeout -s INT` does: the signal reaches the audit process alone, not its workers.
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = process.communicate(timeout=120)
        # Stopping the workers takes a moment; finishing their 8 models would take far longer.
        assert time.monotonic() - interrupted < 10
        assert process.returncode == 130, stderr
        assert b"edgemia: interrupted" in stderr
        # No worker process is left in the audit's session once the helpers that
        # multiprocessing starts (its resource tracker) have seen the audit exit.
        deadline = time.monotonic() + 15
        with pytest.raises(ProcessLookupError):
            while time.monotonic() < deadline:
                os.killpg(process.pid, 0)
                time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_ray_matches_local_executor(baseline, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "run"
    # The local cluster is a new one even where RAY_ADDRESS names another (here, nothing listens there).
    environment = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{_free_port()}"}
    result = run_cli(*SMALL_AUDIT, "--executor", "ray", "--jobs", "2", "--out", str(out), env=environment)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["references"]["executor"] == "ray"
    assert report["tasks"]["kinds"]["reference-training"] == {"reused": 0, "computed": 4}
    assert _metrics(report) == _metrics(baseline[1])


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "ray start exited early"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"no Ray head listening on 127.0.0.1:{port} after {seconds} s")


@pytest.mark.slow
def test_ray_address_joins_cluster_with_token(baseline, tmp_path):
    pytest.importorskip("ray")
    import secrets

    port = _free_port()
    # Short, so that Ray's socket paths under it stay within the Unix limit; the cluster
    # file `ray start` writes goes there too, not to /tmp/ray.
    ray_dir = Path(tempfile.mkdtemp(prefix="edgemia-ray-", dir="/tmp"))
    token = ray_dir / "token"
    token.write_text(secrets.token_hex(16))
    # The head finds a token and turns authentication on. The audit gets only the token's
    # location, as with a token in ~/.ray/auth_token.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    environment.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                       RAY_AUTH_TOKEN_PATH=str(token))
    ray = Path(sys.executable).parent / "ray"
    # In a process group of its own, so that stopping it touches no other Ray cluster.
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(ray_dir)],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        _wait_for_port(port, head)
        out = tmp_path / "run"
        result = run_cli(*SMALL_AUDIT, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--jobs", "2",
                         "--out", str(out), env=environment)
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["references"]["executor"] == "ray"
        assert report["tasks"]["kinds"]["reference-training"] == {"reused": 0, "computed": 4}
        assert _metrics(report) == _metrics(baseline[1])
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(ray_dir, ignore_errors=True)


_RAY_LISTEN_CHECK = """
import json
import os
from pathlib import Path
from edgemia.tasks import RayExecutor


def descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def listening_addresses(pids):
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.add(fields[1].split(":")[0])
    return addresses


with RayExecutor(2) as executor:
    print("RESULTS", executor.map(json.dumps, [3, "a"]))
    print("LISTEN", sorted(listening_addresses(descendants(os.getpid()) + [os.getpid()])))
"""

# 127.0.0.1 in /proc/net/tcp, and as an IPv4-mapped IPv6 address in /proc/net/tcp6 (little-endian hex words).
_LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F"}


@pytest.mark.slow
def test_ray_cluster_listens_on_loopback(tmp_path):
    pytest.importorskip("ray")
    result = subprocess.run([sys.executable, "-c", _RAY_LISTEN_CHECK], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "RESULTS ['3', '\"a\"']" in result.stdout
    listen = next(line for line in result.stdout.splitlines() if line.startswith("LISTEN"))
    addresses = eval(listen[len("LISTEN "):])  # a printed list of strings
    assert addresses, "no Ray process listens on a TCP port"
    assert set(addresses) <= _LOOPBACK_HEX, addresses


def test_rerun_removes_extra_reference_and_perturbed_files(tmp_path):
    from edgemia.audit import _remove_extra_references
    from edgemia.references import capture_dir

    bundle = capture_dir(tmp_path, "float", "native", "tflite")
    bundle.mkdir(parents=True)
    (tmp_path / "data").mkdir()
    for k in range(4):
        (bundle / f"reference-{k}.npz").write_bytes(b"")
    for j in range(8):
        (bundle / f"perturbed-{j}.npz").write_bytes(b"")
        (tmp_path / "data" / f"perturbed-{j}.npz").write_bytes(b"")
    # An earlier run on tabular records made 8 perturbed copies and 4 reference models; this one 4 and 2.
    _remove_extra_references(tmp_path, [("float", "native", "tflite")], {"float": "float"}, 2, 4)
    assert sorted(path.name for path in bundle.glob("reference-*")) == ["reference-0.npz", "reference-1.npz"]
    assert sorted(path.name for path in bundle.glob("perturbed-*")) == [f"perturbed-{j}.npz" for j in range(4)]
    assert len(list((tmp_path / "data").glob("perturbed-*"))) == 4
