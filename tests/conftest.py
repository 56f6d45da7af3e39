"""Shared fixtures: one real default audit per test session, reused by many tests."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> tuple[Path, dict]:
    """Run the default audit (digits, float and int8, litert and native) once."""
    from edgemia.audit import AuditConfig, run_audit

    out = tmp_path_factory.mktemp("default-run")
    report = run_audit(AuditConfig(out=out))
    return out, report


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run `python -m edgemia ARGS` in a fresh process and capture its output.

    The process starts in an empty directory, so that `python -m` imports the
    installed package (with its compiled kernel) and not the source tree.
    """
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, "-m", "edgemia", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
        )
