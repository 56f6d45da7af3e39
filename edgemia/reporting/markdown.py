"""report.md: the audit as Markdown, fit for a pull-request comment."""

from __future__ import annotations


def workers_text(references: dict) -> str:
    """Describe who built the reference models: local worker processes or Ray CPUs."""
    jobs = references["jobs"]
    if references.get("executor") == "ray":
        return f"{jobs} CPU{'s' if jobs != 1 else ''} of a Ray cluster"
    return f"{jobs} process{'es' if jobs != 1 else ''}"


def fmt_rate(value: float | None) -> str:
    return "n/m" if value is None else f"{value:.4f}"


def fmt_interval(interval: list[float] | None) -> str:
    return "" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def fmt_difference(value: float | None) -> str:
    return "n/m" if value is None else f"{value:+.4f}"


def runs_on(variant: dict) -> str:
    """Return a report row's backend and model format, e.g. 'native (onnx)', or the backend alone in older reports."""
    return f"{variant['backend']} ({variant['format']})" if variant.get("format") else variant["backend"]


def _comparison_lines(report: dict, levels: list[str]) -> list[str]:
    rows = [
        (variant, attack)
        for variant in report["variants"]
        for attack in variant["attacks"]
        if "versus_float" in attack
    ]
    if not rows:
        return []
    lines = [
        "",
        "## Change versus the float baseline",
        "",
        "Variant minus float on the same backend and records; a positive change means the variant "
        "leaks more. p: DeLong's two-sided test of equal AUCs. Intervals: paired bootstrap; the "
        "TPR changes' p-values (after the interval) are paired bootstrap p-values.",
        "",
        "| variant | backend | attack | AUC change | 95% CI | p | "
        + " | ".join(f"TPR change at {_level_label(level)} FPR" for level in levels)
        + " |",
        "|---|---|---|---:|---:|---:|" + "---:|" * len(levels),
    ]
    for variant, attack in rows:
        versus = attack["versus_float"]
        changes = []
        for level in levels:
            change = fmt_difference(versus["tpr_at_fpr_difference"][level])
            interval = versus.get("tpr_at_fpr_difference_ci", {}).get(level)
            p_value = (versus.get("tpr_at_fpr_difference_p_value") or {}).get(level)
            if interval is not None:
                change += f" {fmt_interval(interval)}"
            if p_value is not None:
                change += f" p={p_value:.2g}"
            changes.append(change)
        lines.append(
            f"| {variant['name']} | {runs_on(variant)} | {attack['name']} | "
            f"{fmt_difference(versus['auc_difference'])} | {fmt_interval(versus.get('auc_difference_ci'))} | "
            f"{versus['auc_difference_p_value']:.3g} | " + " | ".join(changes) + " |"
        )
    return lines


def _reference_lines(report: dict) -> list[str]:
    references = report.get("references")
    if not references or not references["count"]:
        return []
    models = references["models"]
    accuracy_in = sum(model["accuracy"]["in"] for model in models) / len(models)
    accuracy_out = sum(model["accuracy"]["out"] for model in models) / len(models)
    return [
        "",
        "## Reference models",
        "",
        f"{references['count']} models with the target's recipe and compression, each trained on "
        "a random half of all audit records, so that every record is IN for exactly half of them. "
        f"Mean float accuracy {accuracy_in:.4f} on their IN records and {accuracy_out:.4f} on their "
        f"OUT records. Built in {references['seconds']:.0f} s with {workers_text(references)}.",
    ]


def _parameter_lines(report: dict) -> list[str]:
    lines = []
    for variant in report["variants"]:
        for attack in variant["attacks"]:
            calibrated = attack.get("parameters", {}).get("a")
            if calibrated is not None:
                lines.append(f"| {variant['name']} | {runs_on(variant)} | {attack['name']} | {calibrated:g} |")
    if not lines:
        return []
    return [
        "",
        "Offline RMIA's a, chosen by attacking each reference model with the others:",
        "",
        "| variant | backend | attack | a |",
        "|---|---|---|---:|",
        *lines,
    ]


