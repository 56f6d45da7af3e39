"""Command line: parses arguments and calls the pipeline stages.

Exit codes: 0 success (and a passing policy), 1 a policy rule failed, 2
invalid usage or input, 3 internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import edgemia
from edgemia.errors import EdgemiaError, InputError
from edgemia.util import check_output_file

logger = logging.getLogger("edgemia")



def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


# Seeds seed numpy and TensorFlow, which take 32-bit unsigned values.
_seed = _bounded_int(0, 2**32 - 1)
_threads = _bounded_int(0, 1024)
_epochs = _bounded_int(1, 100_000)
_references = _bounded_int(0, 4096)
_jobs = _bounded_int(1, 64)
_resamples = _bounded_int(0, 1_000_000)


def _option_help() -> str:
    from edgemia.attacks import OPTION_FAMILIES

    keys = []
    for family, options in OPTION_FAMILIES.items():
        for name, option in options.items():
            keys.append(f"{family}.{name} (default {option.default})")
    return (
        "attack setting KEY=VALUE, repeatable; keys: " + ", ".join(keys)
        + ". README.md lists the values of each"
    )
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is outside 0 <= x < 1")
    return value


def build_parser(audit_defaults: dict | None = None) -> argparse.ArgumentParser:
    """Build the argument parser; `audit_defaults` (from a configuration file) replace the audit's defaults."""
    from edgemia.attacks import ATTACKS
    from edgemia.compression.spec import DEFAULT_VARIANTS, WORDS
    from edgemia.data.builtin import DATASETS
    from edgemia.runtime.capture import BACKENDS, DEFAULT_BACKENDS

    default_variants = ",".join(DEFAULT_VARIANTS)
    default_backends = ",".join(DEFAULT_BACKENDS)

    parser = argparse.ArgumentParser(
        prog="edgemia",
        description="Membership-inference audits of compressed edge models, on the numerics the "
        "device runs.",
    )
    parser.add_argument("--version", action="version", version=f"edgemia {edgemia.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    # Accepted after the command name too; SUPPRESS keeps the value given before it.
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                           help="log more (-v info, -vv debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = commands.add_parser(
        "audit",
        parents=[verbosity],
        help="train a target, export its variants, capture logits and attack them",
        description="Train the target on the members of a built-in data set, export each variant, "
        "capture logits on each backend and compare membership leakage. With no options: digits; "
        f"variants {', '.join(DEFAULT_VARIANTS)}; backends LiteRT, ONNX Runtime and the native "
        "kernel; 16 reference models; every attack.",
    )
    audit.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="audit configuration (TOML) with [audit], [records], [training] and [model] tables; options "
                       "given on the command line override it (see examples/health-insurance.toml)")
    audit.add_argument("--out", type=Path, default=None,
                       help="run directory (default: runs/<dataset>-seed<seed>)")
    audit.add_argument("--seed", type=_seed, default=0,
                       help="seed of the member split and of training, 0..2^32-1 (default: 0)")
    audit.add_argument("--dataset", default="digits", metavar="NAME",
                       help=f"built-in data set: {', '.join(DATASETS)} (default: digits)")
    audit.add_argument("--variants", default=default_variants, metavar="LIST",
                       help=f"comma-separated variant specs, each STEP[+STEP...] with STEP WORD[:VALUE][:KEY=VALUE...] "
                       f"and words {', '.join(WORDS)}; an invalid spec prints the grammar "
                       f"(default: {default_variants})")
    audit.add_argument("--backends", default=default_backends, metavar="LIST",
                       help=f"comma-separated backends from: {', '.join(BACKENDS)} (default: {default_backends})")
    audit.add_argument("--attacks", default=None, metavar="LIST",
                       help=f"comma-separated attacks from: {', '.join(ATTACKS)} (default: all of them, or "
                       "those that need no reference models with --reference-models 0)")
    audit.add_argument("--attack-option", action="append", default=[], metavar="KEY=VALUE",
                       dest="attack_options", help=_option_help())
    audit.add_argument("--epochs", type=_epochs, default=None,
                       help="training epochs of the target and reference models (default: the data set's recipe)")
    audit.add_argument("--threads", type=_threads, default=0,
                       help="inference threads per backend, 0..1024; 0 uses every core (default: 0)")
    audit.add_argument("--reference-models", type=_references, default=16, metavar="K", dest="references",
                       help="reference models for LiRA, RMIA and the shadow attack, an even number; every "
                       "record is IN for half of them; 0 skips them (default: 16)")
    # The option's earlier name, kept working but out of the help.
    audit.add_argument("--references", type=_references, dest="references", help=argparse.SUPPRESS)
    audit.add_argument("--jobs", type=_jobs, default=None,
                       help="worker processes that build reference models in parallel, each with its own "
                       "TensorFlow (about 0.7 GB); the models do not depend on it (default: one per "
                       "core, at most 4)")
    audit.add_argument("--bootstrap", type=_resamples, default=1000, metavar="N",
                       help="bootstrap resamples for 95%% confidence intervals; 0 switches them off "
                       "(default: 1000)")
    audit.add_argument("--population", type=_fraction, default=0.0, metavar="FRACTION",
                       help="fraction of the records set aside, before the member split, as population "
                       "records for distill:W:data=population; 0 sets none aside (default: 0)")
    audit.add_argument("--policy", type=Path, default=None, metavar="FILE",
                       help="policy file (TOML) with a [rules] table; exit code 1 when a rule fails "
                       "(see examples/policy.toml)")

    audit.set_defaults(records=None, training={}, model=None, target_model=None)
    if audit_defaults:
        audit.set_defaults(**audit_defaults)

    attack = commands.add_parser(
        "attack",
        parents=[verbosity],
        help="run membership-inference attacks on capture bundles and write report.json",
        description="Run attacks on a capture bundle directory (target.npz with a bool 'member' field, "
        "optional reference-<k>.npz with a bool 'in_mask' field and perturbed-<j>.npz), or on an "
        "audit's captures directory with one bundle per <variant>/<bundle>. Writes report.json and "
        "report.md in the audit's schema and one scores.npz per bundle. Does not import TensorFlow.",
    )
    attack.add_argument("--captures", type=Path, required=True, metavar="DIR",
                        help="capture bundle directory, or a directory of <variant>/<bundle> bundles")
    attack.add_argument("--attacks", default=None, metavar="LIST",
                        help=f"comma-separated attacks from: {', '.join(ATTACKS)} (default: every attack "
                        "the bundles support)")
    attack.add_argument("--attack-option", action="append", default=[], metavar="KEY=VALUE",
                        dest="attack_options", help=_option_help())
    attack.add_argument("--bootstrap", type=_resamples, default=1000, metavar="N",
                        help="bootstrap resamples for 95%% confidence intervals; 0 switches them off "
                        "(default: 1000)")
    attack.add_argument("--seed", type=_seed, default=0,
                        help="seed of the bootstrap resamples (default: 0)")
    attack.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="directory for report.json, report.md, report.html and <variant>/<bundle>/scores.npz")
    attack.add_argument("--policy", type=Path, default=None, metavar="FILE",
                        help="policy file (TOML) with a [rules] table; exit code 1 when a rule fails")

    report = commands.add_parser(
        "report",
        parents=[verbosity],
        help="rebuild report.json, report.md and report.html of a run from its stored results",
        description="Rebuild report.json, report.md and report.html in RUN_DIR from its report.json, "
        "without opening captures or models. With --policy, the policy's rules replace the stored "
        "verdict. Exit code 1 when a rule fails. Does not import TensorFlow.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory of an audit or attack")
    report.add_argument("--policy", type=Path, default=None, metavar="FILE",
                        help="policy file (TOML) with a [rules] table (default: keep the stored verdict)")

    capture = commands.add_parser(
        "capture",
        parents=[verbosity],
        help="run one exported model over a records file and write a capture file",
        description="Run one exported model over a records file (.npz with x, y and optionally "
        "record_id) and write the logits, labels, raw outputs and metadata to a capture file. "
        "Does not import TensorFlow.",
    )
    capture.add_argument("--model", type=Path, required=True, help="exported model (.tflite or .onnx)")
    capture.add_argument("--data", type=Path, required=True, help="records file (.npz)")
    capture.add_argument("--backend", required=True, metavar="NAME",
                         help=f"backend: {', '.join(BACKENDS)}")
    capture.add_argument("--out", type=Path, required=True, help="capture file to write (.npz)")
    capture.add_argument("--threads", type=_threads, default=0,
                         help="inference threads, 0..1024; 0 uses every core (default: 0)")
    capture.add_argument("--numerics", default=None, metavar="MODE",
                         help="numerics mode of the native kernel: litert (LiteRT's default path) or "
                         "litert-reference (TFLite's reference kernels); default: litert")

    compress = commands.add_parser(
        "compress",
        parents=[verbosity],
        help="export a trained Keras model as one variant, with a metadata file",
        description="Apply a variant spec to a float Keras model and write its files (.tflite, .onnx) and "
        "compress.json (bytes, sha256, parameter count, sparsity per layer, op list, and accuracy on "
        "each backend that runs the file) into --out. The calibration records calibrate the quantizers, "
        "are the training records of pruning and distillation, and count as members.",
    )
    compress.add_argument("--model", type=Path, required=True, help="trained float model (.keras)")
    compress.add_argument("--variant", required=True, metavar="SPEC",
                          help="variant spec, e.g. int8, prune:0.8+int8 or distill:0.5+int4")
    compress.add_argument("--calibration", type=Path, required=True, metavar="RECORDS",
                          help="records file (.npz) of the model's training records")
    compress.add_argument("--out", type=Path, required=True, help="output directory")
    compress.add_argument("--nonmembers", type=Path, default=None, metavar="RECORDS",
                          help="records file (.npz) of records the model did not train on, for accuracy")
    compress.add_argument("--population", type=Path, default=None, metavar="RECORDS",
                          help="records file (.npz) of population records, for distill:W:data=population")
    compress.add_argument("--backends", default=default_backends, metavar="LIST",
                          help=f"comma-separated backends that measure accuracy (default: {default_backends})")
    compress.add_argument("--seed", type=_seed, default=0,
                          help="seed of pruning and distillation, 0..2^32-1 (default: 0)")
    compress.add_argument("--threads", type=_threads, default=0,
                          help="inference threads, 0..1024; 0 uses every core (default: 0)")
    return parser


