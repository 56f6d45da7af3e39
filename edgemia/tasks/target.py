"""The target's keyed tasks: its training, and the export and capture of each variant.

The training task writes artifacts/float.keras. Each variant task writes the
variant's files, the Keras models of its model steps, and its capture bundles'
target.npz and perturbed-<j>.npz on every backend that runs one of its
formats. Both start from the saved target model, so a resumed audit exports
exactly what an uninterrupted one does.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgemia.attacks.bundle import perturbed_file_name
from edgemia.compression.spec import VariantSpec
from edgemia.compression.variants import FORMATS, Artifact, VariantExport
from edgemia.data.perturb import describe_perturbation
from edgemia.errors import UnsupportedModelError
from edgemia.runtime.capture import BACKEND_FORMATS, Capture, load_capture, run_capture, save_capture
from edgemia.tasks.store import TaskCounts, TaskStore, task_key
from edgemia.util import atomic_write_bytes, sha256_file

logger = logging.getLogger(__name__)

TRAINING_KIND = "target-training"
VARIANT_KIND = "target-variant"

# One capture bundle: (variant name, backend, format).
Combination = tuple[str, str, str]


def _bundle_dir(out: Path, slug: str, backend: str, model_format: str) -> Path:
    return Path(out) / "captures" / slug / f"{backend}-{model_format}"


def train_target_task(data, recipe, seed: int, out: Path, records_digest: str, counts: TaskCounts,
                      callbacks: list | None = None, trained_model: Path | None = None) -> tuple[object, dict, str]:
    """Train the target, or reuse its verified model; return the loaded model, its result and task key.

    With `trained_model` (a team's trained .keras file) nothing is trained:
    the file is checked against the data, and its sha256 enters the key.
    The result has training_seconds and accuracy (members, non-members).
    """
    from edgemia._tf import import_keras
    from edgemia.training.train import load_trained_target, train_target

    store = TaskStore(out)
    inputs = {"records": records_digest, "recipe": recipe.to_dict(), "seed": seed}
    if trained_model is not None:
        inputs["trained_model_sha256"] = sha256_file(trained_model)
    key = task_key(TRAINING_KIND, inputs)
    path = Path(out) / "artifacts" / "float.keras"
    result = store.verified_result(key, "training of the target")
    if result is None:
        counts.computed[TRAINING_KIND] += 1
        if trained_model is not None:
            trained = load_trained_target(trained_model, data, recipe)
        else:
            trained = train_target(data, recipe, seed, callbacks=callbacks)
        with tempfile.TemporaryDirectory(prefix="edgemia-target-") as scratch:
            scratch_path = Path(scratch) / "float.keras"
            trained.model.save(scratch_path)
            atomic_write_bytes(path, scratch_path.read_bytes())
        result = {
            "training_seconds": trained.seconds,
            "accuracy": {"members": trained.accuracy_members, "nonmembers": trained.accuracy_nonmembers},
        }
        store.save(key, TRAINING_KIND, "training of the target", [path], result)
    else:
        counts.reused[TRAINING_KIND] += 1
        logger.info("reusing the trained target %s", path)
    model = import_keras().models.load_model(path, compile=False)
    return model, result, key


@dataclass
class TargetVariant:
    """One variant of the target as exported and captured, freshly or from the task store."""

    export: VariantExport
    combinations: list[Combination]  # captured (variant, backend, format) triples
    skipped: list[dict]  # entries of the report's `skipped`


def variant_key(training_key: str, spec: VariantSpec, backends: list[str], threads: int, recipe) -> str:
    return task_key(VARIANT_KIND, {
        "training": training_key, "variant": spec.name, "backends": list(backends), "threads": threads,
        "recipe": recipe.to_dict(),
    })


def stored_variant(out: Path, spec: VariantSpec, result: dict) -> TargetVariant:
    """Rebuild a target variant from its stored task result."""
    artifacts = {
        fmt: Artifact(path=Path(out) / entry["path"], sha256=entry["sha256"], bytes=entry["bytes"], format=fmt)
        for fmt, entry in result["artifacts"].items()
    }
    export = VariantExport(spec=spec, artifacts=artifacts, summary=result["summary"])
    return TargetVariant(export, [tuple(c) for c in result["combinations"]], result["skipped"])


def export_and_capture_variant(
    exporter, spec: VariantSpec, backends: list[str], threads: int, out: Path, records, records_path: Path,
    member: np.ndarray, perturbed: list, store: TaskStore, key: str,
) -> TargetVariant:
    """Export one variant of the target, capture it on every backend that runs its formats, and store the task.

    Each file runs over all records, with `member` and the subgroup
    attributes saved beside the logits, and over each perturbed copy of
    them. A file the native kernel does not run (an op or type it lacks) is
    skipped with a warning, so the audit goes on without it. Any other
    failure is raised.
    """
    name = spec.name
    export = exporter.export(spec)
    files = [artifact.path for artifact in export.artifacts.values()]
    if export.summary["keras_model"] is not None:
        files.append(Path(out) / export.summary["keras_model"]["path"])
    combinations: list[Combination] = []
    skipped: list[dict] = []
    for backend in backends:
        formats = [fmt for fmt in FORMATS if fmt in export.artifacts and fmt in BACKEND_FORMATS[backend]]
        if not formats:
            skipped.append({
                "variant": name, "backend": backend, "format": None,
                "reason": f"{name} has no file in a format {backend} runs "
                          f"({' or '.join(BACKEND_FORMATS[backend])})",
            })
        for model_format in formats:
            artifact = export.artifacts[model_format]
            try:
                capture = run_capture(artifact.path, records, backend, threads=threads,
                                      records_source=str(records_path))
            except UnsupportedModelError as exc:
                if backend != "native":
                    raise
                reason = str(exc).replace(str(artifact.path), str(artifact.path.relative_to(out)))
                logger.warning("skipping %s (%s) on the native kernel: %s", name, model_format, reason)
                skipped.append({"variant": name, "backend": backend, "format": model_format,
                                "reason": f"the native kernel does not run this file: {reason}"})
                continue
            bundle = _bundle_dir(out, spec.slug, backend, model_format)
            capture.meta["variant"] = name
            save_capture(bundle / "target.npz", capture, member=member, groups=records.groups)
            files.append(bundle / "target.npz")
            for j, copy in enumerate(perturbed):
                # The copies are the records plus noise, so some clamping is expected; the
                # target capture above has warned about the records themselves.
                copy_capture = run_capture(
                    artifact.path, copy, backend, threads=threads,
                    records_source=str(Path(out) / "data" / perturbed_file_name(j)), warn=False,
                )
                copy_capture.meta.update(variant=name, perturbation=describe_perturbation(records),
                                         perturbed_copy=j)
                save_capture(bundle / perturbed_file_name(j), copy_capture)
                files.append(bundle / perturbed_file_name(j))
            combinations.append((name, backend, model_format))

    result = {
        "summary": export.summary,
        "artifacts": {fmt: artifact.to_dict(relative_to=out) for fmt, artifact in export.artifacts.items()},
        "combinations": [list(c) for c in combinations],
        "skipped": skipped,
    }
    store.save(key, VARIANT_KIND, f"{name} of the target", files, result)
    return TargetVariant(export, combinations, skipped)


def build_target_variants(
    model, specs: list[VariantSpec], make_exporter: Callable, training_key: str, backends: list[str],
    threads: int, recipe, out: Path, records, records_path: Path, member: np.ndarray, perturbed: list,
    counts: TaskCounts, advance: Callable[[], None] = lambda: None,
) -> dict[str, TargetVariant]:
    """Export and capture each variant of the target, reusing the verified ones; returns them by name.

    `make_exporter(model)` returns a VariantExporter context manager; it is
    only made when some variant has work left.
    """
    store = TaskStore(out)
    variants: dict[str, TargetVariant] = {}
    missing = []
    for spec in specs:
        key = variant_key(training_key, spec, backends, threads, recipe)
        result = store.verified_result(key, f"{spec.name} of the target")
        if result is None:
            missing.append((spec, key))
            continue
        counts.reused[VARIANT_KIND] += 1
        variants[spec.name] = stored_variant(out, spec, result)
        advance()
    if missing:
        with make_exporter(model) as exporter:
            for spec, key in missing:
                counts.computed[VARIANT_KIND] += 1
                variants[spec.name] = export_and_capture_variant(
                    exporter, spec, backends, threads, out, records, records_path, member, perturbed, store, key,
                )
                advance()
    return {spec.name: variants[spec.name] for spec in specs}


def load_target_captures(out: Path, variants: dict[str, TargetVariant]) -> dict[Combination, Capture]:
    """Read the target capture of every captured combination, in the variants' order."""
    captures = {}
    for variant in variants.values():
        for name, backend, model_format in variant.combinations:
            path = _bundle_dir(out, variant.export.spec.slug, backend, model_format) / "target.npz"
            captures[name, backend, model_format], _ = load_capture(path)
    return captures
