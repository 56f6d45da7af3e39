"""Reports and sign-off: policy verdicts and exit codes, report.html, `edgemia report` and the schema.

One small real audit of health-insurance (3 epochs, 4 reference models,
float, int8 and an L2-defended int8 on the native kernel, 100 bootstrap
resamples) serves the whole module. The defended variant is the cheapest
one that gives the reports a mitigation section. The audit runs through the
command line with a policy that must fail, so its exit code is tested too.
"""

from __future__ import annotations

import json
import shutil
from html import escape
from pathlib import Path

import pytest

from conftest import run_cli
from report_schema import assert_matches_schema, schema_errors
from edgemia.reporting.browser import check_page, find_chromium

REPOSITORY = Path(__file__).resolve().parent.parent
SMALL_AUDIT = ("--dataset", "health-insurance", "--epochs", "3", "--reference-models", "4",
               "--variants", "float,int8,l2:0.01+int8", "--backends", "native", "--bootstrap", "100", "--jobs", "2")

FAILING_POLICY = """
[rules]
min_accuracy = 0.999
max_auc_increase = 0.5
"""

PASSING_POLICY = """
unmeasurable = "pass"

[rules]
max_auc_increase = 0.5
min_accuracy = 0.1
max_tpr_at_0_1pct_fpr = 1.0
max_epsilon_lower_bound = 100
max_subgroup_auc_gap = 1.0
"""

needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Run the small audit with a failing policy; return (run directory, finished process)."""
    root = tmp_path_factory.mktemp("report")
    policy = root / "failing.toml"
    policy.write_text(FAILING_POLICY)
    out = root / "run"
    result = run_cli("audit", *SMALL_AUDIT, "--out", str(out), "--policy", str(policy))
    assert (out / "report.json").is_file(), result.stderr
    return out, result


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _copy_reports(run: Path, tmp_path: Path) -> Path:
    """Copy a run's report.json alone into a new run directory."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run / "report.json", copy / "report.json")
    return copy


@pytest.mark.slow
def test_failing_policy_exits_one(small_run):
    out, result = small_run
    assert result.returncode == 1, result.stderr
    assert "Rule failed: min_accuracy" in result.stdout
    assert "Verdict: FAIL" in result.stdout
    assert "Rule failed: max_auc_increase" not in result.stdout


@pytest.mark.slow
def test_policy_outcomes_in_all_reports(small_run):
    out, _ = small_run
    report = json.loads((out / "report.json").read_text())
    outcomes = {outcome["rule"]: outcome for outcome in report["policy"]["outcomes"]}
    assert report["policy"]["verdict"] == "fail"
    assert outcomes["min_accuracy"]["status"] == "fail"
    assert outcomes["min_accuracy"]["observed"] < 0.999
    assert outcomes["max_auc_increase"]["status"] == "pass"
    markdown = (out / "report.md").read_text()
    assert "## Verdict: FAIL (min_accuracy)" in markdown
    assert "| max_auc_increase | 0.5 |" in markdown
    html = (out / "report.html").read_text()
    assert 'class="verdict fail"' in html
    assert "FAIL: min_accuracy" in html


@pytest.mark.slow
def test_passing_policy_exits_zero(small_run, tmp_path):
    out, _ = small_run
    copy = _copy_reports(out, tmp_path)
    policy = _write(tmp_path, "passing.toml", PASSING_POLICY)
    result = run_cli("report", str(copy), "--policy", str(policy))
    assert result.returncode == 0, result.stderr
    assert "Verdict: PASS (5 of 5 rules passed" in result.stdout
    report = json.loads((copy / "report.json").read_text())
    assert report["policy"]["verdict"] == "pass"
    assert [outcome["rule"] for outcome in report["policy"]["outcomes"]] == [
        "max_auc_increase", "min_accuracy", "max_tpr_at_0_1pct_fpr", "max_epsilon_lower_bound",
        "max_subgroup_auc_gap",
    ]


