"""The audit pipeline: data, training, compression, capture, attacks, report.

Run directory layout, where <slug> is a variant's canonical spec with ':'
replaced by '_' (prune:0.8+int8 becomes prune_0.8+int8):

    run.json                                                 configuration and status
    data/records.npz, data/members.npz, data/nonmembers.npz  records files
    data/population.npz                                      population records, with --population only
    data/perturbed-<j>.npz                                   perturbed copies of the records
    artifacts/float.keras                                    the trained target
    artifacts/<slug>.tflite, artifacts/<slug>.onnx           each variant's files, one per format it exports
    artifacts/<chain slug>.keras                             the target after each chain of model steps
    artifacts/references/<k>/...                             reference model k, exported as each variant
    captures/<slug>/<backend>-<format>/target.npz            capture bundle (with `member`, `group_*`)
    captures/<slug>/<backend>-<format>/reference-<k>.npz     ... its reference models (with `in_mask`)
    captures/<slug>/<backend>-<format>/perturbed-<j>.npz     ... and the target on perturbed copy j
    captures/<slug>/<backend>-<format>/scores.npz            per-record scores per attack
    tasks/<key>.json                                         manifest of each finished task (edgemia.tasks)
    report.json, report.md, report.html

A rerun into the same directory keeps everything but the report: each task
whose manifest's files are unchanged is reused, the others are computed.

Each bundle directory names the backend and the model format even where a
backend runs one format only (litert-tflite, onnxruntime-onnx), so the
native kernel's two formats (native-tflite, native-onnx) sit beside them
under one scheme.

report.json stays at schema_version 1: fields are only added, and the first
version's fields keep their names and meaning. Each row of `variants` is one
(variant, backend, format) triple. Its `name` is the canonical spec, the new
`format` field names the model format, and `artifact` is the file of that
format. Each attack row adds `parameters`, `ci`, the metrics ppv, ppv_at_fpr
and epsilon_lower_bound, `slices`, `disparate_vulnerability` and, for
compressed variants, `versus_float` (described in edgemia.evaluation), which
compares with float on the same backend and format. Each
`backend_agreement` row compares two backends on the same file and adds
`format`. The top level adds:

    tasks          reused and computed: how many tasks this run took from the
                   run directory and how many it computed, in total and per
                   kind (target-training, target-variant, reference-training,
                   reference-variant)
    references     count, jobs, executor (local or ray), seconds, and per
                   model k: training_seed, n_in, training_seconds, seconds
                   (training plus each variant's export and capture),
                   accuracy (in, out) of the float
                   Keras model, artifacts (one file per variant, TFLite where
                   it has one) and artifacts_by_format
    compression    per variant name: spec (its steps with every parameter),
                   parameter_count and layer_sparsity of the Keras model it was
                   exported from, keras_model, files per format (path, bytes,
                   sha256, operators, weight_sparsity, and for float files
                   max_abs_difference_from_keras), notes, seconds, and
                   training: null, or the training steps' summary (achieved
                   epsilon and delta of dp-sgd and pate, epochs run, record
                   ids of pate's teachers and student)
    skipped        (variant, backend, format) triples that were not captured,
                   each with the reason: the backend runs no file of the
                   variant, or the native kernel does not run an op or type
    population     size and path of the population records; null without them
    bootstrap      resamples, confidence, seed; null when switched off
    stage_seconds  wall time of each pipeline stage
    peak_memory_mb largest resident set of the audit process and of any
                   worker process it waited for, in MiB
    perturbation   how the perturbed copies were made, and how many
    records        each record's id, membership, label, subgroups and scores
                   (see edgemia.evaluation.records_section)
    mitigation     each defended variant's leakage and accuracy beside the
                   undefended models of its compression recipe, the Pareto
                   front and the cheapest defense that restores float-level
                   leakage (see edgemia.reporting.mitigation); null without
                   training steps. Its chart is mitigation.png.
and config adds attack_options, the settings of every attack family.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np

import edgemia
from edgemia.attacks import ATTACKS, DESCRIPTIONS, REFERENCE_ATTACKS, attack_options, check_attack_names
from edgemia.attacks.bundle import (
    PERTURBED_PATTERN,
    REFERENCE_PATTERN,
    CaptureBundle,
    load_bundle,
    perturbed_file_name,
)
from edgemia.compression.pruning import FineTuning
from edgemia.compression.spec import DEFAULT_VARIANTS, VariantSpec, parse_variants
from edgemia.compression.variants import FORMATS, CompressionData, VariantExporter
from edgemia.data.builtin import DATASETS, load_dataset
from edgemia.data.perturb import describe_perturbation, perturbed_copies
from edgemia.data.records import save_records
from edgemia.data.tables import RecordsSource, load_table_data
from edgemia.errors import InputError
from edgemia.evaluation import (
    BundleEvaluation,
    compare_bundles,
    default_attacks,
    evaluate_bundle,
    records_section,
    variant_row,
    write_scores,
)
from edgemia.exported import check_exported_model, exported_attacks, run_exported_audit
from edgemia.references import ReferenceTask, build_references, capture_dir, default_jobs
from edgemia.reporting.environment import environment, peak_memory_mb
from edgemia.reporting.mitigation import CHART
from edgemia.reporting.policy import load_policy
from edgemia.reporting.writer import write_reports
from edgemia.runtime.capture import (
    BACKENDS,
    DEFAULT_BACKENDS,
    Capture,
    check_backend_names,
)
from edgemia.stats.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    StratifiedResamples,
    check_resample_count,
)
from edgemia.tasks import EXECUTORS, TaskCounts, array_digest, make_executor
from edgemia.tasks.target import Combination, build_target_variants, load_target_captures, train_target_task
from edgemia.training.defenses import check_training_steps
from edgemia.training.models import KERAS_FILE_PREFIX
from edgemia.training.recipes import audit_recipe, check_recipe_overrides
from edgemia.training.references import check_reference_count, reference_in_masks
from edgemia.util import atomic_write_json, sha256_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Written first and updated last; a directory holding it is an edgemia run.
RUN_MARKER = "run.json"
_REPORT_FILES = ("report.json", "report.md", "report.html", CHART)


@dataclass
class AuditConfig:
    """Everything that decides an audit's result."""

    out: Path
    dataset: str = "digits"
    seed: int = 0
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))  # variant specs
    backends: list[str] = field(default_factory=lambda: list(DEFAULT_BACKENDS))
    attacks: list[str] | None = None  # None: every attack the reference count allows
    threads: int = 0  # 0: every core
    epochs: int | None = None  # None: the data set's recipe
    references: int = 16  # reference models; 0 or even, every record IN for half of them
    jobs: int | None = None  # worker processes that build reference models; None: default_jobs()
    bootstrap: int = DEFAULT_RESAMPLES  # bootstrap resamples; 0 switches intervals off
    attack_options: list[str] = field(default_factory=list)  # KEY=VALUE items, see edgemia.attacks.options
    population: float = 0.0  # fraction of the records set aside for distill with data=population
    executor: str = "local"  # where reference models are built: local worker processes or ray
    ray_address: str | None = None  # address of a running Ray cluster; None starts a local one
    policy: Path | None = None  # policy file (TOML) whose rules decide the verdict; None: no verdict
    records: RecordsSource | None = None  # a team's own records, used instead of `dataset`
    training: dict = field(default_factory=dict)  # recipe overrides, see edgemia.training.recipes
    model: Path | None = None  # exported .tflite or .onnx audited as it is; sets references to 0
    target_model: Path | None = None  # a team's trained .keras target, used instead of training one

    def __post_init__(self) -> None:
        if self.model is not None:
            if self.references not in (0, AuditConfig.references):
                logger.warning("%s is audited as it is, so no reference models are trained; the reference model "
                               "count %d is ignored", self.model, self.references)
            self.references = 0
        if self.attacks is None:
            self.attacks = default_attacks(self.references) if self.model is None else exported_attacks(None)
        if self.jobs is None:
            self.jobs = default_jobs()

    def specs(self) -> list[VariantSpec]:
        """Return the parsed variants, in the order given."""
        return parse_variants(self.variants)

    def validate(self) -> None:
        if self.records is None and self.dataset not in DATASETS:
            raise InputError(f"unknown data set '{self.dataset}'; valid names: {', '.join(DATASETS)}")
        specs = parse_variants(self.variants)
        valid = {"backend": BACKENDS, "attack": ATTACKS}
        for kind, names in (("backend", self.backends), ("attack", self.attacks)):
            if not names:
                raise InputError(f"the {kind} list is empty; valid {kind}s: {', '.join(valid[kind])}")
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise InputError(f"the {kind} list names {', '.join(repeated)} more than once")
        check_backend_names(self.backends)
        if not 0.0 <= self.population < 1.0:
            raise InputError(f"the population fraction must be at least 0 and below 1, got {self.population}")
        needing = [spec.name for spec in specs if spec.uses_population]
        if needing and self.population == 0:
            raise InputError(
                f"variant {', '.join(needing)} uses population records, and the audit sets none "
                "aside; set --population to a fraction such as 0.2"
            )
        check_attack_names(self.attacks)
        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}")
        if self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed}")
        check_reference_count(self.references)
        needing = [name for name in self.attacks if name in REFERENCE_ATTACKS]
        if needing and self.references < 4:
            raise InputError(
                f"attacks {', '.join(needing)} need at least 4 reference models (2 IN and 2 OUT for "
                f"each record), got {self.references}; set --reference-models to an even number such "
                f"as 16, or choose attacks that need none ({', '.join(default_attacks(0))})"
            )
        if self.jobs < 1:
            raise InputError(f"jobs must be at least 1, got {self.jobs}")
        if self.executor not in EXECUTORS:
            raise InputError(f"unknown executor '{self.executor}'; valid executors: {', '.join(EXECUTORS)}")
        if self.ray_address is not None and self.executor != "ray":
            raise InputError(
                f"--ray-address {self.ray_address} needs --executor ray, got --executor {self.executor}"
            )
        if self.ray_address is not None and not self.ray_address.strip():
            raise InputError("--ray-address is empty; give a Ray cluster's address such as 127.0.0.1:6379")
        check_resample_count(self.bootstrap)
        attack_options(self.attack_options)
        if self.policy is not None:
            load_policy(self.policy)
        check_recipe_overrides(self.training, self.dataset, self.records)
        if self.model is not None:
            check_exported_model(Path(self.model), self.records, self.training)
            exported_attacks(self.attacks)
        # Loading and splitting the records raises InputError for a bad column or split before the run starts.
        if self.records is not None:
            data = load_table_data(self.records, self.seed, self.population)
        else:
            data = load_dataset(self.dataset, self.seed, self.population)
        # Reference model k trains on half of the members and non-members, rounded down or up.
        pool = len(data.members) + len(data.nonmembers)
        sizes = [(len(data.members), "the target model")]
        if self.references:
            sizes += [(size, "a reference model") for size in sorted({pool // 2, pool - pool // 2})]
        for spec in specs:
            for n_records, model in sizes:
                check_training_steps(spec.training_steps, n_records, model)
        architecture = str(self.training.get("architecture", ""))
        if architecture.startswith(KERAS_FILE_PREFIX):
            check_keras_file_exports(Path(architecture[len(KERAS_FILE_PREFIX):]), data)


def check_keras_file_exports(path: Path, data) -> None:
    """Raise InputError when the .keras model at `path` cannot be exported to a float ONNX file that runs on
    the records alone, before the run directory is touched. The audit exports every model it trains from it.
    """
    from edgemia.compression.onnx_export import export_float
    from edgemia.training.models import load_keras_file

    model = load_keras_file(path, tuple(data.members.x.shape[1:]), data.n_classes)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            export_float(model, Path(scratch) / "check.onnx", fuse=False)
        except InputError as exc:
            raise InputError(f"model.file {path}: {exc}") from None


# A progress stage is entered with a description and a total count of steps;
# it yields a function that advances the stage by one step.
ProgressStage = Callable[[str, int], ContextManager[Callable[[], None]]]


@contextlib.contextmanager
def _silent_stage(description: str, total: int) -> Iterator[Callable[[], None]]:
    yield lambda: None


def _epoch_callback(advance: Callable[[], None]):
    from edgemia._tf import import_keras

    keras = import_keras()

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            advance()

    return EpochProgress()


def _agreement(variant: str, model_format: str, captures: dict[str, Capture]) -> list[dict]:
    """Compare each pair of backends that ran the same file, record by record."""
    rows = []
    names = sorted(captures)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = captures[first], captures[second]
            same = (a.raw == b.raw).all(axis=1)
            rows.append(
                {
                    "variant": variant,
                    "format": model_format,
                    "backends": [first, second],
                    "identical_records": int(same.sum()),
                    "n_records": int(same.size),
                    "max_abs_logit_difference": float(np.max(np.abs(a.logits - b.logits))),
                }
            )
    return rows


def _evaluate_captures(
    config: AuditConfig, out: Path, combinations: list[Combination], slugs: dict[str, str],
    member: np.ndarray, stage: ProgressStage,
) -> tuple[dict[Combination, CaptureBundle], dict[Combination, BundleEvaluation]]:
    """Attack every captured bundle; compare compressed variants with float on the same backend and format."""
    resamples = StratifiedResamples(member, config.bootstrap, config.seed) if config.bootstrap else None
    options = attack_options(config.attack_options)
    # One bundle's K reference captures are in memory at a time: each bundle is
    # loaded, scored and written, then its reference captures are dropped.
    bundles: dict[Combination, CaptureBundle] = {}
    evaluations: dict[Combination, BundleEvaluation] = {}
    with stage("Running attacks", len(combinations) * len(config.attacks)) as advance:
        for key in combinations:
            name, backend, model_format = key
            directory = capture_dir(out, slugs[name], backend, model_format)
            bundle = load_bundle(directory)
            evaluations[key] = evaluate_bundle(bundle, config.attacks, resamples, DEFAULT_CONFIDENCE, advance, options)
            write_scores(directory, bundle, evaluations[key])
            bundle.drop_references()
            bundles[key] = bundle
    compare_bundles(bundles, evaluations, DEFAULT_CONFIDENCE)
    return bundles, evaluations


def prepare_run_dir(out: Path) -> None:
    """Create `out`, or remove the report of an earlier run in it.

    The data, model files, captures and task manifests of an earlier run
    stay: the task store reuses those it can verify and rewrites the rest.
    A non-empty directory that is not an edgemia run is refused, so that an
    audit never deletes or mixes with files it did not write.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / RUN_MARKER).is_file():
            raise InputError(
                f"--out {out}: is a non-empty directory without {RUN_MARKER}, so not an edgemia run; "
                "choose a new or empty directory"
            )
        for name in _REPORT_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the run directory ({exc.strerror or exc})") from exc


def _remove_extra_references(out: Path, combinations: list[Combination], slugs: dict[str, str],
                             n_references: int, n_perturbed: int) -> None:
    """Delete the reference-<k>.npz (k >= n_references) and perturbed-<j>.npz (j >= n_perturbed) files
    that an earlier run with more of them left in the bundles and in data/."""
    directories = [capture_dir(out, slugs[name], backend, model_format) for name, backend, model_format in combinations]
    for directory in directories:
        for path in directory.glob("reference-*.npz"):
            match = REFERENCE_PATTERN.fullmatch(path.name)
            if match is not None and int(match.group(1)) >= n_references:
                logger.info("removing %s, left by an earlier run with more reference models", path)
                path.unlink()
    for directory in [*directories, out / "data"]:
        for path in directory.glob("perturbed-*.npz"):
            match = PERTURBED_PATTERN.fullmatch(path.name)
            if match is not None and int(match.group(1)) >= n_perturbed:
                logger.info("removing %s, left by an earlier run with more perturbed copies", path)
                path.unlink()


def _write_marker(out: Path, config: AuditConfig, status: str, started: str, error: str | None = None) -> None:
    marker = {
        "status": status,  # running, complete or failed
        "started": started,
        "edgemia_version": edgemia.__version__,
        "config": {
            "dataset": config.dataset,
            "seed": config.seed,
            "variants": config.variants,
            "backends": config.backends,
            "attacks": config.attacks,
            "threads": config.threads,
            "epochs": config.epochs,
            "references": config.references,
            "bootstrap": config.bootstrap,
            "attack_options": config.attack_options,
            "population": config.population,
            "records": str(config.records.path) if config.records is not None else None,
            "training": config.training,
            "policy": str(config.policy) if config.policy is not None else None,
            "model": str(config.model) if config.model is not None else None,
            "target_model": str(config.target_model) if config.target_model is not None else None,
        },
    }
    if status != "running":
        marker["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if error:
        marker["error"] = error
    atomic_write_json(out / RUN_MARKER, marker)


def run_audit(config: AuditConfig, stage: ProgressStage = _silent_stage) -> dict:
    """Run the whole audit into `config.out` and return the report dict.

    `run.json` in the run directory records whether the run is running,
    complete or failed; a failed or interrupted run leaves no report.
    """
    config.validate()
    out = Path(config.out)
    prepare_run_dir(out)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write_marker(out, config, "running", created)
    try:
        if config.model is not None:
            report = write_reports(out, run_exported_audit(config, out),
                                   load_policy(config.policy) if config.policy is not None else None)
        else:
            report = _run_stages(config, out, created, stage)
    except BaseException as exc:
        _write_marker(out, config, "failed", created, error=f"{type(exc).__name__}: {exc}")
        raise
    _write_marker(out, config, "complete", created)
    return report


def _run_stages(config: AuditConfig, out: Path, created: str, stage: ProgressStage) -> dict:
    stage_seconds = {}
    clock = time.perf_counter()

    # Data: a stratified 50/50 split into members and non-members, after the population is set aside.
    specs = config.specs()
    with stage("Loading data", 1) as advance:
        if config.records is not None:
            data = load_table_data(config.records, config.seed, config.population)
        else:
            data = load_dataset(config.dataset, config.seed, config.population)
        all_records, member = data.all_records()
        records_path = out / "data" / "records.npz"
        save_records(all_records, records_path)
        save_records(data.members, out / "data" / "members.npz")
        save_records(data.nonmembers, out / "data" / "nonmembers.npz")
        population_path = None
        if data.population is not None:
            population_path = out / "data" / "population.npz"
            save_records(data.population, population_path)
        perturbed = perturbed_copies(all_records, config.seed)
        for j, copy in enumerate(perturbed):
            save_records(copy, out / "data" / perturbed_file_name(j))
        advance()
    stage_seconds["data"], clock = time.perf_counter() - clock, time.perf_counter()

    # Each unit of work below is a keyed task: a rerun reuses the verified ones (see edgemia.tasks).
    counts = TaskCounts()
    groups = [all_records.groups[name] for name in sorted(all_records.groups)]
    population = (data.population.x, data.population.y) if data.population is not None else (None, None)
    records_digest = array_digest(all_records.x, all_records.y, all_records.record_id, member, *population,
                                  *groups)

    # Training: the float target, on the members only.
    from edgemia.training.train import Recipe

    recipe = audit_recipe(data, config.dataset if config.records is None else None, config.training)
    if config.epochs is not None:
        recipe = Recipe(**{**recipe.to_dict(), "epochs": config.epochs})
    with stage(f"Training target ({recipe.epochs} epochs)" if config.target_model is None
               else "Loading the trained target", recipe.epochs if config.target_model is None else 1) as advance:
        target_model, trained, target_key = train_target_task(
            data, recipe, config.seed, out, records_digest, counts, callbacks=[_epoch_callback(advance)],
            trained_model=config.target_model,
        )
    keras_path = out / "artifacts" / "float.keras"
    stage_seconds["target_training"], clock = time.perf_counter() - clock, time.perf_counter()

    # Compression and capture: each variant's model steps fine-tune on the members, and its quantizers
    # calibrate on them. Every file runs on every backend that runs its format, over all records.
    compression_data = CompressionData(
        data.members.x, data.members.y, data.population.x if data.population is not None else None,
        record_id=data.members.record_id,
        population_record_id=data.population.record_id if data.population is not None else None,
    )
    tuning = FineTuning(batch_size=recipe.batch_size, learning_rate=recipe.learning_rate, epochs=recipe.epochs,
                        recipe=recipe)

    def make_exporter(model) -> VariantExporter:
        return VariantExporter(model, compression_data, out / "artifacts", config.seed, tuning, root=out)

    with stage("Exporting and capturing variants", len(specs)) as advance:
        target_variants = build_target_variants(
            target_model, specs, make_exporter, target_key, config.backends, config.threads, recipe, out,
            all_records, records_path, member, perturbed, counts, advance,
        )
    exports = {name: variant.export for name, variant in target_variants.items()}
    skipped = [entry for variant in target_variants.values() for entry in variant.skipped]
    combinations = [c for variant in target_variants.values() for c in variant.combinations]
    captures = load_target_captures(out, target_variants)
    stage_seconds["export_and_capture"], clock = time.perf_counter() - clock, time.perf_counter()

    # Reference models: the audit pool is every record, each IN for half of the models.
    in_masks = reference_in_masks(len(all_records), config.references, config.seed)
    tasks = [
        ReferenceTask(
            out=out.resolve(), records_path=records_path.resolve(), in_mask=in_masks[k], n_classes=data.n_classes,
            recipe=recipe, seed=config.seed, k=k, variants=tuple(spec.name for spec in specs),
            captures=tuple(combinations), threads=config.threads,
            population_path=population_path.resolve() if population_path is not None else None,
            records_digest=records_digest,
        )
        for k in range(config.references)
    ]
    executor = make_executor(config.executor, config.jobs, config.ray_address)
    with stage(f"Building {len(tasks)} reference models", len(tasks)) as advance:
        reference_summaries = build_references(tasks, advance=advance, executor=executor, counts=counts)
    slugs = {name: export.spec.slug for name, export in exports.items()}
    _remove_extra_references(out, combinations, slugs, config.references, len(perturbed))
    stage_seconds["references"], clock = time.perf_counter() - clock, time.perf_counter()
    task_counts = counts.to_dict()
    logger.info("tasks: %d reused, %d computed", task_counts["reused"], task_counts["computed"])

    # Attacks and statistics, on each capture bundle.
    bundles, evaluations = _evaluate_captures(config, out, combinations, slugs, member, stage)
    variants = []
    for name, backend, model_format in combinations:
        target_path = capture_dir(out, slugs[name], backend, model_format) / "target.npz"
        row = variant_row(name, backend, bundles[name, backend, model_format], target_path, out)
        row = {
            "name": name, "backend": backend, "format": model_format,
            "artifact": exports[name].artifacts[model_format].to_dict(relative_to=out), **row,
        }
        row["attacks"] = list(evaluations[name, backend, model_format].rows.values())
        variants.append(row)
    stage_seconds["attacks"] = time.perf_counter() - clock

    agreement = []
    for name in exports:
        for model_format in FORMATS:
            same_file = {b: c for (n, b, f), c in captures.items() if n == name and f == model_format}
            agreement += _agreement(name, model_format, same_file)

    report = {
        "schema_version": SCHEMA_VERSION,
        "edgemia_version": edgemia.__version__,
        "created": created,
        "seed": config.seed,
        "dataset": {
            "name": data.name,
            "description": data.description,
            "n_members": len(data.members),
            "n_nonmembers": len(data.nonmembers),
            "n_classes": data.n_classes,
            "records": "data/records.npz",
            "records_sha256": sha256_file(records_path),
        },
        "config": {
            "variants": [spec.name for spec in specs],
            "backends": config.backends,
            "attacks": config.attacks,
            "threads": config.threads,
            "attack_options": attack_options(config.attack_options),
            "population": config.population,
        },
        "target": {
            "recipe": recipe.to_dict(),
            "training_seconds": trained["training_seconds"],
            "accuracy": trained["accuracy"],
            "keras_model": {"path": str(keras_path.relative_to(out)), "sha256": sha256_file(keras_path)},
        },
        "attacks": {name: DESCRIPTIONS[name] for name in config.attacks},
        "fpr_resolution": 1.0 / len(data.nonmembers),
        "references": {
            "count": config.references,
            "jobs": config.jobs,
            "executor": config.executor,
            "seconds": stage_seconds["references"],
            "models": reference_summaries,
        },
        "bootstrap": (
            {"resamples": config.bootstrap, "confidence": DEFAULT_CONFIDENCE, "seed": config.seed}
            if config.bootstrap
            else None
        ),
        "perturbation": {"description": describe_perturbation(all_records), "copies": len(perturbed)},
        "variants": variants,
        "compression": {name: export.summary for name, export in exports.items()},
        "skipped": skipped,
        "population": (
            {"n_records": len(data.population), "fraction": config.population, "records": "data/population.npz"}
            if data.population is not None
            else None
        ),
        "backend_agreement": agreement,
        "records": records_section(bundles, evaluations),
        "stage_seconds": stage_seconds,
        "peak_memory_mb": peak_memory_mb(),
        "tasks": task_counts,
        "environment": environment(),
    }
    return write_reports(out, report, load_policy(config.policy) if config.policy is not None else None)
