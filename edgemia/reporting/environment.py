"""The versions and machine facts that make a run reproducible."""

from __future__ import annotations

import platform
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