def _level_label(level: str) -> str:
    return f"{float(level) * 100:g}%"


def _rate_with_fpr(attack: dict, level: str) -> str:
    tpr = attack["tpr_at_fpr"][level]
    if tpr is None:
        return "n/m"
    return f"{tpr:.4f} ({attack['fpr_achieved'][level]:.4f})"


def _header(report: dict) -> list[str]:
    dataset = report["dataset"]
    target = report.get("target")
    config = report.get("config", {})
    if target is None:
        return [
            f"# edgemia attack: {report.get('captures', 'capture bundles')}",
            "",
            f"Members: {dataset['n_members']}; non-members: {dataset['n_nonmembers']}; "
            f"{dataset['n_classes']} classes. Run of {report['created']}: variants "
            f"{', '.join(config['variants'])}; backends {', '.join(config['backends'])}; attacks "
            f"{', '.join(config['attacks'])}.",
        ]
    lines = [
        f"# edgemia audit: {dataset['name']}",
        "",
        f"{dataset['description']}. Members (training records of the target): "
        f"{dataset['n_members']}; non-members: {dataset['n_nonmembers']}; split seed {report['seed']}.",
        "",
        f"Target: `{target['recipe']['architecture']}`, {target['recipe']['epochs']} epochs; "
        f"accuracy {target['accuracy']['members']:.4f} on members, "
        f"{target['accuracy']['nonmembers']:.4f} on non-members (Keras, float32).",
    ]
    if config:
        lines += [
            "",
            f"Run of {report['created']}: variants {', '.join(config['variants'])}; backends "
            f"{', '.join(config['backends'])}; attacks {', '.join(config['attacks'])}. Records file "
            f"`{dataset['records']}`, sha256 `{dataset.get('records_sha256', 'not recorded')}`.",
        ]
    return lines


def _leakage_table(report: dict, levels: list[str]) -> list[str]:
    lines = [
        "",
        "## Leakage per variant, backend and attack",
        "",
        "| variant | backend | accuracy (members / non-members) | attack | AUC | AUC 95% CI | "
        + " | ".join(f"TPR at {_level_label(level)} FPR (achieved FPR)" for level in levels)
        + " | balanced accuracy | advantage | PPV at 1% FPR | epsilon lower bound |",
        "|---|---|---|---|---:|---:|" + "---:|" * len(levels) + "---:|---:|---:|---:|",
    ]
    for variant in report["variants"]:
        accuracy = variant["accuracy"]
        for attack in variant["attacks"]:
            rates = " | ".join(_rate_with_fpr(attack, level) for level in levels)
            lines.append(
                f"| {variant['name']} | {runs_on(variant)} | "
                f"{accuracy['members']:.4f} / {accuracy['nonmembers']:.4f} | {attack['name']} | "
                f"{attack['auc']:.4f} | {fmt_interval(attack.get('ci', {}).get('auc'))} | {rates} | "
                f"{attack['balanced_accuracy']:.4f} | {attack['advantage']:.4f} | "
                f"{fmt_rate((attack.get('ppv_at_fpr') or {}).get('0.01'))} | "
                f"{attack.get('epsilon_lower_bound', float('nan')):.3f} |"
            )
    dataset = report["dataset"]
    lines += [
        "",
        f"n/m: not measurable. With {dataset['n_nonmembers']} non-members the smallest resolvable "
        f"FPR is {report['fpr_resolution']:.5f}. The TPR at an FPR level is read off the ROC curve "
        "without interpolation, at the threshold with the smallest FPR that reaches it. Balanced "
        "accuracy is max((TPR + 1 - FPR) / 2) and advantage max(TPR - FPR) over all thresholds: "
        "the threshold is chosen knowing which records are members, so both are upper bounds for "
        "an attacker who must fix a threshold in advance. PPV at 1% FPR is the fraction of members "
        "among the records flagged at the 1% threshold. The epsilon lower bound is the largest "
        "epsilon that some threshold proves with 95% Clopper-Pearson bounds on its TPR and FPR "
        "(both directions, delta = 0).",
    ]
    if report.get("bootstrap"):
        lines += [
            "",
            f"Intervals: percentile bootstrap over {report['bootstrap']['resamples']} resamples, "
            "drawn separately from members and non-members, the same resamples for every row.",
        ]
    if report.get("attacks"):
        lines += ["", "Attacks:", ""]
        lines += [f"- `{name}`: {description}" for name, description in report["attacks"].items()]
    return lines


