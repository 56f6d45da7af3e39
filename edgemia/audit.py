"""The audit pipeline: data, training, compression, capture, attacks, report.

Run directory layout:

    run.json                                                  configuration and status
    data/records.npz, data/members.npz, data/nonmembers.npz   records files
    artifacts/float.keras, artifacts/<variant>.tflite         trained and exported models
    artifacts/references/<k>/<variant>.tflite                 reference model k, exported as each variant
    data/perturbed-<j>.npz                                    perturbed copies of the records
    captures/<variant>/<backend>/target.npz                   capture bundle (with `member`, `group_*`)
    captures/<variant>/<backend>/reference-<k>.npz            ... its reference models (with `in_mask`)
    captures/<variant>/<backend>/perturbed-<j>.npz            ... and the target on perturbed copy j
    captures/<variant>/<backend>/scores.npz                   per-record scores per attack
    report.json, report.md

report.json stays at schema_version 1: fields are only added, and the first
version's fields keep their names and meaning. Each attack row adds
`parameters`, `ci`, the metrics ppv, ppv_at_fpr and epsilon_lower_bound,
`slices`, `disparate_vulnerability` and, for compressed variants,
`versus_float` (described in edgemia.evaluation). The top level adds:

    references     count, jobs, seconds, and per model k: training_seed, n_in,
                   training_seconds, seconds, accuracy (in, out) of the float
                   Keras model, artifacts
    bootstrap      resamples, confidence, seed; null when switched off
    stage_seconds  wall time of each pipeline stage
    perturbation   how the perturbed copies were made, and how many
    records        each record's id, membership, label, subgroups and scores
                   (see edgemia.evaluation.records_section)
and config adds attack_options, the settings of every attack family.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np

import edgemia
from edgemia.attacks import ATTACKS, DESCRIPTIONS, REFERENCE_ATTACKS, attack_options, check_attack_names
from edgemia.attacks.bundle import load_bundle, perturbed_file_name
from edgemia.compression.variants import VARIANTS, check_variant_names, export_variant
from edgemia.data.builtin import DATASETS, load_dataset
from edgemia.data.perturb import describe_perturbation, perturbed_copies
from edgemia.data.records import save_records
from edgemia.errors import InputError
from edgemia.evaluation import (
    BundleEvaluation,
    default_attacks,
    evaluate_bundles,
    records_section,
    variant_row,
    write_scores,
)
from edgemia.references import ReferenceTask, build_references, default_jobs
from edgemia.reporting.environment import environment
from edgemia.reporting.markdown import render
from edgemia.runtime.capture import BACKENDS, Capture, check_backend_names, run_capture, save_capture
from edgemia.stats.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, stratified_resamples
from edgemia.training.references import check_reference_count, reference_in_masks
from edgemia.util import atomic_write_json, atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Written first and updated last; a directory holding it is an edgemia run.
RUN_MARKER = "run.json"
_RUN_OUTPUTS = ("data", "artifacts", "captures", "report.json", "report.md")


@dataclass
class AuditConfig:
    """Everything that decides an audit's result."""

    out: Path
    dataset: str = "digits"
    seed: int = 0
    variants: list[str] = field(default_factory=lambda: ["float", "int8"])
    backends: list[str] = field(default_factory=lambda: ["litert", "native"])
    attacks: list[str] | None = None  # None: every attack the reference count allows
    threads: int = 0  # 0: every core
    epochs: int | None = None  # None: the data set's recipe
    references: int = 16  # reference models; 0 or even, every record IN for half of them
    jobs: int | None = None  # worker processes that build reference models; None: default_jobs()
    bootstrap: int = DEFAULT_RESAMPLES  # bootstrap resamples; 0 switches intervals off
    attack_options: list[str] = field(default_factory=list)  # KEY=VALUE items, see edgemia.attacks.options

    def __post_init__(self) -> None:
        if self.attacks is None:
            self.attacks = default_attacks(self.references)
        if self.jobs is None:
            self.jobs = default_jobs()

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise InputError(f"unknown data set '{self.dataset}'; valid names: {', '.join(DATASETS)}")
        valid = {"variant": VARIANTS, "backend": BACKENDS, "attack": ATTACKS}
        for kind, names in (("variant", self.variants), ("backend", self.backends), ("attack", self.attacks)):
            if not names:
                raise InputError(f"the {kind} list is empty; valid {kind}s: {', '.join(valid[kind])}")
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise InputError(f"the {kind} list names {', '.join(repeated)} more than once")
        check_variant_names(self.variants)
        check_backend_names(self.backends)
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
        if self.bootstrap < 0:
            raise InputError(f"bootstrap resamples must be 0 (off) or more, got {self.bootstrap}")
        attack_options(self.attack_options)


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


