"""The report command: rebuild a run's reports from its report.json, without recomputing results."""

from __future__ import annotations

import json
from pathlib import Path

from edgemia.errors import InputError
from edgemia.reporting.policy import Policy
from edgemia.reporting.writer import write_reports

SUPPORTED_SCHEMA_VERSIONS = (1,)


def load_report(run_dir: Path) -> dict:
    """Read RUN_DIR/report.json; raise InputError when it is missing, unreadable or of another schema."""
    path = Path(run_dir) / "report.json"
    if not Path(run_dir).is_dir():
        raise InputError(f"{run_dir}: directory not found; give the run directory of an audit or attack")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; the run did not finish, so run the audit again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the report ({exc})") from exc
    if not isinstance(report, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(report).__name__}")
    version = report.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise InputError(
            f"{path}: 'schema_version' is {version!r}; this edgemia reads "
            f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}"
        )
    for key in ("dataset", "variants", "fpr_resolution", "environment"):
        if key not in report:
            raise InputError(f"{path}: missing field '{key}'; the file is not an edgemia report")
    return report


def rebuild_reports(run_dir: Path, policy: Policy | None = None, drop_policy: bool = False) -> dict:
    """Rewrite report.json, report.md and report.html in `run_dir` from its report.json.

    Only the stored results are read: no capture, model or records file is
    opened. A `policy` replaces the stored verdict; `drop_policy` removes it.
    """
    if policy is not None and drop_policy:
        raise ValueError("give a policy or drop_policy, not both")
    report = load_report(run_dir)
    if drop_policy:
        report.pop("policy", None)
    return write_reports(Path(run_dir), report, policy)
