"""Console summary of a report, drawn with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgemia.reporting.markdown import fmt_rate


def summary_table(report: dict) -> Table:
    variants = report["variants"]
    levels = list(variants[0]["attacks"][0]["tpr_at_fpr"]) if variants else []
    table = Table(
        title=f"Membership leakage: {report['dataset']['name']}",
        caption="TPR at FPR; acc.: accuracy on members / non-members",
    )
    table.add_column("variant")
    table.add_column("backend")
    table.add_column("attack")
    table.add_column("AUC", justify="right")
    for level in levels:
        table.add_column(f"{float(level) * 100:g}%", justify="right")
    table.add_column("adv.", justify="right")
    table.add_column("acc.", justify="right")
    for variant in variants:
        accuracy = f"{variant['accuracy']['members']:.3f}/{variant['accuracy']['nonmembers']:.3f}"
        for attack in variant["attacks"]:
            table.add_row(
                variant["name"],
                variant["backend"],
                attack["name"],
                f"{attack['auc']:.4f}",
                *(fmt_rate(attack["tpr_at_fpr"][level]) for level in levels),
                f"{attack['advantage']:.4f}",
                accuracy,
            )
    return table


def print_summary(report: dict, console: Console) -> None:
    console.print(summary_table(report))
    console.print(
        f"n/m: not measurable with {report['dataset']['n_nonmembers']} non-members "
        f"(smallest resolvable FPR {report['fpr_resolution']:.5f})."
    )
    for row in report.get("backend_agreement", []):
        console.print(
            f"{row['variant']}: {' and '.join(row['backends'])} give identical outputs on "
            f"{row['identical_records']} of {row['n_records']} records "
            f"(largest logit difference {row['max_abs_logit_difference']:.3g})."
        )
