"""Likelihood Ratio Attack, LiRA (Carlini et al., "Membership Inference Attacks From First
Principles", IEEE S&P 2022).

For each record, the reference models that trained on it (IN) and those that
did not (OUT) give two samples of the signal phi = log p_y - log(1 - p_y).
LiRA fits a Gaussian to each sample and scores the target's phi by how much
better the IN Gaussian explains it than the OUT one:

    online:  score = log N(phi; mu_in, sigma_in^2) - log N(phi; mu_out, sigma_out^2)
    offline: score = (phi - mu_out) / sigma_out

mu is the median of the reference signals of the record, as in the LiRA
reference code (tensorflow/privacy, research/mi_lira_2021/plot.py). The
offline score is one-sided, as in the paper: its test statistic
Pr[Z < phi] with Z ~ N(mu_out, sigma_out^2) is an increasing function of the
z-score above, so both give the same ROC, and the z-score does not round to 1
for records far above the OUT distribution. (The reference code's offline
score is the two-sided density instead.)

sigma is "pooled" by default: one standard deviation for all records, the
root of the pooled within-record variance of the IN (or OUT) signals. With
few reference models a per-record estimate is noisy, and int8 outputs often
give identical signals in every reference model, hence a zero per-record
deviation. (The reference code's fixed variance is the deviation of all
signals around their grand mean instead, which also counts the spread between
records.) `variance="per-record"` estimates sigma for each record.
"""

from __future__ import annotations

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.signals import logit_scaled_confidence
from edgemia.errors import InputError

ONLINE = "lira-online"
OFFLINE = "lira-offline"
DESCRIPTIONS = {
    ONLINE: "LiRA online: Gaussian likelihood ratio of phi = log p_y - log(1 - p_y) under the "
    "IN and OUT reference models (pooled variance)",
    OFFLINE: "LiRA offline: one-sided z-score of phi under the OUT reference models (pooled variance)",
}
VARIANCES = ("pooled", "per-record")

# NOTE: a floor for per-record standard deviations, so that records whose
# reference signals all tie (common with int8 outputs) give finite scores.
# Its value is a guess; such records dominate the ranking either way.
MIN_PER_RECORD_STD = 1e-6


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.nanmedian(np.where(mask, values, np.nan), axis=0)


def _std(values: np.ndarray, mask: np.ndarray, variance: str, kind: str) -> np.ndarray | float:
    """Standard deviation of the selected signals of each record [K, n], pooled or per record."""
    counts = mask.sum(axis=0)
    means = np.where(mask, values, 0.0).sum(axis=0) / np.maximum(counts, 1)
    squares = np.where(mask, (values - means) ** 2, 0.0).sum(axis=0)
    if variance == "per-record":
        return np.maximum(np.sqrt(squares / np.maximum(counts, 1)), MIN_PER_RECORD_STD)
    degrees = np.maximum(counts - 1, 0).sum()
    if degrees == 0:
        raise InputError(
            f"no record has two or more {kind} reference models, so LiRA cannot estimate a variance; "
            "use at least 4 reference models"
        )
    pooled = float(np.sqrt(squares.sum() / degrees))
    if pooled == 0.0:
        raise InputError(
            f"the {kind} reference signals do not vary within any record, so LiRA cannot fit a "
            "variance; use more reference models or a variant with finer outputs"
        )
    return pooled


def _log_normal_density(x: np.ndarray, mean: np.ndarray, std) -> np.ndarray:
    return -np.log(std) - 0.5 * np.log(2.0 * np.pi) - 0.5 * ((x - mean) / std) ** 2


def _check_variance(variance: str) -> None:
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")


def online_scores(
    target_phi: np.ndarray, reference_phi: np.ndarray, in_mask: np.ndarray, variance: str = "pooled"
) -> np.ndarray:
    """Online LiRA scores from the target's phi [n] and the references' phi [K, n].

    Every record needs at least one IN and one OUT reference model.
    """
    _check_variance(variance)
    out_mask = ~in_mask
    mean_in, mean_out = _masked_median(reference_phi, in_mask), _masked_median(reference_phi, out_mask)
    std_in = _std(reference_phi, in_mask, variance, "IN")
    std_out = _std(reference_phi, out_mask, variance, "OUT")
    return _log_normal_density(target_phi, mean_in, std_in) - _log_normal_density(target_phi, mean_out, std_out)


def offline_scores(
    target_phi: np.ndarray, reference_phi: np.ndarray, in_mask: np.ndarray, variance: str = "pooled"
) -> np.ndarray:
    """Offline LiRA scores: the z-score of the target's phi under the OUT references.

    Every record needs at least one OUT reference model.
    """
    _check_variance(variance)
    out_mask = ~in_mask
    mean_out = _masked_median(reference_phi, out_mask)
    return (target_phi - mean_out) / _std(reference_phi, out_mask, variance, "OUT")


def _score(bundle: CaptureBundle, attack: str, variance: str, in_models: int, out_models: int):
    """Check the bundle's references, then score with `online_scores` or `offline_scores`."""
    _check_variance(variance)
    bundle.require_references(attack, in_models=in_models, out_models=out_models)
    labels = bundle.target.labels
    target_phi = logit_scaled_confidence(bundle.target.logits, labels)
    reference_phi = logit_scaled_confidence(bundle.reference_logits(), labels)
    compute = online_scores if attack == ONLINE else offline_scores
    try:
        scores = compute(target_phi, reference_phi, bundle.in_mask, variance)
    except InputError as exc:
        raise InputError(f"{bundle.location}: attack '{attack}': {exc}") from exc
    return scores, {"variance": variance, "reference_models": bundle.n_references}


def score_online(bundle: CaptureBundle, variance: str = "pooled") -> tuple[np.ndarray, dict]:
    """Return the online LiRA scores of `bundle` and the settings used."""
    minimum = 2 if variance == "per-record" else 1
    return _score(bundle, ONLINE, variance, in_models=minimum, out_models=minimum)


def score_offline(bundle: CaptureBundle, variance: str = "pooled") -> tuple[np.ndarray, dict]:
    """Return the offline LiRA scores of `bundle` and the settings used."""
    return _score(bundle, OFFLINE, variance, in_models=0, out_models=2 if variance == "per-record" else 1)
