"""PATE: a student that learns only from population records labelled by a noisy vote of teachers.

The training records (the members, for the target) are split into disjoint
partitions, one per teacher, and each teacher trains on its own. Each
population record then gets the label that wins the teachers' vote after
Gaussian noise of standard deviation sigma is added to every class's count
(the GNMax aggregator of Papernot et al., "Scalable Private Learning with
PATE", ICLR 2018). The student, the model that ships, trains on those
population records and labels only.

Privacy cost: one record is in one partition, so it changes one teacher's
vote, which moves two class counts by one each: the vote histogram has L2
sensitivity sqrt(2). Each query is therefore a Gaussian mechanism with noise
multiplier sigma / sqrt(2), and the cost of all queries is their composition,
computed by dp-accounting's RDP accountant. This is the data-independent
bound. dp-accounting 0.6.0 has no data-dependent (smooth sensitivity) PATE
analysis, so the tighter bound that uses the teachers' agreement is not
reported.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

BOUND = "data-independent"


@dataclass
class PateLabels:
    """The noisy votes on the population records, and the partitions of the training records behind them."""

    labels: np.ndarray  # int64 [m], the noisy-argmax label of each population record
    votes: np.ndarray  # int64 [m, classes], the teachers' vote counts before noise
    partitions: list[np.ndarray]  # row indices of the training records, one disjoint array per teacher


def partition_records(n_records: int, teachers: int, seed: int) -> list[np.ndarray]:
    """Split rows 0..n-1 at random into `teachers` disjoint, sorted partitions whose sizes differ by at most one."""
    if teachers > n_records:
        raise ValueError(f"{teachers} teachers need at least {teachers} training records, got {n_records}")
    order = np.random.default_rng(seed).permutation(n_records)
    return [np.sort(part) for part in np.array_split(order, teachers)]


def noisy_argmax(votes: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Return argmax(votes + N(0, sigma^2)) per row, with fresh noise for every count."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=votes.shape)
    return np.argmax(votes + noise, axis=1).astype(np.int64)


def pate_epsilon(sigma: float, queries: int, delta: float) -> float:
    """Return the data-independent epsilon at `delta` of `queries` GNMax votes with noise sigma."""
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / math.sqrt(2.0)), queries)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def label_population(train_teacher, x: np.ndarray, y: np.ndarray, population_x: np.ndarray, n_classes: int,
                     teachers: int, sigma: float, seed: int) -> PateLabels:
    """Train one teacher per partition of (x, y) and label `population_x` by their noisy vote.

    `train_teacher(x, y, index)` returns a trained Keras model for the
    partition of teacher `index`.
    """
    from edgemia._stderr import native_stderr_to_log

    partitions = partition_records(len(x), teachers, seed)
    votes = np.zeros((len(population_x), n_classes), dtype=np.int64)
    for index, rows in enumerate(partitions):
        teacher = train_teacher(x[rows], y[rows], index)
        with native_stderr_to_log("TensorFlow inference"):
            predicted = np.argmax(teacher.predict(population_x, batch_size=1024, verbose=0), axis=1)
        votes[np.arange(len(population_x)), predicted] += 1
    labels = noisy_argmax(votes, sigma, seed + 1)
    return PateLabels(labels=labels, votes=votes, partitions=partitions)


def pate_summary(result: PateLabels, sigma: float, delta: float, population_ids: np.ndarray | None,
                 training_ids: np.ndarray | None) -> dict:
    """Return the report's entry for a PATE student: the vote, its privacy cost, and which records it used."""
    queries = len(result.labels)
    plurality = np.argmax(result.votes, axis=1)
    summary = {
        "method": "pate",
        "teachers": len(result.partitions),
        "partition_sizes": [int(len(rows)) for rows in result.partitions],
        "noise_sigma": sigma,
        "queries": queries,
        "noisy_label_agrees_with_plurality": float(np.mean(result.labels == plurality)) if queries else None,
        "epsilon": pate_epsilon(sigma, queries, delta),
        "delta": delta,
        "epsilon_bound": BOUND,
        "accountant": f"dp_accounting.rdp.RdpAccountant: {queries} compositions of a Gaussian mechanism with "
                      f"noise multiplier sigma/sqrt(2) = {sigma / math.sqrt(2.0):.4g}",
    }
    if population_ids is not None:
        summary["student_record_ids"] = [int(i) for i in population_ids]
    if training_ids is not None:
        summary["teacher_record_ids"] = [[int(i) for i in training_ids[rows]] for rows in result.partitions]
    return summary
