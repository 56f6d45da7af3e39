"""The versions and machine facts that make a run reproducible."""

from __future__ import annotations

import platform
import resource
import sys
from importlib import metadata

import edgemia

_PACKAGES = ("numpy", "tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "tflite", "onnxruntime", "onnx",
             "tf2onnx", "scikit-learn", "matplotlib")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "edgemia": edgemia.__version__,
        "python": sys.version.split()[0],
        "packages": versions,
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "system": f"{platform.system()} {platform.release()}",
    }


def peak_memory_mb() -> dict:
    """Return the peak resident set in MiB of this process and of the largest child process it waited for.

    Worker processes of the local executor count once the pool has shut
    down; Ray's workers are not children, so they do not count.
    """
    # Linux reports ru_maxrss in KiB.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"audit": round(own, 1), "workers": round(children, 1)}
