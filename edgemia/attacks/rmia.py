"""Robust Membership Inference Attack, RMIA (Zarifzadeh et al., "Low-Cost High-Power
Membership Inference Attacks", ICML 2024).

The signal is the probability that a model gives the true label, p(x|theta).
Reference models estimate how likely that probability is without the record
being special, Pr(x) = the mean of p(x|theta') over reference models, and a
record x is compared with population records z through

    LR(x, z) = [p(x|theta) / Pr(x)] / [p(z|theta) / Pr(z)]
    score(x) = the fraction of z with LR(x, z) > gamma.

The population is the target's non-members, each compared with every other
one but not with itself. The comparison sorts the population's ratios once
and counts, for each record, the ratios below its own by binary search. For
n records and m population records that takes O((n + m) log m) time and
O(n + m) memory, with no n-by-m matrix. Online RMIA averages over all reference models.
Offline RMIA uses only the OUT models and corrects for their missing IN half
with Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2, where a is chosen from a grid
by attacking each reference model with the others (leave-one-out).

With one query per record, as here, the number of population records that x
dominates grows with the ratio p(x|theta) / Pr(x), so gamma only changes
which records tie. The pairwise form matters when several augmented queries
vote, which edgemia does not do.
All probabilities are handled as logarithms, exact where p rounds to 1.

Options (see edgemia.attacks.options): `rmia.gamma` (default 1) and
`rmia.a`, offline RMIA's correction: `calibrate` (default) or a fixed value
in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.options import AttackOption, positive_float, unit_interval_or
from edgemia.attacks.signals import log_other_probability, log_true_probability, logit_scaled_confidence
from edgemia.errors import InputError
from edgemia.stats.roc import auc, roc_curve

ONLINE = "rmia"
OFFLINE = "rmia-offline"
DESCRIPTIONS = {
    ONLINE: "RMIA online: fraction of non-member records z with "
    "[p(x)/Pr(x)] / [p(z)/Pr(z)] > gamma, Pr from all reference models",
    OFFLINE: "RMIA offline: as RMIA, with Pr from the OUT reference models and the linear "
    "correction a, chosen by leave-one-reference-out",
}
DEFAULT_GAMMA = 1.0
A_GRID = tuple(round(0.1 * i, 1) for i in range(11))
FAMILY = "rmia"
CALIBRATE = "calibrate"
# Reference models that take turns as the target when a is calibrated. The paper
# attacks one, and more average out the noise of a single model. The cap bounds
# the cost at 11 x 8 ROC curves, however many reference models there are.
MAX_CALIBRATION_TARGETS = 8
OPTIONS = {
    "gamma": AttackOption(
        DEFAULT_GAMMA, positive_float, "a record dominates a population record z when LR(x, z) > gamma"
    ),
    "a": AttackOption(
        CALIBRATE, unit_interval_or(CALIBRATE),
        "offline correction a: calibrate (leave-one-reference-out over 0, 0.1, ..., 1) or a value in [0, 1]",
    ),
}


@dataclass
class _ReferenceMeans:
    """Per-record means of the selected reference models' p and 1 - p, the part of Pr(x) without a."""

    mean_other: np.ndarray  # mean of 1 - p, exact where p rounds to 1
    log_mean_p: np.ndarray  # log of the mean of p, exact where p is tiny


@dataclass
class _ReferenceProbabilities:
    """log p and 1 - p of every reference model on every record, [K, n], computed once."""

    log_p: np.ndarray
    other: np.ndarray

    @classmethod
    def from_phi(cls, reference_phi: np.ndarray) -> _ReferenceProbabilities:
        return cls(log_p=log_true_probability(reference_phi), other=np.exp(log_other_probability(reference_phi)))


def _reference_means(probabilities: _ReferenceProbabilities, mask: np.ndarray) -> _ReferenceMeans:
    counts = mask.sum(axis=0)
    if (counts == 0).any():
        raise ValueError("every record needs at least one selected reference model")
    mean_other = np.where(mask, probabilities.other, 0.0).sum(axis=0) / counts
    log_p = np.where(mask, probabilities.log_p, -np.inf)
    top = log_p.max(axis=0)
    log_mean_p = top + np.log(np.exp(log_p - top).sum(axis=0)) - np.log(counts)
    return _ReferenceMeans(mean_other=mean_other, log_mean_p=log_mean_p)


def _log_prior(means: _ReferenceMeans, a: float) -> np.ndarray:
    half_weight = (1.0 + a) / 2.0
    # Where Pr(x) is near 1: Pr = 1 - ((1 + a) / 2) * mean(1 - p), without cancellation.
    shortfall = half_weight * means.mean_other
    near_one = np.log1p(-np.minimum(shortfall, 0.5))
    # Elsewhere: the sum of the two terms, in logarithms so that tiny p keep their value.
    with np.errstate(divide="ignore"):
        log_sum = np.logaddexp(np.log(half_weight) + means.log_mean_p, np.log((1.0 - a) / 2.0))
    return np.where(shortfall < 0.5, near_one, log_sum)


def log_reference_probability(reference_phi: np.ndarray, mask: np.ndarray, a: float = 1.0) -> np.ndarray:
    """log Pr(x) = log(((1 + a) * mean p + (1 - a)) / 2), the mean over the selected references.

    `reference_phi` and `mask` are [K, n]. With a = 1 this is the log of the
    plain mean. Every record needs at least one selected reference.
    """
    return _log_prior(_reference_means(_ReferenceProbabilities.from_phi(reference_phi), mask), a)


