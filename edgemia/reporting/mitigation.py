"""The report's mitigation section: each defense's leakage and accuracy beside the undefended models.

Variants are grouped by compression recipe: the variant's canonical name
without its training steps (`dp-sgd:eps=8+int8` belongs to `int8`). Each
group lists the undefended float model, the undefended model of that recipe
when the audit ran it, and every defended variant of the recipe, on one
backend and model format, with one headline attack's AUC and TPR at 1% FPR
(95% bootstrap intervals) and the accuracy on members and non-members.

A defense restores float-level leakage when both its AUC and its TPR at 1%
FPR are at most the upper end of the undefended float model's interval
(without the bootstrap, at most the float model's value), so leakage below
the float model's counts too. Its accuracy cost is the drop in non-member
accuracy from the undefended model of the same recipe (from float when the
audit did not run that model). The cheapest defense is the restoring one
with the smallest cost.
"""

from __future__ import annotations

import importlib.util
import io
import logging

from edgemia.compression.spec import parse_variant
from edgemia.errors import InputError

logger = logging.getLogger(__name__)

FPR_LEVEL = "0.01"
CHART = "mitigation.png"

# The attack the section reports, the first of these that the audit ran.
HEADLINE_ATTACKS = ("lira-online", "rmia", "lira-offline", "rmia-offline", "shadow", "loss")


def _headline_attack(report: dict) -> str | None:
    ran = report["config"]["attacks"]
    return next((name for name in HEADLINE_ATTACKS if name in ran), ran[0] if ran else None)


def _defense_and_recipe(name: str) -> tuple[str | None, str]:
    """Return a variant's training steps (None without any) and its compression recipe.

    A name that is not a variant spec, such as a capture bundle's directory
    name in `edgemia attack`, has no defense and is its own recipe.
    """
    try:
        spec = parse_variant(name)
    except InputError:
        return None, name
    return spec.defense or None, spec.compression_name


def _entry(report: dict, variant: dict, attack_name: str) -> dict:
    attack = next(row for row in variant["attacks"] if row["name"] == attack_name)
    ci = attack.get("ci") or {}
    training = ((report.get("compression") or {}).get(variant["name"]) or {}).get("training") or {}
    defense, recipe = _defense_and_recipe(variant["name"])
    entry = {
        "variant": variant["name"],
        "defense": defense,
        "recipe": recipe,
        "auc": attack["auc"],
        "auc_ci": ci.get("auc"),
        "tpr_at_1pct_fpr": attack["tpr_at_fpr"].get(FPR_LEVEL),
        "tpr_at_1pct_fpr_ci": (ci.get("tpr_at_fpr") or {}).get(FPR_LEVEL),
        "accuracy_members": variant["accuracy"]["members"],
        "accuracy_nonmembers": variant["accuracy"]["nonmembers"],
    }
    for key in ("epsilon", "delta", "epsilon_bound"):
        if key in training:
            entry[key] = training[key]
    if "epsilon" in training and "epsilon_bound" not in training:
        entry["epsilon_bound"] = "DP-SGD accounting"
    return entry


def _upper(value: float | None, interval: list[float] | None) -> float | None:
    if interval is not None:
        return interval[1]
    return value


def _restores(entry: dict, float_entry: dict) -> bool:
    auc_limit = _upper(float_entry["auc"], float_entry["auc_ci"])
    tpr_limit = _upper(float_entry["tpr_at_1pct_fpr"], float_entry["tpr_at_1pct_fpr_ci"])
    if entry["tpr_at_1pct_fpr"] is None or tpr_limit is None:
        return entry["auc"] <= auc_limit
    return entry["auc"] <= auc_limit and entry["tpr_at_1pct_fpr"] <= tpr_limit


def pareto_front(entries: list[dict]) -> list[str]:
    """Return the variants that no other beats on both accuracy (higher) and AUC (lower)."""
    front = []
    for entry in entries:
        dominated = any(
            other["accuracy_nonmembers"] >= entry["accuracy_nonmembers"] and other["auc"] <= entry["auc"]
            and (other["accuracy_nonmembers"] > entry["accuracy_nonmembers"] or other["auc"] < entry["auc"])
            for other in entries
        )
        if not dominated:
            front.append(entry["variant"])
    return front


