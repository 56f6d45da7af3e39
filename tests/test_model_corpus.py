"""Malformed model files: every backend answers with a clean error, never a crash.

Two sources: stored files that once crashed or hung LiteRT or broke the
native loader, and seeded mutations (bit flips, byte writes, special 32-bit
values) of the default audit's models, mostly in the flatbuffer's structure
rather than its weights.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
import tflite

from conftest import run_cli
from edgemia.data.records import load_records
from edgemia.errors import InputError
from edgemia.runtime.capture import run_capture

pytestmark = pytest.mark.slow

STORED = Path(__file__).parent / "data" / "bad_models"
SPECIAL_WORDS = [0, 1, 2, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x7FFFFFF0, 0x7F800000, 0x7FC00000, 0x00800000]


@pytest.mark.parametrize("name", sorted(p.name for p in STORED.glob("*.tflite.gz")))
@pytest.mark.parametrize("backend", ["native", "litert"])
def test_stored_bad_model_rejected(default_run, tmp_path, name, backend):
    model = tmp_path / name.removesuffix(".gz")
    model.write_bytes(gzip.decompress((STORED / name).read_bytes()))
    out, _ = default_run
    result = run_cli("capture", "--model", str(model), "--data", str(out / "data" / "members.npz"),
                     "--backend", backend, "--out", str(tmp_path / "capture.npz"))
    assert result.returncode == 2, result.stderr
    assert str(model) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "capture.npz").exists()


def _weight_bytes(data: bytes) -> np.ndarray:
    """Mask of the bytes that belong to constant buffers (weights)."""
    model = tflite.Model.GetRootAs(data, 0)
    mask = np.zeros(len(data), dtype=bool)
    for i in range(model.BuffersLength()):
        table = model.Buffers(i)._tab
        offset = table.Offset(4)
        if offset:
            start = table.Vector(offset)
            mask[start : start + table.VectorLen(offset)] = True
    return mask


def _mutations(data: bytes, count: int, seed: int):
    rng = random.Random(seed)
    weights = _weight_bytes(data)
    structure_positions = np.flatnonzero(~weights)
    weight_positions = np.flatnonzero(weights)
    for _ in range(count):
        mutated = bytearray(data)
        positions = structure_positions if rng.random() < 0.7 else weight_positions
        kind = rng.choice(["flip", "byte", "word"])
        if kind == "flip":
            for _ in range(rng.choice([1, 2, 3])):
                mutated[int(rng.choice(positions))] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            mutated[int(rng.choice(positions))] = rng.randrange(256)
        else:
            at = int(rng.choice(positions)) // 4 * 4
            mutated[at : at + 4] = rng.choice(SPECIAL_WORDS).to_bytes(4, "little")
        yield kind, bytes(mutated)


@pytest.mark.parametrize("variant", ["int8", "float"])
def test_mutated_models_fail_cleanly(default_run, tmp_path, variant):
    out, _ = default_run
    records = load_records(out / "data" / "members.npz").subset(np.arange(64))
    data = (out / "artifacts" / f"{variant}.tflite").read_bytes()
    outcomes = {"ok": 0, "rejected": 0}
    for i, (kind, mutated) in enumerate(_mutations(data, 60, seed=len(variant))):
        path = tmp_path / f"m{i}.tflite"
        path.write_bytes(mutated)
        # LiteRT runs in a child process, so a third of the cases keep the test short.
        backends = ["native", "litert"] if i % 3 == 0 else ["native"]
        for backend in backends:
            try:
                run_capture(path, records, backend, threads=1)
                outcomes["ok"] += 1
            except InputError as exc:
                assert str(path) in str(exc), f"{kind} mutation {i} on {backend}: {exc}"
                outcomes["rejected"] += 1
    assert outcomes["rejected"] > 0


@pytest.fixture(scope="module")
def digits_onnx(default_run, tmp_path_factory):
    from edgemia._tf import import_keras
    from edgemia.compression.onnx_export import export_float, export_int8
    from edgemia.data.records import load_records as load

    out, _ = default_run
    keras = import_keras()
    model = keras.saving.load_model(out / "artifacts" / "float.keras")
    folder = tmp_path_factory.mktemp("onnx-corpus")
    export_float(model, folder / "float.onnx")
    export_int8(folder / "float.onnx", load(out / "data" / "members.npz").x[:200], folder / "int8.onnx")
    return folder


@pytest.mark.parametrize("variant", ["int8", "float"])
def test_mutated_onnx_models_fail_cleanly(default_run, digits_onnx, tmp_path, variant):
    out, _ = default_run
    records = load_records(out / "data" / "members.npz").subset(np.arange(64))
    data = (digits_onnx / f"{variant}.onnx").read_bytes()
    rng = random.Random(len(variant))
    rejected = 0
    for i in range(60):
        mutated = bytearray(data)
        kind = rng.choice(["flip", "byte", "truncate"])
        if kind == "truncate":
            mutated = mutated[: rng.randrange(len(mutated))]
        else:
            for _ in range(rng.choice([1, 2, 4])):
                position = rng.randrange(len(mutated))
                mutated[position] = mutated[position] ^ (1 << rng.randrange(8)) if kind == "flip" else rng.randrange(256)
        path = tmp_path / f"m{i}.onnx"
        path.write_bytes(bytes(mutated))
        backends = ["native", "onnxruntime"] if i % 3 == 0 else ["native"]
        for backend in backends:
            try:
                run_capture(path, records, backend, threads=1)
            except InputError as exc:
                assert str(path) in str(exc), f"{kind} mutation {i} on {backend}: {exc}"
                rejected += 1
    assert rejected > 0
