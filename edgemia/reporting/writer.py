"""Write a run's three reports, report.json, report.md and report.html, from one report dict."""

from __future__ import annotations

from pathlib import Path

from edgemia.reporting.markdown import render
from edgemia.reporting.policy import Policy, evaluate_policy
from edgemia.util import atomic_write_json, atomic_write_text

REPORT_FILES = ("report.json", "report.md", "report.html")


def write_reports(out: Path, report: dict, policy: Policy | None = None) -> dict:
    """Apply `policy` to `report` (when given) and write the three reports into `out`.

    Without a policy, a `policy` section already in the report is kept, so
    that rebuilding a run's reports keeps its verdict. Returns the report.
    """
    from edgemia.reporting.html import render_html

    out = Path(out)
    if policy is not None:
        report["policy"] = evaluate_policy(policy, report)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render(report))
    atomic_write_text(out / "report.html", render_html(report))
    return report
