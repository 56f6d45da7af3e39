"""A team's own records: a CSV, Parquet or NPZ file with named label, feature and group columns.

The records are split like the built-in data sets: a stratified half are
members, the rest non-members, after an optional population fraction is set
aside. Numeric features are standardized with the members' mean and standard
deviation, and text (categorical) features are one-hot encoded. Group
columns become subgroup attributes (`group_<name>` fields and report
slices); they are features only when also listed in `features`.

Every check names the file, the column and the value, and raises InputError:
a missing column, a missing value, or a label that is not one of `classes`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemia.data.builtin import AuditData
from edgemia.data.builtin import _split as split_rows
from edgemia.data.health import standardize_on
from edgemia.data.records import Records, validate_records
from edgemia.errors import InputError

logger = logging.getLogger(__name__)

# A text column whose values are numbers in all but at most this share of the
# rows is probably a numeric column with typos, not a category.
NUMERIC_TYPO_SHARE = 0.05

TABLE_SUFFIXES = (".csv", ".parquet", ".npz")


@dataclass(frozen=True)
class RecordsSource:
    """Location of a team's records file and the meaning of its columns."""

    path: Path
    label: str
    features: tuple[str, ...] = ()  # empty: every column except the label, id and group columns
    groups: tuple[str, ...] = ()
    id_column: str | None = None  # None: the row number is the record id
    classes: tuple = ()  # the model's classes, in output order; empty: the labels found, sorted
    name: str = ""  # data set name in the report; empty: the file's stem
    member: str | None = None  # column that is true for the model's training records (exported models only)
    description: str = field(default="", compare=False)

    @property
    def dataset_name(self) -> str:
        return self.name or Path(self.path).stem


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    """Read every column of a CSV, Parquet or NPZ file as one numpy array per column name."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path}: unsupported records file type '{suffix}'; use one of {', '.join(TABLE_SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"{path}: records file not found")
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise InputError(
                    f"{path}: contains object arrays, which edgemia does not unpickle; save text columns "
                    "as fixed-width strings (numpy dtype 'U', e.g. array.astype(str))"
                ) from exc
            raise InputError(f"{path}: cannot read the NPZ file ({exc})") from exc
        except OSError as exc:
            raise InputError(f"{path}: cannot read the NPZ file ({exc})") from exc

    import pandas as pd

    try:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the {suffix[1:].upper()} file ({exc})") from exc
    columns = {}
    for name in frame.columns:
        series = frame[name]
        values = series.to_numpy(dtype=object if series.dtype == object or str(series.dtype) in ("string", "str")
                                 else None)
        if values.dtype == object or values.dtype.kind in "USO":
            values = np.array([None if _is_missing(v) else v for v in values], dtype=object)
        columns[str(name)] = values
    return columns


def _is_missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False


def _is_infinite(value) -> bool:
    return isinstance(value, (float, np.floating)) and bool(np.isinf(value))


def _row_mask(values: np.ndarray, test, float_test) -> np.ndarray:
    """Return a bool mask of the rows with a value that passes `test` (objects) or `float_test` (floats)."""
    rows = values.reshape(len(values), -1)
    if values.dtype == object:
        return np.array([any(test(v) for v in row) for row in rows], dtype=bool)
    if values.dtype.kind == "f":
        return float_test(rows).any(axis=1)
    return np.zeros(len(values), dtype=bool)


def _column(columns: dict[str, np.ndarray], path: Path, name: str, role: str) -> np.ndarray:
    if name not in columns:
        shown = ", ".join(list(columns)[:20]) + (", ..." if len(columns) > 20 else "")
        raise InputError(
            f"{path}: column '{name}' ({role}) not found; the file's columns are: {shown}. "
            f"Fix {role} in the configuration"
        )
    values = columns[name]
    checks = (
        (_row_mask(values, _is_missing, np.isnan), "missing", "impute or drop those rows before the audit"),
        (_row_mask(values, _is_infinite, np.isinf), "infinite", "fix or drop those rows before the audit"),
    )
    for rows, kind, fix in checks:
        if rows.any():
            count = int(rows.sum())
            raise InputError(
                f"{path}: column '{name}' ({role}) has {count} {kind} value{'s' if count > 1 else ''} (first at "
                f"row {int(np.flatnonzero(rows)[0])}); {fix}"
            )
    return values


def _label_indices(values: np.ndarray, classes: tuple, path: Path, column: str) -> tuple[np.ndarray, list]:
    """Map label values to class indices in the order of `classes` (or of the sorted labels found)."""
    found = list(dict.fromkeys(values.tolist()))
    texts = [str(value) for value in classes]
    repeated = sorted({text for text in texts if texts.count(text) > 1})
    if repeated:
        raise InputError(f"{path}: records.classes lists {', '.join(repr(text) for text in repeated)} more than "
                         "once; give each class once, in the model's output order")
    if not classes:
        classes = tuple(sorted(found, key=lambda v: (str(type(v)), v)))
    # Labels and configured classes may differ in type (1 in the file, "1" in TOML): compare as text.
    index = {str(value): i for i, value in enumerate(classes)}
    unknown = [value for value in found if str(value) not in index]
    if unknown:
        rows = np.flatnonzero([str(v) == str(unknown[0]) for v in values])
        raise InputError(
            f"{path}: column '{column}' (records.label) has {len(unknown)} "
            f"{'classes' if len(unknown) > 1 else 'class'} that the model lacks: "
            f"{', '.join(repr(v) for v in unknown[:10])} (first at row {int(rows[0])}); the model's classes "
            f"are {', '.join(map(str, classes))}. Drop those rows or fix records.classes"
        )
    if len(classes) < 2:
        raise InputError(f"{path}: column '{column}' (records.label) has a single class; an audit needs at least 2")
    return np.array([index[str(v)] for v in values], dtype=np.int64), list(classes)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _warn_numeric_typos(text: np.ndarray, name: str, path: Path) -> None:
    """Warn when a text feature column contains numbers in all but a few rows: it is one-hot encoded all the same."""
    numeric = np.array([_is_number(value) for value in text.tolist()], dtype=bool)
    others = np.flatnonzero(~numeric)
    if numeric.any() and 0 < len(others) <= NUMERIC_TYPO_SHARE * len(text):
        logger.warning(
            "%s: column '%s' (records.features) contains numbers except in %d row%s (first %r at row %d), so it is "
            "treated as a category and one-hot encoded; fix those values if the column is numeric",
            path, name, len(others), "s" if len(others) > 1 else "", str(text[others[0]]), int(others[0]),
        )


def _feature_matrix(columns: dict[str, np.ndarray], names: list[str], path: Path) -> tuple[np.ndarray, list[str]]:
    """Stack the feature columns; text columns become one-hot columns named column=value."""
    parts, feature_names = [], []
    for name in names:
        values = _column(columns, path, name, "records.features")
        if values.dtype == object or values.dtype.kind in "USb":
            if values.dtype.kind == "b":
                parts.append(values.astype(np.float64).reshape(len(values), 1))
                feature_names.append(name)
                continue
            text = np.array([str(v) for v in values])
            _warn_numeric_typos(text, name, path)
            categories = sorted(set(text.tolist()))
            parts.append(np.stack([(text == c).astype(np.float64) for c in categories], axis=1))
            feature_names += [f"{name}={c}" for c in categories]
        else:
            parts.append(values.astype(np.float64).reshape(len(values), -1))
            feature_names.append(name)
    return np.concatenate(parts, axis=1), feature_names


def load_table(source: RecordsSource) -> tuple[Records, list, list[str]]:
    """Read `source` into records with raw (unstandardized) features.

    Returns the records, the class names in output order and the feature names.
    """
    path = Path(source.path)
    columns = _read_columns(path)
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{path}: the arrays have different lengths ({lengths}); every column needs one row per record")

    labels = _column(columns, path, source.label, "records.label")
    groups = {name: _column(columns, path, name, "records.groups") for name in source.groups}
    record_id = (
        _column(columns, path, source.id_column, "records.id") if source.id_column
        else np.arange(len(labels), dtype=np.int64)
    )
    roles = {source.label: "records.label", source.id_column: "records.id", source.member: "records.member"}
    for name in source.features:
        if name in roles:
            raise InputError(f"{path}: records.features lists '{name}', which is the {roles[name]} column; a model "
                             "must not see it, so remove it from records.features")
    features = list(source.features) or [
        name for name in columns if name not in {source.label, source.id_column, source.member, *source.groups}
    ]
    if not features:
        raise InputError(f"{path}: no feature columns; list them in records.features")
    y, classes = _label_indices(labels, tuple(source.classes), path, source.label)
    x, feature_names = _feature_matrix(columns, features, path)
    if x.ndim == 2 and len(features) == 1 and columns[features[0]].ndim > 2:
        x = columns[features[0]].astype(np.float32)  # one NPZ array of images keeps its shape
    if record_id.dtype.kind not in "iu":
        raise InputError(f"{path}: column '{source.id_column}' (records.id) must hold integers, "
                         f"got {record_id.dtype}")
    records = Records(
        x=x.astype(np.float32) if x.dtype != np.float32 else x,
        y=y,
        record_id=record_id.astype(np.int64),
        groups={name: np.array([str(v) for v in values]) if values.dtype == object else values
                for name, values in groups.items()},
    )
    return validate_records(records, str(path)), classes, feature_names


def load_table_data(source: RecordsSource, seed: int, population: float = 0.0) -> AuditData:
    """Load `source` and split it into members, non-members and population records with `seed`.

    With a member column, that column decides the members and nothing is set aside.

    Tabular features are standardized with the members' statistics, as for
    the built-in tables, unless a member column marks the records that a
    model was already trained on: that model gets the features as stored, as
    an exported model does. Image arrays from an NPZ file are kept as they are.
    """
    records, classes, feature_names = load_table(source)
    if source.member is not None:
        # The model was trained already: its training records are the members.
        if population:
            raise InputError(f"{source.path}: records.member fixes the members, so the population fraction "
                             f"must be 0, got {population}")
        member = read_member_column(source)
        members, nonmembers, held_out = np.flatnonzero(member), np.flatnonzero(~member), np.zeros(0, np.int64)
    else:
        members, nonmembers, held_out = split_rows(records.y, seed, population)
    if records.x.ndim == 2 and source.member is None:
        records.x = standardize_on(records.x, members)
    description = source.description or (
        f"{Path(source.path).name}: {len(records)} records, {len(feature_names)} features, label "
        f"'{source.label}' with classes {', '.join(map(str, classes))}"
    )
    return AuditData(
        name=source.dataset_name,
        description=description,
        members=records.subset(members),
        nonmembers=records.subset(nonmembers),
        n_classes=len(classes),
        seed=seed,
        population=records.subset(held_out) if held_out.size else None,
    )


def read_member_column(source: RecordsSource) -> np.ndarray:
    """Return the bool member mask from the column `source.member` (true, 1 or "true" for members)."""
    path = Path(source.path)
    values = _column(_read_columns(path), path, source.member, "records.member")
    text = np.array([str(v).strip().lower() for v in values])
    valid = {"true": True, "1": True, "false": False, "0": False, "yes": True, "no": False, "1.0": True, "0.0": False}
    invalid = ~np.isin(text, list(valid))
    if invalid.any():
        row = int(np.flatnonzero(invalid)[0])
        raise InputError(
            f"{path}: column '{source.member}' (records.member) has value {values[row]!r} at row {row}; "
            "expected true or false (or 1 and 0)"
        )
    member = np.array([valid[t] for t in text], dtype=bool)
    if member.all() or not member.any():
        raise InputError(
            f"{path}: column '{source.member}' (records.member) marks {'every' if member.all() else 'no'} record "
            "as a member; an audit needs both members and non-members"
        )
    return member
