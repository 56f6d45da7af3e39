"""Synthetic captures and bundles whose LiRA signal phi is chosen by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemia.attacks.bundle import CaptureBundle, perturbed_file_name, reference_file_name
from edgemia.runtime.capture import Capture, save_capture


def capture_from_phi(phi: np.ndarray, backend: str = "native") -> Capture:
    """A two-class capture with logits [0, phi] and label 1, so that log p_1 - log p_0 = phi."""
    phi = np.asarray(phi, dtype=np.float64)
    n = phi.size
    logits = np.zeros((n, 2), dtype=np.float64)
    logits[:, 1] = phi
    return Capture(
        logits=logits,  # float64 keeps phi exact; capture files store float32
        labels=np.ones(n, dtype=np.int64),
        record_id=np.arange(n, dtype=np.int64),
        raw=logits.astype(np.float32),
        meta={"backend": backend, "numerics": "litert"},
    )


def half_in_masks(n_references: int, n_records: int, rng: np.random.Generator) -> np.ndarray:
    """bool [K, n] with every column True in exactly K/2 rows."""
    column = np.repeat((np.arange(n_references) < n_references // 2)[:, np.newaxis], n_records, axis=1)
    return rng.permuted(column, axis=0)


def bundle_from_phi(target_phi, member, reference_phi, in_mask) -> CaptureBundle:
    return CaptureBundle(
        target=capture_from_phi(target_phi),
        member=member,
        references=[capture_from_phi(row) for row in reference_phi],
        in_mask=in_mask,
    )


def write_bundle(directory: Path, bundle: CaptureBundle) -> Path:
    """Write `bundle` as target.npz and reference-<k>.npz files into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    save_capture(directory / "target.npz", bundle.target, member=bundle.member, groups=bundle.groups)
    for k, (reference, mask) in enumerate(zip(bundle.references, bundle.in_mask)):
        save_capture(directory / reference_file_name(k), reference, in_mask=mask)
    for j, capture in enumerate(bundle.perturbed):
        save_capture(directory / perturbed_file_name(j), capture)
    return directory


def gaussian_population(n_records: int, n_references: int, seed: int, shift=1.0, noise=1.0, spread=3.0):
    """Records of varying difficulty: phi ~ N(mu_i + shift * IN, noise^2), mu_i ~ N(0, spread^2).

    Returns (target_phi, member, reference_phi, in_mask).
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, spread, n_records)
    member = rng.permutation(np.arange(n_records) < n_records // 2)
    in_mask = half_in_masks(n_references, n_records, rng)
    target_phi = difficulty + shift * member + rng.normal(0.0, noise, n_records)
    reference_phi = difficulty + shift * in_mask + rng.normal(0.0, noise, (n_references, n_records))
    return target_phi, member, reference_phi, in_mask


def multiclass_bundle(n_records: int, n_references: int, n_classes: int, seed: int, boost: float) -> CaptureBundle:
    """Fixed seeded multi-class captures: members and IN reference models add `boost` to the true logit."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_records)
    base = rng.normal(0.0, 2.0, (n_records, n_classes))
    member = rng.permutation(np.arange(n_records) < n_records // 2)
    in_mask = half_in_masks(n_references, n_records, rng)

    def capture(shift: np.ndarray) -> Capture:
        logits = base + rng.normal(0.0, 1.0, base.shape)
        logits[np.arange(n_records), labels] += shift
        return Capture(
            logits=logits.astype(np.float32), labels=labels, record_id=np.arange(n_records),
            raw=logits.astype(np.float32), meta={"backend": "native"},
        )

    return CaptureBundle(
        target=capture(boost * member),
        member=member,
        references=[capture(boost * row) for row in in_mask],
        in_mask=in_mask,
    )