def pairwise_scores(log_ratio: np.ndarray, population: np.ndarray, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Fraction of population records z (z != x) with log_ratio[x] - log_ratio[z] > log(gamma).

    `log_ratio` is log(p(x|theta) / Pr(x)) for every record and `population`
    a bool mask of the records used as z.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    population = np.asarray(population, dtype=bool)
    size = int(population.sum())
    if size < 2:
        raise InputError(f"RMIA needs at least 2 population (non-member) records, got {size}")
    sorted_population = np.sort(log_ratio[population])
    dominated = np.searchsorted(sorted_population, log_ratio - np.log(gamma), side="left")
    if gamma < 1:
        # z = x itself: log_ratio[x] - log_ratio[x] = 0 exceeds log(gamma) < 0.
        dominated = dominated - population
    comparisons = np.where(population, size - 1, size)
    return dominated / comparisons


def calibrate_offline_a(
    reference_phi: np.ndarray, in_mask: np.ndarray, gamma: float = DEFAULT_GAMMA, grid=A_GRID
) -> tuple[float, dict[float, float]]:
    """Choose offline RMIA's a: the grid value with the best mean AUC over leave-one-out attacks.

    Each of the first MAX_CALIBRATION_TARGETS reference models j in turn
    plays the target. Its IN records are the members, its OUT records the
    non-members and population, and the other models' OUT signals give
    Pr(x). Records that no other model left out are skipped for that j.
    Returns the chosen a and the mean AUC of every grid value.
    """
    n_references = reference_phi.shape[0]
    probabilities = _ReferenceProbabilities.from_phi(reference_phi)
    totals = dict.fromkeys(grid, 0.0)
    evaluated = 0
    for j in range(min(n_references, MAX_CALIBRATION_TARGETS)):
        others = np.arange(n_references) != j
        out_others = ~in_mask[others]
        usable = out_others.any(axis=0)
        members = in_mask[j, usable]
        if members.all() or members.sum() == 0 or (~members).sum() < 2:
            continue
        log_p = probabilities.log_p[j, usable]
        others_probabilities = _ReferenceProbabilities(
            log_p=probabilities.log_p[others][:, usable], other=probabilities.other[others][:, usable]
        )
        means = _reference_means(others_probabilities, out_others[:, usable])
        for a in grid:
            scores = pairwise_scores(log_p - _log_prior(means, a), ~members, gamma)
            totals[a] += auc(roc_curve(scores, members))
        evaluated += 1
    if evaluated == 0:
        raise InputError(
            "offline RMIA cannot calibrate a: no reference model has members and non-members that "
            "other reference models left out; use at least 4 reference models"
        )
    mean_auc = {a: total / evaluated for a, total in totals.items()}
    best = max(grid, key=lambda a: mean_auc[a])
    return float(best), mean_auc


def _signals(bundle: CaptureBundle, attack: str) -> tuple[np.ndarray, np.ndarray]:
    """Return log p of the target [n] and phi of the references [K, n], after checking the population."""
    n_nonmembers = int((~bundle.member).sum())
    if n_nonmembers < 2:
        raise InputError(
            f"{bundle.location}: attack '{attack}' compares records with the target's non-members "
            f"and needs at least 2 of them, got {n_nonmembers}"
        )
    labels = bundle.target.labels
    return (
        log_true_probability(logit_scaled_confidence(bundle.target.logits, labels)),
        bundle.reference_phi(),
    )


def score_online(
    bundle: CaptureBundle, gamma: float = DEFAULT_GAMMA, a: float | str = CALIBRATE
) -> tuple[np.ndarray, dict]:
    """Return the online RMIA scores of `bundle` and the settings used (`a` is ignored)."""
    bundle.require_references(ONLINE, in_models=1, out_models=1)
    log_p, reference_phi = _signals(bundle, ONLINE)
    all_models = np.ones_like(bundle.in_mask)
    log_ratio = log_p - log_reference_probability(reference_phi, all_models)
    scores = pairwise_scores(log_ratio, ~bundle.member, gamma)
    return scores, {"gamma": gamma, "reference_models": bundle.n_references}


def score_offline(
    bundle: CaptureBundle, gamma: float = DEFAULT_GAMMA, a: float | str = CALIBRATE
) -> tuple[np.ndarray, dict]:
    """Return the offline RMIA scores of `bundle`, with a calibrated on its reference models or given."""
    bundle.require_references(OFFLINE, out_models=1)
    log_p, reference_phi = _signals(bundle, OFFLINE)
    parameters: dict = {"gamma": gamma}
    if a == CALIBRATE:
        try:
            a, mean_auc = calibrate_offline_a(reference_phi, bundle.in_mask, gamma)
        except InputError as exc:
            raise InputError(f"{bundle.location}: attack '{OFFLINE}': {exc}") from exc
        parameters.update(a=a, a_calibration_auc=mean_auc[a])
    else:
        parameters["a"] = float(a)
    log_ratio = log_p - log_reference_probability(reference_phi, ~bundle.in_mask, float(a))
    scores = pairwise_scores(log_ratio, ~bundle.member, gamma)
    parameters["reference_models"] = bundle.n_references
    return scores, parameters
