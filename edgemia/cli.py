"""Command line: parses arguments and calls the pipeline stages.

Exit codes: 0 success (and a passing policy), 1 a policy rule failed, 2
invalid usage or input, 3 internal error, 4 a board that cannot be reached
over SSH, or a command that failed or timed out there.
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



def _names(text: str, option: str) -> list[str]:
    """Split the comma-separated list `text` of `option`; raise InputError for an empty item."""
    parts = [part.strip() for part in text.split(",")]
    for position, part in enumerate(parts, start=1):
        if not part:
            raise InputError(f"{option} '{text}': item {position} of {len(parts)} is empty; separate the names "
                             "with single commas, with none at either end")
    return parts


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
_port = _bounded_int(1, 65535)


def _resamples(text: str) -> int:
    """Parse --bootstrap; an InputError passes through argparse, so its message is printed whole."""
    from edgemia.stats.bootstrap import check_resample_count

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    check_resample_count(value)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{value:g} is outside 1..86400 seconds")
    return value


# Recipe options of `edgemia audit`: each sets the [training] key of the same name and
# overrides the configuration file's value.
RECIPE_OPTIONS = ("optimizer", "momentum", "weight_decay", "random_shift", "random_flip")


def _add_recipe_options(audit: argparse.ArgumentParser) -> None:
    from edgemia.training.train import OPTIMIZERS

    group = audit.add_argument_group("training recipe of the target and reference models ([training] keys)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                       help="optimizer, with the recipe's learning rate (default: adam)")
    group.add_argument("--momentum", type=float, default=None, metavar="M",
                       help="momentum of sgd and rmsprop, 0 <= M < 1 (default: 0)")
    group.add_argument("--weight-decay", type=float, default=None, metavar="W",
                       help="decoupled weight decay of adamw, sgd and rmsprop, 0 <= W < 1 "
                       "(default: 0.004 for adamw, else 0)")
    group.add_argument("--random-shift", type=int, default=None, metavar="PIXELS",
                       help="augment image records by a random shift of up to PIXELS along each axis in "
                       "every training step (default: 0, no shift)")
    group.add_argument("--random-flip", action=argparse.BooleanOptionalAction, default=None,
                       help="augment image records by flipping half of them left to right in every training "
                       "step (default: no flip)")


def training_overrides(args: argparse.Namespace) -> dict:
    """Return the recipe overrides of `edgemia audit`: the configuration's [training], then the recipe options."""
    return {**args.training, **{key: getattr(args, key) for key in RECIPE_OPTIONS if getattr(args, key) is not None}}