def _progress_stage(progress: Progress):
    @contextlib.contextmanager
    def stage(description: str, total: int) -> Iterator[Callable[[], None]]:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
        progress.update(task, completed=total)

    return stage


def _check_audit_packages() -> None:
    """Fail with install advice when the packages of the `audit` extra are missing.

    Every audit and compression writes and checks both TFLite and ONNX files,
    so all of them are needed, whichever backends capture.
    """
    import importlib.util

    needed = {"sklearn": "scikit-learn", "tensorflow": "tensorflow", "keras": "keras", "tf2onnx": "tf2onnx",
              "onnxruntime": "onnxruntime", "ai_edge_litert": "ai-edge-litert"}
    missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise InputError(
            f"edgemia audit needs {', '.join(missing)}, which this installation lacks; "
            "install them with: pip install 'edgemia[audit]'"
        )


def _run_audit(args: argparse.Namespace, console: Console) -> int:
    from edgemia.audit import AuditConfig, run_audit
    from edgemia.reporting.console import print_summary, print_verdict
    from edgemia.reporting.policy import exit_code

    name = args.records.dataset_name if args.records is not None else args.dataset
    out = args.out or Path("runs") / f"{name}-seed{args.seed}"
    config = AuditConfig(
        out=out,
        dataset=args.dataset,
        seed=args.seed,
        variants=_names(args.variants),
        backends=_names(args.backends),
        attacks=_names(args.attacks) if args.attacks is not None else None,
        threads=args.threads,
        epochs=args.epochs,
        references=args.references,
        jobs=args.jobs,
        bootstrap=args.bootstrap,
        attack_options=args.attack_options,
        population=args.population,
        policy=args.policy,
        records=args.records,
        training=args.training,
        model=args.model,
        target_model=args.target_model,
    )
    config.validate()
    _check_audit_packages()
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        report = run_audit(config, stage=_progress_stage(progress))
    print_summary(report, console)
    if "target" in report:
        console.print(
            f"Target accuracy: {report['target']['accuracy']['members']:.4f} on members, "
            f"{report['target']['accuracy']['nonmembers']:.4f} on non-members."
        )
    console.print(
        f"Run directory: {out} (report.json, report.md, report.html); {time.perf_counter() - start:.0f} s.",
        soft_wrap=True,
    )
    print_verdict(report, console)
    return exit_code(report)