@pytest.mark.slow
def test_every_rule_can_fail(small_run, tmp_path):
    out, _ = small_run
    report = json.loads((out / "report.json").read_text())
    strict = "[rules]\n" + "\n".join(
        f"{rule} = {limit}" for rule, limit in [
            ("max_auc_increase", -1.0), ("min_accuracy", 1.0), ("max_tpr_at_0_1pct_fpr", 0.0),
            ("max_epsilon_lower_bound", 0.0), ("max_subgroup_auc_gap", 0.0),
        ]
    )
    copy = _copy_reports(out, tmp_path)
    result = run_cli("report", str(copy), "--policy", str(_write(tmp_path, "strict.toml", strict)))
    assert result.returncode == 1
    rebuilt = json.loads((copy / "report.json").read_text())
    statuses = {outcome["rule"]: outcome["status"] for outcome in rebuilt["policy"]["outcomes"]}
    # The TPR at 0.1% FPR may be 0 everywhere in a 3-epoch model, which a limit of 0 passes.
    tpr_values = [a["tpr_at_fpr"]["0.001"] for v in report["variants"] for a in v["attacks"]]
    expected_tpr = "fail" if max(tpr_values) > 0 else "pass"
    assert statuses == {
        "max_auc_increase": "fail", "min_accuracy": "fail", "max_tpr_at_0_1pct_fpr": expected_tpr,
        "max_epsilon_lower_bound": "fail" if max(a["epsilon_lower_bound"] for v in report["variants"]
                                                 for a in v["attacks"]) > 0 else "pass",
        "max_subgroup_auc_gap": "fail",
    }
    for rule, status in statuses.items():
        if status == "fail":
            assert f"Rule failed: {rule}" in result.stdout


@pytest.mark.slow
def test_report_rebuilds_without_captures(small_run, tmp_path):
    out, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    expected_markdown = (run / "report.md").read_text()
    expected_json = json.loads((run / "report.json").read_text())
    for name in ("captures", "artifacts", "data"):
        shutil.rmtree(run / name)
    (run / "report.md").unlink()
    (run / "report.html").unlink()
    result = run_cli("report", str(run))
    # The stored verdict is kept: the audit's failing policy still decides the exit code.
    assert result.returncode == 1, result.stderr
    assert (run / "report.md").read_text() == expected_markdown
    assert json.loads((run / "report.json").read_text()) == expected_json
    assert (run / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_report_no_policy_drops_the_stored_verdict(small_run, tmp_path):
    out, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    result = run_cli("report", str(run), "--no-policy")
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "report.json").read_text())
    assert "policy" not in report
    assert "min_accuracy" not in (run / "report.md").read_text()
    both = run_cli("report", str(run), "--no-policy", "--policy", str(run / "absent.toml"))
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr


def _replace_first(value, key: str, new):
    """Set the first `key` found in nested dicts and lists to `new`; return whether one was found."""
    if isinstance(value, dict):
        if key in value:
            value[key] = new
            return True
        return any(_replace_first(item, key, new) for item in value.values())
    if isinstance(value, list):
        return any(_replace_first(item, key, new) for item in value)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("key,value", [("auc", "high"), ("environment", None), ("variants", [7])])
def test_report_rejects_edited_field_types(small_run, tmp_path, key, value):
    out, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    report = json.loads((run / "report.json").read_text())
    assert _replace_first(report, key, value)
    (run / "report.json").write_text(json.dumps(report))
    before = {name: (run / name).read_bytes() for name in ("report.json", "report.md", "report.html")}
    result = run_cli("report", str(run))
    assert result.returncode == 2, result.stderr
    assert "a field is missing or has a value of the wrong type" in result.stderr
    assert str(run / "report.json") in result.stderr
    # Nothing was rewritten.
    for name, content in before.items():
        assert (run / name).read_bytes() == content, name


