"""The README's set-up lines are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_readme_test_line():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = next(line for line in ci.splitlines() if "pytest" in line and "pip install" in line)
    assert test_line in readme


def test_readme_audit_line_installs_and_runs_audit():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r'^python3\.11 -m venv \.venv && \.venv/bin/pip install "\.\[audit\]" && '
                     r"\.venv/bin/edgemia audit$", readme, re.MULTILINE)