def _add_device_commands(commands, verbosity: argparse.ArgumentParser) -> None:
    device = commands.add_parser(
        "device",
        help="check a board and capture an audit's models on it over SSH",
        description="Reach a board over SSH, compare it with its device profile (devices/<name>.toml), "
        "and capture an audit run's models there. The board needs Python 3.10 or newer with "
        "`pip install 'edgemia[device]'` of this edgemia version. Host keys are checked against "
        "known_hosts; unknown keys are rejected.",
    )
    actions = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[verbosity], help="list the shipped device profiles")

    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--device", required=True, metavar="NAME",
                            help="device profile: a shipped name (see `edgemia device list`) or the path of "
                            "a .toml file")
    connection.add_argument("--host", required=True, metavar="[USER@]HOST",
                            help="the board's host name or address, with the login user")
    connection.add_argument("--port", type=_port, default=None,
                            help="SSH port, 1..65535 (default: the profile's, usually 22)")
    connection.add_argument("--known-hosts", type=Path, default=None, metavar="FILE",
                            help="check the host key against this known_hosts file only (default: the "
                            "user's and the system's known_hosts)")
    connection.add_argument("--host-key-fingerprint", default=None, metavar="SHA256:...",
                            help="accept only the host key with this fingerprint, instead of known_hosts; "
                            "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the board")
    connection.add_argument("--identity", type=Path, default=None, metavar="FILE",
                            help="private key to log in with (ssh -i)")
    connection.add_argument("--ssh-config", type=Path, default=None, metavar="FILE",
                            help="ssh_config file to read instead of the user's and the system's (ssh -F)")
    connection.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE",
                            help="further ssh option (ssh -o); repeat it for several")
    connection.add_argument("--connect-timeout", type=_seconds, default=None, metavar="SECONDS",
                            help="time limit to open the connection (default: the profile's)")
    connection.add_argument("--python", default=None, metavar="COMMAND",
                            help="command that starts the board's Python with edgemia installed, e.g. "
                            "~/venv/bin/python (default: the profile's, python3)")
    connection.add_argument("--remote-dir", default=None, metavar="DIR",
                            help="working directory on the board, relative to the login directory "
                            "(default: the profile's, .cache/edgemia/device)")

    actions.add_parser(
        "check",
        parents=[verbosity, connection],
        help="compare a board with its device profile",
        description="Report the board's architecture, CPU features, GEMM path, Python, numpy and "
        "edgemia versions and backends, and what differs from the profile. Exits with 2 when the "
        "board does not match the profile.",
    )
    run = actions.add_parser(
        "run",
        parents=[verbosity, connection],
        help="capture an audit run's models on a board and add them to its report",
        description="Capture every model of a finished audit run (the target, its perturbed copies "
        "and each reference model of each variant and format) on the board with each backend it "
        "has, pull the captures back, verify their SHA-256, and add them to the run as "
        "device:<name>:<backend> report rows, with the agreement between host and device. "
        "Captures already in the run directory from an earlier device run of the same board are kept.",
    )
    run.add_argument("run_dir", type=Path, help="run directory of a finished `edgemia audit`")
    run.add_argument("--variants", default=None, metavar="LIST",
                     help="comma-separated variants to capture (default: every variant of the run)")
    run.add_argument("--backends", default=None, metavar="LIST",
                     help="comma-separated backends from: native, litert, onnxruntime (default: those "
                     "the profile lists and the board has)")
    run.add_argument("--threads", type=_threads, default=None,
                     help="inference threads on the board, 0..1024; 0 uses every core (default: the profile's)")
    run.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                     help="time limit of one capture on the board (default: the profile's)")


