"""The training recipe of an audit: a built-in data set's recipe, or a default for a team's records, with overrides."""

from __future__ import annotations

from edgemia.data.builtin import AuditData
from edgemia.errors import InputError
from edgemia.training.models import ARCHITECTURES, KERAS_FILE_PREFIX
from edgemia.training.train import RECIPES, Recipe

# NOTE: a first recipe for records without one, the same as the built-in health tables';
# a team should set [training] for its own data.
_TABLE_RECIPE = Recipe(architecture="tabular-mlp", epochs=60, batch_size=64, learning_rate=1e-3)
_IMAGE_RECIPE = Recipe(architecture="digits-cnn", epochs=80, batch_size=32, learning_rate=1e-3)
_OVERRIDE_KEYS = ("architecture", "epochs", "batch_size", "learning_rate", "input_noise")


def check_recipe_overrides(overrides: dict) -> None:
    """Raise InputError for an unknown key or architecture in `overrides`."""
    for key in overrides:
        if key not in _OVERRIDE_KEYS:
            raise InputError(f"unknown training setting '{key}'; valid settings: {', '.join(_OVERRIDE_KEYS)}")
    architecture = overrides.get("architecture")
    if architecture is not None and architecture not in ARCHITECTURES and not architecture.startswith(KERAS_FILE_PREFIX):
        raise InputError(
            f"training.architecture is '{architecture}'; valid architectures: {', '.join(ARCHITECTURES)}, "
            "or a .keras file in [model]"
        )


def audit_recipe(data: AuditData, dataset: str | None, overrides: dict) -> Recipe:
    """Return the recipe of built-in `dataset`, or for records of a file (dataset None) a default by input rank."""
    if dataset is not None:
        base = RECIPES[dataset]
    else:
        base = _TABLE_RECIPE if len(data.input_shape) == 1 else _IMAGE_RECIPE
    return Recipe(**{**base.to_dict(), **overrides})
