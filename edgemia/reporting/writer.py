"""Write a run's three reports, report.json, report.md and report.html, from one report dict."""

from __future__ import annotations

from pathlib import Path

from edgemia.reporting.markdown import render
from edgemia.reporting.mitigation import CHART, mitigation_chart, mitigation_section
from edgemia.reporting.policy import Policy, evaluate_policy
from edgemia.util import atomic_write_bytes, atomic_write_json, atomic_write_text

REPORT_FILES = ("report.json", "report.md", "report.html", CHART)


def write_reports(out: Path, report: dict, policy: Policy | None = None) -> dict:
    """Add the derived sections to `report`, write the three reports into `out` and return the report.

    The mitigation section is built anew from the variant rows, and its
    chart is written to mitigation.png (the Markdown report links it,
    report.html embeds it). With a `policy`, its verdict replaces the
    report's. Without one, a `policy` section already in the report is
    kept, so that rebuilding a run's reports keeps its verdict.
    """
    from edgemia.reporting.html import render_html

    out = Path(out)
    section = mitigation_section(report)
    chart = mitigation_chart(report, section)
    if chart is not None:
        section["bundles"][0]["chart"] = CHART
    report["mitigation"] = section
    if policy is not None:
        report["policy"] = evaluate_policy(policy, report)
    # Both pages are rendered before any file is written, so a report that cannot be rendered leaves the
    # directory as it was.
    markdown = render(report)
    html = render_html(report, mitigation_png=chart)
    if chart is not None:
        atomic_write_bytes(out / CHART, chart)
    else:
        # A chart left by an earlier run in this directory would not match this report.
        (out / CHART).unlink(missing_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", html)
    return report
