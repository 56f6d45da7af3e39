"""Capture files: a model's logits on a records file, with everything needed to trust them.

A capture file (`.npz`) contains `logits` float32 `[n, C]` (the dequantized model
output), `labels` int64 `[n]`, `record_id` `[n]`, `raw` (the output tensor
exactly as the runtime produced it) and `meta`, a JSON string naming the
model's sha256, backend, numerics mode, instruction-set path, threads, host
and edgemia version. A capture in a bundle adds `member` (the target) or
`in_mask` (a reference model) as a bool `[n]`, and the target's capture may
carry the records' subgroup labels `group_<attribute>` `[n]`.
"""

from __future__ import annotations

import json
import platform
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import edgemia
from edgemia.data.records import GROUP_PREFIX, Records, check_against_model
from edgemia.errors import InputError, ModelFormatError
from edgemia.runtime.io import check_classifier_output, dequantize_output, quantize_records, record_shape, warn_clamped
from edgemia.runtime.tflite_model import TfliteModel, read_tflite
from edgemia.util import atomic_save_npz

BACKENDS = ("native", "litert", "onnxruntime")

# The model formats each backend runs.
BACKEND_FORMATS = {"native": ("tflite", "onnx"), "litert": ("tflite",), "onnxruntime": ("onnx",)}

# The backends `edgemia audit` captures on when --backends is not given.
DEFAULT_BACKENDS = ("litert", "onnxruntime", "native")


@dataclass
class Capture:
    logits: np.ndarray  # float32 [n, C]
    labels: np.ndarray  # int64 [n]
    record_id: np.ndarray  # int64 [n]
    raw: np.ndarray  # output tensor as produced, [n, C]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def accuracy(self) -> float:
        return float(np.mean(np.argmax(self.logits, axis=1) == self.labels))


def check_backend_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise InputError(
            f"unknown backend {', '.join(repr(n) for n in unknown)}; valid backends: {', '.join(BACKENDS)}"
        )


def read_model(model_path: str | Path):
    """Read a .tflite or .onnx file; returns (model, format)."""
    model_path = Path(model_path)
    suffix = model_path.suffix.lower()
    if suffix == ".tflite":
        return read_tflite(model_path), "tflite"
    if suffix == ".onnx":
        from edgemia.runtime.onnx_model import read_onnx

        return read_onnx(model_path), "onnx"
    raise ModelFormatError(f"{model_path}: unknown model format '{suffix}'; edgemia reads .tflite and .onnx files")


def open_session(model, backend: str, threads: int = 0, numerics: str | None = None):
    """Load `model` into `backend`; returns an object with `run(x) -> raw output` and `close()`."""
    check_backend_names([backend])
    if backend == "native":
        from edgemia.runtime.native import NativeSession

        return NativeSession(model, threads=threads, numerics=numerics)
    if numerics not in (None, backend):
        raise InputError(f"the {backend} backend computes '{backend}' numerics only, not '{numerics}'")
    if backend == "litert":
        from edgemia.runtime.litert import LiteRTSession

        return LiteRTSession(model, threads=threads)
    from edgemia.runtime.onnxruntime import OnnxRuntimeSession

    return OnnxRuntimeSession(model, threads=threads)


