"""Console summary of a report, drawn with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from edgemia.reporting.markdown import fmt_difference, fmt_interval, fmt_rate, runs_on, workers_text


def _levels(attack_rows: list[dict]) -> list[str]:
    return list(attack_rows[0]["tpr_at_fpr"]) if attack_rows else []


def _attack_table(title: str, rows: list[tuple[list[str], dict]], levels: list[str], prefix: list[str]) -> Table:
    """Table with the `prefix` columns, then each attack's metrics, interval and change versus float."""
    # Without the bootstrap no row has an interval, and the caption does not promise one.
    has_intervals = any("ci" in attack for _, attack in rows)
    caption = "TPR at FPR; CI: 95% bootstrap interval of the AUC" if has_intervals else "TPR at FPR"
    table = Table(title=title, caption=caption)
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
            f"with {workers_text(references)}."
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


def print_profiles(profiles: list, console: Console) -> None:
    """Print the device profiles as a table."""
    table = Table(title="Device profiles")
    for column in ("name", "architecture", "CPU", "GEMM path", "threads", "backends", "emulated as"):
        table.add_column(column)
    for profile in profiles:
        table.add_row(
            profile.name, profile.architecture, profile.cpu, profile.isa or "automatic",
            str(profile.threads or "every core"), ", ".join(profile.backends),
            f"qemu-aarch64 -cpu {profile.qemu_cpu}" if profile.qemu_cpu else "",
        )
    console.print(table)


def print_board_check(check, target, console: Console) -> None:
    """Print what `edgemia device check` found on a board, beside its profile."""
    facts, profile = check.facts, check.profile
    features = set(facts.get("cpu_features") or [])
    table = Table(title=f"{target} against device profile {profile.name}", show_header=False)
    table.add_column("item")
    table.add_column("value")
    table.add_row("board", f"{facts.get('model') or 'unknown model'}, {facts.get('system')}")
    table.add_row("architecture", f"{facts.get('machine')} (profile: {profile.architecture})")
    table.add_row("CPU features", ", ".join(
        feature if feature in features else f"{feature} (missing)" for feature in profile.cpu_features
    ) or "none required")
    table.add_row("GEMM paths", f"{', '.join(facts.get('isas') or []) or 'none'}; captures run "
                  f"{check.isa or 'none'}")
    table.add_row("Python", f"{facts.get('python')} ({facts.get('python_executable')})")
    table.add_row("numpy", str(facts.get("numpy_version") or facts.get("numpy_error")))
    table.add_row("edgemia", str(facts.get("edgemia_version") or facts.get("edgemia_error")))
    table.add_row("backends", ", ".join(check.backends) or "none")
    table.add_row("cores", str(facts.get("cpu_count")))
    console.print(table)
    for note in check.notes:
        console.print(f"note: {note}", soft_wrap=True)
    for problem in check.problems:
        console.print(f"problem: {problem}", soft_wrap=True)
    if check.ok:
        console.print(f"{target} matches device profile {profile.name}.")


def print_device_summary(report: dict, device: str, console: Console) -> None:
    """Print one device's rows and its agreement with the host after `edgemia device run`."""
    prefix = f"device:{device}:"
    variants = [variant for variant in report["variants"] if variant["backend"].startswith(prefix)]
    levels = _levels(variants[0]["attacks"]) if variants else []
    rows = []
    for variant in variants:
        accuracy = f"{variant['accuracy']['members']:.3f}/{variant['accuracy']['nonmembers']:.3f}"
        for attack in variant["attacks"]:
            rows.append(([variant["name"], f"{variant['backend']}-{variant['format']}", accuracy], attack))
    console.print(_attack_table(f"Membership leakage on {device}", rows, levels, ["variant", "backend", "acc."]))
    for row in report.get("device_agreement", []):
        if row["device"] != device:
            continue
        leakage = "identical" if row["captures_identical"] else (
            "differs" if row["leakage_differs"] else "no significant difference")
        console.print(
            f"{row['variant']} ({row['format']}): {prefix}{row['backend']} and host {row['host_backend']} give "
            f"identical outputs on {row['identical_records']} of {row['n_records']} records and "
            f"{row['identical_reference_captures']} of {row['n_references']} reference captures "
            f"(largest logit difference {row['max_abs_logit_difference']:.3g}); leakage: {leakage}.",
            soft_wrap=True,
        )
