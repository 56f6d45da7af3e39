"""Records files: the `.npz` contract between data preparation and capture.

A records file contains `x` (float32 `[n, ...]`), `y` (int64 `[n]`), an optional
`record_id` (`[n]`, unique) and optional subgroup labels `group_<attribute>`
(`[n]`). Loading validates every field and names the first bad row.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemia.errors import RecordsError
from edgemia.util import atomic_save_npz

logger = logging.getLogger(__name__)

GROUP_PREFIX = "group_"


@dataclass
class Records:
    """Labelled records with stable ids, in one fixed order."""

    x: np.ndarray  # float32 [n, ...]
    y: np.ndarray  # int64 [n]
    record_id: np.ndarray  # int64 [n], unique
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # attribute -> [n]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def record_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, index: np.ndarray) -> Records:
        """Return the records at `index` (an index or bool mask array), keeping their ids."""
        return Records(
            x=self.x[index],
            y=self.y[index],
            record_id=self.record_id[index],
            groups={name: values[index] for name, values in self.groups.items()},
        )


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def validate_records(records: Records, source: str) -> Records:
    """Check shapes, dtypes, finiteness and id uniqueness; return records in canonical dtypes.

    `source` names the file (or data set) in error messages.
    """
    x, y = records.x, records.y
    if x.ndim < 2:
        raise RecordsError(
            f"{source}: 'x' has shape {x.shape}; expected [n, ...] with one row per record"
        )
    n = x.shape[0]
    if n == 0:
        raise RecordsError(f"{source}: 'x' has no rows; a records file needs at least one record")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise RecordsError(f"{source}: 'x' has dtype {x.dtype}; expected float32 features")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise RecordsError(
                f"{source}: 'x' has NaN or infinite values in {int(bad.sum())} rows "
                f"(first at row {_first_row(bad)}); impute or drop those records"
            )
    float32_max = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore", invalid="ignore"):
        too_large = (np.abs(x.reshape(n, -1)) > float32_max).any(axis=1)
    if too_large.any():
        raise RecordsError(
            f"{source}: 'x' has values beyond the float32 range in {int(too_large.sum())} rows "
            f"(first at row {_first_row(too_large)}); rescale the features"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)

    if y.ndim != 1:
        raise RecordsError(f"{source}: 'y' has shape {y.shape}; expected one label per record, [n]")
    if y.shape[0] != n:
        raise RecordsError(
            f"{source}: 'y' has {y.shape[0]} rows but 'x' has {n} "
            f"(first unmatched row {min(n, y.shape[0])}); both need one row per record"
        )
    if np.issubdtype(y.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            fractional = ~np.isfinite(y) | (y != np.round(y))
        if fractional.any():
            raise RecordsError(
                f"{source}: 'y' has {int(fractional.sum())} non-integer labels "
                f"(first at row {_first_row(fractional)}); labels must be class indices"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise RecordsError(f"{source}: 'y' has dtype {y.dtype}; expected int64 class indices")
    # Checked before the cast, so that huge values are not wrapped into negative ones.
    huge = y > 2**31
    if huge.any():
        raise RecordsError(
            f"{source}: 'y' has {int(huge.sum())} labels above 2^31 "
            f"(first at row {_first_row(huge)}); labels must be class indices 0..C-1"
        )
    y = y.astype(np.int64)
    negative = y < 0
    if negative.any():
        raise RecordsError(
            f"{source}: 'y' has {int(negative.sum())} negative labels "
            f"(first at row {_first_row(negative)}); labels must be class indices 0..C-1"
        )

    record_id = records.record_id
    if record_id.ndim != 1 or record_id.shape[0] != n:
        raise RecordsError(f"{source}: 'record_id' has shape {record_id.shape}; expected [{n}]")
    if not np.issubdtype(record_id.dtype, np.integer):
        raise RecordsError(f"{source}: 'record_id' has dtype {record_id.dtype}; expected integers")
    if record_id.dtype == np.uint64:
        beyond = record_id > np.uint64(np.iinfo(np.int64).max)
        if beyond.any():
            raise RecordsError(
                f"{source}: 'record_id' has {int(beyond.sum())} ids beyond the int64 range "
                f"(first at row {_first_row(beyond)}); renumber the records"
            )
    record_id = record_id.astype(np.int64)
    _, first_index, counts = np.unique(record_id, return_index=True, return_counts=True)
    if (counts > 1).any():
        repeated = np.ones(n, dtype=bool)
        repeated[first_index] = False
        row = _first_row(repeated)
        raise RecordsError(
            f"{source}: 'record_id' repeats id {int(record_id[row])} (first repeat at row {row}); "
            "record ids must be unique"
        )

    groups = {}
    for name, values in records.groups.items():
        if not name:
            raise RecordsError(f"{source}: a field is named '{GROUP_PREFIX}' without an attribute name")
        if values.ndim != 1 or values.shape[0] != n:
            raise RecordsError(
                f"{source}: '{GROUP_PREFIX}{name}' has shape {values.shape}; expected [{n}]"
            )
        if values.dtype == object:
            raise RecordsError(
                f"{source}: '{GROUP_PREFIX}{name}' contains Python objects; store strings or integers"
            )
        check_group_labels(values, source, GROUP_PREFIX + name)
        groups[name] = values
    return Records(x=x, y=y, record_id=record_id, groups=groups)


def check_group_labels(values: np.ndarray, source: str, field_name: str) -> None:
    """Raise RecordsError, naming the field and first row, if a subgroup label is NaN (missing).

    A NaN label equals no value, not even another NaN, so its records would
    silently fall out of every subgroup slice.
    """
    if not np.issubdtype(values.dtype, np.floating):
        return
    missing = np.isnan(values)
    if missing.any():
        count = int(missing.sum())
        raise RecordsError(
            f"{source}: '{field_name}' has {count} missing (NaN) subgroup label{'s' if count > 1 else ''} "
            f"(first at row {_first_row(missing)}); give every record a label, for example a named "
            "'unknown' group, or drop those records"
        )


def check_against_model(
    records: Records, source: str, input_shape: tuple[int, ...], n_classes: int
) -> None:
    """Check that the records fit a model's input shape and output classes."""
    if records.record_shape != tuple(input_shape):
        expected = ", ".join(str(d) for d in input_shape)
        raise RecordsError(
            f"{source}: 'x' has record shape {records.record_shape}, but the model expects "
            f"{tuple(input_shape)}; reshape 'x' to [n, {expected}]"
        )
    out_of_range = records.y >= n_classes
    if out_of_range.any():
        raise RecordsError(
            f"{source}: 'y' has {int(out_of_range.sum())} values outside 0..{n_classes - 1} "
            f"(first at row {_first_row(out_of_range)}); labels must index the model's "
            f"{n_classes} outputs"
        )