def _agreement(report: dict) -> list[str]:
    rows = report.get("backend_agreement") or []
    if not rows:
        return []
    lines = [
        "",
        "## Backend agreement",
        "",
        "| variant | backends | identical records | largest logit difference |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        variant = f"{row['variant']} ({row['format']})" if row.get("format") else row["variant"]
        lines.append(
            f"| {variant} | {' vs '.join(row['backends'])} | "
            f"{row['identical_records']} / {row['n_records']} | {row['max_abs_logit_difference']:.3g} |"
        )
    lines += [
        "",
        "int8 variants must be identical record for record: the native kernel reproduces the "
        "runtime's integer arithmetic. Float variants differ in the last bits, because the native "
        "kernel adds in another order than XNNPACK; the largest difference shows by how much.",
    ]
    return lines


def _compression_lines(report: dict) -> list[str]:
    compression = report.get("compression")
    if not compression:
        return []
    lines = [
        "",
        "## Compression",
        "",
        "| variant | parameters | kernel sparsity | file | bytes | weight sparsity in file | ops |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for name, summary in compression.items():
        layers = summary["layer_sparsity"]
        zeros = sum(row["zeros"] for row in layers)
        size = sum(row["size"] for row in layers)
        for entry in summary["files"].values():
            stored = entry["weight_sparsity"]["sparsity"]
            lines.append(
                f"| {name} | {summary['parameter_count']} | {zeros / size if size else 0:.3f} | `{entry['path']}` | "
                f"{entry['bytes']} | {'n/m' if stored is None else f'{stored:.3f}'} | {', '.join(entry['operators'])} |"
            )
    notes = [f"- {name}: {note}" for name, summary in compression.items() for note in summary["notes"]]
    for row in report.get("skipped", []):
        where = f"{row['backend']} ({row['format']})" if row["format"] else row["backend"]
        notes.append(f"- {row['variant']} on {where}: {row['reason']}")
    if notes:
        lines += ["", "Not captured or not written:", "", *notes]
    return lines


def _leakage_verdict(row: dict) -> str:
    if row["captures_identical"]:
        return "identical (every capture byte-equal)"
    largest = max(row["attacks"], key=lambda attack: abs(attack["auc_difference"]), default=None)
    if largest is None:
        return "not compared"
    verdict = "differs" if row["leakage_differs"] else "no significant difference"
    return (
        f"{verdict}; largest AUC change {fmt_difference(largest['auc_difference'])} ({largest['name']}, "
        f"p {largest['auc_difference_p_value']:.3g})"
    )


def _devices(report: dict) -> list[str]:
    devices = report.get("devices") or []
    if not devices:
        return []
    lines = [
        "",
        "## Devices",
        "",
        "| device | reached at | board | CPU features | GEMM path | Python | edgemia | backends | captures | wall s |",
        "|---|---|---|---|---|---|---|---|---:|---:|",
    ]
    for device in devices:
        board = device["board"]
        features = ", ".join(device["profile"]["cpu_features"]) or "none required"
        lines.append(
            f"| {device['name']} | {device['target']} | {board.get('model') or 'unknown'} ({board.get('machine')}) | "
            f"{features} | {device['isa'] or 'automatic'} | {board.get('python')} | "
            f"{board.get('edgemia_version')} | {', '.join(device['backends'])} | "
            f"{device['captures']} new, {device['reused']} kept | {device['seconds']:.0f} |"
        )
    notes = [f"- {device['name']}: {note}" for device in devices for note in device.get("notes", [])]
    if notes:
        lines += ["", *notes]
    lines += [
        "",
        "CPU features: those the profile requires, all present on the board. A device capture runs "
        "`edgemia capture` on the board and comes back verified by SHA-256.",
    ]
    rows = report.get("device_agreement") or []
    if rows:
        lines += [
            "",
            "### Host versus device",
            "",
            "| variant | format | device backend | host backend | identical records | "
            "identical reference captures | largest logit difference | leakage |",
            "|---|---|---|---|---:|---:|---:|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['variant']} | {row['format']} | device:{row['device']}:{row['backend']} | "
                f"{row['host_backend']} | {row['identical_records']} / {row['n_records']} | "
                f"{row['identical_reference_captures']} / {row['n_references']} | "
                f"{row['max_abs_logit_difference']:.3g} | {_leakage_verdict(row)} |"
            )
        lines += [
            "",
            "Identical records compare the target's raw outputs record by record. Leakage compares each "
            "attack's AUC on the device with the host's on the same records (device minus host, DeLong's "
            "paired test); it differs when some attack's p-value is below 0.05.",
        ]
    return lines


def _artifacts_and_environment(report: dict) -> list[str]:
    if all("artifact" in variant for variant in report["variants"]):
        lines = ["", "## Artifacts", "", "| variant | file | bytes | sha256 |", "|---|---|---:|---|"]
        seen = set()
        for variant in report["variants"]:
            artifact = variant["artifact"]
            if artifact["path"] in seen:
                continue
            seen.add(artifact["path"])
            lines.append(
                f"| {variant['name']} | `{artifact['path']}` | {artifact['bytes']} | `{artifact['sha256']}` |"
            )
    else:
        lines = ["", "## Captures", "", "| variant | backend | target capture | sha256 |", "|---|---|---|---|"]
        for variant in report["variants"]:
            capture = variant["capture"]
            lines.append(
                f"| {variant['name']} | {variant['backend']} | `{capture['path']}` | `{capture['sha256']}` |"
            )
    env = report["environment"]
    packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items())
    lines += [
        "",
        "## Environment",
        "",
        f"edgemia {env['edgemia']}, Python {env['python']}, {packages}. "
        f"Host {env['host']} ({env['machine']}, {env['cpu']}).",
        "",
    ]
    return lines


# Attacks whose slices report.md shows, strongest first; the first one the run has is used.
_SLICE_ATTACKS = ("lira-online", "rmia", "lira-offline", "loss")
_SHOWN_RECORD_IDS = 10


def _exposure_lines(report: dict) -> list[str]:
    rows = [
        (variant, attack, attack["versus_float"]["newly_exposed"])
        for variant in report["variants"]
        for attack in variant["attacks"]
        if attack.get("versus_float", {}).get("newly_exposed")
    ]
    if not rows:
        return []
    lines = [
        "",
        "## Records newly exposed by compression",
        "",
        "Members whose score is at or above the float model's 1%-FPR threshold under the variant "
        "and below it under float, on the same backend. report.json lists every record id, and "
        "`records` contains each record's score under every variant.",
        "",
        "| variant | backend | attack | newly exposed members | record ids | non-members newly flagged | "
        "members no longer exposed |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for variant, attack, exposed in rows:
        ids = exposed["record_ids"][:_SHOWN_RECORD_IDS]
        listed_ids = ", ".join(str(i) for i in ids) + (", ..." if len(exposed["record_ids"]) > len(ids) else "")
        lines.append(
            f"| {variant['name']} | {variant['backend']} | {attack['name']} | {exposed['n_members']} | "
            f"{listed_ids} | {exposed['n_nonmembers']} | {exposed['n_members_no_longer_exposed']} |"
        )
    return lines


def _slice_lines(report: dict) -> list[str]:
    if not report["variants"]:
        return []
    names = [attack["name"] for attack in report["variants"][0]["attacks"]]
    chosen = next((name for name in _SLICE_ATTACKS if name in names), names[0] if names else None)
    backend = report["variants"][0]["backend"]
    variants = [variant for variant in report["variants"] if variant["backend"] == backend]
    rows_by_variant = {
        variant["name"]: next(attack for attack in variant["attacks"] if attack["name"] == chosen)
        for variant in variants
    }
    first = next(iter(rows_by_variant.values()))
    if not first.get("slices"):
        return []
    lines = [
        "",
        f"## Slices: attack {chosen}, backend {backend}",
        "",
        "AUC of the attack on each slice's members and non-members, with DeLong's standard error. "
        "n/m: fewer than 2 members or non-members.",
        "",
        "| attribute | value | members / non-members | "
        + " | ".join(f"AUC {name}" for name in rows_by_variant)
        + " |",
        "|---|---|---:|" + "---:|" * len(rows_by_variant),
    ]
    for index, row in enumerate(first["slices"]):
        cells = []
        for attack in rows_by_variant.values():
            cell = attack["slices"][index]
            cells.append(f"{cell['auc']:.3f} ± {cell['auc_standard_error']:.3f}" if cell["measurable"] else "n/m")
        lines.append(
            f"| {row['attribute']} | {row['value']} | {row['n_members']} / {row['n_nonmembers']} | "
            + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Disparate vulnerability, the largest AUC gap between two subgroups of one attribute "
        "(p: normal approximation, not corrected for choosing the largest gap):",
        "",
        "| variant | attribute | most vulnerable | least vulnerable | AUC gap | p |",
        "|---|---|---|---|---:|---:|",
    ]
    for name, attack in rows_by_variant.items():
        for gap in attack.get("disparate_vulnerability", []):
            lines.append(
                f"| {name} | {gap['attribute']} | {gap['most_vulnerable']} | {gap['least_vulnerable']} | "
                f"{gap['gap']:.3f} | {gap['p_value']:.3g} |"
            )
    return lines


def fmt_observed(value: float | None) -> str:
    return "n/m" if value is None else f"{value:.4g}"


def policy_lines(report: dict) -> list[str]:
    """Return the verdict and each rule's outcome, or nothing when no policy was applied."""
    section = report.get("policy")
    if section is None:
        return []
    failed = [outcome["rule"] for outcome in section["outcomes"] if not outcome["passed"]]
    verdict = "PASS" if section["verdict"] == "pass" else f"FAIL ({', '.join(failed)})"
    lines = [
        "",
        f"## Verdict: {verdict}",
        "",
        f"Policy `{section['path']}` (sha256 `{section['sha256'][:12]}`); a rule without a measurable "
        f"value counts as {'passed' if section['unmeasurable'] == 'pass' else 'failed'}.",
        "",
        "| rule | limit | worst value | where | outcome |",
        "|---|---:|---:|---|---|",
    ]
    for outcome in section["outcomes"]:
        where = outcome["where"] or {}
        place = ", ".join(str(value) for key, value in where.items() if key != "p_value" and value is not None)
        lines.append(
            f"| {outcome['rule']} | {outcome['limit']:g} | {fmt_observed(outcome['observed'])} | {place} | "
            f"{outcome['status']} |"
        )
    return lines


def _weaker_lines(report: dict) -> list[str]:
    from edgemia.attacks import REFERENCE_ATTACKS

    names = {attack["name"] for variant in report["variants"] for attack in variant["attacks"]}
    if not names or names & set(REFERENCE_ATTACKS):
        return []
    return [
        "",
        "**Weaker attacks only**: no reference models, so LiRA, RMIA and the shadow attack did not run. "
        "Threshold attacks on the target's own outputs find fewer members; low values do not show "
        "that the model is safe.",
    ]


def render(report: dict) -> str:
    """Render a report dict as Markdown."""
    from edgemia.reporting.mitigation import markdown_lines as mitigation_lines

    levels = list(report["variants"][0]["attacks"][0]["tpr_at_fpr"]) if report["variants"] else []
    lines = _header(report)
    lines += _weaker_lines(report)
    lines += policy_lines(report)
    lines += _leakage_table(report, levels)
    lines += _comparison_lines(report, levels)
    lines += _exposure_lines(report)
    lines += _slice_lines(report)
    lines += mitigation_lines(report.get("mitigation"))
    lines += _reference_lines(report)
    lines += _parameter_lines(report)
    lines += _agreement(report)
    lines += _devices(report)
    lines += _compression_lines(report)
    lines += _artifacts_and_environment(report)
    return "\n".join(lines)
