"""Shared fixtures: one real default audit per test session, reused by many tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> tuple[Path, dict]:
    """Run the default audit (digits, float and int8, litert and native) once."""
    from edgemia.audit import AuditConfig, run_audit

    out = tmp_path_factory.mktemp("default-run")
    report = run_audit(AuditConfig(out=out))
    return out, report


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m edgemia ARGS` in a fresh process and capture its output."""
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "edgemia", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
