"""`edgemia compress` and the population split that distillation on population records needs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from edgemia.data.builtin import load_dataset
from edgemia.errors import InputError


def test_population_split_is_disjoint():
    data = load_dataset("digits", 0, population=0.2)
    ids = [set(records.record_id.tolist()) for records in (data.members, data.nonmembers, data.population)]
    assert sum(len(part) for part in ids) == 1797
    assert len(set.union(*ids)) == 1797
    assert len(ids[2]) == pytest.approx(0.2 * 1797, abs=1)
    # Every class keeps its share in the population.
    counts = np.bincount(data.population.y, minlength=10)
    assert counts.min() >= 30


def test_no_population_keeps_the_plain_split():
    plain = load_dataset("digits", 0)
    assert plain.population is None
    assert len(plain.members) == 898
    assert len(plain.nonmembers) == 899


def test_population_fraction_checked():
    with pytest.raises(InputError, match="at least 0 and below 1, got 1.0"):
        load_dataset("digits", 0, population=1.0)


def test_audit_population_variant_needs_fraction(tmp_path):
    result = run_cli("audit", "--variants", "float,distill:0.5:data=population", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "set --population to a fraction such as 0.2" in result.stderr


@pytest.fixture(scope="module")
def trained_files(tmp_path_factory):
    from edgemia.data.records import save_records
    from edgemia.training.train import RECIPES, Recipe, fit_model

    folder = tmp_path_factory.mktemp("compress-input")
    data = load_dataset("digits", 0, population=0.2)
    recipe = Recipe(**{**RECIPES["digits"].to_dict(), "epochs": 8})
    model, _ = fit_model(data.members.x, data.members.y, data.n_classes, recipe, seed=0)
    model.save(folder / "float.keras")
    save_records(data.members, folder / "members.npz")
    save_records(data.nonmembers, folder / "nonmembers.npz")
    save_records(data.population, folder / "population.npz")
    return folder


@pytest.mark.slow
def test_compress_writes_files_and_metadata(trained_files, tmp_path):
    out = tmp_path / "out"
    result = run_cli("compress", "--model", str(trained_files / "float.keras"), "--variant", "prune:0.5:epochs=2+int8",
                     "--calibration", str(trained_files / "members.npz"),
                     "--nonmembers", str(trained_files / "nonmembers.npz"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    metadata = json.loads((out / "compress.json").read_text())
    assert metadata["spec"]["name"] == "prune:0.5:epochs=2+int8"
    assert set(metadata["files"]) == {"tflite", "onnx"}
    for entry in metadata["files"].values():
        assert (out / entry["path"]).stat().st_size == entry["bytes"]
        assert len(entry["sha256"]) == 64
        assert entry["operators"]
        assert entry["weight_sparsity"]["sparsity"] >= 0.49
    assert metadata["parameter_count"] > 0
    assert {row["layer"] for row in metadata["layer_sparsity"]} == {"conv1", "conv2", "dense1", "logits"}
    runs = {(row["backend"], row["format"]) for row in metadata["accuracy"]}
    assert runs == {("litert", "tflite"), ("onnxruntime", "onnx"), ("native", "tflite"), ("native", "onnx")}
    for row in metadata["accuracy"]:
        assert row["members"] > 0.8
        assert row["nonmembers"] > 0.8
    assert metadata["skipped"] == []
    assert "onnxruntime (onnx): accuracy" in result.stdout


@pytest.mark.slow
def test_compress_skips_what_native_cannot_run(trained_files, tmp_path):
    out = tmp_path / "out"
    result = run_cli("compress", "--model", str(trained_files / "float.keras"), "--variant", "int16x8",
                     "--calibration", str(trained_files / "members.npz"), "--out", str(out),
                     "--backends", "litert,native")
    assert result.returncode == 0, result.stderr
    metadata = json.loads((out / "compress.json").read_text())
    assert [(row["backend"], row["format"]) for row in metadata["accuracy"]] == [("litert", "tflite")]
    assert "nonmembers" not in metadata["accuracy"][0]
    assert [(row["backend"], row["format"]) for row in metadata["skipped"]] == [("native", "tflite")]
    assert "int16" in metadata["skipped"][0]["reason"]


@pytest.mark.slow
def test_compress_distills_on_population(trained_files, tmp_path):
    arguments = ["compress", "--model", str(trained_files / "float.keras"),
                 "--variant", "distill:0.5:data=population:epochs=3",
                 "--calibration", str(trained_files / "members.npz"), "--backends", "onnxruntime"]
    missing = run_cli(*arguments, "--out", str(tmp_path / "missing"))
    assert missing.returncode == 2
    assert "pass --population RECORDS.npz" in missing.stderr
    result = run_cli(*arguments, "--population", str(trained_files / "population.npz"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    metadata = json.loads((tmp_path / "out" / "compress.json").read_text())
    assert metadata["parameter_count"] < 15_000


def test_compress_bad_spec_exits_2(tmp_path):
    result = run_cli("compress", "--model", str(tmp_path / "m.keras"), "--variant", "int3",
                     "--calibration", str(tmp_path / "r.npz"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "unknown word 'int3'" in result.stderr
    assert "Variant grammar" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "option,change,message",
    [
        ("--calibration", {"y": lambda y: y + 5}, "'y' has {count} values outside 0..9"),
        ("--calibration", {"x": lambda x: x.reshape(len(x), -1)}, "'x' has record shape (64,)"),
        ("--nonmembers", {"y": lambda y: y + 5}, "'y' has {count} values outside 0..9"),
    ],
    ids=["calibration-labels", "calibration-shape", "nonmember-labels"],
)
def test_compress_checks_records_first(trained_files, tmp_path, option, change, message):
    source = trained_files / ("members.npz" if option == "--calibration" else "nonmembers.npz")
    with np.load(source) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, function in change.items():
        arrays[key] = function(arrays[key])
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    inputs = {"--calibration": trained_files / "members.npz", "--nonmembers": trained_files / "nonmembers.npz",
              option: bad}
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_cli("compress", "--model", str(trained_files / "float.keras"), "--variant", "int8",
                     *[str(item) for pair in inputs.items() for item in pair], "--out", str(out))
    assert result.returncode == 2, result.stderr
    count = int((arrays["y"] >= 10).sum())
    assert f"{bad}: " + message.format(count=count) in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_compress_leaves_no_staging_files(trained_files, tmp_path):
    out = tmp_path / "new" / "out"
    result = run_cli("compress", "--model", str(trained_files / "float.keras"), "--variant", "int8",
                     "--calibration", str(trained_files / "members.npz"),
                     "--nonmembers", str(trained_files / "population.npz"),
                     "--backends", "onnxruntime", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["compress.json", "int8.onnx", "int8.tflite"]


@pytest.mark.parametrize(
    "content,message",
    [
        ("zip", "a zip archive without config.json, so not a Keras model file"),
        ("text", "not a Keras model file, because a .keras file is a zip archive and this file is not one"),
    ],
    ids=["zip-without-config", "not-a-zip"],
)
def test_compress_non_keras_model_exits_2(tmp_path, content, message):
    import zipfile

    model = tmp_path / "model.keras"
    if content == "zip":
        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("notes.txt", "not a model")
    else:
        model.write_text("not a model")
    records = tmp_path / "records.npz"
    np.savez(records, x=np.zeros((20, 8, 8, 1), np.float32), y=np.arange(20) % 10)
    out = tmp_path / "out"
    result = run_cli("compress", "--model", str(model), "--variant", "int8", "--calibration", str(records),
                     "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert f"--model {model}: {message}" in result.stderr
    assert "model.save('NAME.keras')" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
