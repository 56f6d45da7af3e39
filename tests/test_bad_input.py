"""Bad records files and bad model files: clear errors with exit code 2, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture()
def good_records(default_run):
    out, _ = default_run
    with np.load(out / "data" / "records.npz") as archive:
        return {key: archive[key] for key in archive.files}


def _capture(default_run, records_path, out_path, backend="native", model=None):
    out, _ = default_run
    model = model or out / "artifacts" / "int8.tflite"
    return run_cli("capture", "--model", str(model), "--data", str(records_path),
                   "--backend", backend, "--out", str(out_path))


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda r: r.update(x=r["x"].reshape(len(r["x"]), 64)), ["'x'", "record shape (64,)", "(8, 8, 1)"]),
        (lambda r: r["x"].__setitem__((17, 3, 3, 0), np.nan), ["'x'", "NaN", "first at row 17"]),
        (lambda r: r["y"].__setitem__(41, 10), ["'y'", "outside 0..9", "first at row 41"]),
        (lambda r: r["y"].__setitem__(5, -1), ["'y'", "negative", "first at row 5"]),
        (lambda r: r.update(y=r["y"][:-3]), ["'y'", "1794 rows", "'x' has 1797"]),
        (lambda r: r.pop("y"), ["field 'y' is missing"]),
        (lambda r: r["record_id"].__setitem__(9, r["record_id"][2]), ["'record_id'", "first repeat at row 9"]),
    ],
    ids=["shape", "nan", "label-range", "label-negative", "length", "missing-y", "duplicate-id"],
)
def test_bad_records_rejected(default_run, good_records, tmp_path, mutate, expected):
    records = {key: value.copy() for key, value in good_records.items()}
    mutate(records)
    path = tmp_path / "bad.npz"
    np.savez(path, **records)
    target = tmp_path / "capture.npz"
    result = _capture(default_run, path, target)
    assert result.returncode == 2, result.stderr
    for fragment in expected:
        assert fragment in result.stderr
    assert str(path) in result.stderr
    assert not target.exists()


@pytest.mark.parametrize(
    "arrays,expected",
    [
        (lambda r: {**r, "record_id": np.arange(len(r["y"]), dtype=np.uint64) + np.uint64(2**63)},
         "beyond the int64 range"),
        (lambda r: {**r, "y": np.where(np.arange(len(r["y"])) == 3, 1e30, r["y"]).astype(np.float64)},
         "labels above 2^31 (first at row 3)"),
        (lambda r: {**r, "x": np.where(np.arange(len(r["y"]))[:, None, None, None] == 7, 1e300, r["x"].astype(np.float64))},
         "beyond the float32 range"),
        (lambda r: {**r, "group_": np.zeros(len(r["y"]))}, "without an attribute name"),
    ],
    ids=["uint64-ids", "huge-label", "huge-feature", "empty-group-name"],
)
def test_records_edge_values_rejected(default_run, good_records, tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays(good_records))
    result = _capture(default_run, path, tmp_path / "c.npz")
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr


def test_records_zip_without_npy(default_run, tmp_path):
    import zipfile

    path = tmp_path / "records.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", "not an array")
        archive.writestr("y.npy", "nor this")
    result = _capture(default_run, path, tmp_path / "c.npz")
    assert result.returncode == 2
    assert "not .npy arrays" in result.stderr or "not a readable" in result.stderr


def test_records_not_npz(default_run, tmp_path):
    path = tmp_path / "records.npz"
    path.write_text("x,y\n1,2\n")
    result = _capture(default_run, path, tmp_path / "c.npz")
    assert result.returncode == 2
    assert "not a readable .npz file" in result.stderr


def test_records_with_pickled_objects(default_run, tmp_path):
    path = tmp_path / "records.npz"
    np.savez(path, x=np.array([object()] * 3, dtype=object), y=np.zeros(3, np.int64))
    result = _capture(default_run, path, tmp_path / "c.npz")
    assert result.returncode == 2
    assert "pickle" in result.stderr


def _bad_models(int8_bytes: bytes):
    yield "empty", b""
    yield "text", b"this is not a model\n" * 20
    yield "truncated-header", int8_bytes[:16]
    for fraction in (0.1, 0.5, 0.9, 0.999):
        yield f"truncated-{fraction}", int8_bytes[: int(len(int8_bytes) * fraction)]
    rng = np.random.default_rng(0)
    for i in range(12):
        corrupt = bytearray(int8_bytes)
        for position in rng.integers(8, len(corrupt), size=8):
            corrupt[position] ^= 1 << int(rng.integers(0, 8))
        yield f"bitflip-{i}", bytes(corrupt)


@pytest.mark.parametrize("backend", ["native", "litert"])
def test_bad_model_files_give_clear_errors(default_run, tmp_path, backend):
    out, _ = default_run
    int8_bytes = (out / "artifacts" / "int8.tflite").read_bytes()
    records = out / "data" / "members.npz"
    for name, data in _bad_models(int8_bytes):
        model = tmp_path / f"{name}.tflite"
        model.write_bytes(data)
        result = _capture(default_run, records, tmp_path / f"{name}.npz", backend=backend, model=model)
        # A bit flip can land in weights and leave a valid model; anything else must fail cleanly.
        assert result.returncode in (0, 2), f"{name}: exit {result.returncode}\n{result.stderr}"
        if result.returncode == 2:
            assert str(model) in result.stderr, name
            assert "Traceback" not in result.stderr, name
        if name in ("empty", "text", "truncated-header") or name.startswith("truncated"):
            assert result.returncode == 2, name


def test_not_tflite_message(default_run, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"\x00" * 64)
    result = _capture(default_run, default_run[0] / "data" / "members.npz", tmp_path / "c.npz", model=model)
    assert result.returncode == 2
    assert "not a TFLite model" in result.stderr


def test_missing_model_file(default_run, tmp_path):
    result = _capture(default_run, default_run[0] / "data" / "members.npz", tmp_path / "c.npz",
                      model=tmp_path / "absent.tflite")
    assert result.returncode == 2
    assert "model file not found" in result.stderr