def load_records(path: str | Path) -> Records:
    """Read and validate a records file."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        raise RecordsError(f"{source}: is a directory; pass a records file (.npz)")
    if not path.is_file():
        raise RecordsError(f"{source}: records file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise RecordsError(
            f"{source}: not a readable .npz file (no zip header); write records with numpy.savez"
        )

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RecordsError(f"{source}: not a readable .npz file ({exc})") from exc
    except ValueError as exc:
        # allow_pickle=False raises ValueError for object arrays.
        raise RecordsError(
            f"{source}: contains an array that needs pickle to load, which is not allowed ({exc}); "
            "store numeric arrays only"
        ) from exc
    not_arrays = sorted(key for key, value in arrays.items() if not isinstance(value, np.ndarray))
    if not_arrays:
        raise RecordsError(
            f"{source}: members {', '.join(not_arrays)} are not .npy arrays; write records with numpy.savez"
        )

    for key in ("x", "y"):
        if key not in arrays:
            found = ", ".join(sorted(arrays)) or "nothing"
            raise RecordsError(f"{source}: field '{key}' is missing (found: {found})")

    n = arrays["x"].shape[0] if arrays["x"].ndim else 0
    record_id = arrays.get("record_id")
    if record_id is None:
        record_id = np.arange(n, dtype=np.int64)
    groups = {
        key[len(GROUP_PREFIX):]: value for key, value in arrays.items() if key.startswith(GROUP_PREFIX)
    }
    unknown = sorted(set(arrays) - {"x", "y", "record_id"} - {GROUP_PREFIX + g for g in groups})
    if unknown:
        logger.warning("%s: ignoring unknown fields %s", source, ", ".join(unknown))
    records = Records(x=arrays["x"], y=arrays["y"], record_id=record_id, groups=groups)
    return validate_records(records, source)


def save_records(records: Records, path: str | Path) -> None:
    """Write a records file atomically."""
    arrays = {"x": records.x, "y": records.y, "record_id": records.record_id}
    for name, values in records.groups.items():
        arrays[GROUP_PREFIX + name] = values
    atomic_save_npz(path, **arrays)
