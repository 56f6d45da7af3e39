"""`edgemia compress`: export one trained Keras model as one variant, with a metadata file.

The metadata file, compress.json in the output directory, contains the
variant's summary from VariantExporter.export: its spec, parameter count and
per-layer kernel sparsity, and per file the path, bytes, sha256, op list and
weight sparsity. It adds the seed and `accuracy`, one row per backend and
format that ran the file, with the accuracy on the members (the calibration
records) and, when given, on the non-members. Files the native kernel does
not run are listed under `skipped` with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgemia.compression.pruning import FineTuning
from edgemia.compression.spec import parse_variant
from edgemia.compression.variants import FORMATS, CompressionData, VariantExporter
from edgemia.data.records import load_records
from edgemia.errors import InputError, UnsupportedModelError
from edgemia.runtime.capture import BACKEND_FORMATS, check_backend_names, run_capture
from edgemia.util import atomic_write_json

logger = logging.getLogger(__name__)

METADATA_FILE = "compress.json"


def _load_keras_model(path: Path):
    from edgemia._tf import import_keras

    keras = import_keras()
    if not path.is_file():
        raise InputError(f"--model {path}: file not found")
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"--model {path}: not a loadable Keras model ({exc})") from exc


def compress(
    model_path: Path,
    spec_text: str,
    calibration_path: Path,
    out: Path,
    nonmembers_path: Path | None = None,
    population_path: Path | None = None,
    backends: tuple[str, ...] = ("litert", "onnxruntime", "native"),
    seed: int = 0,
    threads: int = 0,
    tuning: FineTuning = FineTuning(),
) -> dict:
    """Export the Keras model in `model_path` as variant `spec_text` into `out`; return compress.json's content.

    The calibration records are also the training records of model steps
    (pruning fine-tunes on them, distillation transfers on them unless
    data=population) and count as members for the accuracy rows.
    """
    spec = parse_variant(spec_text)
    check_backend_names(list(backends))
    members = load_records(calibration_path)
    nonmembers = load_records(nonmembers_path) if nonmembers_path is not None else None
    population = load_records(population_path).x if population_path is not None else None
    if spec.uses_population and population is None:
        raise InputError(f"variant {spec.name} uses population records; pass --population RECORDS.npz")
    model = _load_keras_model(Path(model_path))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    with VariantExporter(model, CompressionData(members.x, members.y, population), out, seed, tuning) as exporter:
        export = exporter.export(spec)

    accuracy, skipped = [], []
    for model_format in FORMATS:
        if model_format not in export.artifacts:
            continue
        path = export.artifacts[model_format].path
        for backend in backends:
            if model_format not in BACKEND_FORMATS[backend]:
                continue
            row = {"backend": backend, "format": model_format}
            try:
                row["members"] = run_capture(path, members, backend, threads=threads,
                                             records_source=str(calibration_path)).accuracy
                if nonmembers is not None:
                    row["nonmembers"] = run_capture(path, nonmembers, backend, threads=threads,
                                                    records_source=str(nonmembers_path)).accuracy
            except UnsupportedModelError as exc:
                if backend != "native":
                    raise
                logger.warning("the native kernel does not run %s: %s", path, exc)
                skipped.append({**row, "reason": f"the native kernel does not run this file: {exc}"})
                continue
            accuracy.append(row)

    metadata = {
        **export.summary,
        "seed": seed,
        "source_model": str(model_path),
        "calibration_records": str(calibration_path),
        "nonmember_records": str(nonmembers_path) if nonmembers_path is not None else None,
        "accuracy": accuracy,
        "skipped": skipped,
    }
    atomic_write_json(out / METADATA_FILE, metadata)
    return metadata


def accuracy_summary(metadata: dict) -> list[str]:
    """Return one line per accuracy row, for the console."""
    lines = []
    for row in metadata["accuracy"]:
        text = f"{row['backend']} ({row['format']}): accuracy {row['members']:.4f} on members"
        if "nonmembers" in row:
            text += f", {row['nonmembers']:.4f} on non-members"
        lines.append(text)
    lines += [f"{row['backend']} ({row['format']}): not run; {row['reason']}" for row in metadata["skipped"]]
    return lines
