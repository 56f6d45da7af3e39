"""Whole models give the same bytes on every instruction-set path.

Each path runs in its own process with EDGEMIA_ISA set, as a user would select
it, and every output is compared with the scalar path's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemia import _native

PATHS = _native.available_isas()
HELPER = Path(__file__).resolve().parent / "isa_graph_outputs.py"


def outputs_on(isa: str, out: Path, *args: str) -> dict[str, np.ndarray]:
    env = {**os.environ, "EDGEMIA_ISA": isa}
    done = subprocess.run([sys.executable, str(HELPER), str(out), *args], env=env, cwd=out.parent,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with np.load(out) as archive:
        return {key: archive[key] for key in archive.files}


def assert_same_outputs(got: dict[str, np.ndarray], reference: dict[str, np.ndarray], isa: str) -> None:
    assert str(got.pop("isa")) == isa
    reference = {key: value for key, value in reference.items() if key != "isa"}
    assert got.keys() == reference.keys()
    for key, expected in reference.items():
        np.testing.assert_array_equal(got[key], expected, err_msg=f"{isa}, {key}")
        # assert_array_equal takes any two NaNs as equal; the paths must agree on their bits too.
        assert got[key].tobytes() == expected.tobytes(), f"{isa}, {key}: the NaN bits differ"


def test_each_thread_count_gives_same_bytes(tmp_path):
    scalar = outputs_on("scalar", tmp_path / "scalar.npz")
    for numerics in ("litert", "litert-reference"):
        for threads in (2, 3):
            np.testing.assert_array_equal(scalar[f"{numerics}-{threads}"], scalar[f"{numerics}-1"])
        np.testing.assert_array_equal(scalar[f"{numerics}-single"], scalar[f"{numerics}-1"][5:6])


@pytest.mark.parametrize("isa", PATHS[1:])
def test_graph_equals_scalar_path(tmp_path, isa):
    scalar = outputs_on("scalar", tmp_path / "scalar.npz")
    assert_same_outputs(outputs_on(isa, tmp_path / f"{isa}.npz"), scalar, isa)


def test_unknown_isa_is_rejected(tmp_path):
    env = {**os.environ, "EDGEMIA_ISA": "sse9"}
    done = subprocess.run([sys.executable, str(HELPER), str(tmp_path / "out.npz")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "EDGEMIA_ISA='sse9'" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv", "depthwise", "dense", "digits"])
def test_converted_model_equals_scalar_path(tmp_path, name):
    from edgemia._tf import import_keras
    from edgemia.training.models import digits_cnn
    from op_models import BUILDERS, convert

    keras = import_keras()
    keras.utils.set_random_seed(5)
    model = digits_cnn((8, 8, 1), 10) if name == "digits" else BUILDERS[name]()
    model_path = tmp_path / f"{name}.tflite"
    convert(model, model_path)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    x = np.random.default_rng(1).integers(-128, 128, size=(300, *shape)).astype(np.int8)
    x[0], x[1] = -128, 127
    np.save(tmp_path / "x.npy", x)
    args = (str(model_path), str(tmp_path / "x.npy"))
    scalar = outputs_on("scalar", tmp_path / "scalar.npz", *args)
    for isa in PATHS[1:]:
        assert_same_outputs(outputs_on(isa, tmp_path / f"{isa}.npz", *args), scalar, isa)