def _option_help() -> str:
    from edgemia.attacks import OPTION_FAMILIES

    keys = []
    for family, options in OPTION_FAMILIES.items():
        for name, option in options.items():
            keys.append(f"{family}.{name} (default {option.default})")
    return (
        "attack setting KEY=VALUE, repeatable; keys: " + ", ".join(keys)
        + ". docs/attacks.md lists the values of each"
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
    audit.add_argument("--jobs", "--workers", type=_jobs, default=None, dest="jobs",
                       help="workers that build reference models in parallel, each with its own "
                       "TensorFlow (about 0.7 GB); the models do not depend on it (default: one per "
                       "core, at most 4)")
    audit.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="where reference models are built: local worker processes, or Ray tasks on a "
                       "local Ray cluster with --jobs CPUs (or the cluster at --ray-address); the results "
                       "do not depend on it (default: local)")
    audit.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                       help="address of a running Ray cluster to join, with --executor ray (default: start "
                       "a local cluster on 127.0.0.1)")
    audit.add_argument("--bootstrap", type=_resamples, default=1000, metavar="N",
                       help="bootstrap resamples for 95%% confidence intervals, 40..100000; 0 switches "
                       "them off (default: 1000)")
    audit.add_argument("--population", type=_fraction, default=0.0, metavar="FRACTION",
                       help="fraction of the records set aside, before the member split, as population "
                       "records for distill:W:data=population and pate; 0 sets none aside (default: 0)")
    audit.add_argument("--policy", type=Path, default=None, metavar="FILE",
                       help="policy file (TOML) with a [rules] table; exit code 1 when a rule fails "
                       "(see examples/policy.toml)")
    _add_recipe_options(audit)

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
                        help="bootstrap resamples for 95%% confidence intervals, 40..100000; 0 switches "
                        "them off (default: 1000)")
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
        "without opening captures or models. The stored verdict is kept; with --policy, the policy's "
        "rules replace it, and with --no-policy it is dropped. Exit code 1 when a rule fails. Does not "
        "import TensorFlow.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory of an audit or attack")
    verdict = report.add_mutually_exclusive_group()
    verdict.add_argument("--policy", type=Path, default=None, metavar="FILE",
                         help="policy file (TOML) with a [rules] table (default: keep the stored verdict)")
    verdict.add_argument("--no-policy", action="store_true",
                         help="drop the stored verdict: the reports show no rules, and the exit code is 0")

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
    capture.add_argument("--out", type=Path, required=True,
                         help="capture file to write (.npz), in an existing directory")
    capture.add_argument("--threads", type=_threads, default=0,
                         help="inference threads, 0..1024; 0 uses every core (default: 0)")
    capture.add_argument("--numerics", default=None, metavar="MODE",
                         help="numerics mode of the native kernel: litert (LiteRT's default path) or "
                         "litert-reference (TFLite's reference kernels) for .tflite files, onnxruntime (the "
                         "only mode for .onnx files); default: litert for .tflite, onnxruntime for .onnx")

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

    _add_device_commands(commands, verbosity)
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
        variants=_names(args.variants, "--variants"),
        backends=_names(args.backends, "--backends"),
        attacks=_names(args.attacks, "--attacks") if args.attacks is not None else None,
        threads=args.threads,
        epochs=args.epochs,
        references=args.references,
        jobs=args.jobs,
        bootstrap=args.bootstrap,
        attack_options=args.attack_options,
        population=args.population,
        executor=args.executor,
        ray_address=args.ray_address,
        policy=args.policy,
        records=args.records,
        training=training_overrides(args),
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
    if "tasks" in report:
        console.print(
            f"Tasks: {report['tasks']['reused']} reused from the run directory, "
            f"{report['tasks']['computed']} computed."
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
    # A mistyped directory would otherwise be created silently, and the capture would land out of sight.
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: directory {out.parent} not found; create it first, or choose a file in an "
                         "existing directory")
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

    attacks = _names(args.attacks, "--attacks") if args.attacks is not None else None
    policy = load_policy(args.policy) if args.policy is not None else None
    # Writing into an audit's run directory or a capture bundle would replace its report or mix with its files.
    for marker, kind in (("run.json", "an audit's run directory"), ("target.npz", "a capture bundle")):
        if (args.out / marker).is_file():
            raise InputError(f"--out {args.out}: is {kind} (it contains {marker}); choose a new or empty directory")
    out, captures = args.out.resolve(), args.captures.resolve()
    for parent in out.parents:
        if (parent / "run.json").is_file():
            raise InputError(f"--out {args.out}: is inside the audit's run directory {parent}, whose files it "
                             "would replace; choose a directory outside it")
    if out == captures or captures in out.parents:
        raise InputError(f"--out {args.out}: is inside --captures {args.captures}, whose scores it would "
                         "replace; choose a directory outside it")
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
    report = rebuild_reports(args.run_dir, policy, drop_policy=args.no_policy)
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
        population_path=args.population, backends=tuple(_names(args.backends, "--backends")), seed=args.seed,
        threads=args.threads,
    )
    files = ", ".join(f"{entry['path']} ({entry['bytes']} bytes)" for entry in metadata["files"].values())
    console.print(f"{spec.name}: wrote {files} and {METADATA_FILE} into {args.out}.", soft_wrap=True)
    for line in accuracy_summary(metadata):
        console.print(line, soft_wrap=True)
    return 0


