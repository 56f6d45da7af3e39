"""The mitigation section on a hand-made report: grouping, restoring defenses, cost and Pareto front."""

from __future__ import annotations

import pytest

from edgemia.reporting.mitigation import markdown_lines, mitigation_chart, mitigation_section, pareto_front


def _variant(name, auc, tpr, accuracy, auc_ci=None, tpr_ci=None):
    attack = {"name": "lira-online", "auc": auc, "tpr_at_fpr": {"0.0": None, "0.001": None, "0.01": tpr}}
    if auc_ci is not None:
        attack["ci"] = {"auc": auc_ci, "tpr_at_fpr": {"0.01": tpr_ci}}
    return {"name": name, "backend": "native", "format": "tflite", "attacks": [attack],
            "accuracy": {"members": 1.0, "nonmembers": accuracy}}


def _report(defended_auc=0.52):
    return {
        "config": {"attacks": ["loss", "lira-online"]},
        "variants": [
            _variant("float", 0.55, 0.020, 0.97, [0.53, 0.57], [0.009, 0.037]),
            _variant("int8", 0.60, 0.050, 0.96, [0.58, 0.62], [0.03, 0.07]),
            _variant("dp-sgd:eps=8+int8", defended_auc, 0.010, 0.91, [0.50, 0.54], [0.003, 0.02]),
            _variant("l2:0.001+int8", 0.56, 0.030, 0.95, [0.54, 0.58], [0.02, 0.045]),
            _variant("l2:0.001", 0.54, 0.015, 0.965, [0.52, 0.56], [0.006, 0.03]),
        ],
        "compression": {"dp-sgd:eps=8+int8": {"training": {"epsilon": 7.99, "delta": 1e-5}}},
    }


def test_groups_by_compression_recipe():
    section = mitigation_section(_report())
    assert section["attack"] == "lira-online"
    recipes = {group["recipe"]: group for group in section["bundles"][0]["recipes"]}
    assert list(recipes) == ["int8", "float"]
    assert [row["variant"] for row in recipes["int8"]["rows"]] == [
        "float", "int8", "dp-sgd:eps=8+int8", "l2:0.001+int8"]
    assert [row["variant"] for row in recipes["float"]["rows"]] == ["float", "l2:0.001"]


def test_cheapest_restoring_defense():
    recipes = {g["recipe"]: g for g in mitigation_section(_report())["bundles"][0]["recipes"]}
    rows = {row["variant"]: row for row in recipes["int8"]["rows"]}
    assert not rows["int8"]["restores_float_leakage"]
    assert rows["dp-sgd:eps=8+int8"]["restores_float_leakage"]
    assert rows["l2:0.001+int8"]["restores_float_leakage"]
    assert rows["dp-sgd:eps=8+int8"]["accuracy_cost"] == pytest.approx(0.05)
    assert rows["l2:0.001+int8"]["accuracy_cost"] == pytest.approx(0.01)
    assert rows["dp-sgd:eps=8+int8"]["epsilon"] == 7.99
    assert recipes["int8"]["cheapest_defense"] == "l2:0.001"
    assert recipes["int8"]["sentence"].startswith(
        "For int8, the cheapest defense that brings lira-online's leakage within the float model's 95% "
        "interval is l2:0.001: AUC 0.560")
    assert recipes["float"]["rows"][1]["accuracy_cost"] == pytest.approx(0.005)
    assert recipes["int8"]["sentence"].endswith("1.0 points below the undefended model.")


def test_cost_sentence_says_above_for_a_gain():
    from edgemia.reporting.mitigation import _cost_text

    assert _cost_text(0.01) == "1.0 points below"
    assert _cost_text(-0.27) == "27.0 points above"


def test_no_restoring_defense_sentence():
    report = _report(defended_auc=0.59)
    report["variants"] = [v for v in report["variants"] if v["name"] != "l2:0.001+int8"]
    recipes = {g["recipe"]: g for g in mitigation_section(report)["bundles"][0]["recipes"]}
    assert recipes["int8"]["cheapest_defense"] is None
    assert recipes["int8"]["sentence"] == (
        "For int8, no defense brought lira-online's leakage within the float model's 95% interval; "
        "the lowest AUC was 0.590, with dp-sgd:eps=8.")


def test_pareto_front_closed_form():
    entries = [
        {"variant": "a", "accuracy_nonmembers": 0.97, "auc": 0.55},
        {"variant": "b", "accuracy_nonmembers": 0.96, "auc": 0.60},  # worse than a on both
        {"variant": "c", "accuracy_nonmembers": 0.90, "auc": 0.51},
        {"variant": "d", "accuracy_nonmembers": 0.90, "auc": 0.52},  # same accuracy as c, more leakage
    ]
    assert pareto_front(entries) == ["a", "c"]


def test_chart_and_markdown():
    report = _report()
    section = mitigation_section(report)
    assert mitigation_chart(report, section)[:8] == b"\x89PNG\r\n\x1a\n"
    lines = markdown_lines(section)
    assert "## Mitigations" in lines
    assert "| dp-sgd:eps=8+int8 | dp-sgd:eps=8 | 0.520 [0.500, 0.540] | 1.0% [0.3, 2.0] | 100.0% | 91.0% | "
    "-5.0 | 7.99 (1e-05), DP-SGD accounting | yes |" in lines
    assert any(line.startswith("For int8, the cheapest defense") for line in lines)


def test_no_section_without_defenses():
    report = _report()
    report["variants"] = report["variants"][:2]
    assert mitigation_section(report) is None
    assert markdown_lines(None) == []


def test_without_intervals_compares_values():
    report = _report()
    for variant in report["variants"]:
        del variant["attacks"][0]["ci"]
    recipes = {g["recipe"]: g for g in mitigation_section(report)["bundles"][0]["recipes"]}
    rows = {row["variant"]: row for row in recipes["int8"]["rows"]}
    assert rows["dp-sgd:eps=8+int8"]["restores_float_leakage"]  # AUC 0.52 <= 0.55, TPR 1% <= 2%
    assert not rows["l2:0.001+int8"]["restores_float_leakage"]  # AUC 0.56 > 0.55
    assert recipes["int8"]["cheapest_defense"] == "dp-sgd:eps=8"
    assert "float model's value (intervals are off)" in recipes["int8"]["sentence"]
    assert "| 0.520 |" in "\n".join(markdown_lines(mitigation_section(report)))


def test_names_outside_grammar_undefended():
    report = _report()
    report["variants"].append(_variant("target", 0.7, 0.1, 0.9, [0.68, 0.72], [0.08, 0.12]))
    section = mitigation_section(report)
    assert [group["recipe"] for group in section["bundles"][0]["recipes"]] == ["int8", "float"]
    assert "target" not in section["bundles"][0]["pareto_front"]  # float has higher accuracy and lower AUC


def test_section_per_backend_and_format():
    report = _report()
    report["variants"] += [{**row, "backend": "litert"} for row in _report()["variants"][:3]]
    report["variants"].append({**_report()["variants"][1], "backend": "onnxruntime", "format": "onnx"})
    section = mitigation_section(report)
    assert [(b["backend"], b["format"]) for b in section["bundles"]] == [("native", "tflite"), ("litert", "tflite")]
    litert = section["bundles"][1]
    assert [row["variant"] for row in litert["recipes"][0]["rows"]] == ["float", "int8", "dp-sgd:eps=8+int8"]