def _run_capture(args: argparse.Namespace, console: Console) -> int:
    from edgemia.data.records import load_records
    from edgemia.runtime.capture import check_backend_names, run_capture, save_capture

    check_backend_names([args.backend])
    out = check_output_file(args.out, "--out", inputs=(args.model, args.data))
    records = load_records(args.data)
    capture = run_capture(
        args.model, records, args.backend, threads=args.threads, numerics=args.numerics,
        records_source=str(args.data),
    )
    try:
        save_capture(out, capture)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write the capture file ({exc.strerror or exc})") from exc
    console.print(
        f"Captured {len(capture)} records with {args.backend} "
        f"({capture.meta['numerics']} numerics, {capture.meta['isa']}, {capture.meta['threads']} threads) "
        f"in {capture.meta['inference_seconds']:.3f} s; accuracy {capture.accuracy:.4f}. Wrote {out}.",
        soft_wrap=True,
    )
    return 0


def _run_attack(args: argparse.Namespace, console: Console) -> int:
    from edgemia.attack_run import run_attack_report
    from edgemia.reporting.console import print_summary, print_verdict
    from edgemia.reporting.policy import exit_code, load_policy

    attacks = _names(args.attacks) if args.attacks is not None else None
    policy = load_policy(args.policy) if args.policy is not None else None
    report = run_attack_report(
        args.captures, args.out, attacks, args.attack_options, n_resamples=args.bootstrap, seed=args.seed,
        policy=policy,
    )
    print_summary(report, console)
    console.print(f"Wrote {args.out / 'report.json'}, report.md, report.html and scores beside them.",
                  soft_wrap=True)
    print_verdict(report, console)
    return exit_code(report)