def _verdict(recipe: str, rows: list[dict], float_entry: dict, attack: str) -> tuple[str | None, str]:
    defended = [row for row in rows if row["defense"]]
    restoring = [row for row in defended if row["restores_float_leakage"]]
    interval = "95% interval" if float_entry["auc_ci"] is not None else "value (intervals are off)"
    subject = f"For {recipe}"
    if not restoring:
        lowest = min(defended, key=lambda row: row["auc"])
        return None, (f"{subject}, no defense brought {attack}'s leakage within the float model's {interval}; "
                      f"the lowest AUC was {lowest['auc']:.3f}, with {lowest['defense']}.")
    best = min(restoring, key=lambda row: (row["accuracy_cost"], row["auc"]))
    return best["defense"], (
        f"{subject}, the cheapest defense that brings {attack}'s leakage within the float model's {interval} is "
        f"{best['defense']}: AUC {best['auc']:.3f}, TPR at 1% FPR {percent_text(best['tpr_at_1pct_fpr'])}, "
        f"non-member accuracy {percent_text(best['accuracy_nonmembers'])}, "
        f"{_cost_text(best['accuracy_cost'])} the undefended model."
    )


def _cost_text(cost: float) -> str:
    """Say how far the defended accuracy lies below (positive cost) or above (negative cost) the undefended one."""
    return f"{100 * abs(cost):.1f} points {'below' if cost >= 0 else 'above'}"


def percent_text(value: float | None) -> str:
    """Format a rate as a percentage with one decimal, or n/m when it was not measurable."""
    return "n/m" if value is None else f"{100 * value:.1f}%"


def _bundle_keys(report: dict) -> list[tuple[str, str | None]]:
    keys = []
    for row in report["variants"]:
        key = (row["backend"], row.get("format"))
        if key not in keys:
            keys.append(key)
    return keys


def _bundle_entries(report: dict, attack: str, backend: str, model_format: str | None) -> dict[str, dict]:
    """Return the headline-attack entry of every variant on one backend and format, by variant name."""
    return {
        row["name"]: _entry(report, row, attack)
        for row in report["variants"]
        if row["backend"] == backend and row.get("format") == model_format
        and any(a["name"] == attack for a in row["attacks"])
    }


def mitigation_section(report: dict) -> dict | None:
    """Build the mitigation section of `report` from its variant rows; None without defended variants.

    Only the stored results are read, so the section of a rebuilt report
    equals the audit's. Bundles (backend and format) without float or
    without a defended variant are left out.
    """
    attack = _headline_attack(report)
    defended_names = {row["name"] for row in report["variants"] if _defense_and_recipe(row["name"])[0]}
    if attack is None or not defended_names:
        return None

    section = {"attack": attack, "fpr": float(FPR_LEVEL), "bundles": []}
    for backend, model_format in _bundle_keys(report):
        entries = _bundle_entries(report, attack, backend, model_format)
        if "float" not in entries or not defended_names & set(entries):
            continue
        float_entry = entries["float"]
        recipes = []
        for name, entry in entries.items():
            if name in defended_names and entry["recipe"] not in [group["recipe"] for group in recipes]:
                recipes.append({"recipe": entry["recipe"]})
        for group in recipes:
            recipe = group["recipe"]
            undefended = entries.get(recipe)
            baseline = undefended or float_entry
            members = [float_entry] + ([undefended] if undefended and recipe != "float" else [])
            members += [entry for name, entry in entries.items()
                        if name in defended_names and entry["recipe"] == recipe]
            group_rows = []
            for entry in members:
                row = dict(entry)
                row["accuracy_cost"] = baseline["accuracy_nonmembers"] - entry["accuracy_nonmembers"]
                row["restores_float_leakage"] = _restores(entry, float_entry)
                group_rows.append(row)
            group["rows"] = group_rows
            group["cheapest_defense"], group["sentence"] = _verdict(recipe, group_rows, float_entry, attack)
        section["bundles"].append({
            "backend": backend,
            "format": model_format,
            "recipes": recipes,
            "pareto_front": pareto_front(list(entries.values())),
        })
    return section if section["bundles"] else None


