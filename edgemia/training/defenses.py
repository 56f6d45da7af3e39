"""Training-time defenses: train a model anew with the training steps of a variant.

The training steps of a variant (see edgemia.compression.spec) replace how
its float model is trained. The model is trained from scratch with the
recipe's epochs, batch size and Adam learning rate on the model's own
training records (the members for the target, the IN records for a
reference model), with every training step of the chain at once:

- l2:LAMBDA adds LAMBDA * sum(w^2) over the Conv2D and Dense kernels to the loss;
- dropout:P puts a Dropout layer of rate P after every hidden Conv2D and Dense layer;
- label-smoothing:A trains on (1 - A) * one_hot + A / classes;
- early-stop holds out a stratified fraction of the training records, stops
  when their loss has not fallen for `patience` epochs, and keeps the weights
  of the best epoch. The held-out records stay in the model's training set
  for the audit (members of the target), though the model never fits them;
- dp-sgd trains with DP-SGD (edgemia.training.dp);
- pate trains teachers on the training records and a student on the
  population records they label (edgemia.training.pate).

DP-SGD does not use the recipe's epochs, batch size and learning rate: it
has its own defaults (edgemia.training.dp.DEFAULT_SETTINGS), which the
step's epochs=, batch= and lr= options override.

The returned model has the architecture of the model it replaces, without
Dropout layers or regularizers, so its exported files differ from the
undefended model's only in their weights.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from edgemia._stderr import native_stderr_to_log
from edgemia._tf import import_keras, import_tensorflow
from edgemia.compression.chain import WIDTH_KEYS, chain_layers, rebuild
from edgemia.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """Training settings of the steps: epochs, batch size, learning rate and the recipe.

    With a `recipe` (an edgemia.training.train.Recipe), training uses the
    recipe's optimizer and augmentation at this learning rate. Without one,
    it uses Adam and no augmentation.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    recipe: object | None = None


@dataclass
class DefenseData:
    """The records a defended model trains on, with their record ids where known."""

    x: np.ndarray
    y: np.ndarray
    record_id: np.ndarray | None = None
    population_x: np.ndarray | None = None
    population_record_id: np.ndarray | None = None


def smoothed_targets(y: np.ndarray, n_classes: int, alpha: float) -> np.ndarray:
    """Return (1 - alpha) * one_hot(y) + alpha / n_classes, in float32."""
    one_hot = np.eye(n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
    return ((1.0 - alpha) * one_hot + alpha / n_classes).astype(np.float32)


def holdout_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, held out), each class contributing round(fraction * count) rows.

    At least one row is held out and one kept. Both index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        held_out.append(rows[: int(round(fraction * len(rows)))])
    held = np.concatenate(held_out) if held_out else np.array([], dtype=np.int64)
    if len(held) == 0:
        held = rng.permutation(len(y))[:1]
    keep = np.setdiff1d(np.arange(len(y)), held)
    if len(keep) == 0:
        raise InputError(f"early-stop: holdout={fraction:g} leaves no training records out of {len(y)}")
    return keep, np.sort(held)


def training_model(base, l2: float, dropout: float):
    """Build a fresh, untrained copy of `base` with an L2 kernel penalty and Dropout after hidden layers."""
    keras = import_keras()
    layers = chain_layers(base)
    weighted = [layer for layer in layers if type(layer).__name__ in WIDTH_KEYS]
    source = base.inputs[0]
    inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype)
    h = inputs
    for layer in layers:
        config = layer.get_config()
        if l2 > 0 and type(layer).__name__ in WIDTH_KEYS:
            config["kernel_regularizer"] = keras.regularizers.L2(l2)
        h = type(layer).from_config(config)(h)
        if dropout > 0 and layer in weighted[:-1]:
            h = keras.layers.Dropout(dropout, name=f"{layer.name}_dropout")(h)
    return keras.Model(inputs, h, name=base.name)


def plain_copy(trained, base):
    """Return a copy of `base`'s architecture carrying `trained`'s weights, matched by layer name."""
    plain = rebuild(base, {})
    for layer in plain.layers:
        if layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())
    return plain


def _fit(model, x, targets, settings: TrainingSettings, validation=None, patience: int = 0, seed: int = 0) -> dict:
    """Train `model` on soft targets with the recipe's optimizer and augmentation; return a summary.

    With `validation`, training stops early on its loss. The augmentation
    layers wrap `model` only while it trains, as in fit_model, so `model`
    itself has none.
    """
    from edgemia.training.train import augmentation_layers, make_optimizer

    keras = import_keras()
    trainer, optimizer_name = model, "adam"
    if settings.recipe is None:
        optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
    else:
        recipe = replace(settings.recipe, learning_rate=settings.learning_rate)
        optimizer, optimizer_name = make_optimizer(recipe), recipe.optimizer
        layers = augmentation_layers(recipe, tuple(x.shape[1:]), seed)
        if layers:
            trainer = keras.Sequential([keras.Input(shape=tuple(x.shape[1:])), *layers, model])
    trainer.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        steps_per_execution=math.ceil(len(x) / settings.batch_size),
    )
    callbacks = []
    if validation is not None:
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        callbacks.append(stopper)
    start = time.perf_counter()
    with native_stderr_to_log("TensorFlow training"):
        history = trainer.fit(x, targets, epochs=settings.epochs, batch_size=settings.batch_size, shuffle=True,
                              verbose=0, callbacks=callbacks, validation_data=validation)
    summary = {"training_seconds": time.perf_counter() - start, "epochs": len(history.history["loss"]),
               "optimizer": optimizer_name}
    if validation is not None:
        losses = history.history["val_loss"]
        summary["best_epoch"] = int(np.argmin(losses)) + 1
        summary["holdout_loss"] = float(np.min(losses))
    return summary