def _run_report(args: argparse.Namespace, console: Console) -> int:
    from edgemia.reporting.console import print_verdict
    from edgemia.reporting.policy import exit_code, load_policy
    from edgemia.reporting.rebuild import rebuild_reports

    policy = load_policy(args.policy) if args.policy is not None else None
    report = rebuild_reports(args.run_dir, policy)
    console.print(f"Rebuilt report.json, report.md and report.html in {args.run_dir}.", soft_wrap=True)
    print_verdict(report, console)
    return exit_code(report)


def _run_compress(args: argparse.Namespace, console: Console) -> int:
    from edgemia.compression.compress import METADATA_FILE, accuracy_summary, compress
    from edgemia.compression.spec import parse_variant

    spec = parse_variant(args.variant)
    _check_audit_packages()
    metadata = compress(
        args.model, args.variant, args.calibration, args.out, nonmembers_path=args.nonmembers,
        population_path=args.population, backends=tuple(_names(args.backends)), seed=args.seed,
        threads=args.threads,
    )
    files = ", ".join(f"{entry['path']} ({entry['bytes']} bytes)" for entry in metadata["files"].values())
    console.print(f"{spec.name}: wrote {files} and {METADATA_FILE} into {args.out}.", soft_wrap=True)
    for line in accuracy_summary(metadata):
        console.print(line, soft_wrap=True)
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; for `audit --config FILE`, parse again with the file's values as defaults."""
    args = build_parser().parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    from edgemia.config_file import load_config_file

    return build_parser(audit_defaults=load_config_file(args.config)).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except EdgemiaError as exc:
        print(f"edgemia: error: {exc}", file=sys.stderr)
        return exc.exit_code
    console = Console(stderr=False)
    if not console.is_terminal:
        # Logs and pipes get the full table instead of rich's 80-column default.
        console = Console(stderr=False, width=160)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(getattr(args, "verbose", 0), 2)]
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=Console(stderr=True))])
    commands = {"audit": _run_audit, "capture": _run_capture, "attack": _run_attack, "compress": _run_compress,
                "report": _run_report}
    try:
        return commands[args.command](args, console)
    except EdgemiaError as exc:
        print(f"edgemia: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgemia: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - the last resort that turns a bug into exit code 3
        traceback.print_exc()
        print("edgemia: internal error; please report it with the traceback above", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
