"""Audit configuration files (TOML, `edgemia audit --config FILE`).

A configuration file has up to three tables:

    [audit]     every option of `edgemia audit`, named as on the command line
                with '_' for '-': out, dataset, seed, variants, backends,
                attacks, attack_options, epochs, threads, reference_models,
                jobs, bootstrap, population, policy. Lists may be TOML arrays
                or comma-separated strings.
    [records]   a team's own records instead of a built-in data set: path
                (.csv, .parquet or .npz), label, and optionally features,
                groups, id, classes and name (see edgemia.data.tables).
    [training]  the training recipe of the target and reference models:
                architecture (tabular-mlp or digits-cnn), epochs, batch_size,
                learning_rate, optimizer (adam, adamw, sgd or rmsprop),
                momentum (sgd and rmsprop) and weight_decay (adamw, sgd and
                rmsprop, with 0.004 by default for adamw). Augmentation:
                input_noise (the standard deviation of Gaussian noise added
                to the inputs), and for image records random_shift (up to
                this many pixels) and random_flip (left-right, true or
                false). See edgemia.training.train.Recipe.
    [model]     file: a Keras 3 .keras model or an exported .tflite or .onnx
                model. The reference models train clones of a .keras
                model's architecture with fresh weights. The target is the
                file's trained model when [records] names a member column,
                and otherwise a clone trained on a random half. An exported
                model is audited as it is, without reference models, and
                [records] must name its member column (see
                edgemia.exported).

Relative paths are relative to the configuration file's directory. Options
given on the command line override the file.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from edgemia.data.tables import RecordsSource
from edgemia.errors import InputError
from edgemia.stats.bootstrap import check_resample_count
from edgemia.training.models import KERAS_FILE_PREFIX
from edgemia.training.recipes import check_recipe_values

# [audit] key: (argparse destination, expected kind).
AUDIT_KEYS: dict[str, tuple[str, str]] = {
    "out": ("out", "path"),
    "dataset": ("dataset", "string"),
    "seed": ("seed", "integer"),
    "variants": ("variants", "list"),
    "backends": ("backends", "list"),
    "attacks": ("attacks", "list"),
    "attack_options": ("attack_options", "string list"),
    "epochs": ("epochs", "integer"),
    "threads": ("threads", "integer"),
    "reference_models": ("references", "integer"),
    "jobs": ("jobs", "integer"),
    "bootstrap": ("bootstrap", "integer"),
    "population": ("population", "number"),
    "policy": ("policy", "path"),
    "executor": ("executor", "string"),
    "ray_address": ("ray_address", "string"),
}
RECORDS_KEYS = ("path", "label", "features", "groups", "id", "classes", "name", "description", "member")
MODEL_KEYS = ("file",)
TRAINING_KEYS = ("architecture", "epochs", "batch_size", "learning_rate", "optimizer", "momentum", "weight_decay",
                 "input_noise", "random_shift", "random_flip")


def _convert(path: Path, key: str, value, kind: str):
    def fail(expected: str):
        raise InputError(f"{path}: '{key}' must be {expected}, got {value!r}")

    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if kind == "string":
        if not isinstance(value, str) or not value:
            fail("a non-empty string")
        return value
    if kind == "path":
        if not isinstance(value, str) or not value:
            fail("a file or directory path")
        return path.parent / Path(value).expanduser()
    if kind in ("list", "string list"):
        items = [part.strip() for part in value.split(",")] if isinstance(value, str) and kind == "list" else value
        if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
            fail("a list of strings" + (" or a comma-separated string" if kind == "list" else ""))
        if kind == "list" and not items:
            fail("a list of at least one name")
        return ",".join(items) if kind == "list" else list(items)
    raise AssertionError(kind)


def _check_keys(path: Path, table: str, found: dict, valid) -> None:
    unknown = [key for key in found if key not in valid]
    if unknown:
        raise InputError(f"{path}: unknown key '{table}.{unknown[0]}'; valid keys of [{table}]: {', '.join(valid)}")


def _records_source(path: Path, table: dict) -> RecordsSource:
    _check_keys(path, "records", table, RECORDS_KEYS)
    for key in ("path", "label"):
        if key not in table:
            raise InputError(f"{path}: missing key 'records.{key}'; [records] needs path and label")
    text = {key: _convert(path, f"records.{key}", table[key], "string")
            for key in ("label", "id", "name", "description", "member") if key in table}
    lists = {key: _convert(path, f"records.{key}", table[key], "string list") for key in ("features", "groups")
             if key in table}
    classes = table.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                                                for c in classes):
        raise InputError(f"{path}: 'records.classes' must be a list of strings or integers, got {classes!r}")
    return RecordsSource(
        path=_convert(path, "records.path", table["path"], "path"),
        label=text["label"],
        features=tuple(lists.get("features", ())),
        groups=tuple(lists.get("groups", ())),
        id_column=text.get("id"),
        classes=tuple(classes),
        name=text.get("name", ""),
        description=text.get("description", ""),
        member=text.get("member"),
    )


def _training(path: Path, table: dict) -> dict:
    _check_keys(path, "training", table, TRAINING_KEYS)
    kinds = {"architecture": "string", "epochs": "integer", "batch_size": "integer", "learning_rate": "number",
             "optimizer": "string", "momentum": "number", "weight_decay": "number", "input_noise": "number",
             "random_shift": "integer", "random_flip": "boolean"}
    recipe = {key: _convert(path, f"training.{key}", value, kinds[key]) for key, value in table.items()}
    for key in ("epochs", "batch_size"):
        if key in recipe and recipe[key] < 1:
            raise InputError(f"{path}: 'training.{key}' is {recipe[key]}; it must be at least 1")
    if str(recipe.get("architecture", "")).startswith(KERAS_FILE_PREFIX):
        raise InputError(f"{path}: 'training.architecture' is {recipe['architecture']!r}; name a built-in "
                         "architecture, or give a .keras model as 'file' in [model]")
    # Keras's GaussianNoise layer takes standard deviations from 0 to 1; the features are standardized.
    if "input_noise" in recipe and not 0 <= recipe["input_noise"] <= 1:
        raise InputError(f"{path}: 'training.input_noise' is {recipe['input_noise']}; it must be from 0 to 1 "
                         "(a standard deviation, in units of the standardized features)")
    if "learning_rate" in recipe and not 0 < recipe["learning_rate"] < math.inf:
        raise InputError(
            f"{path}: 'training.learning_rate' is {recipe['learning_rate']}; it must be a finite number above 0"
        )
    try:
        check_recipe_values(recipe)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return recipe


def keras_architecture(path: Path, values: dict) -> str:
    """Return the recipe architecture that clones the .keras file of [model] for the target and references."""
    model = values["model"]
    if "architecture" in values["training"]:
        raise InputError(f"{path}: 'training.architecture' and a .keras model.file both set the architecture; "
                         "keep one of them")
    if not model.is_file():
        raise InputError(f"{path}: model.file {model}: file not found")
    return KERAS_FILE_PREFIX + str(model.resolve())


def load_config_file(path: Path | str) -> dict:
    """Read an audit configuration file; return argparse defaults for `edgemia audit`.

    The result maps argparse destinations to values, plus `records` (a
    RecordsSource or None), `training` (recipe overrides) and `model` (an
    exported model file or None).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"--config {path}: file not found") from None
    except OSError as exc:
        raise InputError(f"--config {path}: cannot read the file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc}); fix the syntax") from exc

    unknown = [name for name in document if name not in ("audit", "records", "training", "model")]
    if unknown:
        raise InputError(
            f"{path}: unknown table '{unknown[0]}'; valid tables: [audit], [records], [training], [model]"
        )
    for table in document:
        if not isinstance(document[table], dict):
            raise InputError(f"{path}: '{table}' must be a table ([{table}]), got {document[table]!r}")
    audit = document.get("audit", {})
    _check_keys(path, "audit", audit, AUDIT_KEYS)
    values = {}
    for key, value in audit.items():
        destination, kind = AUDIT_KEYS[key]
        values[destination] = _convert(path, f"audit.{key}", value, kind)
    if "policy" in values and not values["policy"].is_file():
        raise InputError(f"{path}: 'audit.policy' names {values['policy']}, which is not a file")
    if "bootstrap" in audit:
        # Checked here so that the message names the key, not the --bootstrap option.
        check_resample_count(values["bootstrap"], f"{path}: audit.bootstrap")
    values["records"] = _records_source(path, document["records"]) if "records" in document else None
    values["training"] = _training(path, document["training"]) if "training" in document else {}
    values["model"] = None
    if "model" in document:
        _check_keys(path, "model", document["model"], MODEL_KEYS)
        if "file" not in document["model"]:
            raise InputError(f"{path}: missing key 'model.file'; give the exported .tflite or .onnx file")
        values["model"] = _convert(path, "model.file", document["model"]["file"], "path")
        if values["model"].suffix == ".keras":
            values["training"] = {**values["training"], "architecture": keras_architecture(path, values)}
            # With a member column the file's trained weights are the target; without one it is retrained.
            if values["records"] is not None and values["records"].member is not None:
                values["target_model"] = values["model"]
            values["model"] = None
    if values["records"] is not None and "dataset" in values:
        raise InputError(f"{path}: 'audit.dataset' and [records] both name the records; keep one of them")
    return values
