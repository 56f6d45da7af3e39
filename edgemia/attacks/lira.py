"""Likelihood Ratio Attack, LiRA (Carlini et al., "Membership Inference Attacks From First
Principles", IEEE S&P 2022).

For each record, the reference models that trained on it (IN) and those that
did not (OUT) give two samples of the signal phi = log p_y - log(1 - p_y),
computed from the softmax of the logits in float64. LiRA fits a Gaussian to
each sample: mu_in and mu_out are the medians of the samples, and sigma_in
and sigma_out their standard deviations (ddof 0), as in the LiRA reference
code (tensorflow/privacy, research/mi_lira_2021/plot.py). It scores the
target's phi:

    online:  score = log N(phi; mu_in, sigma_in^2) - log N(phi; mu_out, sigma_out^2)
    offline: score = (phi - mu_out) / sigma_out

The offline score is the paper's one-sided test: its statistic
Pr[Z <= phi] with Z ~ N(mu_out, sigma_out^2) equals Phi((phi - mu_out) / sigma_out),
an increasing function of the z-score above. Both give the same ROC, and the
z-score does not round to 1 for records far above the OUT distribution.

Options (see edgemia.attacks.options), for both attacks:

- `lira.variance`: `per-record` estimates sigma_in and sigma_out for each
  record from its own reference models. `fixed` uses one global sigma_in
  and one global sigma_out for all records: the standard deviation of all
  IN (or OUT) signals of all records, as the reference code's fixed
  variance does. `pooled` uses the root of the pooled within-record
  variance, which leaves out the spread between records. `auto` (default)
  is `fixed` below FIXED_VARIANCE_BELOW (64) reference models and
  `per-record` from there on, because a standard deviation from the few
  signals each record has with fewer models is itself noisy and makes the
  attack weaker (docs/attacks.md gives the measurements).
- `lira.offline`: `one-sided-tail` (default) is the z-score above.
  `log-density` is the reference code's offline score, -log N(phi; mu_out,
  sigma_out^2), which is two-sided: it also calls records far below the OUT
  distribution members.
"""

from __future__ import annotations

import numpy as np

from edgemia.attacks.bundle import CaptureBundle
from edgemia.attacks.options import AttackOption, choice
from edgemia.attacks.signals import logit_scaled_confidence
from edgemia.errors import InputError

FAMILY = "lira"
ONLINE = "lira-online"
OFFLINE = "lira-offline"
DESCRIPTIONS = {
    ONLINE: "LiRA online: Gaussian likelihood ratio of phi = log p_y - log(1 - p_y) under the "
    "IN and OUT reference models",
    OFFLINE: "LiRA offline: test of phi against the Gaussian of the OUT reference models",
}
VARIANCES = ("per-record", "fixed", "pooled")
AUTO = "auto"
# `auto` picks `fixed` with fewer reference models than this, and `per-record` from here on.
FIXED_VARIANCE_BELOW = 64
OFFLINE_SCORES = ("one-sided-tail", "log-density")
OPTIONS = {
    "variance": AttackOption(
        AUTO, choice(AUTO, *VARIANCES),
        f"per-record: sigma of each record's own reference signals; fixed: one global sigma_in and "
        f"sigma_out; pooled: root of the pooled within-record variance; auto: fixed below "
        f"{FIXED_VARIANCE_BELOW} reference models, per-record from there on",
    ),
    "offline": AttackOption(
        "one-sided-tail", choice(*OFFLINE_SCORES),
        "offline score: one-sided-tail (the paper's Pr[Z <= phi]) or log-density (the reference "
        "code's -log N(phi; mu_out, sigma_out^2))",
    ),
}

# NOTE: a floor for per-record standard deviations, so that records whose
# reference signals all tie (int8 outputs that saturate in every reference
# model) give finite scores. Its value is a guess: such records are ranked by
# how far the target's phi lies from the tied value, in units of this floor.
MIN_PER_RECORD_STD = 1e-6


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.nanmedian(np.where(mask, values, np.nan), axis=0)


