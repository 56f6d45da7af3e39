"""report.html: one self-contained page for the auditor.

The page embeds its charts as base64 PNG images and its style inline, and
its Content-Security-Policy forbids every other source, so a browser opens
it offline and loads nothing from the network. Sections, in order: verdict
and rules, variants table, ROC curves, trade-off chart, subgroup leakage,
score histograms, mitigations (when the audit ran defended variants), newly
exposed records and the reproducibility manifest.
"""

from __future__ import annotations

import base64
import importlib.util
from html import escape

from edgemia.reporting import charts
from edgemia.reporting.markdown import fmt_interval, fmt_observed
from edgemia.reporting.mitigation import interval_text, mitigation_chart, percent_text

_LEVELS = ("0.01", "0.001")  # FPR levels of the variants table: 1% and 0.1%
_SHOWN_RECORD_IDS = 50
# Packages of the manifest, by the name report.json's environment records them under.
_MANIFEST_PACKAGES = ("numpy", "tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "onnxruntime", "onnx",
                      "tf2onnx", "scikit-learn", "matplotlib")

_STYLE = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1200px;
       color: #1b1b1b; font-size: 14px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
td { white-space: nowrap; } td.text { white-space: normal; }
th { background: #f2f2f2; } td.text, th.text { text-align: left; }
.verdict { padding: 0.8em 1em; font-size: 1.3em; font-weight: bold; border-radius: 4px; }
.verdict.pass { background: #dff3df; border: 2px solid #2e7d32; color: #1b5e20; }
.verdict.fail { background: #fde2e1; border: 2px solid #c62828; color: #8e0000; }
.verdict.none { background: #eeeeee; border: 2px solid #888888; }
td.fail { background: #fde2e1; } td.pass { background: #dff3df; }
.note { color: #555; font-size: 12px; max-width: 60em; }
.charts img { margin: 4px; border: 1px solid #ddd; }
code { font-size: 11px; }
"""


def _image(png: bytes | None, alt: str) -> str:
    if png is None:
        return f'<p class="note">No chart: {escape(alt)} is not in this report.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _cell(value, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{escape(str(value))}</td>"


def _rate(attack: dict, level: str) -> str:
    value = attack["tpr_at_fpr"].get(level)
    if value is None:
        return "n/m"
    interval = (attack.get("ci") or {}).get("tpr_at_fpr", {}).get(level)
    return f"{value:.4f} {fmt_interval(interval)}".strip()


def _verdict_section(report: dict) -> str:
    section = report.get("policy")
    if section is None:
        return ('<div class="verdict none" id="verdict">No verdict: no policy was applied '
                "(<code>--policy FILE</code>)</div>")
    failed = [outcome["rule"] for outcome in section["outcomes"] if not outcome["passed"]]
    text = "PASS: every rule passed" if not failed else f"FAIL: {', '.join(failed)}"
    rows = []
    for outcome in section["outcomes"]:
        where = outcome["where"] or {}
        place = ", ".join(f"{key.replace('_', ' ')} {value:.3g}" if isinstance(value, float) else
                          f"{key.replace('_', ' ')} {value}" for key, value in where.items() if value is not None)
        css = "pass" if outcome["passed"] else "fail"
        rows.append(
            "<tr>" + _cell(outcome["rule"], "text") + _cell(outcome["description"], "text")
            + _cell(f"{outcome['limit']:g}") + _cell(fmt_observed(outcome["observed"]))
            + _cell(place, "text") + _cell(outcome["status"], css) + "</tr>"
        )
    return (
        f'<div class="verdict {"pass" if not failed else "fail"}" id="verdict">{escape(text)}</div>'
        f'<p class="note">Policy <code>{escape(section["path"])}</code>, sha256 '
        f'<code>{escape(section["sha256"])}</code>. A rule without a measurable value counts as '
        f'{"passed" if section["unmeasurable"] == "pass" else "failed"}.</p>'
        '<table id="rules"><tr><th class="text">rule</th><th class="text">checks</th><th>limit</th>'
        '<th>worst value</th><th class="text">where</th><th>outcome</th></tr>' + "".join(rows) + "</table>"
    )


def _variants_section(report: dict) -> str:
    header = (
        '<tr><th class="text">variant</th><th class="text">backend</th><th>file bytes</th>'
        "<th>accuracy members</th><th>accuracy non-members</th><th class=\"text\">attack</th>"
        "<th>AUC [95% CI]</th><th>TPR at 1% FPR [CI]</th><th>TPR at 0.1% FPR [CI]</th>"
        "<th>AUC change vs float [CI]</th><th>DeLong p</th></tr>"
    )
    rows = []
    for variant in report["variants"]:
        size = (variant.get("artifact") or {}).get("bytes", "")
        where = f"{variant['backend']} ({variant['format']})" if variant.get("format") else variant["backend"]
        for attack in variant["attacks"]:
            versus = attack.get("versus_float")
            change = p_value = ""
            if versus is not None:
                change = f"{versus['auc_difference']:+.4f} {fmt_interval(versus.get('auc_difference_ci'))}".strip()
                p_value = f"{versus['auc_difference_p_value']:.3g}"
            auc_text = f"{attack['auc']:.4f} {fmt_interval((attack.get('ci') or {}).get('auc'))}".strip()
            rows.append(
                "<tr>" + _cell(variant["name"], "text") + _cell(where, "text") + _cell(size)
                + _cell(f"{variant['accuracy']['members']:.4f}") + _cell(f"{variant['accuracy']['nonmembers']:.4f}")
                + _cell(attack["name"], "text") + _cell(auc_text)
                + "".join(_cell(_rate(attack, level)) for level in _LEVELS)
                + _cell(change) + _cell(p_value) + "</tr>"
            )
    intervals = (
        "Intervals are 95% bootstrap intervals, paired for the change versus float on the same "
        "backend and format. " if report.get("bootstrap") else ""
    )
    return (
        '<h2 id="variants">Variants</h2><table>' + header + "".join(rows) + "</table>"
        f'<p class="note">n/m: not measurable; with {report["dataset"]["n_nonmembers"]} non-members the '
        f"smallest resolvable FPR is {report['fpr_resolution']:.5f}. {intervals}A positive "
        "change means the variant leaks more than float.</p>"
    )


def _weaker_note(report: dict) -> str:
    from edgemia.attacks import REFERENCE_ATTACKS

    names = {attack["name"] for variant in report["variants"] for attack in variant["attacks"]}
    if names & set(REFERENCE_ATTACKS):
        return ""
    return (
        '<p class="note" id="weaker"><b>Weaker attacks only.</b> This run has no reference models, so '
        "LiRA, RMIA and the shadow attack did not run. The attacks shown threshold the target's "
        "own outputs; they find fewer members, so low values here do not show that the model is "
        "safe.</p>"
    )


def _exposure_section(report: dict) -> str:
    rows = []
    for variant in report["variants"]:
        for attack in variant["attacks"]:
            exposed = (attack.get("versus_float") or {}).get("newly_exposed")
            if not exposed or not exposed["n_members"]:
                continue
            ids = exposed["record_ids"]
            listed = ", ".join(str(i) for i in ids[:_SHOWN_RECORD_IDS]) + (", ..." if len(ids) > _SHOWN_RECORD_IDS
                                                                          else "")
            rows.append(
                "<tr>" + _cell(variant["name"], "text") + _cell(charts.location_of(variant), "text")
                + _cell(attack["name"], "text") + _cell(exposed["n_members"]) + _cell(listed, "text")
                + _cell(exposed["n_nonmembers"]) + _cell(exposed["n_members_no_longer_exposed"]) + "</tr>"
            )
    body = (
        '<table><tr><th class="text">variant</th><th class="text">backend</th><th class="text">attack</th>'
        '<th>newly exposed members</th><th class="text">record ids</th><th>non-members newly flagged</th>'
        "<th>members no longer exposed</th></tr>" + "".join(rows) + "</table>"
        if rows else '<p class="note">No compressed variant newly exposes a member.</p>'
    )
    return (
        '<h2 id="exposed">Records newly exposed by compression</h2>'
        '<p class="note">Members at or above the float model\'s 1%-FPR threshold under the variant and '
        "below it under float, on the same backend and format. report.json lists every record id.</p>"
        + body
    )


def _mitigation_section(report: dict, png: bytes | None) -> str:
    """Render the mitigation section: chart, one table per compression recipe and its sentence."""
    section = report.get("mitigation")
    if not section:
        return ""
    parts = [
        '<h2 id="mitigation">Mitigations</h2>',
        f'<p class="note">Leakage under {escape(section["attack"])} and accuracy of each defense, beside the '
        "undefended float model and the undefended model of the same compression recipe. Intervals are 95% "
        "bootstrap intervals. Cost: non-member accuracy lost against the undefended model of the recipe, in "
        "percentage points. Restores: AUC and TPR at 1% FPR at most the upper end of the float model's "
        "interval.</p>",
    ]
    header = (
        '<tr><th class="text">variant</th><th class="text">defense</th><th>AUC [95% CI]</th>'
        "<th>TPR at 1% FPR [95% CI]</th><th>accuracy members</th><th>accuracy non-members</th><th>cost</th>"
        '<th class="text">epsilon (delta)</th><th>restores</th></tr>'
    )
    for index, bundle in enumerate(section["bundles"]):
        runs_on = f"{bundle['backend']} ({bundle['format']})" if bundle.get("format") else bundle["backend"]
        parts.append(f"<h3>{escape(runs_on)}</h3>")
        if index == 0:
            parts.append('<div class="charts">' + _image(png, "leakage against accuracy") + "</div>")
        for group in bundle["recipes"]:
            rows = []
            for row in group["rows"]:
                privacy = ""
                if "epsilon" in row:
                    privacy = f"{row['epsilon']:.3g} ({row['delta']:g}), {row['epsilon_bound']}"
                restores = row["restores_float_leakage"]
                rows.append(
                    "<tr>" + _cell(row["variant"], "text") + _cell(row["defense"] or "none", "text")
                    + _cell(f"{row['auc']:.3f}{interval_text(row['auc_ci'])}")
                    + _cell(percent_text(row["tpr_at_1pct_fpr"]) + interval_text(row["tpr_at_1pct_fpr_ci"], 100, 1))
                    + _cell(percent_text(row["accuracy_members"])) + _cell(percent_text(row["accuracy_nonmembers"]))
                    + _cell(f"{100 * row['accuracy_cost']:+.1f}") + _cell(privacy, "text")
                    + _cell("yes" if restores else "no", "pass" if restores else "fail") + "</tr>"
                )
            parts.append(
                f"<p><b>Recipe {escape(group['recipe'])}</b></p><table>" + header + "".join(rows) + "</table>"
                f'<p class="sentence">{escape(group["sentence"])}</p>'
            )
        parts.append(f'<p class="note">Pareto front (accuracy against AUC): '
                     f'{escape(", ".join(bundle["pareto_front"]))}.</p>')
    return "".join(parts)


def _manifest_section(report: dict) -> str:
    env = report.get("environment", {})
    packages = env.get("packages", {})
    items = [("edgemia", env.get("edgemia", report.get("edgemia_version"))), ("Python", env.get("python"))]
    items += [(name, packages.get(name, "not installed")) for name in _MANIFEST_PACKAGES]
    seeds = [("split and training seed", report.get("seed"))]
    if report.get("bootstrap"):
        seeds.append(("bootstrap seed", report["bootstrap"]["seed"]))
    models = (report.get("references") or {}).get("models") or []
    if models:
        seeds.append(("reference model training seeds", ", ".join(str(m["training_seed"]) for m in models)))
    machine = [
        ("host", env.get("host")), ("system (kernel)", env.get("system")), ("machine", env.get("machine")),
        ("CPU", env.get("cpu")), ("device", env.get("device", env.get("host"))),
    ]

    files = []
    seen = set()
    for variant in report["variants"]:
        artifact = variant.get("artifact") or {}
        capture = variant.get("capture") or {}
        path = artifact.get("path") or capture.get("path")
        if path in seen:
            continue
        seen.add(path)
        files.append(
            "<tr>" + _cell(variant["name"], "text") + _cell(path, "text")
            + _cell(artifact.get("sha256") or capture.get("sha256"), "text") + "</tr>"
        )
    paths = []
    for variant in report["variants"]:
        capture = variant.get("capture") or {}
        paths.append(
            "<tr>" + _cell(variant["name"], "text") + _cell(charts.location_of(variant), "text")
            + _cell(capture.get("numerics"), "text") + _cell(capture.get("isa"), "text")
            + _cell(capture.get("threads")) + "</tr>"
        )
    dataset = report["dataset"]

    def pairs(rows) -> str:
        return "".join("<tr>" + _cell(k, "text") + _cell(v if v is not None else "not recorded", "text") + "</tr>"
                       for k, v in rows)

    return (
        '<h2 id="manifest">Reproducibility manifest</h2>'
        f'<p>Created {escape(str(report.get("created")))}; report schema version '
        f'{escape(str(report.get("schema_version")))}. Records <code>{escape(str(dataset.get("records")))}</code>, '
        f'sha256 <code>{escape(str(dataset.get("records_sha256", "not recorded")))}</code>.</p>'
        '<table><tr><th class="text">software</th><th class="text">version</th></tr>' + pairs(items) + "</table>"
        '<table><tr><th class="text">seed</th><th class="text">value</th></tr>' + pairs(seeds) + "</table>"
        '<table><tr><th class="text">machine</th><th class="text">value</th></tr>' + pairs(machine) + "</table>"
        '<table><tr><th class="text">variant</th><th class="text">file</th><th class="text">sha256</th></tr>'
        + "".join(files) + "</table>"
        '<table><tr><th class="text">variant</th><th class="text">backend</th><th class="text">numerics</th>'
        '<th class="text">kernel path (instruction set)</th><th>threads</th></tr>' + "".join(paths) + "</table>"
    )


def _title(report: dict) -> str:
    name = report["dataset"].get("name") or report.get("captures") or "capture bundles"
    return f"edgemia {'audit' if report.get('target') else 'attack'}: {name}"


def render_html(report: dict, mitigation_png: bytes | None = None) -> str:
    """Render a report dict as one self-contained HTML page.

    `mitigation_png` is the mitigation chart when the caller has drawn it
    already; without it the chart is drawn here.
    """
    where = charts.chart_location(report)
    attack = charts.chosen_attack(report)
    attacks = [row["name"] for row in report["variants"][0]["attacks"]] if report["variants"] else []
    target = report.get("target")
    dataset = report["dataset"]

    parts = [f"<h1>{escape(_title(report))}</h1>", _verdict_section(report)]
    description = dataset.get("description") or ""
    # Descriptions of the built-in data sets already give the number of classes.
    classes = "" if "class" in description else f"; {dataset['n_classes']} classes"
    summary = (f"{description}. Members: {dataset['n_members']}; non-members: "
               f"{dataset['n_nonmembers']}{classes}.")
    if target is not None:
        summary += (f" Target {target['recipe']['architecture']}, {target['recipe']['epochs']} epochs; "
                    f"Keras accuracy {target['accuracy']['members']:.4f} on members and "
                    f"{target['accuracy']['nonmembers']:.4f} on non-members.")
    parts.append(f"<p>{escape(summary)}</p>")
    parts.append(_weaker_note(report))
    parts.append(_variants_section(report))

    if where is not None and importlib.util.find_spec("matplotlib") is None:
        parts.append('<p class="note">No charts: matplotlib is not installed; install it with '
                     "<code>pip install matplotlib</code> and run <code>edgemia report RUN_DIR</code>.</p>")
    elif where is not None:
        parts.append('<h2 id="roc">ROC curves (log-log)</h2><div class="charts">')
        parts += [_image(charts.roc_chart(report, name, where), f"ROC curve of {name}") for name in attacks]
        parts.append('</div><p class="note">Each curve is one variant on the same backend and records. The '
                     "dotted line is chance. The axes start at one member and one non-member.</p>")
        parts.append('<h2 id="tradeoff">Leakage, accuracy and size</h2><div class="charts">')
        parts.append(_image(charts.tradeoff_chart(report, attack, where), "trade-off chart"))
        parts.append("</div>")
        parts.append('<h2 id="subgroups">Leakage per subgroup</h2><div class="charts">')
        attributes = charts.subgroup_attributes(report)
        if not attributes:
            parts.append('<p class="note">The records have no subgroup attribute; the bars show each '
                         "class instead.</p>")
            attributes = [charts.CLASS_ATTRIBUTE]
        parts += [_image(charts.slice_chart(report, attack, where, attribute), f"AUC per {attribute}")
                  for attribute in attributes]
        parts.append("</div>")
        parts.append('<h2 id="histograms">Member and non-member scores</h2><div class="charts">')
        parts.append(_image(charts.histogram_chart(report, attack, where), "score histograms"))
        parts.append("</div>")

    if report.get("mitigation"):
        png = mitigation_png if mitigation_png is not None else mitigation_chart(report, report["mitigation"])
        parts.append(_mitigation_section(report, png))
    parts.append(_exposure_section(report))
    parts.append(_manifest_section(report))
    body = "\n".join(part for part in parts if part)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(_title(report))}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