def run_capture(
    model_path: str | Path,
    records: Records,
    backend: str,
    threads: int = 0,
    numerics: str | None = None,
    records_source: str = "records",
    warn: bool = True,
) -> Capture:
    """Run the model in `model_path` over `records` on `backend` and return the capture.

    The share of int8 input values clamped to the input range goes into the
    capture's meta as `input_clamped`, and is logged as a warning unless
    `warn` is False.
    """
    model_path = Path(model_path)
    check_backend_names([backend])
    model, model_format = read_model(model_path)
    if model_format not in BACKEND_FORMATS[backend]:
        raise InputError(
            f"{model_path}: the {backend} backend runs {' and '.join(BACKEND_FORMATS[backend])} models, "
            f"not {model_format}"
        )
    check_classifier_output(model)
    session = open_session(model, backend, threads=threads, numerics=numerics)
    n_classes = int(model.output().shape[-1])
    check_against_model(records, records_source, record_shape(model.input()), n_classes)

    x, clamped = quantize_records(records.x, model.input())
    if warn:
        warn_clamped(clamped, model.input())
    try:
        start = time.perf_counter()
        raw = session.run(x)
        seconds = time.perf_counter() - start
    finally:
        session.close()
    if raw.shape != (len(records), n_classes):
        raise ModelFormatError(
            f"{model_path}: backend {backend} returned output of shape {raw.shape}, "
            f"expected {(len(records), n_classes)}"
        )
    meta = {
        "model_sha256": model.sha256,
        "model_file": model_path.name,
        "model_format": model_format,
        "backend": backend,
        "numerics": session.numerics,
        "isa": session.isa,
        "threads": session.threads,
        "inference_seconds": seconds,
        "input_clamped": clamped,
        "host": platform.node(),
        "machine": platform.machine(),
        "edgemia_version": edgemia.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Capture(
        logits=dequantize_output(raw, model.output()),
        labels=records.y.copy(),
        record_id=records.record_id.copy(),
        raw=raw,
        meta=meta,
    )


def save_capture(
    path: str | Path,
    capture: Capture,
    member: np.ndarray | None = None,
    in_mask: np.ndarray | None = None,
    groups: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a capture file atomically; `member` or `in_mask` make it part of a bundle.

    `groups` maps subgroup attributes to labels [n], stored as `group_<attribute>`.
    """
    arrays = {
        "logits": capture.logits,
        "labels": capture.labels,
        "record_id": capture.record_id,
        "raw": capture.raw,
        "meta": np.array(json.dumps(capture.meta, sort_keys=True)),
    }
    if member is not None:
        arrays["member"] = np.asarray(member, dtype=bool)
    if in_mask is not None:
        arrays["in_mask"] = np.asarray(in_mask, dtype=bool)
    for attribute, values in (groups or {}).items():
        arrays[GROUP_PREFIX + attribute] = np.asarray(values)
    atomic_save_npz(path, **arrays)


def _first_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _check_capture_fields(path: Path, logits: np.ndarray, labels: np.ndarray, record_id: np.ndarray) -> None:
    """Raise InputError, naming the field and first bad row, unless the capture's arrays can be attacked."""
    if not np.issubdtype(logits.dtype, np.floating):
        raise InputError(f"{path}: 'logits' must be floating point, got {logits.dtype}")
    n_classes = logits.shape[1]
    if n_classes < 2:
        raise InputError(f"{path}: 'logits' has {n_classes} class column(s); a classifier capture needs at least 2")
    finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        raise InputError(
            f"{path}: 'logits' row {_first_row(~finite)} contains NaN or infinite values; "
            f"{int((~finite).sum())} of {len(finite)} rows do. Check the model file and the runtime that made it"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{path}: 'labels' must be integers, got {labels.dtype}")
    outside = (labels < 0) | (labels >= n_classes)
    if outside.any():
        row = _first_row(outside)
        raise InputError(
            f"{path}: 'labels' row {row} is {int(labels[row])}, outside the {n_classes} classes of 'logits' "
            f"(0 to {n_classes - 1})"
        )
    if not np.issubdtype(record_id.dtype, np.integer):
        raise InputError(f"{path}: 'record_id' must be integers, got {record_id.dtype}")
    _, first_index, counts = np.unique(record_id, return_index=True, return_counts=True)
    if (counts > 1).any():
        repeated = int(record_id[first_index[counts > 1][0]])
        raise InputError(f"{path}: 'record_id' {repeated} appears {int(counts[counts > 1][0])} times; ids must be unique")


def load_capture(path: str | Path) -> tuple[Capture, dict[str, np.ndarray]]:
    """Read a capture file; returns the capture and its bundle fields (member, in_mask, group_*)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: capture file not found")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise InputError(f"{path}: not a readable capture file (no zip header)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: not a readable capture file ({exc})") from exc

    for key in ("logits", "labels", "record_id", "meta"):
        if key not in arrays:
            raise InputError(f"{path}: field '{key}' is missing; is this a capture file?")
    logits = arrays["logits"]
    n = arrays["labels"].shape[0] if arrays["labels"].ndim == 1 else -1
    if logits.ndim != 2 or n != logits.shape[0] or arrays["record_id"].shape != (n,):
        raise InputError(
            f"{path}: 'logits' {logits.shape}, 'labels' {arrays['labels'].shape} and 'record_id' "
            f"{arrays['record_id'].shape} do not describe the same [n] records"
        )

    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: field 'meta' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{path}: field 'meta' must be a JSON object, got {type(meta).__name__}")
    _check_capture_fields(path, logits, arrays["labels"], arrays["record_id"])

    capture = Capture(
        logits=logits.astype(np.float32),
        labels=arrays["labels"].astype(np.int64),
        record_id=arrays["record_id"],
        raw=arrays.get("raw", logits),
        meta=meta,
    )
    extras = {key: value for key, value in arrays.items() if key in ("member", "in_mask") or key.startswith(GROUP_PREFIX)}
    return capture, extras
