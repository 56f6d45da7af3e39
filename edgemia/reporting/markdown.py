"""report.md: the audit as Markdown, fit for a pull-request comment."""

from __future__ import annotations


def fmt_rate(value: float | None) -> str:
    return "n/m" if value is None else f"{value:.4f}"


def _level_label(level: str) -> str:
    return f"{float(level) * 100:g}%"


def render(report: dict) -> str:
    dataset = report["dataset"]
    target = report["target"]
    levels = list(report["variants"][0]["attacks"][0]["tpr_at_fpr"]) if report["variants"] else []
    lines = [
        f"# edgemia audit: {dataset['name']}",
        "",
        f"{dataset['description']}. Members (training records of the target): "
        f"{dataset['n_members']}; non-members: {dataset['n_nonmembers']}; split seed {report['seed']}.",
        "",
        f"Target: `{target['recipe']['architecture']}`, {target['recipe']['epochs']} epochs; "
        f"accuracy {target['accuracy']['members']:.4f} on members, "
        f"{target['accuracy']['nonmembers']:.4f} on non-members (Keras, float32).",
        "",
        "## Leakage per variant, backend and attack",
        "",
        "| variant | backend | accuracy (members / non-members) | attack | AUC | "
        + " | ".join(f"TPR at {_level_label(level)} FPR" for level in levels)
        + " | balanced accuracy | advantage |",
        "|---|---|---|---|---:|" + "---:|" * len(levels) + "---:|---:|",
    ]

    for variant in report["variants"]:
        accuracy = variant["accuracy"]
        for attack in variant["attacks"]:
            rates = " | ".join(fmt_rate(attack["tpr_at_fpr"][level]) for level in levels)
            lines.append(
                f"| {variant['name']} | {variant['backend']} | "
                f"{accuracy['members']:.4f} / {accuracy['nonmembers']:.4f} | {attack['name']} | "
                f"{attack['auc']:.4f} | {rates} | {attack['balanced_accuracy']:.4f} | "
                f"{attack['advantage']:.4f} |"
            )

    lines += [
        "",
        f"n/m: not measurable. With {dataset['n_nonmembers']} non-members the smallest "
        f"resolvable FPR is {report['fpr_resolution']:.5f}. Advantage is max(TPR - FPR) over "
        "thresholds; balanced accuracy is max((TPR + 1 - FPR) / 2).",
    ]

    if report.get("backend_agreement"):
        lines += [
            "",
            "## Backend agreement",
            "",
            "| variant | backends | identical records | largest logit difference |",
            "|---|---|---:|---:|",
        ]
        for row in report["backend_agreement"]:
            lines.append(
                f"| {row['variant']} | {' vs '.join(row['backends'])} | "
                f"{row['identical_records']} / {row['n_records']} | "
                f"{row['max_abs_logit_difference']:.3g} |"
            )

    lines += ["", "## Artifacts", "", "| variant | file | bytes | sha256 |", "|---|---|---:|---|"]
    seen = set()
    for variant in report["variants"]:
        artifact = variant["artifact"]
        if artifact["path"] in seen:
            continue
        seen.add(artifact["path"])
        lines.append(
            f"| {variant['name']} | `{artifact['path']}` | {artifact['bytes']} | `{artifact['sha256']}` |"
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
    return "\n".join(lines)
