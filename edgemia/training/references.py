"""Reference models: which audit records each one trains on, its seed, and its training.

The audit pool is every audit record, members and non-members of the target
alike. Reference model k trains on the records where `in_masks[k]` is True
(its IN records) with the target's recipe. Every record is IN for exactly half
of the K reference models, so each record has K/2 models that saw it and K/2
that did not, which is what the online attacks (LiRA, RMIA) compare. Model
k's records depend on the seed and k alone, not on K.
"""

from __future__ import annotations

import logging

import numpy as np

from edgemia._stderr import native_stderr_to_log
from edgemia.data.records import Records
from edgemia.errors import InputError
from edgemia.training.train import Recipe, TrainedModel, fit_model

logger = logging.getLogger(__name__)

# Mixed into the seed sequences below so that the IN/OUT assignment and the
# reference training seeds never coincide with the target's seed stream.
_IN_MASK_STREAM = 0x1A5C
_TRAINING_STREAM = 0x7E5D


def check_reference_count(n_references: int) -> None:
    """Raise InputError unless `n_references` is 0 or an even number of at least 2."""
    if n_references < 0 or n_references % 2 or n_references == 1:
        raise InputError(
            f"the number of reference models must be 0 or an even number of at least 2, "
            f"got {n_references}; every record is IN for exactly half of them"
        )


def reference_in_masks(n_records: int, n_references: int, seed: int) -> np.ndarray:
    """Assign records to reference models: bool [K, n], each column True in exactly K/2 rows.

    Models come in complementary pairs: model 2j trains on a random half of
    the records, drawn from (seed, j) alone, and model 2j+1 on the other half.
    So every record is IN for exactly one model of each pair, every worker
    that trains one model k computes the same mask, and the masks of the
    first K models do not change when a rerun requests more: an audit with 64
    reference models reuses the 32 that an earlier run with 32 trained.
    """
    check_reference_count(n_references)
    masks = np.zeros((n_references, n_records), dtype=bool)
    for pair in range(n_references // 2):
        rng = np.random.default_rng([_IN_MASK_STREAM, seed, pair])
        first = np.zeros(n_records, dtype=bool)
        first[rng.permutation(n_records)[: n_records // 2]] = True
        masks[2 * pair], masks[2 * pair + 1] = first, ~first
    return masks


def reference_seed(seed: int, k: int) -> int:
    """Training seed of reference model k: a function of (seed, k) alone, below 2**32."""
    state = np.random.SeedSequence([_TRAINING_STREAM, seed, k]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def train_reference(
    pool: Records,
    in_mask: np.ndarray,
    n_classes: int,
    recipe: Recipe,
    seed: int,
    k: int,
    callbacks: list | None = None,
) -> TrainedModel:
    """Train reference model k on the records of `pool` where `in_mask` is True.

    The result depends only on (pool, in_mask, recipe, seed, k), so each k can
    run as a separate task. Accuracy is measured on the IN records (reported
    as members) and on the OUT records (reported as non-members).
    """
    in_mask = np.asarray(in_mask, dtype=bool)
    if in_mask.shape != (len(pool),):
        raise ValueError(f"in_mask has shape {in_mask.shape}, expected ({len(pool)},)")
    if not in_mask.any():
        raise InputError(f"reference model {k} has no IN records; it needs at least one record to train on")
    inside = pool.subset(in_mask)
    model, seconds = fit_model(
        inside.x, inside.y, n_classes, recipe, reference_seed(seed, k), callbacks=callbacks
    )
    with native_stderr_to_log("TensorFlow inference"):
        logits = model.predict(pool.x, batch_size=1024, verbose=0)
    correct = np.argmax(logits, axis=1) == pool.y
    trained = TrainedModel(
        model=model,
        recipe=recipe,
        accuracy_members=float(correct[in_mask].mean()),
        # NaN when the model trained on every record and none is left out.
        accuracy_nonmembers=float(correct[~in_mask].mean()) if (~in_mask).any() else float("nan"),
        seconds=seconds,
    )
    logger.info(
        "trained reference model %d on %d records in %.1f s: accuracy %.4f IN, %.4f OUT",
        k,
        len(inside),
        seconds,
        trained.accuracy_members,
        trained.accuracy_nonmembers,
    )
    return trained
