"""Audit of an already exported .tflite or .onnx model, as it is, on a team's records.

Without a Keras model and a training recipe there are no reference models.
Only the attacks that threshold the target's own outputs run (loss,
confidence, entropy, modified-entropy, label-gap), and the reports mark them
as weaker. The records file must name its member column: which records the
model was trained on. Features go to the model exactly as stored in the
file, without standardization.

Run directory: data/records.npz, captures/exported/<backend>-<format>/
target.npz, exported/<backend>-<format>/scores.npz, and the three reports.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgemia.data.records import save_records
from edgemia.data.tables import RecordsSource, load_table, read_member_column
from edgemia.errors import InputError
from edgemia.evaluation import default_attacks
from edgemia.runtime.capture import BACKEND_FORMATS, read_model, run_capture, save_capture
from edgemia.util import sha256_file

logger = logging.getLogger(__name__)

VARIANT = "exported"
MODEL_SUFFIXES = (".tflite", ".onnx")


def check_exported_model(model: Path, records: RecordsSource | None, training: dict) -> None:
    """Raise InputError when an exported model cannot be audited with these records and settings."""
    if model.suffix.lower() not in MODEL_SUFFIXES:
        raise InputError(
            f"model.file {model}: unsupported model type '{model.suffix}'; give an exported .tflite or .onnx "
            "file; a .keras file in a configuration's [model] table is retrained from its architecture instead"
        )
    if not model.is_file():
        raise InputError(f"model.file {model}: file not found")
    if training:
        raise InputError(
            f"model.file {model}: a [training] recipe needs a Keras model to clone for the reference models; "
            "remove [training] to audit the exported file as it is"
        )
    if records is None or records.member is None:
        raise InputError(
            "an exported model needs the records it was trained on: add a [records] table with a 'member' "
            "column that is true for the model's training records"
        )
    # Reading the model and the records here rejects a damaged file or a mismatch before the run starts.
    table, classes, feature_names = load_table(records)
    read_member_column(records)
    loaded, _ = read_model(model)
    expected = tuple(loaded.input().shape[1:])
    if table.record_shape != expected:
        raise InputError(
            f"{records.path}: records.features give records of shape {table.record_shape} "
            f"({len(feature_names)} features after one-hot encoding), but {model} expects {expected}; "
            "list the model's input features in records.features"
        )
    n_outputs = int(loaded.output().shape[-1])
    if len(classes) > n_outputs:
        raise InputError(
            f"{records.path}: the label column has {len(classes)} classes, but {model} has {n_outputs} outputs; "
            "set records.classes to the model's classes in output order"
        )


def exported_attacks(requested: list[str] | None) -> list[str]:
    """Return the requested attacks, or every attack that needs neither reference models nor perturbed copies."""
    available = default_attacks(0, n_perturbed=0)
    if requested is None:
        return available
    unavailable = [name for name in requested if name not in available]
    if unavailable:
        raise InputError(
            f"attacks {', '.join(unavailable)} need reference models or perturbed copies, which an exported "
            f"model's audit has none of; choose from {', '.join(available)}"
        )
    return requested


def capture_exported(model: Path, source: RecordsSource, backends: list[str], out: Path, threads: int) -> Path:
    """Capture `model` on every backend that runs its format; return the captures directory."""
    records, classes, _ = load_table(source)
    member = read_member_column(source)
    records_path = out / "data" / "records.npz"
    save_records(records, records_path)
    _, model_format = read_model(model)
    runnable = [backend for backend in backends if model_format in BACKEND_FORMATS[backend]]
    if not runnable:
        raise InputError(f"model.file {model}: none of the backends {', '.join(backends)} runs {model_format} files")

    captures = out / "captures"
    for backend in runnable:
        capture = run_capture(model, records, backend, threads=threads, records_source=str(records_path))
        n_outputs = capture.logits.shape[1]
        if n_outputs < len(classes):
            raise InputError(
                f"{source.path}: column '{source.label}' (records.label) has {len(classes)} classes "
                f"({', '.join(map(str, classes))}), but {model.name} has {n_outputs} outputs; give records.classes "
                "in the order of the model's outputs"
            )
        capture.meta.update(variant=VARIANT, model_sha256=sha256_file(model))
        save_capture(captures / VARIANT / f"{backend}-{model_format}" / "target.npz", capture, member=member,
                     groups=records.groups)
        logger.info("captured %s on %s: accuracy %.4f", model.name, backend, capture.accuracy)
    return captures


def exported_model_section(model: Path) -> dict:
    """Return report.json's `exported_model`: the audited file with its format, size and sha256."""
    _, model_format = read_model(model)
    return {"path": str(model), "format": model_format, "bytes": model.stat().st_size, "sha256": sha256_file(model),
            "reference_models": 0,
            "note": "audited as exported, without reference models: only the weaker threshold attacks ran"}


def run_exported_audit(config, out: Path) -> dict:
    """Capture and attack `config.model` into `out`; return the report (written by the caller)."""
    from edgemia.attack_run import run_attack_report

    model = Path(config.model)
    captures = capture_exported(model, config.records, config.backends, out, config.threads)
    report = run_attack_report(captures, out, config.attacks, config.attack_options, n_resamples=config.bootstrap,
                               seed=config.seed)
    report["exported_model"] = exported_model_section(model)
    report["dataset"]["name"] = config.records.dataset_name
    report["dataset"]["records"] = "data/records.npz"
    report["dataset"]["records_sha256"] = sha256_file(out / "data" / "records.npz")
    report["seed"] = config.seed
    return report