def mitigation_chart(report: dict, section: dict | None) -> bytes | None:
    """Draw the chart of the section's first bundle as PNG bytes; None without a section or matplotlib.

    The chart shows every variant of that backend and format, defended or
    not, so that the Pareto front is drawn among all of them.
    """
    if not section or importlib.util.find_spec("matplotlib") is None:
        return None
    bundle = section["bundles"][0]
    entries = _bundle_entries(report, section["attack"], bundle["backend"], bundle["format"])
    runs_on = f"{bundle['backend']} ({bundle['format']})" if bundle["format"] else bundle["backend"]
    return _draw_chart(list(entries.values()), bundle["pareto_front"], section["attack"], runs_on)


def _draw_chart(entries: list[dict], front: list[str], attack: str, runs_on: str) -> bytes:
    """Plot each variant's AUC (with its interval) against its non-member accuracy; return the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for entry in entries:
        accuracy, auc = 100 * entry["accuracy_nonmembers"], entry["auc"]
        interval = entry["auc_ci"]
        # A percentile interval need not contain the point estimate, and error bars cannot be negative.
        error = [[max(0.0, auc - interval[0])], [max(0.0, interval[1] - auc)]] if interval is not None else None
        marker = "s" if entry["defense"] else "o"
        axes.errorbar(accuracy, auc, yerr=error, fmt=marker, capsize=3,
                      color="tab:red" if entry["variant"] in front else "tab:blue")
        axes.annotate(entry["variant"], (accuracy, auc), textcoords="offset points", xytext=(5, 4), fontsize=7)
    frontier = sorted((e for e in entries if e["variant"] in front), key=lambda e: e["accuracy_nonmembers"])
    axes.plot([100 * e["accuracy_nonmembers"] for e in frontier], [e["auc"] for e in frontier],
              color="tab:red", linewidth=1, label="Pareto front")
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle=":", label="chance (AUC 0.5)")
    axes.set_xlabel("non-member accuracy (%)")
    axes.set_ylabel(f"{attack} AUC (95% interval)")
    axes.set_title(f"Leakage against accuracy, {runs_on}; squares are defended variants", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    # Without the Software entry the PNG bytes do not depend on the matplotlib version.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def interval_text(interval: list[float] | None, scale: float = 1.0, digits: int = 3) -> str:
    """Format an interval as " [low, high]" after multiplying by `scale`; empty without an interval."""
    if interval is None:
        return ""
    return f" [{scale * interval[0]:.{digits}f}, {scale * interval[1]:.{digits}f}]"


def markdown_lines(section: dict | None) -> list[str]:
    """Render the mitigation section as Markdown lines; none without a section."""
    if not section:
        return []
    lines = [
        "",
        "## Mitigations",
        "",
        f"Leakage under {section['attack']} and accuracy of each defense, beside the undefended float model and "
        "the undefended model of the same compression recipe. Cost: non-member accuracy lost against the "
        "undefended model of the recipe. Restores: AUC and TPR at 1% FPR at most the upper end of the float "
        "model's 95% interval.",
    ]
    for bundle in section["bundles"]:
        lines += ["", f"### {bundle['backend']} ({bundle['format']})", ""]
        if bundle.get("chart"):
            lines += [f"![leakage against accuracy]({bundle['chart']})", ""]
        for group in bundle["recipes"]:
            lines += [
                f"**{group['recipe']}**",
                "",
                "| variant | defense | AUC | TPR at 1% FPR | accuracy members | accuracy non-members | cost "
                "| epsilon (delta) | restores |",
                "|---|---|---:|---:|---:|---:|---:|---|---|",
            ]
            for row in group["rows"]:
                privacy = ""
                if "epsilon" in row:
                    privacy = f"{row['epsilon']:.3g} ({row['delta']:g}), {row['epsilon_bound']}"
                lines.append(
                    f"| {row['variant']} | {row['defense'] or 'none'} | {row['auc']:.3f}{interval_text(row['auc_ci'])} | "
                    f"{percent_text(row['tpr_at_1pct_fpr'])}{interval_text(row['tpr_at_1pct_fpr_ci'], 100, 1)} | "
                    f"{percent_text(row['accuracy_members'])} | {percent_text(row['accuracy_nonmembers'])} | "
                    f"{100 * row['accuracy_cost']:+.1f} | {privacy} | {'yes' if row['restores_float_leakage'] else 'no'} |"
                )
            lines += ["", group["sentence"], ""]
        lines.append(f"Pareto front (accuracy against AUC): {', '.join(bundle['pareto_front'])}.")
    return lines
