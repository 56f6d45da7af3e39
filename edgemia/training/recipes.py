"""The training recipe of an audit: a built-in data set's recipe, or a default for a team's records, with overrides.

Overrides come from the [training] table of a configuration file and from
the recipe options of `edgemia audit`; their keys are the fields of
edgemia.training.train.Recipe. Every message names the setting as
`training.KEY`, the configuration key, with the command-line option beside it.
"""

from __future__ import annotations

from edgemia.data.builtin import AuditData
from edgemia.errors import InputError
from edgemia.training.models import ARCHITECTURE_RANKS, ARCHITECTURES, KERAS_FILE_PREFIX
from edgemia.training.train import OPTIMIZERS, RECIPES, Recipe

# NOTE: a first recipe for records without one, the same as the built-in health tables';
# a team should set [training] for its own data.
_TABLE_RECIPE = Recipe(architecture="tabular-mlp", epochs=60, batch_size=64, learning_rate=1e-3)
_IMAGE_RECIPE = Recipe(architecture="digits-cnn", epochs=80, batch_size=32, learning_rate=1e-3)
OVERRIDE_KEYS = ("architecture", "epochs", "batch_size", "learning_rate", "input_noise", "optimizer", "momentum",
                 "weight_decay", "random_shift", "random_flip")
# Keras 3's default weight decay of AdamW, used when a recipe names adamw without weight_decay.
ADAMW_WEIGHT_DECAY = 0.004
_MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
_WEIGHT_DECAY_OPTIMIZERS = ("adamw", "sgd", "rmsprop")
_IMAGE_KEYS = ("random_shift", "random_flip")


def _name(key: str) -> str:
    return f"training.{key} (--{key.replace('_', '-')})"


def _check_optimizer_fraction(overrides: dict, key: str, optimizer: str, takers: tuple[str, ...], fix: str) -> None:
    """Raise InputError when `key` is outside [0, 1), or above 0 for an optimizer not among `takers`."""
    value = overrides.get(key)
    if value is None:
        return
    if not 0 <= value < 1:
        raise InputError(f"{_name(key)} is {value}; it must be at least 0 and below 1")
    if value > 0 and optimizer not in takers:
        raise InputError(f"{_name(key)} is {value}, and optimizer {optimizer} has no {key.replace('_', ' ')}; {fix}")


def check_recipe_values(overrides: dict) -> None:
    """Raise InputError for an unknown key, architecture or optimizer, or a value out of range, in `overrides`."""
    for key in overrides:
        if key not in OVERRIDE_KEYS:
            raise InputError(f"unknown training setting '{key}'; valid settings: {', '.join(OVERRIDE_KEYS)}")
    architecture = overrides.get("architecture")
    if architecture is not None and architecture not in ARCHITECTURES and not architecture.startswith(KERAS_FILE_PREFIX):
        raise InputError(
            f"training.architecture is '{architecture}'; valid architectures: {', '.join(ARCHITECTURES)}, "
            "or a .keras file in [model]"
        )

    optimizer = overrides.get("optimizer", "adam")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"{_name('optimizer')} is {optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    _check_optimizer_fraction(overrides, "momentum", optimizer, _MOMENTUM_OPTIMIZERS,
                              f"set the optimizer to {' or '.join(_MOMENTUM_OPTIMIZERS)}, or remove momentum")
    _check_optimizer_fraction(overrides, "weight_decay", optimizer, _WEIGHT_DECAY_OPTIMIZERS,
                              "set the optimizer to adamw (Adam with decoupled weight decay), sgd or rmsprop")

    shift = overrides.get("random_shift")
    if shift is not None and (isinstance(shift, bool) or not isinstance(shift, int) or shift < 0):
        raise InputError(f"{_name('random_shift')} is {shift!r}; it must be a whole number of pixels, 0 or more")
    flip = overrides.get("random_flip")
    if flip is not None and not isinstance(flip, bool):
        raise InputError(f"{_name('random_flip')} is {flip!r}; it must be true or false")


def check_input_shape(overrides: dict, input_shape: tuple[int, ...], records: str) -> None:
    """Raise InputError when the architecture or the image augmentation of `overrides` does not fit the records."""
    architecture = overrides.get("architecture")
    rank = ARCHITECTURE_RANKS.get(architecture)
    if rank is not None and len(input_shape) != rank:
        fits = [name for name, other in ARCHITECTURE_RANKS.items() if other == len(input_shape)]
        raise InputError(
            f"training.architecture is '{architecture}', which takes "
            f"{'feature vectors' if rank == 1 else 'images of shape (height, width, channels)'}, and the records "
            f"of {records} have shape {tuple(input_shape)}; "
            + (f"set it to '{fits[0]}' or remove it" if fits else "pass records that the architecture takes")
        )
    if architecture == "digits-cnn" and min(input_shape[:2]) < 2:
        raise InputError(
            f"training.architecture is 'digits-cnn', which pools 2x2 pixels, and the images of {records} have "
            f"{input_shape[0]}x{input_shape[1]} pixels; it needs at least 2x2"
        )
    asked = [key for key in _IMAGE_KEYS if overrides.get(key)]
    if asked and len(input_shape) != 3:
        raise InputError(
            f"{_name(asked[0])} augments images, and the records of {records} have shape {tuple(input_shape)}, "
            "not (height, width, channels); remove it, or use input_noise to augment tabular records"
        )
    if overrides.get("random_shift") and overrides["random_shift"] >= min(input_shape[:2]):
        raise InputError(
            f"{_name('random_shift')} is {overrides['random_shift']} pixels, and the images of {records} have "
            f"{input_shape[0]}x{input_shape[1]} pixels; choose a shift below {min(input_shape[:2])}"
        )


def check_recipe_overrides(overrides: dict, dataset: str | None = None, records=None) -> None:
    """Check `overrides` (see check_recipe_values) and that their architecture and augmentation fit the records.

    `records` is a RecordsSource for a team's records, else `dataset` names
    the built-in data set. Records are loaded only when a built-in
    architecture or image augmentation is asked for.
    """
    check_recipe_values(overrides)
    if overrides.get("architecture") not in ARCHITECTURE_RANKS and not any(overrides.get(key) for key in _IMAGE_KEYS):
        return
    if records is not None:
        from edgemia.data.tables import load_table

        loaded, _, _ = load_table(records)
        check_input_shape(overrides, tuple(loaded.x.shape[1:]), str(records.path))
    elif dataset is not None:
        from edgemia.data.builtin import DATASETS, load_dataset

        if dataset in DATASETS:
            check_input_shape(overrides, load_dataset(dataset, 0).input_shape, f"data set {dataset}")


def audit_recipe(data: AuditData, dataset: str | None, overrides: dict) -> Recipe:
    """Return the recipe of built-in `dataset`, or for records of a file (dataset None) a default by input rank.

    An adamw recipe without weight_decay gets Keras's default, ADAMW_WEIGHT_DECAY.
    """
    if dataset is not None:
        base = RECIPES[dataset]
    else:
        base = _TABLE_RECIPE if len(data.input_shape) == 1 else _IMAGE_RECIPE
    overrides = dict(overrides)
    if overrides.get("optimizer") == "adamw" and "weight_decay" not in overrides:
        overrides["weight_decay"] = ADAMW_WEIGHT_DECAY
    return Recipe(**{**base.to_dict(), **overrides})