def check_training_steps(steps, n_records: int, model: str = "the model") -> None:
    """Raise InputError when the training `steps` cannot train on `n_records` records.

    dp-sgd must find a noise multiplier that meets its epsilon, and pate
    needs a record per teacher. An audit calls this for its target and its
    reference models before it starts, so a bad chain fails before any work.
    """
    by_word = {step.word: step for step in steps}
    if "pate" in by_word and by_word["pate"]["teachers"] > n_records:
        step = by_word["pate"]
        raise InputError(f"{step}: teachers={step['teachers']} is more than the {n_records} training records of "
                         f"{model}; choose fewer teachers")
    if "dp-sgd" in by_word:
        from edgemia.training import dp

        step = by_word["dp-sgd"]
        settings = dp.step_settings(step)
        try:
            dp.plan_dp_sgd(n_records, settings.batch_size, settings.epochs, step["delta"], step["eps"], step["noise"])
        except ValueError as exc:
            raise InputError(f"{step}: {exc} ({model} trains on {n_records} records)") from None


def train_defended(base, steps, data: DefenseData, settings: TrainingSettings, seed: int):
    """Train `base`'s architecture anew with the training `steps`; return the plain model and a summary.

    The summary names the steps and holds what each reports: the achieved
    epsilon and delta for dp-sgd and pate, the epoch early stopping chose,
    and for pate the record ids the student trained on.
    """
    tf = import_tensorflow()
    keras = import_keras()
    tf.config.experimental.enable_op_determinism()
    by_word = {step.word: step for step in steps}
    l2 = float(by_word["l2"]["lambda"]) if "l2" in by_word else 0.0
    dropout = float(by_word["dropout"]["rate"]) if "dropout" in by_word else 0.0
    alpha = float(by_word["label-smoothing"]["alpha"]) if "label-smoothing" in by_word else 0.0
    n_classes = int(base.outputs[0].shape[-1])
    summary: dict = {"training_steps": [str(step) for step in steps]}
    check_training_steps(steps, len(data.x))

    def fresh_model(stream: int):
        keras.utils.set_random_seed((seed + 7919 * stream) % 2**32)
        return training_model(base, l2, dropout)

    start = time.perf_counter()
    if "pate" in by_word:
        model, pate_summary = _train_pate(fresh_model, by_word["pate"], data, settings, n_classes, alpha, seed)
        summary.update(pate_summary)
    elif "dp-sgd" in by_word:
        from edgemia.training import dp

        step = by_word["dp-sgd"]
        dp_settings = dp.step_settings(step)
        plan = dp.plan_dp_sgd(len(data.x), dp_settings.batch_size, dp_settings.epochs, step["delta"],
                              step["eps"], step["noise"])
        model = fresh_model(0)
        summary.update(dp.train_dp_sgd(model, data.x, smoothed_targets(data.y, n_classes, alpha), plan, step["clip"],
                                       dp_settings.batch_size, dp_settings.learning_rate, seed, l2=l2))
        summary["learning_rate"] = dp_settings.learning_rate
        if step["eps"] is not None:
            summary["target_epsilon"] = step["eps"]
    else:
        model = fresh_model(0)
        targets = smoothed_targets(data.y, n_classes, alpha)
        if "early-stop" in by_word:
            step = by_word["early-stop"]
            keep, held = holdout_split(data.y, step["holdout"], seed)
            summary.update(_fit(model, data.x[keep], targets[keep], settings,
                                validation=(data.x[held], targets[held]), patience=step["patience"], seed=seed))
            summary["holdout_records"] = int(len(held))
        else:
            summary.update(_fit(model, data.x, targets, settings, seed=seed))
    summary["seconds"] = time.perf_counter() - start
    return plain_copy(model, base), summary


def _train_pate(fresh_model, step, data: DefenseData, settings: TrainingSettings, n_classes: int, alpha: float,
                seed: int) -> tuple[object, dict]:
    from edgemia.training import pate

    if data.population_x is None or len(data.population_x) == 0:
        raise InputError(
            f"{step} labels population records for its student, and none were given; with `edgemia audit` "
            "set --population FRACTION (e.g. 0.2), with `edgemia compress` pass --population RECORDS.npz"
        )

    def train_teacher(x, y, index):
        teacher = fresh_model(1 + index)
        _fit(teacher, x, smoothed_targets(y, n_classes, alpha), settings, seed=seed + 1 + index)
        return teacher

    labels = pate.label_population(train_teacher, data.x, data.y, data.population_x, n_classes, step["teachers"],
                                   step["noise"], seed)
    student = fresh_model(0)
    fitted = _fit(student, data.population_x, smoothed_targets(labels.labels, n_classes, alpha), settings, seed=seed)
    summary = pate.pate_summary(labels, step["noise"], step["delta"], data.population_record_id, data.record_id)
    summary["student_training_seconds"] = fitted["training_seconds"]
    return student, summary
