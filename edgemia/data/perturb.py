"""Perturbed copies of records, the queries of the label-only augmentation attack.

Images ([n, height, width, channels]) get the four one-pixel translations
(right, left, down, up), with the vacated row or column set to 0, as in the
translation attack of Choquette-Choo et al. (ICML 2021) with d = 1. Tabular
records ([n, features]) get NOISE_COPIES copies with Gaussian noise of
standard deviation NOISE_STD added to every feature, drawn from the seed.
edgemia's tabular data sets are standardized, so that is 0.1 standard
deviations of each feature. Labels, record ids and subgroups stay as they are.
"""

from __future__ import annotations

import numpy as np

from edgemia.data.records import Records

NOISE_STD = 0.1
NOISE_COPIES = 8
_NOISE_STREAM = 0xA06


def _shift(x: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Translate images [n, h, w, c] by (rows, columns) pixels, filling with 0."""
    shifted = np.zeros_like(x)
    height, width = x.shape[1], x.shape[2]
    source_rows = slice(max(0, -rows), height - max(0, rows))
    target_rows = slice(max(0, rows), height - max(0, -rows))
    source_columns = slice(max(0, -columns), width - max(0, columns))
    target_columns = slice(max(0, columns), width - max(0, -columns))
    shifted[:, target_rows, target_columns] = x[:, source_rows, source_columns]
    return shifted


def describe_perturbation(records: Records) -> str:
    """Return how perturbed_copies perturbs these records, for reports and capture metadata."""
    if records.x.ndim == 4:
        return "one-pixel translations right, left, down and up, vacated pixels set to 0"
    return f"{NOISE_COPIES} copies with Gaussian noise of standard deviation {NOISE_STD} on every feature"


def perturbed_copies(records: Records, seed: int) -> list[Records]:
    """Return the perturbed copies of `records` (see the module docstring); `seed` draws the noise."""
    if records.x.ndim == 4:
        xs = [_shift(records.x, rows, columns) for rows, columns in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    else:
        rng = np.random.default_rng([_NOISE_STREAM, seed])
        xs = [
            (records.x + rng.normal(0.0, NOISE_STD, records.x.shape)).astype(np.float32)
            for _ in range(NOISE_COPIES)
        ]
    return [
        Records(x=x, y=records.y, record_id=records.record_id, groups=dict(records.groups)) for x in xs
    ]
