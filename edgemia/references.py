"""Reference models for the audit: each one trained, compressed and captured like the target.

Reference model k trains with the target's recipe on its IN records. It is
exported as every variant the audit compares, through the same recipe as the
target: model steps (pruning, distillation) fine-tune on its own IN records
(distillation with data=population on the audit's population records), and
quantizers calibrate on its IN records, as the target's do on the members.
Each file is captured on the same (backend, format) pairs as the target's,
over all audit records, and written beside the target's capture as
captures/<variant slug>/<backend>-<format>/reference-<k>.npz with `in_mask`,
so each of those directories is a complete capture bundle.

Each model is two kinds of keyed task (see edgemia.tasks): its training,
which writes artifacts/references/<k>/float.keras, and one task per variant,
which exports and captures it. build_references reuses every task whose
files are unchanged and sends each model with work left to the executor as
one ReferenceTask, which names only files and values, so it runs in a worker
process or on a Ray worker.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgemia.attacks.bundle import reference_file_name
from edgemia.compression.pruning import FineTuning
from edgemia.compression.spec import parse_variants
from edgemia.compression.variants import CompressionData, VariantExporter
from edgemia.data.records import load_records
from edgemia.runtime.capture import run_capture, save_capture
from edgemia.tasks import LocalExecutor, TaskCounts, TaskStore, array_digest, code_version, task_key
from edgemia.training.references import reference_seed, train_reference
from edgemia.training.train import Recipe
from edgemia.util import atomic_write_bytes

logger = logging.getLogger(__name__)

TRAINING_KIND = "reference-training"
VARIANT_KIND = "reference-variant"


@dataclass(frozen=True)
class ReferenceTask:
    """Inputs that decide reference model k; every path is inside the run directory `out`."""

    out: Path
    records_path: Path  # all audit records, in the order of the target's captures
    in_mask: np.ndarray  # bool [n]: the records model k trains on
    n_classes: int
    recipe: Recipe
    seed: int  # the audit's seed; the model's own seed is reference_seed(seed, k)
    k: int
    variants: tuple[str, ...]  # variant specs
    captures: tuple[tuple[str, str, str], ...]  # (variant name, backend, format) to capture
    threads: int = 0  # inference threads per capture; 0 uses every core
    population_path: Path | None = None  # records file of the population, for distill with data=population
    records_digest: str = ""  # array_digest of the records and population; part of every task key
    train: bool = True  # False: the model's training task is stored and verified, so load its model
    # The driver's code version, so that a worker that imported other code still writes under the driver's keys.
    code: str = field(default_factory=code_version)

    def training_key(self) -> str:
        return task_key(TRAINING_KIND, code=self.code, inputs={
            "records": self.records_digest, "in_mask": array_digest(self.in_mask), "n_classes": self.n_classes,
            "recipe": self.recipe.to_dict(), "seed": self.seed, "k": self.k,
        })

    def variant_key(self, name: str) -> str:
        """Key of exporting variant `name` and capturing it on this task's (backend, format) pairs of it."""
        captures = sorted([backend, model_format] for variant, backend, model_format in self.captures
                          if variant == name)
        return task_key(VARIANT_KIND, code=self.code, inputs={
            "training": self.training_key(), "variant": name, "captures": captures, "threads": self.threads,
            "recipe": self.recipe.to_dict(),
        })


def reference_artifact_dir(out: Path, k: int) -> Path:
    return Path(out) / "artifacts" / "references" / str(k)


def reference_model_path(out: Path, k: int) -> Path:
    """Return the path of reference model k's trained float Keras model."""
    return reference_artifact_dir(out, k) / "float.keras"


def capture_dir(out: Path, slug: str, backend: str, model_format: str) -> Path:
    """Capture bundle directory of one variant, backend and format: captures/<slug>/<backend>-<format>."""
    return Path(out) / "captures" / slug / f"{backend}-{model_format}"


def _train(task: ReferenceTask, pool) -> None:
    """Train model k, save it, and record the training task."""
    trained = train_reference(pool, task.in_mask, task.n_classes, task.recipe, task.seed, task.k)
    path = reference_model_path(task.out, task.k)
    with tempfile.TemporaryDirectory(prefix="edgemia-reference-") as scratch:
        # Keras saves only to names ending in .keras, so save beside, then move atomically.
        scratch_path = Path(scratch) / "float.keras"
        trained.model.save(scratch_path)
        atomic_write_bytes(path, scratch_path.read_bytes())
    result = {
        "training_seed": reference_seed(task.seed, task.k),
        "n_in": int(task.in_mask.sum()),
        "training_seconds": trained.seconds,
        "accuracy": {"in": trained.accuracy_members, "out": trained.accuracy_nonmembers},
    }
    TaskStore(task.out).save(task.training_key(), TRAINING_KIND, f"training of reference model {task.k}",
                             [path], result)


