"""The attack command: attack capture bundles made anywhere and write report.json in the audit's schema.

`--captures DIR` is either one capture bundle (DIR/target.npz) or a
directory of bundles laid out like an audit's captures directory,
DIR/<variant>/<backend>/target.npz. A single bundle takes its variant name
from the `variant` entry of its target's meta (written by the audit), or
"target" without one, and its backend from the meta's `backend`. In the
nested layout the directory names decide, and every variant other than
float is compared with float on the same backend.

The output directory receives report.json, report.md and one scores.npz per
bundle, at <out>/<variant>/<backend>/scores.npz. report.json has the audit's
schema (version 1) without the audit-only fields (target, references,
artifacts), plus `captures`, the directory that was attacked.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import edgemia
from edgemia.attacks import DESCRIPTIONS, attack_options, check_attack_names
from edgemia.attacks.bundle import TARGET_FILE, CaptureBundle, load_bundle
from edgemia.errors import InputError
from edgemia.evaluation import default_attacks, evaluate_bundles, records_section, variant_row, write_scores
from edgemia.reporting.environment import environment
from edgemia.reporting.markdown import render
from edgemia.runtime.capture import load_capture
from edgemia.stats.bootstrap import DEFAULT_CONFIDENCE, stratified_resamples
from edgemia.util import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def find_bundles(directory: Path) -> dict[tuple[str, str], Path]:
    """Map (variant, backend) to each bundle directory under `directory` (see the module docstring)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--captures {directory}: directory not found")
    if (directory / TARGET_FILE).is_file():
        capture, _ = load_capture(directory / TARGET_FILE)
        variant = capture.meta.get("variant") or "target"
        backend = capture.meta.get("backend") or "unknown"
        return {(variant, backend): directory}
    found = {}
    for target in sorted(directory.glob(f"*/*/{TARGET_FILE}")):
        found[target.parent.parent.name, target.parent.name] = target.parent
    if not found:
        raise InputError(
            f"--captures {directory}: no {TARGET_FILE} here nor in <variant>/<backend>/ subdirectories; "
            "pass a capture bundle directory or an audit's captures directory"
        )
    return found


def _check_same_split(bundles: dict[tuple[str, str], CaptureBundle]) -> None:
    """Raise InputError unless every bundle covers the same records with the same members."""
    (first_key, first), *others = bundles.items()
    for key, bundle in others:
        same_records = np.array_equal(bundle.target.record_id, first.target.record_id)
        if not same_records or not np.array_equal(bundle.member, first.member):
            problem = "other records or another order" if not same_records else "other 'member' values"
            raise InputError(
                f"{bundle.location}: has {problem} than {first.location}; every bundle of one report "
                "must capture the same records with the same members"
            )


def run_attack_report(
    captures: Path,
    out: Path,
    attacks: list[str] | None = None,
    option_items: list[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Attack the bundles under `captures`, write report.json, report.md and scores into `out`; return the report.

    `attacks` None runs every attack that all bundles support, and
    `n_resamples` 0 skips the bootstrap.
    """
    start = time.perf_counter()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    options = attack_options(option_items)
    if attacks is not None:
        if not attacks:
            raise InputError("the attack list is empty")
        check_attack_names(attacks)
    if n_resamples < 0:
        raise InputError(f"bootstrap resamples must be 0 (off) or more, got {n_resamples}")

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    bundles = {key: load_bundle(path) for key, path in find_bundles(captures).items()}
    _check_same_split(bundles)
    if attacks is None:
        attacks = default_attacks(
            min(bundle.n_references for bundle in bundles.values()),
            min(bundle.n_perturbed for bundle in bundles.values()),
        )
    first = next(iter(bundles.values()))
    resamples = stratified_resamples(first.member, n_resamples, seed) if n_resamples else None
    evaluations = evaluate_bundles(bundles, attacks, resamples, confidence, options=options)

    variants = []
    for (variant, backend), bundle in bundles.items():
        write_scores(out / variant / backend, bundle, evaluations[variant, backend])
        row = variant_row(variant, backend, bundle, Path(bundle.location) / TARGET_FILE, out)
        row["scores"] = f"{variant}/{backend}/scores.npz"
        row["n_references"] = bundle.n_references
        row["n_perturbed"] = bundle.n_perturbed
        row["attacks"] = list(evaluations[variant, backend].rows.values())
        variants.append(row)

    n_nonmembers = int((~first.member).sum())
    report = {
        "schema_version": SCHEMA_VERSION,
        "edgemia_version": edgemia.__version__,
        "created": created,
        "seed": seed,
        "captures": str(captures),
        "dataset": {
            "name": None,
            "description": f"capture bundles in {captures}",
            "n_members": int(first.member.sum()),
            "n_nonmembers": n_nonmembers,
            "n_classes": int(first.target.logits.shape[1]),
        },
        "config": {
            "variants": list(dict.fromkeys(variant for variant, _ in bundles)),
            "backends": list(dict.fromkeys(backend for _, backend in bundles)),
            "attacks": attacks,
            "attack_options": options,
        },
        "attacks": {name: DESCRIPTIONS[name] for name in attacks},
        "fpr_resolution": 1.0 / n_nonmembers,
        "bootstrap": (
            {"resamples": n_resamples, "confidence": confidence, "seed": seed} if n_resamples else None
        ),
        "variants": variants,
        "records": records_section(bundles, evaluations),
        "stage_seconds": {"attacks": time.perf_counter() - start},
        "environment": environment(),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render(report))
    return report
