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

build_reference does all of this for one k from a ReferenceTask that names
only files and values, so tasks can run in worker processes (build_references
with jobs > 1) or, later, on other machines.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgemia.attacks.bundle import reference_file_name
from edgemia.compression.pruning import FineTuning
from edgemia.compression.spec import parse_variants
from edgemia.compression.variants import CompressionData, export_variants
from edgemia.data.records import load_records
from edgemia.runtime.capture import run_capture, save_capture
from edgemia.training.references import reference_seed, train_reference
from edgemia.training.train import Recipe

logger = logging.getLogger(__name__)


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


def reference_artifact_dir(out: Path, k: int) -> Path:
    return Path(out) / "artifacts" / "references" / str(k)


def capture_dir(out: Path, slug: str, backend: str, model_format: str) -> Path:
    """Capture bundle directory of one variant, backend and format: captures/<slug>/<backend>-<format>."""
    return Path(out) / "captures" / slug / f"{backend}-{model_format}"


def build_reference(task: ReferenceTask) -> dict:
    """Train, export and capture reference model k; return its summary for the report."""
    start = time.perf_counter()
    pool = load_records(task.records_path)
    trained = train_reference(pool, task.in_mask, task.n_classes, task.recipe, task.seed, task.k)

    specs = parse_variants(list(task.variants))
    population = load_records(task.population_path) if task.population_path is not None else None
    data = CompressionData(
        pool.x[task.in_mask], pool.y[task.in_mask], population.x if population is not None else None,
        record_id=pool.record_id[task.in_mask],
        population_record_id=population.record_id if population is not None else None,
    )
    tuning = FineTuning(batch_size=task.recipe.batch_size, learning_rate=task.recipe.learning_rate,
                        epochs=task.recipe.epochs)
    exports = export_variants(specs, trained.model, data, reference_artifact_dir(task.out, task.k),
                              reference_seed(task.seed, task.k), tuning, root=task.out)

    for name, backend, model_format in task.captures:
        artifact = exports[name].artifacts[model_format]
        capture = run_capture(
            artifact.path, pool, backend, threads=task.threads, records_source=str(task.records_path)
        )
        capture.meta["reference"] = {"k": task.k, "training_seed": reference_seed(task.seed, task.k)}
        capture.meta["variant"] = name
        path = capture_dir(task.out, exports[name].spec.slug, backend, model_format) / reference_file_name(task.k)
        save_capture(path, capture, in_mask=task.in_mask)

    return {
        "k": task.k,
        "training_seed": reference_seed(task.seed, task.k),
        "n_in": int(task.in_mask.sum()),
        "training_seconds": trained.seconds,
        "seconds": time.perf_counter() - start,
        "accuracy": {"in": trained.accuracy_members, "out": trained.accuracy_nonmembers},
        # The variant's TFLite file, or its ONNX file when it has none; artifacts_by_format has them all.
        "artifacts": {
            name: next(iter(export.artifacts.values())).to_dict(relative_to=task.out)
            for name, export in exports.items()
        },
        "artifacts_by_format": {
            name: {fmt: artifact.to_dict(relative_to=task.out) for fmt, artifact in export.artifacts.items()}
            for name, export in exports.items()
        },
    }


# Each worker process holds its own TensorFlow, about 0.7 GB while it trains a digits
# model (max RSS, measured), so the default stops at 4 workers, about 3 GB.
MAX_DEFAULT_JOBS = 4


def default_jobs() -> int:
    """Return the default number of worker processes: one per core, at most MAX_DEFAULT_JOBS."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


def build_references(
    tasks: list[ReferenceTask], jobs: int = 1, advance: Callable[[], None] = lambda: None
) -> list[dict]:
    """Build every task's reference model, in this process (jobs=1) or in `jobs` worker processes.

    Returns the summaries in task order. The models and captures do not
    depend on `jobs`. A failure in any task stops the remaining ones and is
    raised here.
    """
    if jobs <= 1 or len(tasks) <= 1:
        summaries = []
        for task in tasks:
            summaries.append(build_reference(task))
            advance()
        return summaries

    # TensorFlow is not fork-safe once imported, so workers start fresh ("spawn").
    # Workers keep TensorFlow's default thread counts. Even with op determinism the
    # weights depend on the number of intra-op threads: one thread per worker changed
    # int8 outputs by one step on some digits records. Equal counts keep the models
    # independent of `jobs`.
    context = multiprocessing.get_context("spawn")
    logger.info("building %d reference models in %d processes", len(tasks), jobs)
    summaries: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as executor:
        futures = {executor.submit(build_reference, task): task.k for task in tasks}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    logger.error("reference model %d failed: %s", futures[future], future.exception())
                    raise future.exception()
                summaries[futures[future]] = future.result()
                advance()
    return [summaries[task.k] for task in tasks]
