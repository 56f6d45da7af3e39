"""The SSH runner against a real OpenSSH server on 127.0.0.1 (tests/sshd.py).

The server runs with temporary host and client keys, and its `python3` is
this test's interpreter, so a capture on the "board" runs the edgemia under
test. The tests skip when sshd, ssh, ssh-keygen or ssh-keyscan is missing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, run_main_without_tensorflow
from edgemia.data.records import Records, save_records
from edgemia.devices.profiles import load_profile, profile_names
from edgemia.devices.runner import BoardSession, DeviceSettings, InputFile, check_device
from edgemia.devices.ssh import SshClient, SshOptions, SshTarget
from edgemia.errors import DeviceConnectionError, DeviceTimeout, HostKeyError
from edgemia.runtime.capture import load_capture, run_capture
from edgemia.util import sha256_file
from sshd import TestServer

# A `cat` that copies 64 KiB every 50 ms, so that a 4 MiB transfer takes
# about 3 s and can be cut in the middle.
SLOW_CAT = """#!/usr/bin/python3
import sys, time
args = [a for a in sys.argv[1:] if a != "--"]
source = open(args[0], "rb") if args else sys.stdin.buffer
while True:
    chunk = source.read(65536)
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    time.sleep(0.05)
"""
LARGE_BYTES = 4 * 1024 * 1024


def _client(server: TestServer, **options) -> SshClient:
    if "host_key_fingerprint" not in options:
        options.setdefault("known_hosts", server.known_hosts())
    ssh = SshOptions(identity=server.client_key, connect_timeout_seconds=10, **options)
    return SshClient(SshTarget("127.0.0.1", server.user, server.port), ssh)


def _settings(server: TestServer, remote_dir: Path, profile: str = "x86-64-v3") -> DeviceSettings:
    client = _client(server)
    return DeviceSettings(load_profile(profile), client.target, client.options, remote_dir=str(remote_dir))


def test_known_host_key_accepted(server):
    with _client(server) as client:
        assert client.check_output("echo ready", timeout=30, what="echo").strip() == "ready"


def test_wrong_host_key_rejected(server, tmp_path):
    with _client(server, known_hosts=server.known_hosts(server.other_key)) as client:
        with pytest.raises(HostKeyError, match="could not be verified"):
            client.check_output("echo ready", timeout=30, what="echo")


def test_unknown_host_key_rejected(server, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with _client(server, known_hosts=empty) as client:
        with pytest.raises(HostKeyError):
            client.check_output("echo ready", timeout=30, what="echo")


def test_fingerprint_pins_host_key(server):
    with _client(server, host_key_fingerprint=server.fingerprint()) as client:
        assert client.check_output("echo ready", timeout=30, what="echo").strip() == "ready"
    with _client(server, host_key_fingerprint=server.fingerprint(server.other_key)) as client:
        with pytest.raises(HostKeyError, match="offers no host key with fingerprint"):
            client.check_output("echo ready", timeout=30, what="echo")


def test_check_reports_host_board(server, tmp_path):
    settings = _settings(server, tmp_path / "remote")
    with SshClient(settings.target, settings.ssh) as client:
        check = check_device(settings, client)
    assert check.facts["machine"] == "x86_64"
    assert check.facts["edgemia_version"] is not None
    assert "native" in check.backends


def test_killed_pull_leaves_no_file(server, tmp_path):
    source = tmp_path / "board" / "large.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(LARGE_BYTES))
    (server.bin / "cat").write_text(SLOW_CAT)
    (server.bin / "cat").chmod(0o755)
    local_dir = tmp_path / "pulled"
    local_dir.mkdir()

    def partly_arrived() -> bool:
        return any(path.stat().st_size > LARGE_BYTES // 4 for path in local_dir.iterdir())

    watcher = server.kill_sessions_when(partly_arrived, timeout=60.0)
    with _client(server) as client:
        with pytest.raises(DeviceConnectionError, match="lost the connection"):
            client.pull(str(source), local_dir / "large.bin", sha256_file(source), timeout=120)
    watcher.join()
    assert list(local_dir.iterdir()) == []


def test_killed_push_leaves_no_file(server, tmp_path):
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(LARGE_BYTES))
    (server.bin / "cat").write_text(SLOW_CAT)
    (server.bin / "cat").chmod(0o755)
    remote_dir = tmp_path / "board"
    remote_dir.mkdir()

    def partly_arrived() -> bool:
        return any(path.stat().st_size > LARGE_BYTES // 4 for path in remote_dir.iterdir())

    watcher = server.kill_sessions_when(partly_arrived, timeout=60.0)
    with _client(server) as client:
        with pytest.raises(DeviceConnectionError, match="lost the connection"):
            client.push(source, str(remote_dir / "large.bin"), timeout=120)
    watcher.join()
    assert not (remote_dir / "large.bin").exists()
    # Only the hidden partial file may remain, under a name that no reader takes for the file.
    assert all(path.name.endswith(".partial") for path in remote_dir.iterdir())


def test_corrupted_pull_rejected(server, tmp_path):
    source = tmp_path / "board.bin"
    source.write_bytes(b"what the board holds")
    local = tmp_path / "pulled.bin"
    with _client(server) as client:
        with pytest.raises(Exception, match="arrived with SHA-256"):
            client.pull(str(source), local, "0" * 64, timeout=60)
    assert not local.exists()


@pytest.fixture(scope="module")
def int8_mlp(tmp_path_factory) -> tuple[Path, Path]:
    from op_models import BUILDERS, calibration_data, convert

    directory = tmp_path_factory.mktemp("mlp")
    model = BUILDERS["mlp"]()
    model_path = directory / "mlp.tflite"
    convert(model, model_path)
    x = calibration_data(model, n=96, seed=3)
    records = Records(x=x, y=np.arange(len(x)) % 4, record_id=np.arange(len(x)))
    records_path = directory / "records.npz"
    save_records(records, records_path)
    return model_path, records_path


@pytest.mark.slow
def test_capture_round_trip(server, tmp_path, int8_mlp):
    model_path, records_path = int8_mlp
    settings = _settings(server, tmp_path / "remote")
    model = InputFile(model_path, sha256_file(model_path))
    records = InputFile(records_path, sha256_file(records_path))
    local = tmp_path / "pulled" / "target.npz"
    with SshClient(settings.target, settings.ssh) as client:
        check = check_device(settings, client)
        session = BoardSession(settings, client, check)
        assert session.push_inputs([model, records]) == 2
        assert session.push_inputs([model, records]) == 0
        session.capture(model, records, "native", local, label="the mlp")
        session.remove_captures()

    assert sha256_file(tmp_path / "remote" / model.remote) == model.sha256
    assert not (tmp_path / "remote" / session.captures_dir).exists()
    pulled, _ = load_capture(local)
    from edgemia.data.records import load_records

    host = run_capture(model_path, load_records(records_path), "native")
    assert pulled.meta["model_sha256"] == model.sha256
    assert pulled.meta["isa"] == "avx2"
    np.testing.assert_array_equal(pulled.raw, host.raw)


def _check_arguments(server: TestServer, known_hosts: Path, profile: str = "x86-64-v3") -> list[str]:
    return ["device", "check", "--device", profile, *server.connection_arguments(known_hosts)]


def test_cli_check_matching_board(server, tmp_path):
    result = run_main_without_tensorflow(_check_arguments(server, server.known_hosts()), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "matches device profile x86-64-v3" in result.stdout
    assert "LOADED []" in result.stdout


def test_cli_check_other_architecture(server):
    result = run_cli(*_check_arguments(server, server.known_hosts(), profile="rpi4"))
    assert result.returncode == 2, result.stderr
    assert "but profile rpi4 describes aarch64" in result.stdout
    assert "does not match device profile rpi4" in result.stderr


def test_cli_check_wrong_host_key(server):
    result = run_cli(*_check_arguments(server, server.known_hosts(server.other_key)))
    assert result.returncode == 4, result.stderr
    assert "could not be verified" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unknown_profile(tmp_path):
    result = run_cli("device", "check", "--device", "pi9", "--host", "127.0.0.1")
    assert result.returncode == 2
    assert "--device pi9: unknown device profile" in result.stderr
    assert "rpi4" in result.stderr


def test_cli_profile_field_checked(tmp_path):
    profile = tmp_path / "board.toml"
    profile.write_text('description = "a board"\narchitecture = "riscv64"\n')
    result = run_cli("device", "check", "--device", str(profile), "--host", "127.0.0.1")
    assert result.returncode == 2
    assert f"{profile}: architecture 'riscv64' is not one of aarch64, x86_64" in result.stderr


def test_shipped_profiles_load():
    names = profile_names()
    assert names == ["generic-aarch64", "rpi4", "rpi5", "x86-64-v3", "x86-64-v4"]
    rpi4, rpi5 = load_profile("rpi4"), load_profile("rpi5")
    assert (rpi4.isa, rpi4.qemu_cpu) == ("neon", "cortex-a72")
    assert "asimddp" not in rpi4.cpu_features
    assert (rpi5.isa, rpi5.qemu_cpu) == ("neondot", "cortex-a76")
    assert "asimddp" in rpi5.cpu_features


def test_device_extra_excludes_tensorflow():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    device = project["optional-dependencies"]["device"]
    for requirement in [*project["dependencies"], *device]:
        name = requirement.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower()
        assert name not in ("tensorflow", "tensorflow-cpu", "keras", "tf-keras"), requirement
    assert "numpy>=1.26" in project["dependencies"]


def test_capture_timeout_reported(server, tmp_path):
    # A board whose captures hang: the board's own `timeout` must stop them.
    (server.bin / "python3").write_text(
        '#!/bin/sh\ncase "$*" in *" capture "*) sleep 60 ;; esac\n' f'exec "{sys.executable}" "$@"\n'
    )
    settings = _settings(server, tmp_path / "remote")
    settings.capture_timeout_seconds = 2
    model_path, records_path = tmp_path / "model.tflite", tmp_path / "records.npz"
    model_path.write_bytes(b"model")
    records_path.write_bytes(b"records")
    model = InputFile(model_path, sha256_file(model_path))
    records = InputFile(records_path, sha256_file(records_path))
    local = tmp_path / "pulled.npz"
    with SshClient(settings.target, settings.ssh) as client:
        check = check_device(settings, client)
        session = BoardSession(settings, client, check)
        session.push_inputs([model, records])
        start = time.monotonic()
        with pytest.raises(DeviceTimeout, match="did not finish within 2 s"):
            session.capture(model, records, "native", local, label="the model")
    assert time.monotonic() - start < 30
    assert not local.exists()


def test_cli_lists_profiles():
    result = run_cli("device", "list")
    assert result.returncode == 0, result.stderr
    for name in ("rpi4", "rpi5", "generic-aarch64", "x86-64-v3", "x86-64-v4"):
        assert name in result.stdout
    assert "qemu-aarch64 -cpu cortex-a72" in result.stdout


def test_python_command_expands_home(server, tmp_path):
    settings = _settings(server, tmp_path / "remote")
    settings.python = "~/venv/bin/python -X utf8"
    assert settings.python_command == '"$HOME"/venv/bin/python -X utf8'
    home = tmp_path / "home"
    (home / "venv" / "bin").mkdir(parents=True)
    (home / "venv" / "bin" / "python").symlink_to(sys.executable)
    with SshClient(settings.target, settings.ssh) as client:
        output = client.check_output(f"HOME={home}; {settings.python_command} -c 'print(42)'", timeout=60,
                                     what="python")
    assert output.strip() == "42"