def build_reference(task: ReferenceTask) -> None:
    """Train (unless task.train is False), export and capture reference model k as task.variants.

    Each finished training and each finished variant is recorded in the
    run directory's task store at once, so work done before an interruption
    is kept.
    """
    from edgemia._tf import import_keras

    pool = load_records(task.records_path)
    if task.train:
        _train(task, pool)
    if not task.variants:
        return
    # The exports start from the saved model in every run, so a resumed run
    # compresses exactly what an uninterrupted one does.
    model = import_keras().models.load_model(reference_model_path(task.out, task.k), compile=False)

    specs = parse_variants(list(task.variants))
    population = load_records(task.population_path) if task.population_path is not None else None
    data = CompressionData(
        pool.x[task.in_mask], pool.y[task.in_mask], population.x if population is not None else None,
        record_id=pool.record_id[task.in_mask],
        population_record_id=population.record_id if population is not None else None,
    )
    tuning = FineTuning(batch_size=task.recipe.batch_size, learning_rate=task.recipe.learning_rate,
                        epochs=task.recipe.epochs, recipe=task.recipe)
    store = TaskStore(task.out)
    with VariantExporter(model, data, reference_artifact_dir(task.out, task.k), reference_seed(task.seed, task.k),
                         tuning, root=task.out) as exporter:
        for spec in specs:
            start = time.perf_counter()
            export = exporter.export(spec)
            files = [artifact.path for artifact in export.artifacts.values()]
            if export.summary["keras_model"] is not None:
                files.append(task.out / export.summary["keras_model"]["path"])
            clamped = 0.0
            for name, backend, model_format in task.captures:
                if name != spec.name:
                    continue
                # One warning per reference capture would repeat K times; build_references sums them up.
                capture = run_capture(export.artifacts[model_format].path, pool, backend, threads=task.threads,
                                      records_source=str(task.records_path), warn=False)
                clamped = max(clamped, capture.meta["input_clamped"])
                capture.meta["reference"] = {"k": task.k, "training_seed": reference_seed(task.seed, task.k)}
                capture.meta["variant"] = name
                path = capture_dir(task.out, spec.slug, backend, model_format) / reference_file_name(task.k)
                save_capture(path, capture, in_mask=task.in_mask)
                files.append(path)
            result = {
                # The variant's TFLite file, or its ONNX file when it has none; artifacts_by_format has them all.
                "artifact": next(iter(export.artifacts.values())).to_dict(relative_to=task.out),
                "artifacts_by_format": {
                    fmt: artifact.to_dict(relative_to=task.out) for fmt, artifact in export.artifacts.items()
                },
                "seconds": time.perf_counter() - start,
                "input_clamped": clamped,
            }
            store.save(task.variant_key(spec.name), VARIANT_KIND, f"{spec.name} of reference model {task.k}",
                       files, result)


# Each worker process holds its own TensorFlow, about 0.7 GB while it trains a digits
# model (max RSS, measured), so the default stops at 4 workers, about 3 GB.
MAX_DEFAULT_JOBS = 4


def default_jobs() -> int:
    """Return the default number of worker processes: one per core, at most MAX_DEFAULT_JOBS."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


def build_references(
    tasks: list[ReferenceTask], jobs: int = 1, advance: Callable[[], None] = lambda: None,
    executor=None, counts: TaskCounts | None = None,
) -> list[dict]:
    """Build every task's reference model, reusing the verified tasks of earlier runs.

    Models with work left run on `executor` (default: a LocalExecutor with
    `jobs` workers); `counts` receives the tasks reused and computed.
    Returns the report's summary of each model in task order. The models and
    captures depend neither on the executor nor on the number of workers. A
    failure in any task stops the remaining ones and is raised here.
    """
    counts = counts if counts is not None else TaskCounts()
    executor = executor if executor is not None else LocalExecutor(jobs)
    pending = []
    for task in tasks:
        store = TaskStore(task.out)
        trained = store.verified_result(task.training_key(), f"training of reference model {task.k}") is not None
        missing = tuple(
            name for name in task.variants
            if store.verified_result(task.variant_key(name), f"{name} of reference model {task.k}") is None
        )
        counts.reused[TRAINING_KIND] += trained
        counts.computed[TRAINING_KIND] += not trained
        counts.reused[VARIANT_KIND] += len(task.variants) - len(missing)
        counts.computed[VARIANT_KIND] += len(missing)
        if trained and not missing:
            advance()
            continue
        pending.append(replace(task, train=not trained, variants=missing))

    if pending:
        logger.info("building %d of %d reference models", len(pending), len(tasks))
        with executor:
            executor.map(build_reference, pending, advance, label=lambda task: f"reference model {task.k}")
    summaries = [_summary(task) for task in tasks]
    _warn_clamped(summaries)
    return summaries


def _warn_clamped(summaries: list[dict]) -> None:
    """Log one warning for the variants whose reference captures clamped int8 input values."""
    for name in summaries[0]["input_clamped"] if summaries else ():
        shares = [summary["input_clamped"][name] for summary in summaries]
        clamped = [share for share in shares if share > 0]
        if clamped:
            logger.warning(
                "%s: the int8 inputs of %d of %d reference models were clamped to the input range "
                "(up to %.2f%% of the values); the records may differ from the data the models were calibrated on",
                name, len(clamped), len(shares), 100.0 * max(clamped),
            )


def _summary(task: ReferenceTask) -> dict:
    """Assemble reference model k's report entry from its stored task results."""
    store = TaskStore(task.out)
    training = store.result(task.training_key())
    variants = {name: store.result(task.variant_key(name)) for name in task.variants}
    return {
        "k": task.k,
        "training_seed": training["training_seed"],
        "n_in": training["n_in"],
        "training_seconds": training["training_seconds"],
        "seconds": training["training_seconds"] + sum(result["seconds"] for result in variants.values()),
        "accuracy": training["accuracy"],
        "artifacts": {name: result["artifact"] for name, result in variants.items()},
        "artifacts_by_format": {name: result["artifacts_by_format"] for name, result in variants.items()},
        "input_clamped": {name: result.get("input_clamped", 0.0) for name, result in variants.items()},
    }
