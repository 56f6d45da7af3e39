"""Describe the machine this runs on, as one JSON object on stdout.

`edgemia device check` sends this file's source to the board's Python over
SSH (`python3 -`). The file therefore uses the standard library only, and it
must not fail when numpy or edgemia are missing there. Each missing piece
becomes a null field or an error text.

CPU features on aarch64 come from the kernel's hardware capability bits
(getauxval). The native kernel's dispatch reads the same bits, and
qemu-user emulates them for the CPU model it runs. On x86-64 the features
come from the flags line of /proc/cpuinfo.
"""

import ctypes
import importlib.util
import json
import os
import platform
import sys

# Bit positions of AT_HWCAP and AT_HWCAP2 on arm64, from the Linux UAPI header
# arch/arm64/include/uapi/asm/hwcap.h, with the feature names of /proc/cpuinfo.
AARCH64_HWCAP = [
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
    "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
    "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",
]
AARCH64_HWCAP2 = [
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
    "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte",
]
AT_HWCAP = 16
AT_HWCAP2 = 26


def _aarch64_features():
    libc = ctypes.CDLL(None)  # the running program, which links the C library
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    features = []
    for key, names in ((AT_HWCAP, AARCH64_HWCAP), (AT_HWCAP2, AARCH64_HWCAP2)):
        bits = libc.getauxval(key)
        features += [name for position, name in enumerate(names) if bits >> position & 1]
    return features


def _cpuinfo_lines():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _cpuinfo_value(key):
    for line in _cpuinfo_lines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_features(machine):
    """Return the CPU's features, sorted, with Linux's names."""
    if machine in ("aarch64", "arm64"):
        try:
            return sorted(_aarch64_features())
        except (OSError, AttributeError):
            pass
    flags = _cpuinfo_value("flags") or _cpuinfo_value("Features") or ""
    return sorted(set(flags.split()))


def board_model(machine):
    """Return the board's model from the device tree, or an x86 CPU's model name, if known.

    On aarch64 /proc/cpuinfo has no model name; under qemu-user it is the
    x86 host's file, so it is not read there.
    """
    try:
        with open("/proc/device-tree/model", encoding="utf-8", errors="replace") as f:
            return f.read().strip("\x00\n ") or None
    except OSError:
        pass
    return _cpuinfo_value("model name") if machine == "x86_64" else None


def _version(module_name):
    try:
        module = __import__(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
        return None, f"{type(exc).__name__}: {exc}"
    return getattr(module, "__version__", "unknown"), None


def edgemia_facts():
    """Return edgemia's version, its kernel's GEMM paths and the backends importable here."""
    facts = {"edgemia_version": None, "edgemia_error": None, "isas": [], "default_isa": None,
             "native_error": None, "backends": []}
    facts["edgemia_version"], facts["edgemia_error"] = _version("edgemia")
    if facts["edgemia_version"] is None:
        return facts
    try:
        from edgemia import _native

        facts["isas"] = list(_native.available_isas())
        # Dispatch picks the last available path when EDGEMIA_ISA is unset.
        facts["default_isa"] = facts["isas"][-1]
        facts["backends"].append("native")
    except Exception as exc:  # noqa: BLE001 - a kernel that fails to load is reported
        facts["native_error"] = f"{type(exc).__name__}: {exc}"
    # The third-party runtimes are only looked up, not imported: importing them
    # takes seconds on a small board, and they crash under qemu-user.
    for backend, module in (("litert", "ai_edge_litert"), ("onnxruntime", "onnxruntime")):
        if importlib.util.find_spec(module) is not None:
            facts["backends"].append(backend)
    return facts


def probe():
    machine = platform.machine()
    facts = {
        "machine": machine,
        "system": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
        "model": board_model(machine),
        "cpu_count": os.cpu_count(),
        "cpu_features": cpu_features(machine),
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }
    facts["numpy_version"], facts["numpy_error"] = _version("numpy")
    facts.update(edgemia_facts())
    return facts


if __name__ == "__main__":
    print(json.dumps(probe()))