def _agreement(variant: str, captures: dict[str, Capture]) -> list[dict]:
    """Compare each pair of backends that ran the same variant, record by record."""
    rows = []
    names = sorted(captures)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            a, b = captures[first], captures[second]
            same = (a.raw == b.raw).all(axis=1)
            rows.append(
                {
                    "variant": variant,
                    "backends": [first, second],
                    "identical_records": int(same.sum()),
                    "n_records": int(same.size),
                    "max_abs_logit_difference": float(np.max(np.abs(a.logits - b.logits))),
                }
            )
    return rows


def _evaluate_captures(
    config: AuditConfig, out: Path, member: np.ndarray, stage: ProgressStage
) -> tuple[dict[tuple[str, str], object], dict[tuple[str, str], BundleEvaluation]]:
    """Attack every variant's bundle on every backend; compare compressed variants with float."""
    resamples = stratified_resamples(member, config.bootstrap, config.seed) if config.bootstrap else None
    bundles = {
        (name, backend): load_bundle(out / "captures" / name / backend)
        for name in config.variants
        for backend in config.backends
    }
    n_steps = len(bundles) * len(config.attacks)
    with stage("Running attacks", n_steps) as advance:
        evaluations = evaluate_bundles(
            bundles, config.attacks, resamples, DEFAULT_CONFIDENCE, advance, attack_options(config.attack_options)
        )
    for (name, backend), bundle in bundles.items():
        write_scores(out / "captures" / name / backend, bundle, evaluations[name, backend])
    return bundles, evaluations


