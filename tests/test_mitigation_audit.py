"""An audit with a DP-SGD variant: LiRA at chance, and the mitigation section with its accuracy cost."""

from __future__ import annotations

import pytest

from report_schema import assert_matches_schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    from edgemia.audit import AuditConfig, run_audit

    out = tmp_path_factory.mktemp("dp-run")
    # No attack options: with 8 reference models LiRA's `auto` variance is the global one.
    config = AuditConfig(out=out, variants=["float", "dp-sgd:eps=1"], backends=["native"],
                         attacks=["lira-online", "loss"], references=8, epochs=10)
    return out, run_audit(config)


def _attack(report, variant, attack="lira-online"):
    row = next(row for row in report["variants"] if row["name"] == variant)
    return next(a for a in row["attacks"] if a["name"] == attack)


def test_dp_sgd_eps1_lira_at_chance(dp_run):
    _, report = dp_run
    lira = _attack(report, "dp-sgd:eps=1")
    low, high = lira["ci"]["tpr_at_fpr"]["0.01"]
    assert low <= 0.01 <= high
    assert report["config"]["attack_options"]["lira"]["variance"] == "auto"
    assert lira["parameters"]["variance"] == "fixed"
    assert lira["parameters"]["variance_rule"] == "auto: fixed below 64 reference models, else per-record"
    training = report["compression"]["dp-sgd:eps=1"]["training"]
    assert training["epsilon"] <= 1.0
    assert training["delta"] == 1e-5
    # dp-sgd's own defaults, not the 10 epochs of the audit's recipe.
    assert training["epochs"] == 20
    assert training["learning_rate"] == 0.01


def test_dp_sgd_report_shows_accuracy_cost(dp_run):
    out, report = dp_run
    section = report["mitigation"]
    assert section["attack"] == "lira-online"
    bundle = section["bundles"][0]
    rows = {row["variant"]: row for row in bundle["recipes"][0]["rows"]}
    assert set(rows) == {"float", "dp-sgd:eps=1"}
    float_accuracy = next(r for r in report["variants"] if r["name"] == "float")["accuracy"]["nonmembers"]
    dp_accuracy = next(r for r in report["variants"] if r["name"] == "dp-sgd:eps=1")["accuracy"]["nonmembers"]
    assert rows["dp-sgd:eps=1"]["accuracy_cost"] == pytest.approx(float_accuracy - dp_accuracy)
    assert rows["dp-sgd:eps=1"]["accuracy_cost"] > 0
    assert rows["dp-sgd:eps=1"]["epsilon"] <= 1.0
    markdown = (out / "report.md").read_text()
    assert "## Mitigations" in markdown
    assert "| dp-sgd:eps=1 | dp-sgd:eps=1 |" in markdown
    assert f"{100 * rows['dp-sgd:eps=1']['accuracy_cost']:+.1f}" in markdown
    assert bundle["recipes"][0]["sentence"] in markdown
    assert (out / bundle["chart"]).stat().st_size > 1000
    assert assert_matches_schema(out / "report.json")["mitigation"] == section
    assert 'id="mitigation"' in (out / "report.html").read_text()
