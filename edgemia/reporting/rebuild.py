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
    if Path(run_dir).is_file():
        raise InputError(f"{run_dir}: a file, not a directory; give the run directory that contains report.json")
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


def _check_verdict(path: Path, section) -> None:
    """Raise InputError unless the stored policy section's verdict follows from its rule outcomes.

    The console, report.md and the exit code read the verdict, and report.html
    reads the outcomes, so the two must agree.
    """
    outcomes = section.get("outcomes") if isinstance(section, dict) else None
    if not isinstance(outcomes, list) or not all(
        isinstance(outcome, dict) and isinstance(outcome.get("passed"), bool) and isinstance(outcome.get("rule"), str)
        for outcome in outcomes
    ):
        raise InputError(f"{path}: 'policy.outcomes' must be a list of rule outcomes, each with 'rule' and "
                         "'passed'; rebuild with --policy FILE to evaluate the rules again, or with --no-policy")
    failed = [outcome["rule"] for outcome in outcomes if not outcome["passed"]]
    expected = "fail" if failed else "pass"
    if section.get("verdict") != expected:
        cause = f"the rules {', '.join(failed)} failed" if failed else "every rule passed"
        raise InputError(f"{path}: 'policy.verdict' is {section.get('verdict')!r}, but {cause}, so it must be "
                         f"{expected!r}; rebuild with --policy FILE to evaluate the rules again, or with --no-policy")


def rebuild_reports(run_dir: Path, policy: Policy | None = None, drop_policy: bool = False) -> dict:
    """Rewrite report.json, report.md and report.html in `run_dir` from its report.json.

    Only the stored results are read: no capture, model or records file is
    opened. A `policy` replaces the stored verdict; `drop_policy` removes it.
    """
    if policy is not None and drop_policy:
        raise ValueError("give a policy or drop_policy, not both")
    report = load_report(run_dir)
    path = Path(run_dir) / "report.json"
    if drop_policy:
        report.pop("policy", None)
    elif policy is None and report.get("policy") is not None:
        _check_verdict(path, report["policy"])
    try:
        return write_reports(Path(run_dir), report, policy)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        # write_reports renders both pages before it writes a file, so nothing was changed.
        raise InputError(
            f"{path}: a field is missing or has a value of the wrong type ({type(exc).__name__}: {exc}); the "
            "file was edited or damaged. Restore it, or run `edgemia attack` on the run's captures to write it "
            "again"
        ) from exc
