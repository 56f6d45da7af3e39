"""The standalone GEMM test program (tests/native), natively and on emulated ARM.

The program compares every GEMM path the CPU can run with the scalar path, with
no Python involved, and checks which path dispatch picks. On ARM it is
cross-compiled with aarch64-linux-gnu-g++ and run under qemu-user twice: with
`-cpu max`, which has the dot-product extension, so dispatch must pick neondot,
and with `-cpu cortex-a72`, which has not, so it must pick neon. Those tests
skip when the cross compiler, qemu-aarch64-static, the aarch64 C library or
CMake is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgemia import _native

SOURCE = Path(__file__).resolve().parent / "native"
ARM_SYSROOT = Path("/usr/aarch64-linux-gnu")
QEMU = "qemu-aarch64-static"
CROSS_COMPILER = "aarch64-linux-gnu-g++"


def find_cmake() -> str | None:
    # The test extra installs CMake into the environment next to the interpreter.
    beside = Path(sys.executable).parent / "cmake"
    return str(beside) if beside.exists() else shutil.which("cmake")


def build(build_dir: Path, *defines: str) -> Path:
    cmake = find_cmake()
    configure = [cmake, "-S", str(SOURCE), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *defines]
    for command in (configure, [cmake, "--build", str(build_dir), "-j", str(os.cpu_count() or 1)]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return build_dir / "gemm_paths_test"


def run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def arm_program(tmp_path_factory) -> Path:
    missing = [tool for tool in (CROSS_COMPILER, QEMU) if shutil.which(tool) is None]
    if find_cmake() is None:
        missing.append("cmake")
    if not (ARM_SYSROOT / "lib").is_dir():
        missing.append(f"the aarch64 C library in {ARM_SYSROOT}")
    if missing:
        pytest.skip(f"emulated ARM test needs {', '.join(missing)} "
                    "(Debian: apt-get install g++-aarch64-linux-gnu qemu-user-static)")
    return build(tmp_path_factory.mktemp("gemm-arm"), "-DCMAKE_SYSTEM_NAME=Linux",
                 "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_CXX_COMPILER={CROSS_COMPILER}")


@pytest.mark.emulated_arm
@pytest.mark.parametrize("cpu,expected", [("max", "neondot"), ("cortex-a72", "neon")])
def test_arm_paths_equal_scalar(arm_program, cpu, expected):
    output = run([QEMU, "-cpu", cpu, "-L", str(ARM_SYSROOT), str(arm_program), "--expect-path", expected])
    assert "paths built: scalar, neon, neondot" in output
    assert f"{expected}: " in output
    assert f"dispatch picks {expected}" in output
    assert output.rstrip().endswith("0 failed")


def test_host_paths_equal_scalar(tmp_path):
    if find_cmake() is None:
        pytest.skip("the standalone GEMM test needs cmake")
    program = build(tmp_path / "gemm-host")
    expected = _native.available_isas()[-1]
    output = run([str(program), "--expect-path", expected])
    for isa in _native.available_isas()[1:]:
        assert f"{isa}: " in output
    assert f"dispatch picks {expected}" in output
    assert output.rstrip().endswith("0 failed")
