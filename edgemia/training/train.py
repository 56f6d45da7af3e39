"""Train the target model on the members only, and reference models on their IN records."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgemia._stderr import native_stderr_to_log
from edgemia._tf import import_keras, import_tensorflow
from edgemia.data.builtin import AuditData
from edgemia.training.models import build_model, load_keras_file

logger = logging.getLogger(__name__)


# Optimizers a recipe may name, each a Keras 3 optimizer class.
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclass(frozen=True)
class Recipe:
    """Training recipe of the target and every reference model: architecture, optimizer and augmentation.

    The training steps of defended variants (edgemia.training.defenses) use
    the recipe's optimizer and augmentation too, except dp-sgd, which has its
    own Adam settings. NOTE: the fine-tuning of model steps (pruning,
    distillation) trains with Adam and without augmentation, whatever the
    recipe's optimizer and augmentation.
    """

    architecture: str  # a key of ARCHITECTURES, or KERAS_FILE_PREFIX and a .keras file
    epochs: int
    batch_size: int
    learning_rate: float  # of the optimizer
    # Augmentation: standard deviation of the Gaussian noise added to every input in each
    # training step (keras.layers.GaussianNoise); 0 trains on the records as they are.
    input_noise: float = 0.0
    optimizer: str = "adam"  # one of OPTIMIZERS
    momentum: float = 0.0  # sgd and rmsprop only
    # Decoupled weight decay (the variable shrinks by learning_rate * weight_decay each step);
    # adamw, sgd and rmsprop only.
    weight_decay: float = 0.0
    # Image augmentation, drawn anew for every record in each training step. random_shift moves
    # each image by up to this many pixels along the height and the width, filling the empty
    # pixels with 0. random_flip flips half the images left to right.
    random_shift: int = 0
    random_flip: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# Epoch counts are chosen so that training accuracy reaches 100% well before
# the end: the target overfits, as many deployed models do.
RECIPES: dict[str, Recipe] = {
    "digits": Recipe(architecture="digits-cnn", epochs=80, batch_size=32, learning_rate=1e-3),
    "breast-cancer": Recipe(architecture="tabular-mlp", epochs=200, batch_size=32, learning_rate=1e-3),
    # NOTE: 60 epochs of batch 64 is a first recipe for these tables, not tuned. With
    # seed 0 the targets reached 86% on members and 80% on non-members (health-insurance)
    # and 71% and 60% (doctor-contacts).
    "doctor-contacts": Recipe(architecture="tabular-mlp", epochs=60, batch_size=64, learning_rate=1e-3),
    "health-insurance": Recipe(architecture="tabular-mlp", epochs=60, batch_size=64, learning_rate=1e-3),
}


@dataclass
class TrainedModel:
    model: object  # keras.Model
    recipe: Recipe
    accuracy_members: float
    accuracy_nonmembers: float
    seconds: float


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    with native_stderr_to_log("TensorFlow inference"):
        logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def fit_model(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    recipe: Recipe,
    seed: int,
    callbacks: list | None = None,
) -> tuple[object, float]:
    """Train a fresh model with `recipe` on (x, y); return the model and the training seconds.

    TensorFlow's op determinism is switched on, so the same seed on the same
    machine and library versions gives the same weights. One epoch runs as a
    single compiled call (steps_per_execution), which removes Python overhead
    per batch and leaves the batches, their order and the weights unchanged.
    """
    tf = import_tensorflow()
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    model = build_model(recipe.architecture, tuple(x.shape[1:]), n_classes)
    augmentation = augmentation_layers(recipe, tuple(x.shape[1:]), seed)
    trainer = model
    if augmentation:
        # The augmentation layers wrap the model only while it trains, so the returned model has none.
        trainer = keras.Sequential([keras.Input(shape=tuple(x.shape[1:])), *augmentation, model])
    seconds = _compile_and_fit(
        trainer, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"],
        recipe.epochs, recipe.batch_size, make_optimizer(recipe), callbacks,
    )
    return model, seconds


def make_optimizer(recipe: Recipe):
    """Return a fresh Keras optimizer for the recipe's optimizer, learning rate, momentum and weight decay."""
    keras = import_keras()
    # Keras skips weight decay for None; 0 would still run the decay step, multiplying by 0.
    decay = recipe.weight_decay or None
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=recipe.learning_rate)
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=recipe.learning_rate, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=recipe.learning_rate, momentum=recipe.momentum, weight_decay=decay)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=recipe.learning_rate, momentum=recipe.momentum,
                                        weight_decay=decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")