def _std(values: np.ndarray, mask: np.ndarray, variance: str, kind: str) -> np.ndarray | float:
    """Standard deviation of the selected signals [K, n]: per record, global or pooled."""
    if variance == "fixed":
        std = float(values[mask].std())
        if std == 0.0:
            raise InputError(
                f"all {kind} reference signals are equal, so LiRA cannot fit a variance; use more "
                "reference models or a variant with finer outputs"
            )
        return std
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


def _check_choice(value: str, valid: tuple[str, ...], name: str) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")


def online_scores(
    target_phi: np.ndarray, reference_phi: np.ndarray, in_mask: np.ndarray, variance: str = "per-record"
) -> np.ndarray:
    """Online LiRA scores from the target's phi [n] and the references' phi [K, n].

    Every record needs at least one IN and one OUT reference model (two of
    each for a per-record variance).
    """
    _check_choice(variance, VARIANCES, "variance")
    out_mask = ~in_mask
    mean_in, mean_out = _masked_median(reference_phi, in_mask), _masked_median(reference_phi, out_mask)
    std_in = _std(reference_phi, in_mask, variance, "IN")
    std_out = _std(reference_phi, out_mask, variance, "OUT")
    return _log_normal_density(target_phi, mean_in, std_in) - _log_normal_density(target_phi, mean_out, std_out)


def offline_scores(
    target_phi: np.ndarray,
    reference_phi: np.ndarray,
    in_mask: np.ndarray,
    variance: str = "per-record",
    offline: str = "one-sided-tail",
) -> np.ndarray:
    """Offline LiRA scores of the target's phi under the OUT references: z-score or -log-density.

    Every record needs at least one OUT reference model (two for a
    per-record variance).
    """
    _check_choice(variance, VARIANCES, "variance")
    _check_choice(offline, OFFLINE_SCORES, "offline")
    out_mask = ~in_mask
    mean_out = _masked_median(reference_phi, out_mask)
    std_out = _std(reference_phi, out_mask, variance, "OUT")
    if offline == "log-density":
        return -_log_normal_density(target_phi, mean_out, std_out)
    return (target_phi - mean_out) / std_out


def resolve_variance(variance: str, n_references: int) -> str:
    """Return the variance estimator that `variance` names for `n_references` models, resolving `auto`."""
    _check_choice(variance, (AUTO, *VARIANCES), "variance")
    if variance != AUTO:
        return variance
    return "fixed" if n_references < FIXED_VARIANCE_BELOW else "per-record"


def _score(bundle: CaptureBundle, attack: str, variance: str, offline: str):
    """Check the bundle's references, then score with `online_scores` or `offline_scores`."""
    requested = variance
    variance = resolve_variance(variance, bundle.n_references)
    _check_choice(offline, OFFLINE_SCORES, "offline")
    minimum = 2 if variance == "per-record" else 1
    in_models = minimum if attack == ONLINE else 0
    bundle.require_references(attack, in_models=in_models, out_models=minimum)
    labels = bundle.target.labels
    target_phi = logit_scaled_confidence(bundle.target.logits, labels)
    reference_phi = bundle.reference_phi()
    parameters = {"variance": variance, "reference_models": bundle.n_references}
    if requested == AUTO:
        parameters["variance_rule"] = f"auto: fixed below {FIXED_VARIANCE_BELOW} reference models, else per-record"
    try:
        if attack == ONLINE:
            scores = online_scores(target_phi, reference_phi, bundle.in_mask, variance)
        else:
            scores = offline_scores(target_phi, reference_phi, bundle.in_mask, variance, offline)
            parameters["offline"] = offline
    except InputError as exc:
        raise InputError(f"{bundle.location}: attack '{attack}': {exc}") from exc
    return scores, parameters


def score_online(bundle: CaptureBundle, variance: str = AUTO, offline: str = "one-sided-tail"):
    """Return the online LiRA scores of `bundle` and the settings used (`offline` is ignored)."""
    return _score(bundle, ONLINE, variance, offline)


def score_offline(bundle: CaptureBundle, variance: str = AUTO, offline: str = "one-sided-tail"):
    """Return the offline LiRA scores of `bundle` and the settings used."""
    return _score(bundle, OFFLINE, variance, offline)
