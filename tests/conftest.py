"""Shared fixtures: one real default audit per test session, reused by many tests."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> tuple[Path, dict]:
    """Run the default audit (digits, every default variant on every backend) once."""
    from edgemia.audit import AuditConfig, run_audit

    out = tmp_path_factory.mktemp("default-run")
    report = run_audit(AuditConfig(out=out))
    return out, report


@pytest.fixture
def server(tmp_path):
    """An OpenSSH server on 127.0.0.1 for the device tests (tests/sshd.py); skips when OpenSSH is missing."""
    from sshd import running_server

    yield from running_server(tmp_path / "sshd")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m edgemia ARGS` in a fresh process and capture its output.

    The process starts in an empty directory, so that `python -m` imports the
    installed package (with its compiled kernel) and not the source tree.
    `env` replaces the environment when given.
    """
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, "-m", "edgemia", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )


def run_main_without_tensorflow(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """Run edgemia.cli.main(argv) in a fresh process; it prints 'LOADED []' if TensorFlow stayed out.

    The process starts in `cwd`, which must not be the source tree, so that the
    installed package is imported.
    """
    code = (
        "import sys\n"
        "from edgemia.cli import main\n"
        f"rc = main({argv!r})\n"
        "assert rc == 0, rc\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print('LOADED', loaded)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