def prepare_run_dir(out: Path) -> None:
    """Create `out`, or clear the outputs of an earlier run in it.

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
        for name in _RUN_OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the run directory ({exc.strerror or exc})") from exc


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
        report = _run_stages(config, out, created, stage)
    except BaseException as exc:
        _write_marker(out, config, "failed", created, error=f"{type(exc).__name__}: {exc}")
        raise
    _write_marker(out, config, "complete", created)
    return report


def _run_stages(config: AuditConfig, out: Path, created: str, stage: ProgressStage) -> dict:
    stage_seconds = {}
    clock = time.perf_counter()

    # Data: a stratified 50/50 split into members and non-members.
    with stage("Loading data", 1) as advance:
        data = load_dataset(config.dataset, config.seed)
        all_records, member = data.all_records()
        records_path = out / "data" / "records.npz"
        save_records(all_records, records_path)
        save_records(data.members, out / "data" / "members.npz")
        save_records(data.nonmembers, out / "data" / "nonmembers.npz")
        perturbed = perturbed_copies(all_records, config.seed)
        for j, copy in enumerate(perturbed):
            save_records(copy, out / "data" / perturbed_file_name(j))
        advance()
    stage_seconds["data"], clock = time.perf_counter() - clock, time.perf_counter()

    # Training: the float target, on the members only.
    from edgemia.training.train import RECIPES, Recipe, train_target

    recipe = RECIPES[config.dataset]
    if config.epochs is not None:
        recipe = Recipe(**{**recipe.to_dict(), "epochs": config.epochs})
    with stage(f"Training target ({recipe.epochs} epochs)", recipe.epochs) as advance:
        trained = train_target(data, recipe, config.seed, callbacks=[_epoch_callback(advance)])
    keras_path = out / "artifacts" / "float.keras"
    keras_path.parent.mkdir(parents=True, exist_ok=True)
    trained.model.save(keras_path)
    stage_seconds["target_training"], clock = time.perf_counter() - clock, time.perf_counter()

    # Compression: one exported file per variant, calibrated on the members.
    artifacts = {}
    with stage("Exporting variants", len(config.variants)) as advance:
        for name in config.variants:
            artifacts[name] = export_variant(name, trained.model, data.members.x, out / "artifacts")
            advance()

    # Capture: every variant on every backend, over all records and their perturbed copies.
    captures: dict[str, dict[str, Capture]] = {}
    perturbation = describe_perturbation(all_records)
    with stage("Capturing logits", len(config.variants) * len(config.backends)) as advance:
        for name in config.variants:
            captures[name] = {}
            for backend in config.backends:
                bundle_dir = out / "captures" / name / backend
                capture = run_capture(
                    artifacts[name].path, all_records, backend, threads=config.threads,
                    records_source=str(records_path),
                )
                capture.meta["variant"] = name
                save_capture(bundle_dir / "target.npz", capture, member=member, groups=all_records.groups)
                captures[name][backend] = capture
                for j, copy in enumerate(perturbed):
                    copy_capture = run_capture(
                        artifacts[name].path, copy, backend, threads=config.threads,
                        records_source=str(out / "data" / perturbed_file_name(j)),
                    )
                    copy_capture.meta.update(variant=name, perturbation=perturbation, perturbed_copy=j)
                    save_capture(bundle_dir / perturbed_file_name(j), copy_capture)
                advance()
    stage_seconds["export_and_capture"], clock = time.perf_counter() - clock, time.perf_counter()

    # Reference models: the audit pool is every record, each IN for half of the models.
    in_masks = reference_in_masks(len(all_records), config.references, config.seed)
    tasks = [
        ReferenceTask(
            out=out, records_path=records_path, in_mask=in_masks[k], n_classes=data.n_classes,
            recipe=recipe, seed=config.seed, k=k, variants=tuple(config.variants),
            backends=tuple(config.backends), threads=config.threads,
        )
        for k in range(config.references)
    ]
    with stage(f"Building {len(tasks)} reference models", len(tasks)) as advance:
        reference_summaries = build_references(tasks, jobs=config.jobs, advance=advance)
    stage_seconds["references"], clock = time.perf_counter() - clock, time.perf_counter()

    # Attacks and statistics, on each capture bundle.
    bundles, evaluations = _evaluate_captures(config, out, member, stage)
    variants = []
    for name in config.variants:
        for backend in config.backends:
            bundle_dir = out / "captures" / name / backend
            row = variant_row(name, backend, bundles[name, backend], bundle_dir / "target.npz", out)
            row = {"name": name, "backend": backend, "artifact": artifacts[name].to_dict(relative_to=out), **row}
            row["attacks"] = list(evaluations[name, backend].rows.values())
            variants.append(row)
    stage_seconds["attacks"] = time.perf_counter() - clock

    agreement = []
    for name in config.variants:
        agreement += _agreement(name, captures[name])

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
            "variants": config.variants,
            "backends": config.backends,
            "attacks": config.attacks,
            "threads": config.threads,
            "attack_options": attack_options(config.attack_options),
        },
        "target": {
            "recipe": recipe.to_dict(),
            "training_seconds": trained.seconds,
            "accuracy": {"members": trained.accuracy_members, "nonmembers": trained.accuracy_nonmembers},
            "keras_model": {"path": str(keras_path.relative_to(out)), "sha256": sha256_file(keras_path)},
        },
        "attacks": {name: DESCRIPTIONS[name] for name in config.attacks},
        "fpr_resolution": 1.0 / len(data.nonmembers),
        "references": {
            "count": config.references,
            "jobs": config.jobs,
            "seconds": stage_seconds["references"],
            "models": reference_summaries,
        },
        "bootstrap": (
            {"resamples": config.bootstrap, "confidence": DEFAULT_CONFIDENCE, "seed": config.seed}
            if config.bootstrap
            else None
        ),
        "perturbation": {"description": perturbation, "copies": len(perturbed)},
        "variants": variants,
        "backend_agreement": agreement,
        "records": records_section(bundles, evaluations),
        "stage_seconds": stage_seconds,
        "environment": environment(),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render(report))
    return report
