"""Console summary of a report, drawn with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgemia.reporting.markdown import fmt_difference, fmt_interval, fmt_rate, runs_on


def _levels(attack_rows: list[dict]) -> list[str]:
    return list(attack_rows[0]["tpr_at_fpr"]) if attack_rows else []


def _attack_table(title: str, rows: list[tuple[list[str], dict]], levels: list[str], prefix: list[str]) -> Table:
    """Table with the `prefix` columns, then each attack's metrics, interval and change versus float."""
    table = Table(title=title, caption="TPR at FPR; CI: 95% bootstrap interval of the AUC")
    for name in prefix:
        table.add_column(name)
    table.add_column("attack", no_wrap=True)
    table.add_column("AUC", justify="right")
    table.add_column("CI", justify="right", no_wrap=True)
    for level in levels:
        table.add_column(f"{float(level) * 100:g}%", justify="right")
    table.add_column("adv.", justify="right")
    table.add_column("AUC vs float (p)", justify="right")
    for cells, attack in rows:
        versus = attack.get("versus_float")
        table.add_row(
            *cells,
            attack["name"],
            f"{attack['auc']:.4f}",
            fmt_interval(attack.get("ci", {}).get("auc")),
            *(fmt_rate(attack["tpr_at_fpr"][level]) for level in levels),
            f"{attack['advantage']:.4f}",
            "" if versus is None else f"{fmt_difference(versus['auc_difference'])} ({versus['auc_difference_p_value']:.2g})",
        )
    return table


def summary_table(report: dict) -> Table:
    variants = report["variants"]
    levels = _levels(variants[0]["attacks"]) if variants else []
    rows = []
    for variant in variants:
        accuracy = f"{variant['accuracy']['members']:.3f}/{variant['accuracy']['nonmembers']:.3f}"
        for attack in variant["attacks"]:
            rows.append(([variant["name"], runs_on(variant), accuracy], attack))
    subject = report["dataset"]["name"] or report.get("captures", "capture bundles")
    return _attack_table(f"Membership leakage: {subject}", rows, levels, ["variant", "backend", "acc."])


def print_verdict(report: dict, console: Console) -> None:
    """Print the policy verdict, naming every failing rule; print nothing without a policy."""
    section = report.get("policy")
    if section is None:
        return
    for outcome in section["outcomes"]:
        if not outcome["passed"]:
            console.print(f"Rule failed: {outcome['message']}", soft_wrap=True)
    passed = sum(outcome["passed"] for outcome in section["outcomes"])
    console.print(
        f"Verdict: {section['verdict'].upper()} ({passed} of {len(section['outcomes'])} rules passed, "
        f"policy {section['path']}).",
        soft_wrap=True,
    )


def print_summary(report: dict, console: Console) -> None:
    console.print(summary_table(report))
    console.print(
        f"n/m: not measurable with {report['dataset']['n_nonmembers']} non-members "
        f"(smallest resolvable FPR {report['fpr_resolution']:.5f}). acc.: accuracy on members / "
        "non-members. AUC vs float: variant minus float, DeLong's p-value."
    )
    references = report.get("references")
    if references and references["count"]:
        console.print(
            f"{references['count']} reference models, {references['seconds']:.0f} s "
            f"with {references['jobs']} process(es)."
        )
    for row in report.get("backend_agreement", []):
        variant = f"{row['variant']} ({row['format']})" if row.get("format") else row["variant"]
        console.print(
            f"{variant}: {' and '.join(row['backends'])} give identical outputs on "
            f"{row['identical_records']} of {row['n_records']} records "
            f"(largest logit difference {row['max_abs_logit_difference']:.3g})."
        )
    for row in report.get("skipped", []):
        where = f"{row['backend']} ({row['format']})" if row["format"] else row["backend"]
        console.print(f"Not captured: {row['variant']} on {where}: {row['reason']}", soft_wrap=True)
