"""Charts of report.html, drawn with matplotlib from a report dict alone.

Every chart reads the stored per-record scores (report.json's `records`) or
the stored metrics; nothing is recomputed from captures. Each function
returns a PNG as bytes, or None when the report lacks what the chart needs.
"""

from __future__ import annotations

import io

import numpy as np

from edgemia.stats.roc import roc_curve
from edgemia.stats.slices import CLASS_ATTRIBUTE, CORRECTNESS_ATTRIBUTE

# Attacks whose scores the histograms and subgroup bars show, strongest first;
# the first one the run has is used.
PREFERRED_ATTACKS = ("lira-online", "rmia", "lira-offline", "rmia-offline", "shadow", "loss")

_DPI = 96


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt



def _png(figure) -> bytes:
    buffer = io.BytesIO()
    # Without the Software entry the PNG bytes do not depend on the matplotlib version.
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(figure)
    return buffer.getvalue()


def location_of(variant: dict) -> str:
    """Return a report row's key into records.scores: backend, or backend-format."""
    return f"{variant['backend']}-{variant['format']}" if variant.get("format") else variant["backend"]


def chart_location(report: dict) -> str | None:
    """Return the backend (and format) whose scores the charts draw: the first row's, where float ran too."""
    scores = report.get("records", {}).get("scores", {})
    for variant in report["variants"]:
        where = location_of(variant)
        if where in scores.get("float", {}):
            return where
    return location_of(report["variants"][0]) if report["variants"] else None


def chosen_attack(report: dict) -> str | None:
    """Return the strongest attack the run has, by the order of PREFERRED_ATTACKS."""
    names = [attack["name"] for attack in report["variants"][0]["attacks"]] if report["variants"] else []
    return next((name for name in PREFERRED_ATTACKS if name in names), names[0] if names else None)


def _variant_scores(report: dict, where: str, attack: str) -> dict[str, np.ndarray]:
    scores = report.get("records", {}).get("scores", {})
    return {
        name: np.asarray(by_where[where][attack], dtype=np.float64)
        for name, by_where in scores.items()
        if where in by_where and attack in by_where[where]
    }


