"""The attack command: attack capture bundles made anywhere and write report.json in the audit's schema.

`--captures DIR` is either one capture bundle (DIR/target.npz) or a
directory of bundles laid out like an audit's captures directory,
DIR/<variant>/<bundle>/target.npz, where the audit names <bundle> after the
backend and model format (native-tflite). Each bundle's variant name comes
from the `variant` entry of its target's meta (written by the audit), or
else from its directory name ("target" for a single bundle without one);
its backend from the meta's `backend` and its model format from the meta's
`model_format` or the extension of `model_file` (none when neither says). Every variant other than
float is compared with float on the same backend and format.

The output directory receives report.json, report.md, report.html, mitigation.png
when a variant name has training steps (see edgemia.reporting.mitigation), and one
scores.npz per bundle, at <out>/<variant>/<bundle>/scores.npz with the input's directory
names (for a single bundle: <variant slug>/<backend>-<format>, or
<variant slug>/<backend> without a format). report.json
has the audit's schema (version 1) without the audit-only fields (target,
references, artifacts), plus `captures`, the directory that was attacked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import edgemia
from edgemia.attacks import DESCRIPTIONS, attack_options, check_attack_names
from edgemia.attacks.bundle import TARGET_FILE, CaptureBundle, load_bundle
from edgemia.compression.spec import parse_variant
from edgemia.errors import InputError
from edgemia.evaluation import default_attacks, evaluate_bundles, records_section, variant_row, write_scores
from edgemia.reporting.environment import environment
from edgemia.reporting.policy import Policy
from edgemia.reporting.writer import write_reports
from edgemia.runtime.capture import load_capture
from edgemia.stats.bootstrap import DEFAULT_CONFIDENCE, StratifiedResamples, check_resample_count

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


# A bundle's key: (variant, backend, model format).
BundleKey = tuple[str, str, str]


def _bundle_key(target: Path, variant_default: str) -> BundleKey:
    capture, _ = load_capture(target)
    meta = capture.meta
    variant = meta.get("variant") or variant_default
    backend = meta.get("backend") or "unknown"
    model_format = meta.get("model_format") or Path(meta.get("model_file") or "").suffix.lstrip(".")
    return str(variant), str(backend), str(model_format)


def _audit_variants(captures: Path) -> set[str] | None:
    """Return the variants of the audit whose captures directory `captures` is, or None for other directories.

    An audit rerun with fewer variants keeps the captures of the others, so
    that adding them back reuses them; its run.json names the current ones.
    """
    marker = captures.parent / "run.json"
    if captures.name != "captures" or not marker.is_file():
        return None
    try:
        config = json.loads(marker.read_text(encoding="utf-8"))["config"]
        variants = config["variants"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    # The audit of an exported model captures that model alone, under its own name.
    if not isinstance(variants, list) or config.get("model"):
        return None
    names = set()
    for text in variants:
        # run.json keeps the specs as typed; the captures name them in canonical order.
        with contextlib.suppress(InputError):
            names.add(parse_variant(str(text)).name)
    return names


def find_bundles(directory: Path) -> dict[BundleKey, tuple[Path, Path]]:
    """Map (variant, backend, format) to each bundle directory under `directory` and its scores directory.

    The scores directory is relative to the output directory (see the module docstring).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"--captures {directory}: directory not found")
    if (directory / TARGET_FILE).is_file():
        variant, backend, model_format = key = _bundle_key(directory / TARGET_FILE, "target")
        where = f"{backend}-{model_format}" if model_format else backend
        return {key: (directory, Path(variant.replace(":", "_")) / where)}
    found = {}
    current = _audit_variants(directory)
    for target in sorted(directory.glob(f"*/*/{TARGET_FILE}")):
        bundle = target.parent
        key = _bundle_key(target, bundle.parent.name)
        if current is not None and key[0] not in current:
            logger.warning("skipping %s: variant %s is not among the variants of the audit's last run", bundle, key[0])
            continue
        if key in found:
            raise InputError(
                f"{bundle}: captures variant {key[0]} on {key[1]} ({key[2]}) like {found[key][0]}; "
                "each variant, backend and format may appear once"
            )
        found[key] = (bundle, Path(bundle.parent.name) / bundle.name)
    if not found:
        raise InputError(
            f"--captures {directory}: no {TARGET_FILE} here nor in <variant>/<bundle>/ subdirectories; "
            "pass a capture bundle directory or an audit's captures directory"
        )
    return found


def _check_same_split(bundles: dict[BundleKey, CaptureBundle]) -> None:
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
    policy: Policy | None = None,
) -> dict:
    """Attack the bundles under `captures`, write the reports and scores into `out`; return the report.

    `attacks` None runs every attack that all bundles support, and
    `n_resamples` 0 skips the bootstrap. With a `policy`, the reports carry
    its verdict.
    """
    start = time.perf_counter()
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    options = attack_options(option_items)
    if attacks is not None:
        if not attacks:
            raise InputError("the attack list is empty")
        check_attack_names(attacks)
    check_resample_count(n_resamples)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    found = find_bundles(captures)
    bundles = {key: load_bundle(path) for key, (path, _) in found.items()}
    _check_same_split(bundles)
    if attacks is None:
        attacks = default_attacks(
            min(bundle.n_references for bundle in bundles.values()),
            min(bundle.n_perturbed for bundle in bundles.values()),
        )
    first = next(iter(bundles.values()))
    resamples = StratifiedResamples(first.member, n_resamples, seed) if n_resamples else None
    evaluations = evaluate_bundles(bundles, attacks, resamples, confidence, options=options)

    variants = []
    for (variant, backend, model_format), bundle in bundles.items():
        scores_dir = found[variant, backend, model_format][1]
        write_scores(out / scores_dir, bundle, evaluations[variant, backend, model_format])
        row = variant_row(variant, backend, bundle, Path(bundle.location) / TARGET_FILE, out)
        row = {"name": variant, "backend": backend, "format": model_format or None, **row}
        row["scores"] = (scores_dir / "scores.npz").as_posix()
        row["n_references"] = bundle.n_references
        row["n_perturbed"] = bundle.n_perturbed
        row["attacks"] = list(evaluations[variant, backend, model_format].rows.values())
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
            "variants": list(dict.fromkeys(variant for variant, _, _ in bundles)),
            "backends": list(dict.fromkeys(backend for _, backend, _ in bundles)),
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
    return write_reports(out, report, policy)