def augmentation_layers(recipe: Recipe, input_shape: tuple[int, ...], seed: int) -> list:
    """Return the Keras layers that augment each training batch under `recipe`, seeded by `seed`; none by default.

    Random shift and flip need image records of shape (height, width,
    channels); edgemia.training.recipes rejects them for other records
    before an audit starts.
    """
    keras = import_keras()
    layers = []
    if recipe.random_shift > 0:
        height, width = input_shape[0], input_shape[1]
        layers.append(keras.layers.RandomTranslation(
            recipe.random_shift / height, recipe.random_shift / width, fill_mode="constant", fill_value=0.0,
            interpolation="nearest", seed=(seed + 1) % 2**32,
        ))
    if recipe.random_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=(seed + 2) % 2**32))
    if recipe.input_noise > 0:
        layers.append(keras.layers.GaussianNoise(recipe.input_noise, seed=seed))
    return layers


def fine_tune(
    model,
    x: np.ndarray,
    targets: np.ndarray,
    loss,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    callbacks: list | None = None,
) -> float:
    """Train an existing model further with a fresh Adam optimizer; return the seconds taken.

    `targets` are labels for a sparse categorical `loss`, or whatever else
    `loss` expects (soft labels for distillation). Seeding and op
    determinism are as in fit_model.
    """
    tf = import_tensorflow()
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return _compile_and_fit(model, x, targets, loss, [], epochs, batch_size,
                            keras.optimizers.Adam(learning_rate=learning_rate), callbacks)


def _compile_and_fit(model, x, targets, loss, metrics, epochs, batch_size, optimizer, callbacks) -> float:
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        steps_per_execution=math.ceil(len(x) / batch_size),
    )
    start = time.perf_counter()
    with native_stderr_to_log("TensorFlow training"):
        model.fit(
            x,
            targets,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
            callbacks=callbacks or [],
        )
    return time.perf_counter() - start


def train_target(data: AuditData, recipe: Recipe, seed: int, callbacks: list | None = None) -> TrainedModel:
    """Train a fresh model with `recipe` on `data.members`, deterministically for `seed`."""
    model, seconds = fit_model(
        data.members.x, data.members.y, data.n_classes, recipe, seed, callbacks=callbacks
    )
    trained = TrainedModel(
        model=model,
        recipe=recipe,
        accuracy_members=_accuracy(model, data.members.x, data.members.y),
        accuracy_nonmembers=_accuracy(model, data.nonmembers.x, data.nonmembers.y),
        seconds=seconds,
    )
    logger.info(
        "trained %s in %.1f s: accuracy %.4f on members, %.4f on non-members",
        recipe.architecture,
        seconds,
        trained.accuracy_members,
        trained.accuracy_nonmembers,
    )
    return trained


def load_trained_target(path, data: AuditData, recipe: Recipe) -> TrainedModel:
    """Load a team's trained .keras model as the target, with its accuracy on `data`; nothing is trained."""
    from pathlib import Path

    model = load_keras_file(Path(path), data.input_shape, data.n_classes)
    return TrainedModel(
        model=model,
        recipe=recipe,
        accuracy_members=_accuracy(model, data.members.x, data.members.y),
        accuracy_nonmembers=_accuracy(model, data.nonmembers.x, data.nonmembers.y),
        seconds=0.0,
    )
