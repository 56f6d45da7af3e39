"""Capture bundles: the target's capture, its members, and the reference models' captures.

On disk a bundle is a directory with `target.npz` (a capture file with a bool
`member` field and optional subgroup labels `group_<attribute>`), any number
of `reference-<k>.npz` (capture files with a bool `in_mask` field: the
records reference model k trained on) and any number of `perturbed-<j>.npz`
(captures of the target model on perturbed copy j of every record, for the
label-only augmentation attack). Every file covers the same records in the
same order, captured on the same backend.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemia.attacks.signals import logit_scaled_confidence
from edgemia.data.records import GROUP_PREFIX, check_group_labels
from edgemia.errors import InputError
from edgemia.runtime.capture import Capture, load_capture

logger = logging.getLogger(__name__)

TARGET_FILE = "target.npz"
REFERENCE_PATTERN = re.compile(r"reference-(\d+)\.npz")
PERTURBED_PATTERN = re.compile(r"perturbed-(\d+)\.npz")


def reference_file_name(k: int) -> str:
    return f"reference-{k}.npz"


def perturbed_file_name(j: int) -> str:
    return f"perturbed-{j}.npz"


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_mask(values: np.ndarray, source: str, name: str, n: int) -> np.ndarray:
    """Convert a bool (or 0/1 integer) field to a bool [n] array, naming the field on error."""
    values = np.asarray(values)
    if values.shape != (n,):
        raise InputError(f"{source}: '{name}' has shape {values.shape}; expected one value per record, [{n}]")
    if values.dtype == bool:
        return values
    if np.issubdtype(values.dtype, np.integer) and np.isin(values, (0, 1)).all():
        return values.astype(bool)
    raise InputError(f"{source}: '{name}' has dtype {values.dtype}; expected bool (True or False per record)")


def _check_same_records(reference: Capture, source: str, target: Capture, target_source: str) -> None:
    """Raise InputError unless `reference` covers the target's records in the same order."""
    n = len(target)
    if len(reference) != n:
        raise InputError(
            f"{source}: has {len(reference)} records but {target_source} has {n}; every capture of a "
            "bundle must cover the same records"
        )
    differ = reference.record_id != target.record_id
    if differ.any():
        row = _first_row(differ)
        same_set = np.array_equal(np.sort(reference.record_id), np.sort(target.record_id))
        problem = "lists the same records in a different order" if same_set else "covers other records"
        raise InputError(
            f"{source}: {problem} than {target_source} (first difference at row {row}: record_id "
            f"{reference.record_id[row]} here, {target.record_id[row]} in {target_source}); capture every "
            "model from the same records file"
        )
    if reference.logits.shape[1] != target.logits.shape[1]:
        raise InputError(
            f"{source}: has {reference.logits.shape[1]} output classes but {target_source} has "
            f"{target.logits.shape[1]}; reference models need the target's architecture"
        )
    labels_differ = reference.labels != target.labels
    if labels_differ.any():
        raise InputError(
            f"{source}: 'labels' differ from {target_source} in {int(labels_differ.sum())} records "
            f"(first at row {_first_row(labels_differ)}); capture every model from the same records file"
        )
    for key in ("backend", "numerics"):
        ours, theirs = reference.meta.get(key), target.meta.get(key)
        if ours is not None and theirs is not None and ours != theirs:
            raise InputError(
                f"{source}: captured with {key} '{ours}' but {target_source} with '{theirs}'; reference "
                f"models must run with the target's {key}, because each one rounds int8 outputs differently"
            )