@pytest.mark.slow
@pytest.mark.parametrize("verdict,message", [
    ("pass", "'policy.verdict' is 'pass', but the rules min_accuracy"),
    ("maybe", "'policy.verdict' is 'maybe', but the rules min_accuracy"),
])
def test_report_rejects_verdict_against_outcomes(small_run, tmp_path, verdict, message):
    out, _ = small_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    report = json.loads((run / "report.json").read_text())
    report["policy"]["verdict"] = verdict
    (run / "report.json").write_text(json.dumps(report))
    markdown = (run / "report.md").read_text()
    result = run_cli("report", str(run))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    # Nothing was rewritten.
    assert (run / "report.md").read_text() == markdown
    assert run_cli("report", str(run), "--no-policy").returncode == 0


@pytest.mark.slow
def test_report_json_matches_schema(small_run):
    out, _ = small_run
    report = assert_matches_schema(out / "report.json")
    assert report["mitigation"] is not None
    assert "policy" in report
    assert "tasks" in report
    broken = {**report, "policy": {**report["policy"], "verdict": "maybe"}}
    assert schema_errors(broken) != []


@pytest.mark.slow
def test_schema_rejects_undocumented_fields(small_run):
    """A field the schema does not list fails at every level where the fields are known."""
    out, _ = small_run
    report = json.loads((out / "report.json").read_text())
    places = {
        "top level": lambda r: r,
        "dataset": lambda r: r["dataset"],
        "target recipe": lambda r: r["target"]["recipe"],
        "variant row": lambda r: r["variants"][0],
        "capture": lambda r: r["variants"][0]["capture"],
        "attack row": lambda r: r["variants"][0]["attacks"][0],
        "versus float": lambda r: next(v for v in r["variants"] if v["name"] == "int8")["attacks"][0]["versus_float"],
        "slice": lambda r: r["variants"][0]["attacks"][0]["slices"][0],
        "compression": lambda r: r["compression"]["int8"],
        "training summary": lambda r: r["compression"]["l2:0.01+int8"]["training"],
        "reference model": lambda r: r["references"]["models"][0],
        "tasks": lambda r: r["tasks"],
        "mitigation row": lambda r: r["mitigation"]["bundles"][0]["recipes"][0]["rows"][0],
        "policy outcome": lambda r: r["policy"]["outcomes"][0],
        "environment": lambda r: r["environment"],
    }
    for place, locate in places.items():
        copy = json.loads(json.dumps(report))
        locate(copy)["undocumented_field"] = 1
        errors = schema_errors(copy)
        assert len(errors) == 1, place
        assert "'undocumented_field' was unexpected" in errors[0], place


@pytest.mark.slow
def test_default_audit_matches_schema(default_run):
    out, _ = default_run
    report = assert_matches_schema(out / "report.json")
    assert report["mitigation"] is None


@pytest.mark.slow
def test_html_is_self_contained(small_run):
    out, _ = small_run
    html = (out / "report.html").read_text()
    for section in ("verdict", "rules", "variants", "roc", "tradeoff", "subgroups", "histograms", "mitigation",
                    "exposed", "manifest"):
        assert f'id="{section}"' in html
    assert "http://" not in html
    assert "https://" not in html
    assert "default-src 'none'" in html
    # One ROC chart per attack, the trade-off chart, one bar chart per subgroup attribute
    # (ethnicity and gender), the histograms and the mitigation chart.
    report = json.loads((out / "report.json").read_text())
    n_attacks = len(report["variants"][0]["attacks"])
    assert html.count('src="data:image/png;base64,') == n_attacks + 1 + 2 + 1 + 1
    for package in ("numpy", "tensorflow-cpu", "ai-edge-litert", "onnxruntime"):
        assert f"<td class=\"text\">{package}</td>" in html


