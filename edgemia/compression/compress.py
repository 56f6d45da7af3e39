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
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from edgemia.compression.pruning import FineTuning
from edgemia.compression.spec import parse_variant
from edgemia.compression.variants import FORMATS, CompressionData, VariantExporter
from edgemia.data.records import Records, check_against_model, load_records
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
    _check_keras_archive(path)
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"--model {path}: not a loadable Keras model ({exc})") from exc


def _check_keras_archive(path: Path) -> None:
    """Raise InputError unless a .keras file (or any zip archive) has the config.json that Keras writes.

    Other files, such as legacy HDF5 .h5 models, are left to Keras to read.
    """
    if path.suffix != ".keras" and not zipfile.is_zipfile(path):
        return
    advice = "pass a model saved with model.save('NAME.keras')"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(
            f"--model {path}: not a Keras model file, because a .keras file is a zip archive and this file "
            f"is not one ({exc}); {advice}"
        ) from exc
    if "config.json" not in names:
        raise InputError(
            f"--model {path}: a zip archive without config.json, so not a Keras model file; {advice}"
        )


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
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    members = load_records(calibration_path)
    nonmembers = load_records(nonmembers_path) if nonmembers_path is not None else None
    population = load_records(population_path) if population_path is not None else None
    if spec.uses_population and population is None:
        raise InputError(f"variant {spec.name} uses population records; pass --population RECORDS.npz")
    model = _load_keras_model(Path(model_path))
    _check_records_fit(model, [(calibration_path, members), (nonmembers_path, nonmembers),
                               (population_path, population)])

    # Everything is written into a staging directory inside `out` and moved up into `out`
    # only when the export, the accuracy runs and the metadata have all succeeded.
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".compress-", dir=out))
    try:
        summary, accuracy, skipped = _export_and_measure(
            model, spec, members, nonmembers, population, staging, backends, seed, threads, tuning,
            calibration_path, nonmembers_path,
        )
        metadata = {
            **summary,
            "seed": seed,
            "source_model": str(model_path),
            "calibration_records": str(calibration_path),
            "nonmember_records": str(nonmembers_path) if nonmembers_path is not None else None,
            "accuracy": accuracy,
            # The kernel's reasons name the staged file; name the file where it will stay.
            "skipped": [{**row, "reason": row["reason"].replace(str(staging), str(out))} for row in skipped],
        }
        atomic_write_json(staging / METADATA_FILE, metadata)
        # compress.json moves last, so it only ever describes files that are already in place.
        for path in sorted(staging.iterdir(), key=lambda path: path.name == METADATA_FILE):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
    return metadata


def _check_records_fit(model, records_files: list[tuple[Path | None, Records | None]]) -> None:
    """Raise RecordsError, naming the file, unless each records file fits the model's input and classes."""
    input_shape = tuple(model.input_shape[1:])
    n_classes = int(model.output_shape[-1])
    for path, records in records_files:
        if records is not None:
            check_against_model(records, str(path), input_shape, n_classes)


def _export_and_measure(
    model, spec, members: Records, nonmembers: Records | None, population: Records | None, out: Path,
    backends: tuple[str, ...], seed: int, threads: int, tuning: FineTuning, calibration_path: Path,
    nonmembers_path: Path | None,
) -> tuple[dict, list[dict], list[dict]]:
    """Export `spec` into `out` and measure the accuracy of its files.

    Returns the export's summary, the accuracy rows and the skipped rows.
    """
    population_x = population.x if population is not None else None
    with VariantExporter(model, CompressionData(members.x, members.y, population_x), out, seed, tuning) as exporter:
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

    return export.summary, accuracy, skipped


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