@dataclass
class CaptureBundle:
    """Captures of one variant over the same records, in the same order."""

    target: Capture
    member: np.ndarray  # bool [n]: True for the target's training records
    references: list[Capture] = field(default_factory=list)
    in_mask: np.ndarray | None = None  # bool [K, n]: True where reference k trained on the record
    location: str = "capture bundle"  # the directory, or another name for messages
    reference_sources: list[str] | None = None  # one name per reference, for messages
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # subgroup attribute -> labels [n]
    perturbed: list[Capture] = field(default_factory=list)  # the target on perturbed copies of the records

    def __post_init__(self) -> None:
        n = len(self.target)
        target_source = f"{self.location}/{TARGET_FILE}"
        self.member = _as_mask(self.member, target_source, "member", n)
        for attribute, values in self.groups.items():
            if np.shape(values) != (n,):
                raise InputError(
                    f"{target_source}: '{GROUP_PREFIX}{attribute}' has shape {np.shape(values)}; "
                    f"expected one label per record, [{n}]"
                )
            check_group_labels(np.asarray(values), target_source, GROUP_PREFIX + attribute)
        for j, capture in enumerate(self.perturbed):
            _check_same_records(capture, f"{self.location}/{perturbed_file_name(j)}", self.target, target_source)
        if self.member.all() or not self.member.any():
            raise InputError(
                f"{target_source}: 'member' must mark at least one member and one non-member record"
            )

        if self.reference_sources is None:
            self.reference_sources = [
                f"{self.location}/{reference_file_name(k)}" for k in range(len(self.references))
            ]
        if self.in_mask is None:
            self.in_mask = np.zeros((0, n), dtype=bool)
        self.in_mask = np.asarray(self.in_mask)
        if self.in_mask.shape != (len(self.references), n):
            raise InputError(
                f"{self.location}: 'in_mask' has shape {self.in_mask.shape}; expected one row per "
                f"reference model and one column per record, ({len(self.references)}, {n})"
            )
        masks = []
        for reference, source, row in zip(self.references, self.reference_sources, self.in_mask):
            _check_same_records(reference, source, self.target, target_source)
            masks.append(_as_mask(row, source, "in_mask", n))
        self.in_mask = np.array(masks, dtype=bool).reshape(len(self.references), n)

    @property
    def n_references(self) -> int:
        return len(self.in_mask)

    def drop_references(self) -> None:
        """Free the reference captures once the attacks have scored the bundle; in_mask and the count stay."""
        self.references = []

    @property
    def n_perturbed(self) -> int:
        return len(self.perturbed)

    def reference_phi(self) -> np.ndarray:
        """LiRA's signal phi of every reference capture, float64 [K, n], computed one model at a time.

        Stacking the logits first would hold several [K, n, C] float64 copies.
        """
        labels = self.target.labels
        rows = [logit_scaled_confidence(reference.logits, labels) for reference in self.references]
        return np.stack(rows) if rows else np.zeros((0, len(self.target)))

    def reference_logits(self) -> np.ndarray:
        """Stack the reference models' logits: float32 [K, n, C]."""
        return np.stack([reference.logits for reference in self.references])

    def require_references(self, attack: str, in_models: int = 0, out_models: int = 0) -> None:
        """Raise InputError unless every record is IN for `in_models` and OUT for `out_models` references.

        The message names the bundle, the first record that falls short and
        how many records do.
        """
        if self.n_references == 0:
            raise InputError(
                f"{self.location}: attack '{attack}' needs reference models, but the bundle has no "
                "reference-<k>.npz files; run the audit with reference models (--reference-models K) or "
                "choose an attack that needs none (loss, confidence, entropy, modified-entropy, label-gap)"
            )
        for kind, counts, needed in (
            ("IN", self.in_mask.sum(axis=0), in_models),
            ("OUT", (~self.in_mask).sum(axis=0), out_models),
        ):
            short = counts < needed
            if not short.any():
                continue
            row = _first_row(short)
            verb = "trained on" if kind == "IN" else "left out"
            raise InputError(
                f"{self.location}: attack '{attack}' needs at least {needed} reference model(s) that "
                f"{verb} each record, but {int(short.sum())} records have fewer (first: record_id "
                f"{self.target.record_id[row]} at row {row}, {kind} for {int(counts[row])} of "
                f"{self.n_references}); fix the 'in_mask' fields so that every record is IN for some "
                "reference models and OUT for others"
            )


def load_bundle(directory: str | Path) -> CaptureBundle:
    """Read and check a capture bundle directory.

    Raises InputError, naming the file and field, for a missing target or
    member field, a reference without in_mask, reference file names that are
    not reference-<k>.npz, and captures whose records, labels, classes or
    backend differ from the target's.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: capture bundle directory not found")
    target_path = directory / TARGET_FILE
    if not target_path.is_file():
        raise InputError(
            f"{directory}: '{TARGET_FILE}' not found; a capture bundle needs the target's capture file "
            "with a bool 'member' field"
        )
    target, target_extras = load_capture(target_path)
    if "member" not in target_extras:
        raise InputError(
            f"{target_path}: field 'member' is missing; the target capture of a bundle marks the "
            "target's training records with a bool 'member' field"
        )

    numbered = _numbered_files(directory, "reference", REFERENCE_PATTERN, "k", "reference model")
    references, in_masks, sources = [], [], []
    for k in sorted(numbered):
        path = numbered[k]
        reference, extras = load_capture(path)
        if "in_mask" not in extras:
            raise InputError(
                f"{path}: field 'in_mask' is missing; each reference capture needs a bool 'in_mask' "
                "marking the records its model trained on"
            )
        _check_same_records(reference, str(path), target, str(target_path))
        references.append(reference)
        in_masks.append(_as_mask(extras["in_mask"], str(path), "in_mask", len(reference)))
        sources.append(str(path))

    perturbed_files = _numbered_files(directory, "perturbed", PERTURBED_PATTERN, "j", "perturbed copy")
    perturbed = []
    for j in sorted(perturbed_files):
        capture, _ = load_capture(perturbed_files[j])
        _check_same_records(capture, str(perturbed_files[j]), target, str(target_path))
        perturbed.append(capture)

    groups = {
        key[len(GROUP_PREFIX):]: values for key, values in target_extras.items() if key.startswith(GROUP_PREFIX)
    }
    logger.info(
        "%s: loaded the target, %d reference captures and %d perturbed captures",
        directory, len(references), len(perturbed),
    )
    return CaptureBundle(
        target=target,
        member=target_extras["member"],
        references=references,
        in_mask=np.array(in_masks, dtype=bool).reshape(len(references), len(target)),
        location=str(directory),
        reference_sources=sources,
        groups=groups,
        perturbed=perturbed,
    )


def _numbered_files(directory: Path, stem: str, pattern: re.Pattern, letter: str, noun: str) -> dict[int, Path]:
    """Map each number to its `<stem>-<number>.npz` file, rejecting other names, repeats and gaps."""
    numbered: dict[int, Path] = {}
    for path in sorted(directory.glob(f"{stem}-*.npz")):
        match = pattern.fullmatch(path.name)
        if match is None:
            raise InputError(f"{path}: {stem} file names must be {stem}-<{letter}>.npz with an integer {letter}")
        number = int(match.group(1))
        if number in numbered:
            raise InputError(
                f"{path}: {noun} {number} also appears as {numbered[number]}; keep one file per {letter}"
            )
        numbered[number] = path
    missing = sorted(set(range(len(numbered))) - set(numbered))
    if missing:
        last = max(numbered)
        raise InputError(
            f"{directory / f'{stem}-{missing[0]}.npz'}: {noun} capture not found, but {stem}-{last}.npz "
            f"exists; number the {stem} captures {stem}-0.npz, {stem}-1.npz, ... without gaps"
        )
    return numbered