@pytest.mark.slow
@needs_chromium
def test_html_opens_in_chromium(small_run):
    out, _ = small_run
    check = check_page(out / "report.html")
    assert check.console_errors == []
    assert len(check.images) >= 6
    assert check.broken_images == []
    assert check.title == "edgemia audit: health-insurance"
    mitigation = [image for image in check.images if image["alt"] == "leakage against accuracy"]
    assert len(mitigation) == 1
    assert mitigation[0]["width"] > 100


@pytest.mark.slow
def test_mitigation_section_in_every_report(small_run):
    out, _ = small_run
    report = json.loads((out / "report.json").read_text())
    section = report["mitigation"]
    group = section["bundles"][0]["recipes"][0]
    assert group["recipe"] == "int8"
    assert [row["variant"] for row in group["rows"]] == ["float", "int8", "l2:0.01+int8"]
    assert section["bundles"][0]["chart"] == "mitigation.png"
    assert (out / "mitigation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert group["sentence"] in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert html.index('id="mitigation"') < html.index('id="exposed"')
    assert escape(group["sentence"]) in html
    defended = group["rows"][2]
    assert f"{defended['auc']:.3f} [{defended['auc_ci'][0]:.3f}, {defended['auc_ci'][1]:.3f}]" in html


@pytest.mark.slow
def test_report_command_rebuilds_mitigation(small_run, tmp_path):
    out, _ = small_run
    copy = _copy_reports(out, tmp_path)
    stored = json.loads((copy / "report.json").read_text())
    del stored["mitigation"]
    (copy / "report.json").write_text(json.dumps(stored))
    result = run_cli("report", str(copy))
    assert result.returncode == 1, result.stderr  # the stored failing verdict is kept
    rebuilt = json.loads((copy / "report.json").read_text())
    assert rebuilt["mitigation"] == json.loads((out / "report.json").read_text())["mitigation"]
    assert (copy / "mitigation.png").read_bytes() == (out / "mitigation.png").read_bytes()
    assert 'id="mitigation"' in (copy / "report.html").read_text()


@pytest.mark.slow
def test_attack_command_writes_mitigation(small_run, tmp_path):
    out, _ = small_run
    results = tmp_path / "results"
    result = run_cli("attack", "--captures", str(out / "captures"), "--attacks", "lira-online,loss",
                     "--bootstrap", "50", "--out", str(results))
    assert result.returncode == 0, result.stderr
    report = assert_matches_schema(results / "report.json")
    group = report["mitigation"]["bundles"][0]["recipes"][0]
    assert [row["variant"] for row in group["rows"]] == ["float", "int8", "l2:0.01+int8"]
    assert (results / "mitigation.png").is_file()
    assert "## Mitigations" in (results / "report.md").read_text()
    assert 'id="mitigation"' in (results / "report.html").read_text()


@needs_chromium
def test_chromium_check_sees_broken_page(tmp_path):
    page = _write(tmp_path, "broken.html", '<!DOCTYPE html><html><head><title>t</title></head><body>'
                  '<img src="missing.png" alt="missing"></body></html>')
    check = check_page(page)
    assert [image["alt"] for image in check.broken_images] == ["missing"]
    assert any("missing.png" in error or "ERR_FILE_NOT_FOUND" in error for error in check.console_errors)


@pytest.mark.parametrize(
    "text,message",
    [
        ("[rules]\nmax_auc_increas = 0.01\n", "unknown rule 'rules.max_auc_increas'"),
        ("[rules]\nmin_accuracy = 'high'\n", "'rules.min_accuracy' must be a number, got 'high'"),
        ("[rules]\nmin_accuracy = 1.5\n", "'rules.min_accuracy' is 1.5; it must be at least 0 and at most 1"),
        ("[rules]\nmax_auc_increase = 0.01\nmin_accuracy = \n", "invalid TOML"),
        ("[limits]\nmin_accuracy = 0.9\n", "unknown key 'limits'"),
        ("unmeasurable = 'ignore'\n[rules]\nmin_accuracy = 0.9\n", "'unmeasurable' is 'ignore'"),
        ("[rules]\n", "[rules] is empty"),
        ("[rules]\nmin_accuracy = 0.9\nunmeasurable = 'pass'\n",
         "'unmeasurable' goes above [rules], at the top of the file"),
    ],
)
def test_malformed_policy_exits_two(tmp_path, text, message):
    policy = _write(tmp_path, "policy.toml", text)
    out = tmp_path / "run"
    result = run_cli("audit", "--policy", str(policy), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert str(policy) in result.stderr
    assert not out.exists()


def test_report_of_a_file_names_it(tmp_path):
    report = _write(tmp_path, "report.json", "{}")
    result = run_cli("report", str(report))
    assert result.returncode == 2, result.stderr
    assert f"{report}: a file, not a directory" in result.stderr


def test_policy_not_utf8_exits_two(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_bytes(b"\xff\xfe[rules]\n")
    out = tmp_path / "run"
    result = run_cli("audit", "--policy", str(policy), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert f"{policy}: not UTF-8 text" in result.stderr
    assert not out.exists()


def test_missing_policy_file_exits_two(tmp_path):
    result = run_cli("audit", "--policy", str(tmp_path / "none.toml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "none.toml: file not found" in result.stderr


def test_report_of_directory_without_report(tmp_path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2
    assert "report.json: file not found" in result.stderr


def test_example_policy_loads():
    from edgemia.reporting.policy import RULES, load_policy

    policy = load_policy(REPOSITORY / "examples" / "policy.toml")
    assert set(policy.rules) == set(RULES)
    assert policy.unmeasurable == "fail"


def test_attack_command_applies_policy(tmp_path):
    from synthetic import bundle_from_phi, gaussian_population, write_bundle

    target_phi, member, reference_phi, in_mask = gaussian_population(200, 4, seed=30)
    bundle = write_bundle(tmp_path / "bundle", bundle_from_phi(target_phi, member, reference_phi, in_mask))
    policy = _write(tmp_path, "policy.toml", "[rules]\nmax_epsilon_lower_bound = 0.0\nmin_accuracy = 0.0\n")
    out = tmp_path / "results"
    result = run_cli("attack", "--captures", str(bundle), "--bootstrap", "50", "--out", str(out),
                     "--policy", str(policy))
    assert result.returncode == 1, result.stderr
    assert "Rule failed: max_epsilon_lower_bound" in result.stdout
    assert "Rule failed: min_accuracy" not in result.stdout
    assert_matches_schema(out / "report.json")
    html = (out / "report.html").read_text()
    assert "FAIL: max_epsilon_lower_bound" in html
    assert 'id="weaker"' not in html


def test_report_command_skips_tensorflow(tmp_path):
    from conftest import run_main_without_tensorflow
    from synthetic import bundle_from_phi, gaussian_population, write_bundle

    # float, and an L2-defended variant that leaks less, so the report has a mitigation section.
    captures = tmp_path / "captures"
    for variant, shift in (("float", 1.0), ("l2:0.01", 0.3)):
        target_phi, member, reference_phi, in_mask = gaussian_population(200, 4, seed=31, shift=shift)
        bundle = bundle_from_phi(target_phi, member, reference_phi, in_mask)
        bundle.target.meta["variant"] = variant
        write_bundle(captures / variant.replace(":", "_") / "native", bundle)
    out = tmp_path / "results"
    assert run_cli("attack", "--captures", str(captures), "--bootstrap", "0", "--out", str(out)).returncode == 0
    assert assert_matches_schema(out / "report.json")["mitigation"] is not None
    (out / "report.html").unlink()
    (out / "mitigation.png").unlink()
    result = run_main_without_tensorflow(["report", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
    assert (out / "report.html").stat().st_size > 10_000
    assert 'id="mitigation"' in (out / "report.html").read_text()
    assert (out / "mitigation.png").is_file()