def _device_settings(args: argparse.Namespace):
    from edgemia.devices.profiles import load_profile
    from edgemia.devices.runner import DeviceSettings
    from edgemia.devices.ssh import SshOptions, SshTarget

    profile = load_profile(args.device)
    connection = profile.connection
    for option, path in (("--known-hosts", args.known_hosts), ("--identity", args.identity),
                         ("--ssh-config", args.ssh_config)):
        if path is not None and not path.is_file():
            raise InputError(f"{option} {path}: file not found")
    return DeviceSettings(
        profile=profile,
        target=SshTarget.parse(args.host, args.port or connection.port, connection.user),
        ssh=SshOptions(
            known_hosts=args.known_hosts,
            host_key_fingerprint=args.host_key_fingerprint,
            identity=args.identity,
            config=args.ssh_config,
            extra=tuple(args.ssh_option),
            connect_timeout_seconds=args.connect_timeout or connection.connect_timeout_seconds,
        ),
        python=args.python,
        remote_dir=args.remote_dir,
        threads=getattr(args, "threads", None),
        capture_timeout_seconds=getattr(args, "timeout", None),
    )


def _run_device(args: argparse.Namespace, console: Console) -> int:
    from edgemia.reporting.console import print_board_check, print_profiles

    if args.device_command == "list":
        from edgemia.devices.profiles import load_profile, profile_names

        print_profiles([load_profile(name) for name in profile_names()], console)
        return 0

    from edgemia.devices.runner import check_device
    from edgemia.devices.ssh import SshClient

    settings = _device_settings(args)
    if args.device_command == "check":
        with SshClient(settings.target, settings.ssh) as client:
            check = check_device(settings, client)
        print_board_check(check, settings.target, console)
        if not check.ok:
            raise InputError(f"{settings.target} does not match device profile {settings.profile.name}")
        return 0

    from edgemia.devices.audit_run import read_audit_run
    from edgemia.devices.device_run import capture_on_device
    from edgemia.devices.report import add_device_results
    from edgemia.reporting.console import print_device_summary
    from edgemia.runtime.capture import check_backend_names

    run = read_audit_run(args.run_dir)
    variants = _names(args.variants, "--variants") if args.variants is not None else None
    backends = _names(args.backends, "--backends") if args.backends is not None else None
    if backends is not None:
        check_backend_names(backends)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:

        def capture_progress(total: int) -> Callable[[], None]:
            task = progress.add_task(f"Capturing on {settings.profile.name}", total=total)
            return lambda: progress.advance(task)

        captures = capture_on_device(settings, run, variants, backends, capture_progress)
    report = add_device_results(run, settings, captures)
    print_device_summary(report, settings.profile.name, console)
    console.print(f"Updated {run.out / 'report.json'}, report.md and report.html.", soft_wrap=True)
    return 0
def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; for `audit --config FILE`, parse again with the file's values as defaults."""
    args = build_parser().parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    from edgemia.config_file import AUDIT_KEYS, load_config_file

    values = load_config_file(args.config)
    # The file's numbers get the ranges of the options they stand for.
    bounded = {"seed": _seed, "threads": _threads, "epochs": _epochs, "references": _references, "jobs": _jobs}
    for key, (destination, _) in AUDIT_KEYS.items():
        if destination in bounded and destination in values:
            try:
                bounded[destination](str(values[destination]))
            except argparse.ArgumentTypeError as exc:
                raise InputError(f"{args.config}: 'audit.{key}' {exc}") from None
    typed = sys.argv[1:] if argv is None else argv
    if values.get("records") is not None and any(item.split("=", 1)[0] == "--dataset" for item in typed):
        # The file's [records] would win over the option, which should override the file.
        raise InputError(f"--dataset names a built-in data set, and [records] in {args.config} names the records; "
                         "keep one of them")
    return build_parser(audit_defaults=values).parse_args(argv)


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
                "device": _run_device, "report": _run_report}
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
