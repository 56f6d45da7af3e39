"""Native captures on emulated arm64 are bit-identical to the x86-64 captures.

The kernel is cross-compiled with aarch64-linux-gnu-g++
(devices/emulated/build-kernel.sh) and imported by Debian bookworm's arm64
Python and numpy, from the root file system of
devices/emulated/build-rootfs.sh, under qemu-aarch64-static. Every int8
test model (tests/op_models.py, as TFLite and as ONNX QDQ and QOperator
files) is captured there with `edgemia capture` twice: with qemu's `max`
CPU, which has the dot product, so the kernel runs its neondot path, and
with `cortex-a72` (a Raspberry Pi 4's core), which has not, so it runs
neon. Both must return the bytes of the x86-64 capture.

The root file system is not built here, because that takes minutes and a
Debian mirror: the tests skip unless it is in EDGEMIA_ARM64_ROOT (default
/var/cache/edgemia/bookworm-arm64), where .ci/run builds it once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemia.data.records import Records, load_records, save_records
from edgemia.runtime.capture import load_capture, run_capture

pytestmark = [pytest.mark.emulated_arm, pytest.mark.slow]

EMULATED = Path(__file__).resolve().parents[1] / "devices" / "emulated"
DEFAULT_ROOT = Path("/var/cache/edgemia/bookworm-arm64")
QEMU = "qemu-aarch64-static"
CROSS_COMPILER = "aarch64-linux-gnu-g++"
# qemu CPU model, and the GEMM path the kernel must pick on it.
CPUS = {"max": "neondot", "cortex-a72": "neon"}
# The native kernel runs these as ONNX too; the others use int8 ops (Sigmoid)
# whose ONNX Runtime tables it does not reproduce.
ONNX_MODELS = ("mlp", "conv", "depthwise")
N_RECORDS = 160


def _arm_root() -> Path:
    return Path(os.environ.get("EDGEMIA_ARM64_ROOT", DEFAULT_ROOT))


@pytest.fixture(scope="module")
def arm_site(tmp_path_factory) -> Path:
    """Cross-compile the kernel and stage the board's Python path; skip without the tools."""
    root = _arm_root()
    missing = [tool for tool in (CROSS_COMPILER, QEMU) if shutil.which(tool) is None]
    if not (root / ".complete").is_file():
        missing.append(f"the arm64 root file system in {root} (devices/emulated/build-rootfs.sh builds it)")
    try:
        import pybind11
    except ImportError:
        missing.append("the pybind11 package")
    if missing:
        pytest.skip(f"emulated arm64 captures need {', '.join(missing)}")

    build = tmp_path_factory.mktemp("arm-kernel")
    done = subprocess.run([str(EMULATED / "build-kernel.sh"), str(root), str(build), pybind11.get_include()],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"build-kernel.sh failed:\n{done.stdout}\n{done.stderr}"
    site = build / "site"
    import tflite

    done = subprocess.run([str(EMULATED / "stage-site.sh"), str(build / "_native.cpython-311-aarch64-linux-gnu.so"),
                           str(site), str(Path(tflite.__file__).parent)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"stage-site.sh failed:\n{done.stdout}\n{done.stderr}"
    return site


def _records_for(model, seed: int) -> Records:
    from op_models import calibration_data

    x = calibration_data(model, n=N_RECORDS, seed=seed)
    x[0] = -100.0  # saturates the int8 input
    x[1] = 100.0
    n_classes = int(model.outputs[0].shape[-1])
    return Records(x=x, y=np.arange(len(x)) % n_classes, record_id=np.arange(len(x)))


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Every int8 test model with its records file: name -> (model, records)."""
    from edgemia._tf import import_keras
    from edgemia.compression import onnx_export
    from op_models import BUILDERS, calibration_data, conv_variants, convert

    keras = import_keras()
    keras.utils.set_random_seed(7)
    folder = tmp_path_factory.mktemp("int8-models")
    models = {}
    for seed, (name, build) in enumerate(BUILDERS.items()):
        model = build()
        records_path = folder / f"{name}-records.npz"
        save_records(_records_for(model, seed), records_path)
        convert(model, folder / f"{name}.tflite")
        models[f"{name}.tflite"] = (folder / f"{name}.tflite", records_path)
        if name not in ONNX_MODELS:
            continue

        # tf2onnx cannot export grouped convolutions, so the ONNX conv model has groups=1.
        if name == "conv":
            model = conv_variants(groups=1)
        data = calibration_data(model)
        model.compile(optimizer="adam", loss="mse")
        model.fit(data, np.random.default_rng(2).normal(size=(len(data), *model.outputs[0].shape[1:])),
                  epochs=2, verbose=0)
        float_path = folder / f"{name}-float.onnx"
        onnx_export.export_float(model, float_path)
        onnx_export.export_int8(float_path, data, folder / f"{name}-qdq.onnx")
        onnx_export.export_int8(float_path, data, folder / f"{name}-qoperator.onnx", operator_form=True)
        for form in ("qdq", "qoperator"):
            models[f"{name}-{form}.onnx"] = (folder / f"{name}-{form}.onnx", records_path)
    return models


def _capture_on_arm(site: Path, cpu: str, models: dict[str, tuple[Path, Path]], out: Path) -> dict[str, Path]:
    """Run `edgemia capture` for each model in one emulated Python; return name -> capture file."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        ["capture", "--model", str(model), "--data", str(records), "--backend", "native",
         "--threads", "2", "--out", str(out / f"{name}.npz")]
        for name, (model, records) in models.items()
    ]
    # One interpreter for every model: starting Python and numpy under qemu takes seconds.
    driver = (
        "import json, sys\n"
        "from edgemia.cli import main\n"
        "for arguments in json.loads(sys.argv[1]):\n"
        "    status = main(arguments)\n"
        "    if status:\n"
        "        sys.exit(f'edgemia {arguments} exited with status {status}')\n"
    )
    environment = {**os.environ, "EDGEMIA_ARM64_ROOT": str(_arm_root()), "EDGEMIA_ARM64_SITE": str(site),
                   "EDGEMIA_QEMU_CPU": cpu}
    environment.pop("EDGEMIA_ISA", None)
    done = subprocess.run([str(EMULATED / "python.sh"), "-c", driver, json.dumps(jobs)], capture_output=True,
                          text=True, timeout=1800, env=environment, cwd=out)
    assert done.returncode == 0, f"the emulated capture failed:\n{done.stdout}\n{done.stderr}"
    return {name: out / f"{name}.npz" for name in models}


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_arm_capture_equals_x86(arm_site, int8_models, tmp_path, cpu):
    arm_files = _capture_on_arm(arm_site, cpu, int8_models, tmp_path / cpu)
    for name, (model, records_path) in int8_models.items():
        arm, _ = load_capture(arm_files[name])
        host = run_capture(model, load_records(records_path), "native")

        assert arm.meta["machine"] == "aarch64", name
        assert arm.meta["isa"] == CPUS[cpu], name
        assert host.meta["machine"] == "x86_64", name
        assert arm.meta["model_sha256"] == host.meta["model_sha256"], name
        assert arm.raw.dtype == host.raw.dtype, name
        assert arm.raw.tobytes() == host.raw.tobytes(), f"{name}: raw output differs on {cpu}"
        assert arm.logits.tobytes() == host.logits.tobytes(), f"{name}: logits differ on {cpu}"


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_arm_graph_equals_host_scalar(arm_site, tmp_path, cpu):
    """The built-in graphs of isa_graph_outputs.py, depthwise rows included, on neon and neondot."""
    helper = Path(__file__).resolve().parent / "isa_graph_outputs.py"
    environment = {**os.environ, "EDGEMIA_ARM64_ROOT": str(_arm_root()), "EDGEMIA_ARM64_SITE": str(arm_site),
                   "EDGEMIA_QEMU_CPU": cpu}
    environment.pop("EDGEMIA_ISA", None)
    done = subprocess.run([str(EMULATED / "python.sh"), str(helper), str(tmp_path / "arm.npz")], capture_output=True,
                          text=True, timeout=1800, env=environment)
    assert done.returncode == 0, done.stderr
    host_environment = {**os.environ, "EDGEMIA_ISA": "scalar"}
    done = subprocess.run([sys.executable, str(helper), str(tmp_path / "scalar.npz")], capture_output=True, text=True,
                          timeout=600, env=host_environment)
    assert done.returncode == 0, done.stderr

    arm = dict(np.load(tmp_path / "arm.npz"))
    scalar = dict(np.load(tmp_path / "scalar.npz"))
    assert str(arm.pop("isa")) == CPUS[cpu]
    assert str(scalar.pop("isa")) == "scalar"
    assert sorted(arm) == sorted(scalar)
    for key, expected in scalar.items():
        np.testing.assert_array_equal(arm[key], expected, err_msg=f"{cpu}, {key}")


@pytest.mark.parametrize("profile,cpu", [("rpi4", "cortex-a72"), ("rpi5", "cortex-a76")])
def test_emulated_board_over_ssh(arm_site, int8_models, tmp_path, profile, cpu):
    """The emulated board behind a real sshd: `edgemia device check`, then one capture round trip."""
    from edgemia.devices.profiles import load_profile
    from edgemia.devices.runner import BoardSession, DeviceSettings, InputFile, check_device
    from edgemia.devices.ssh import SshClient, SshOptions, SshTarget
    from edgemia.util import sha256_file
    from sshd import TestServer, missing_tools

    missing = missing_tools()
    if missing:
        pytest.skip(f"the emulated board over SSH needs {', '.join(missing)}")
    server = TestServer(tmp_path / "sshd")
    python = server.bin / "python3"
    python.write_text(
        "#!/bin/sh\n"
        f"EDGEMIA_ARM64_ROOT={_arm_root()} EDGEMIA_ARM64_SITE={arm_site} EDGEMIA_QEMU_CPU={cpu} "
        f'exec {EMULATED / "python.sh"} "$@"\n'
    )
    python.chmod(0o755)
    server.start()
    try:
        options = SshOptions(known_hosts=server.known_hosts(), identity=server.client_key, connect_timeout_seconds=10)
        settings = DeviceSettings(load_profile(profile), SshTarget("127.0.0.1", server.user, server.port), options,
                                  remote_dir=str(tmp_path / "remote"))
        model_path, records_path = int8_models["conv.tflite"]
        model = InputFile(model_path, sha256_file(model_path))
        records = InputFile(records_path, sha256_file(records_path))
        local = tmp_path / "pulled.npz"
        with SshClient(settings.target, settings.ssh) as client:
            check = check_device(settings, client)
            assert check.problems == []
            assert check.facts["machine"] == "aarch64"
            session = BoardSession(settings, client, check)
            session.push_inputs([model, records])
            session.capture(model, records, "native", local, label="the conv model")
    finally:
        server.stop()

    arm, _ = load_capture(local)
    host = run_capture(model_path, load_records(records_path), "native")
    assert check.isa == load_profile(profile).isa
    assert arm.meta["isa"] == check.isa
    assert arm.raw.tobytes() == host.raw.tobytes()