def roc_chart(report: dict, attack: str, where: str) -> bytes | None:
    """Log-log ROC curves of one attack, every variant overlaid, on one backend and format."""
    member = np.asarray(report.get("records", {}).get("member", []), dtype=bool)
    curves = _variant_scores(report, where, attack)
    if not curves or member.all() or not member.any():
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.2, 4.0))
    n_members, n_nonmembers = int(member.sum()), int((~member).sum())
    for name, scores in curves.items():
        curve = roc_curve(scores, member)
        # Log axes cannot show 0: the curve starts at the first vertex with a false or true positive.
        keep = (curve.fpr > 0) & (curve.tpr > 0)
        axes.step(curve.fpr[keep], curve.tpr[keep], where="post", label=name, linewidth=1.2)
    floor = min(1.0 / n_nonmembers, 1.0 / n_members)
    axes.plot([floor, 1], [floor, 1], color="grey", linestyle=":", linewidth=0.8, label="chance")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(1.0 / n_nonmembers, 1)
    axes.set_ylim(1.0 / n_members, 1)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(f"{attack} ({where})", fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    axes.grid(True, which="major", linewidth=0.3)
    return _png(figure)


def tradeoff_chart(report: dict, attack: str, where: str) -> bytes | None:
    """Leakage (AUC of `attack`) against file size and against accuracy on non-members, one point per variant."""
    rows = [variant for variant in report["variants"] if location_of(variant) == where]
    points = []
    for variant in rows:
        row = next((a for a in variant["attacks"] if a["name"] == attack), None)
        size = (variant.get("artifact") or {}).get("bytes")
        if row is not None:
            points.append((variant["name"], size, variant["accuracy"]["nonmembers"], row["auc"]))
    if not points:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, (by_size, by_accuracy) = plt.subplots(1, 2, figsize=(8.4, 3.6), sharey=True)
    for name, size, accuracy, auc_value in points:
        if size is not None:
            by_size.scatter(size, auc_value, s=30)
            by_size.annotate(name, (size, auc_value), fontsize=7, xytext=(4, 3), textcoords="offset points")
        by_accuracy.scatter(accuracy, auc_value, s=30)
        by_accuracy.annotate(name, (accuracy, auc_value), fontsize=7, xytext=(4, 3), textcoords="offset points")
    # A span of at least 0.05 keeps tiny AUC differences from filling the whole axis.
    aucs = [auc_value for _, _, _, auc_value in points]
    middle, half_span = (max(aucs) + min(aucs)) / 2, max(0.025, (max(aucs) - min(aucs)) * 0.6)
    by_size.set_ylim(middle - half_span, middle + half_span)
    if any(size is not None for _, size, _, _ in points):
        by_size.set_xscale("log")
        by_size.set_xlabel("model file size (bytes)")
    else:
        by_size.set_xlabel("model file size: not in this report")
    by_size.set_ylabel(f"AUC of {attack}")
    by_accuracy.set_xlabel("accuracy on non-members")
    by_accuracy.xaxis.set_major_locator(MaxNLocator(4))
    for axes in (by_size, by_accuracy):
        axes.grid(True, linewidth=0.3)
    figure.suptitle(f"Leakage, accuracy and size ({where})", fontsize=10)
    return _png(figure)


def subgroup_attributes(report: dict) -> list[str]:
    """Return the subgroup attributes of the records, without the class and prediction-outcome slices."""
    groups = report.get("records", {}).get("groups", {})
    return [name for name in groups if name not in (CLASS_ATTRIBUTE, CORRECTNESS_ATTRIBUTE)]


def slice_chart(report: dict, attack: str, where: str, attribute: str) -> bytes | None:
    """Bars of the AUC on each value of one slice attribute, one bar per variant, with DeLong's standard error."""
    rows = [variant for variant in report["variants"] if location_of(variant) == where]
    series = {}
    values: list = []
    for variant in rows:
        row = next((a for a in variant["attacks"] if a["name"] == attack), None)
        if row is None:
            continue
        cells = [cell for cell in row.get("slices", []) if cell["attribute"] == attribute]
        if not cells:
            continue
        values = [cell["value"] for cell in cells]
        series[variant["name"]] = cells
    if not series:
        return None
    plt = _pyplot()
    # About 0.45 inch per bar, between 4.5 and 12 inches, so that the page needs no horizontal scrolling.
    width_inches = min(12.0, max(4.5, 0.45 * len(values) * len(series) + 2))
    figure, axes = plt.subplots(figsize=(width_inches, 3.4))
    width = 0.8 / len(series)
    positions = np.arange(len(values))
    for i, (name, cells) in enumerate(series.items()):
        heights = [cell["auc"] if cell["measurable"] else np.nan for cell in cells]
        errors = [cell["auc_standard_error"] if cell["measurable"] else 0 for cell in cells]
        axes.bar(positions + i * width - 0.4 + width / 2, heights, width, yerr=errors, label=name, capsize=2)
    first = next(iter(series.values()))
    axes.set_xticks(positions, [f"{cell['value']}\n({cell['n_members']}/{cell['n_nonmembers']})" for cell in first],
                    fontsize=7)
    axes.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    axes.set_ylabel(f"AUC of {attack}")
    axes.set_ylim(0.3, 1.0)
    axes.set_title(f"{attribute} (members/non-members per value; {where})", fontsize=10)
    axes.legend(fontsize=7, ncol=min(len(series), 4))
    return _png(figure)


def _bin_edges(values: np.ndarray, bins: int = 40) -> np.ndarray:
    """Return increasing edges of up to `bins` bins over the 0.5th to 99.5th percentiles of finite `values`.

    The percentiles keep a few extreme scores from squeezing the rest into
    one bin. Scores that are all equal get bins of width 1/`bins` around
    them. Where the span is too narrow for `bins` distinct float edges, as
    with scores near 1e30 that differ in their last bits, one bin spans it.
    """
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    if np.all(np.diff(edges) > 0):
        return edges
    return np.array([np.nextafter(low, -np.inf), np.nextafter(high, np.inf)])


def histogram_chart(report: dict, attack: str, where: str) -> bytes | None:
    """Histograms of member and non-member scores of `attack`, one panel per variant."""
    member = np.asarray(report.get("records", {}).get("member", []), dtype=bool)
    by_variant = _variant_scores(report, where, attack)
    if not by_variant or member.size == 0:
        return None
    plt = _pyplot()
    columns = min(3, len(by_variant))
    lines = -(-len(by_variant) // columns)
    figure, panels = plt.subplots(lines, columns, figsize=(3.3 * columns, 2.6 * lines), squeeze=False)
    for axes, (name, scores) in zip(panels.flat, by_variant.items()):
        finite = np.isfinite(scores)
        axes.set_title(name, fontsize=9)
        if not finite.any():
            axes.text(0.5, 0.5, "no finite scores", ha="center", va="center", transform=axes.transAxes, fontsize=8)
            axes.set_axis_off()
            continue
        edges = _bin_edges(scores[finite])
        axes.hist(scores[finite & ~member], bins=edges, alpha=0.6, label="non-members", color="tab:blue")
        axes.hist(scores[finite & member], bins=edges, alpha=0.6, label="members", color="tab:red")
        axes.tick_params(labelsize=7)
        axes.legend(fontsize=6)
    for axes in list(panels.flat)[len(by_variant):]:
        axes.axis("off")
    figure.suptitle(f"Scores of {attack} ({where})", fontsize=10)
    figure.tight_layout()
    return _png(figure)
