"""The variants an audit compares, each one name that maps to an export recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgemia.errors import InputError
from edgemia.util import atomic_write_bytes, sha256_file


@dataclass(frozen=True)
class Artifact:
    """An exported model file and its identity."""

    path: Path
    sha256: str
    bytes: int

    def to_dict(self, relative_to: Path | None = None) -> dict:
        path = self.path.relative_to(relative_to) if relative_to else self.path
        return {"path": str(path), "sha256": self.sha256, "bytes": self.bytes}


def _float(model, calibration_x: np.ndarray) -> bytes:
    from edgemia.compression.tflite_export import export_float

    return export_float(model)


def _int8(model, calibration_x: np.ndarray) -> bytes:
    from edgemia.compression.tflite_export import export_int8

    return export_int8(model, calibration_x)


# name -> (description, exporter(keras model, calibration records) -> .tflite bytes)
VARIANTS: dict[str, tuple[str, Callable[[object, np.ndarray], bytes]]] = {
    "float": ("float32 TFLite, the baseline", _float),
    "int8": ("full-integer int8 post-training quantization (TFLite converter)", _int8),
}


def check_variant_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise InputError(
            f"unknown variant {', '.join(repr(n) for n in unknown)}; valid variants: "
            f"{', '.join(VARIANTS)}"
        )


def export_variant(name: str, model, calibration_x: np.ndarray, out_dir: Path) -> Artifact:
    """Export `model` as variant `name` into `out_dir/<name>.tflite`."""
    check_variant_names([name])
    _, exporter = VARIANTS[name]
    path = Path(out_dir) / f"{name}.tflite"
    atomic_write_bytes(path, exporter(model, calibration_x))
    return Artifact(path=path, sha256=sha256_file(path), bytes=path.stat().st_size)
