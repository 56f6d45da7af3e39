"""The command line as a user meets it: exit codes, messages and files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli, run_main_without_tensorflow
from edgemia.runtime.capture import load_capture, save_capture


def test_unknown_dataset_lists_valid_names(tmp_path):
    result = run_cli("audit", "--dataset", "mnist", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown data set 'mnist'" in result.stderr
    assert "digits, breast-cancer" in result.stderr


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--variants", "float,int3", "unknown word 'int3'; valid words: "),
        ("--variants", "float,prune:0.5:epochs=+3", "invalid variant 'prune:0.5:epochs=+3': '+' separates steps"),
        ("--variants", "float,prune:0_5", "invalid variant 'prune:0_5': prune: sparsity '0_5' is not a number"),
        ("--backends", "litert,onnx", "valid backends: native, litert, onnxruntime"),
        ("--variants", "float,", "--variants 'float,': item 2 of 2 is empty"),
        ("--backends", ",native", "--backends ',native': item 1 of 2 is empty"),
        ("--attacks", "loss,,rmia", "--attacks 'loss,,rmia': item 2 of 3 is empty"),
        ("--attacks", "loss,label-only", "valid attacks: loss, confidence, entropy, modified-entropy, label-gap, "
         "label-augment, lira-online, lira-offline, rmia, rmia-offline, shadow"),
    ],
)
def test_unknown_list_entry_lists_valid_names(tmp_path, option, value, message):
    result = run_cli("audit", option, value, "--out", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("option,value", [("--seed", "-1"), ("--seed", "4294967296"), ("--threads", "100000000000"),
                                          ("--epochs", "0")])
def test_out_of_range_numbers_are_usage_errors(tmp_path, option, value):
    target = tmp_path / "run"
    result = run_cli("audit", option, value, "--out", str(target))
    assert result.returncode == 2
    assert "is outside" in result.stderr
    assert not target.exists()


def test_audit_refuses_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = run_cli("audit", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "not an edgemia run" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def _earlier_run(directory) -> dict[str, str]:
    """Write the marker and reports of a finished run into `directory`; return their texts by file name."""
    old = {"run.json": '{"status": "complete"}', "report.json": "{}", "report.md": "# old", "report.html": "<p>old"}
    for name, text in old.items():
        (directory / name).write_text(text)
    return old


def test_audit_rerun_late_error_keeps_report(tmp_path):
    old = _earlier_run(tmp_path)
    result = run_cli("audit", "--population", "0.99", "--variants", "float", "--reference-models", "0",
                     "--bootstrap", "0", "--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "--population 0.99: the 1797 records cannot be split" in result.stderr
    assert "choose a smaller population fraction" in result.stderr
    assert "Traceback" not in result.stderr
    for name, text in old.items():
        assert (tmp_path / name).read_text() == text


@pytest.mark.parametrize(
    "variant,message",
    [
        ("dp-sgd:eps=0.001+int8", "dp-sgd:eps=0.001: epsilon 0.001 at delta 1e-05 needs a noise multiplier above 500"),
        ("pate:teachers=500+int8", "pate:teachers=500: teachers=500 is more than the "),
    ],
    ids=["dp-sgd-noise", "pate-teachers"],
)
def test_audit_untrainable_chain_keeps_report(tmp_path, variant, message):
    old = _earlier_run(tmp_path)
    result = run_cli("audit", "--dataset", "breast-cancer", "--variants", f"float,{variant}", "--population", "0.2",
                     "--reference-models", "4", "--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "training records of the target model" in result.stderr or "(the target model trains on" in result.stderr
    for name, text in old.items():
        assert (tmp_path / name).read_text() == text


def test_audit_out_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = run_cli("audit", "--out", str(target))
    assert result.returncode == 2
    assert "not a directory" in result.stderr


def test_missing_audit_packages_named(monkeypatch):
    import importlib.util

    from edgemia import cli
    from edgemia.errors import InputError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(InputError, match=r"scikit-learn.*pip install 'edgemia\[audit\]'"):
        cli._check_audit_packages()


def test_verbose_after_command():
    from edgemia import cli

    args = cli.build_parser().parse_args(["capture", "-v", "--model", "m", "--data", "d", "--backend", "native",
                                          "--out", "o"])
    assert args.verbose == 1


def test_unknown_capture_backend(tmp_path):
    result = run_cli("capture", "--model", "m.tflite", "--data", "r.npz", "--backend", "tpu",
                     "--out", str(tmp_path / "c.npz"))
    assert result.returncode == 2
    assert "valid backends: native, litert" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "litert"])
def test_capture_command_writes_contract_file(default_run, tmp_path, backend):
    out, _ = default_run
    target = tmp_path / "capture.npz"
    result = run_cli("capture", "--model", str(out / "artifacts" / "int8.tflite"),
                     "--data", str(out / "data" / "members.npz"), "--backend", backend,
                     "--threads", "2", "--out", str(target))
    assert result.returncode == 0, result.stderr
    capture, extras = load_capture(target)
    assert capture.logits.shape == (898, 10)
    assert capture.labels.dtype == np.int64
    assert capture.meta["backend"] == backend
    assert capture.meta["threads"] == 2
    assert extras == {}
    with np.load(target) as archive:
        assert set(archive.files) == {"logits", "labels", "record_id", "raw", "meta"}
        assert json.loads(str(archive["meta"]))["model_sha256"] == capture.meta["model_sha256"]


@pytest.mark.slow
def test_capture_does_not_import_tensorflow(default_run, tmp_path):
    out, _ = default_run
    argv = ["capture", "--model", str(out / "artifacts" / "int8.tflite"), "--data",
            str(out / "data" / "records.npz"), "--backend", "native", "--out", str(tmp_path / "c.npz")]
    result = run_main_without_tensorflow(argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


@pytest.mark.slow
def test_capture_reference_numerics(default_run, tmp_path):
    out, _ = default_run
    target = tmp_path / "capture.npz"
    result = run_cli("capture", "--model", str(out / "artifacts" / "int8.tflite"),
                     "--data", str(out / "data" / "members.npz"), "--backend", "native",
                     "--numerics", "litert-reference", "--out", str(target))
    assert result.returncode == 0, result.stderr
    capture, _ = load_capture(target)
    assert capture.meta["numerics"] == "litert-reference"


@pytest.mark.slow
def test_capture_unknown_numerics(default_run, tmp_path):
    out, _ = default_run
    result = run_cli("capture", "--model", str(out / "artifacts" / "int8.tflite"),
                     "--data", str(out / "data" / "members.npz"), "--backend", "native",
                     "--numerics", "fast", "--out", str(tmp_path / "c.npz"))
    assert result.returncode == 2
    assert "valid modes: litert, litert-reference" in result.stderr


@pytest.mark.slow
def test_capture_unknown_isa(default_run, tmp_path):
    out, _ = default_run
    env_script = (
        "import os, sys\n"
        "os.environ['EDGEMIA_ISA'] = 'sse9'\n"
        "from edgemia.cli import main\n"
        f"sys.exit(main(['capture', '--model', {str(out / 'artifacts' / 'int8.tflite')!r}, "
        f"'--data', {str(out / 'data' / 'members.npz')!r}, '--backend', 'native', "
        f"'--out', {str(tmp_path / 'c.npz')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", env_script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert "EDGEMIA_ISA='sse9'" in result.stderr
    assert "available: scalar" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case", ["same-as-data", "same-as-model", "directory", "under-file", "empty"])
def test_capture_refuses_bad_out(default_run, tmp_path, case):
    out, _ = default_run
    data = tmp_path / "records.npz"
    data.write_bytes((out / "data" / "members.npz").read_bytes())
    model = tmp_path / "model.tflite"
    model.write_bytes((out / "artifacts" / "int8.tflite").read_bytes())
    (tmp_path / "file").write_text("x")
    target = {"same-as-data": str(data), "same-as-model": str(model), "directory": str(tmp_path),
              "under-file": str(tmp_path / "file" / "c.npz"), "empty": ""}[case]
    before = (data.read_bytes(), model.read_bytes())
    result = run_cli("capture", "--model", str(model), "--data", str(data), "--backend", "native", "--out", target)
    assert result.returncode == 2, result.stderr
    assert "--out" in result.stderr
    assert (data.read_bytes(), model.read_bytes()) == before


@pytest.mark.slow
def test_capture_follows_symlink_and_keeps_permissions(default_run, tmp_path):
    out, _ = default_run
    real = tmp_path / "real.npz"
    real.write_text("old")
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    result = run_cli("capture", "--model", str(out / "artifacts" / "int8.tflite"), "--data",
                     str(out / "data" / "members.npz"), "--backend", "native", "--out", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert load_capture(real)[0].logits.shape == (898, 10)
    assert real.stat().st_mode & 0o044 == 0o044  # readable by group and others under the usual umask


@pytest.mark.slow
def test_audit_rerun_keeps_task_outputs(tmp_path):
    first = run_cli("audit", "--dataset", "breast-cancer", "--epochs", "3", "--references", "4",
                    "--variants", "float,int8", "--backends", "native", "--bootstrap", "100",
                    "--out", str(tmp_path))
    assert first.returncode == 0, first.stderr
    second = run_cli("audit", "--dataset", "breast-cancer", "--epochs", "3", "--references", "0",
                     "--variants", "float", "--backends", "native", "--bootstrap", "100", "--out", str(tmp_path))
    assert second.returncode == 0, second.stderr
    # The int8 files stay for a later run that asks for them again.
    assert (tmp_path / "artifacts" / "int8.tflite").exists()
    # The float bundle loses the reference captures, which the second run did not ask for.
    assert list((tmp_path / "captures" / "float" / "native-tflite").glob("reference-*.npz")) == []
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tasks"]["kinds"]["target-training"] == {"reused": 1, "computed": 0}
    assert report["tasks"]["kinds"]["target-variant"] == {"reused": 1, "computed": 0}
    assert [row["name"] for row in report["variants"]] == ["float", "float"]
    marker = json.loads((tmp_path / "run.json").read_text())
    assert marker["status"] == "complete"
    assert marker["config"]["variants"] == ["float"]


@pytest.fixture()
def synthetic_bundle(tmp_path):
    from synthetic import bundle_from_phi, gaussian_population, write_bundle

    target_phi, member, reference_phi, in_mask = gaussian_population(200, 4, seed=30)
    return write_bundle(tmp_path / "bundle", bundle_from_phi(target_phi, member, reference_phi, in_mask))


def test_attack_command_writes_report(synthetic_bundle, tmp_path):
    out = tmp_path / "results"
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--bootstrap", "200", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1
    assert report["captures"] == str(synthetic_bundle)
    assert report["bootstrap"] == {"resamples": 200, "confidence": 0.95, "seed": 0}
    (variant,) = report["variants"]
    assert (variant["name"], variant["backend"]) == ("target", "native")
    assert [row["name"] for row in variant["attacks"]] == [
        "loss", "confidence", "entropy", "modified-entropy", "label-gap",
        "lira-online", "lira-offline", "rmia", "rmia-offline", "shadow",
    ]
    with np.load(out / "target" / "native" / "scores.npz") as scores:
        assert scores["lira-online"].shape == (200,)
    assert report["records"]["scores"]["target"]["native"]["loss"] == scores_from(out, "loss")
    assert (out / "report.md").read_text().startswith("# edgemia attack:")
    assert "rmia-offline" in result.stdout


def scores_from(out, attack):
    with np.load(out / "target" / "native" / "scores.npz") as scores:
        return scores[attack].tolist()


def test_attack_command_options_reach_attacks(synthetic_bundle, tmp_path):
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--bootstrap", "0", "--attacks",
                     "lira-offline,rmia", "--attack-option", "lira.variance=fixed", "--attack-option",
                     "lira.offline=log-density", "--attack-option", "rmia.gamma=2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["name"]: row for row in report["variants"][0]["attacks"]}
    assert rows["lira-offline"]["parameters"]["variance"] == "fixed"
    assert rows["lira-offline"]["parameters"]["offline"] == "log-density"
    assert rows["rmia"]["parameters"]["gamma"] == 2.0
    assert report["config"]["attack_options"]["rmia"]["gamma"] == 2.0


@pytest.mark.parametrize(
    "item,message",
    [
        ("lira.variance=wide", "attack option lira.variance='wide' is invalid: expected one of auto, per-record, fixed, pooled"),
        ("rmia.gamma=-1", "attack option rmia.gamma='-1' is invalid: expected a finite number above 0"),
        ("lira.sigma=1", "unknown attack option 'lira.sigma'; valid keys: lira.variance, lira.offline"),
        ("gamma", "is not KEY=VALUE"),
    ],
)
def test_attack_option_errors(synthetic_bundle, tmp_path, item, message):
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--attack-option", item, "--out", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.parametrize("count", ["1", "2", "39", "100001"])
def test_bootstrap_count_out_of_range(synthetic_bundle, tmp_path, count):
    for command in ("attack", "audit"):
        out = tmp_path / command
        extra = ["--captures", str(synthetic_bundle)] if command == "attack" else []
        result = run_cli(command, *extra, "--bootstrap", count, "--out", str(out))
        assert result.returncode == 2, result.stderr
        assert f"--bootstrap {count} is " in result.stderr
        assert "use 0 to switch the intervals off, or 40..100000 resamples" in result.stderr
        assert "Traceback" not in result.stderr
        assert not out.exists()


def test_bootstrap_zero_reports_no_intervals(synthetic_bundle, tmp_path):
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--bootstrap", "0", "--attacks", "loss",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert "ci" not in report["variants"][0]["attacks"][0]
    assert "interval" not in (tmp_path / "report.md").read_text().lower()
    assert "bootstrap interval" not in (tmp_path / "report.html").read_text().lower()
    assert "bootstrap interval" not in result.stdout


def test_attack_nan_group_rejected(synthetic_bundle, tmp_path):
    target = synthetic_bundle / "target.npz"
    capture, extras = load_capture(target)
    region = np.where(np.arange(len(capture)) % 2 == 0, 1.0, 2.0)
    region[[5, 8]] = np.nan
    save_capture(target, capture, member=extras["member"], groups={"region": region})
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--bootstrap", "0", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert f"{target}: 'group_region' has 2 missing (NaN) subgroup labels (first at row 5)" in result.stderr
    assert "give every record a label" in result.stderr
    assert not (tmp_path / "out").exists()


def test_records_nan_group_rejected(tmp_path):
    from edgemia.data.records import load_records
    from edgemia.errors import RecordsError

    path = tmp_path / "records.npz"
    group = np.zeros(6)
    group[3] = np.nan
    np.savez(path, x=np.zeros((6, 2), np.float32), y=np.zeros(6, np.int64), group_age=group)
    with pytest.raises(RecordsError, match=r"'group_age' has 1 missing \(NaN\) subgroup label \(first at row 3\)"):
        load_records(path)


@pytest.mark.parametrize("stem", ["reference", "perturbed"])
def test_attack_numbering_gap_rejected(synthetic_bundle, tmp_path, stem):
    if stem == "perturbed":
        for j in (0, 2):
            (synthetic_bundle / f"perturbed-{j}.npz").write_bytes((synthetic_bundle / "target.npz").read_bytes())
    else:
        (synthetic_bundle / "reference-1.npz").unlink()
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--bootstrap", "0", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    missing = synthetic_bundle / f"{stem}-1.npz"
    assert f"{missing}: " in result.stderr
    assert f"capture not found, but {stem}-" in result.stderr
    assert "without gaps" in result.stderr
    assert not (tmp_path / "out").exists()


def test_attack_command_without_references(synthetic_bundle, tmp_path):
    for path in synthetic_bundle.glob("reference-*.npz"):
        path.unlink()
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--bootstrap", "0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    rows = report["variants"][0]["attacks"]
    assert [row["name"] for row in rows] == ["loss", "confidence", "entropy", "modified-entropy", "label-gap"]
    assert report["bootstrap"] is None
    assert "ci" not in rows[0]

    result = run_cli("attack", "--captures", str(synthetic_bundle), "--attacks", "lira-online", "--out", str(tmp_path))
    assert result.returncode == 2
    assert f"{synthetic_bundle}: attack 'lira-online' needs reference models" in result.stderr


def test_attack_command_bad_bundle(synthetic_bundle, tmp_path):
    path = synthetic_bundle / "reference-1.npz"
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "in_mask"}
    np.savez(path, **arrays)
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--out", str(tmp_path))
    assert result.returncode == 2
    assert f"{path}: field 'in_mask' is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_attack_command_needs_captures_and_out(synthetic_bundle, tmp_path):
    result = run_cli("attack", str(synthetic_bundle))
    assert result.returncode == 2
    assert "--captures" in result.stderr
    result = run_cli("attack", "--captures", str(tmp_path / "absent"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "directory not found" in result.stderr


def test_attack_command_unknown_attack(synthetic_bundle, tmp_path):
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--attacks", "loss,label-only", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown attack 'label-only'" in result.stderr


def test_attack_command_does_not_import_tensorflow(synthetic_bundle, tmp_path):
    argv = ["attack", "--captures", str(synthetic_bundle), "--bootstrap", "50", "--out", str(tmp_path / "out")]
    result = run_main_without_tensorflow(argv, cwd=synthetic_bundle)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


@pytest.mark.parametrize("option", ["--reference-models", "--references"])
def test_audit_reference_attacks_need_references(tmp_path, option):
    result = run_cli("audit", option, "0", "--attacks", "loss,rmia", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "attacks rmia need at least 4 reference models" in result.stderr


def test_audit_help_names_reference_models():
    result = run_cli("audit", "--help")
    assert "--reference-models K" in result.stdout
    assert "--references" not in result.stdout
    assert "--attack-option KEY=VALUE" in result.stdout


def test_audit_odd_reference_count(tmp_path):
    result = run_cli("audit", "--reference-models", "3", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "even number of at least 2, got 3" in result.stderr


@pytest.mark.parametrize("marker", ["run.json", "target.npz"])
def test_attack_out_refuses_run_or_bundle(synthetic_bundle, tmp_path, marker):
    out = tmp_path / "existing"
    out.mkdir()
    (out / marker).write_text("{}")
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--out", str(out))
    assert result.returncode == 2
    assert f"contains {marker}" in result.stderr
    assert not (out / "report.json").exists()


def test_attack_out_refuses_inside_run_or_captures(synthetic_bundle, tmp_path):
    run = tmp_path / "run"
    (run / "captures").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--out", str(run / "captures"))
    assert result.returncode == 2
    assert "is inside the audit's run directory" in result.stderr
    result = run_cli("attack", "--captures", str(synthetic_bundle), "--out", str(synthetic_bundle / "again"))
    assert result.returncode == 2
    assert "is inside --captures" in result.stderr
    assert not (synthetic_bundle / "again").exists()


def test_capture_out_parent_must_exist(tmp_path):
    model, records = tmp_path / "model.tflite", tmp_path / "records.npz"
    model.write_bytes(b"")
    np.savez(records, x=np.zeros((4, 8, 8, 1), np.float32), y=np.zeros(4, np.int64))
    out = tmp_path / "missing" / "inner" / "capture.npz"
    result = run_cli("capture", "--model", str(model), "--data", str(records), "--backend", "native",
                     "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert f"--out {out}: directory {out.parent} not found; create it first" in result.stderr
    assert not (tmp_path / "missing").exists()
