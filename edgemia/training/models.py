"""Model architectures for the built-in data sets.

Every model ends in a Dense layer named "logits" without softmax, so that
captures hold logits and the attacks apply the softmax themselves.
"""

from __future__ import annotations

from pathlib import Path

from edgemia._tf import import_keras
from edgemia.errors import ModelFormatError

# An architecture named "keras-file:PATH" is the architecture of the Keras model file PATH.
KERAS_FILE_PREFIX = "keras-file:"


def digits_cnn(input_shape: tuple[int, ...], n_classes: int):
    """Small CNN for 8x8 images: two 3x3 convolutions, one max pool, two dense layers."""
    keras = import_keras()
    inputs = keras.Input(shape=input_shape, name="x")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, activation="relu", name="dense1")(h)
    outputs = keras.layers.Dense(n_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name="digits_cnn")


def tabular_mlp(input_shape: tuple[int, ...], n_classes: int):
    """Two-hidden-layer MLP (64 and 32 units) for tabular features."""
    keras = import_keras()
    inputs = keras.Input(shape=input_shape, name="x")
    h = keras.layers.Dense(64, activation="relu", name="dense1")(inputs)
    h = keras.layers.Dense(32, activation="relu", name="dense2")(h)
    outputs = keras.layers.Dense(n_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name="tabular_mlp")


ARCHITECTURES = {
    "digits-cnn": digits_cnn,
    "tabular-mlp": tabular_mlp,
}
# The input rank each built-in architecture takes: features, or (height, width, channels).
ARCHITECTURE_RANKS = {"digits-cnn": 3, "tabular-mlp": 1}


def load_keras_file(path: Path, input_shape: tuple[int, ...], n_classes: int):
    """Load a .keras file in safe mode and check that it maps the records to one logit per class.

    Safe mode rejects Lambda layers and other code in the file, and a .keras
    file holds a JSON configuration and HDF5 weights, so nothing is unpickled.
    """
    keras = import_keras()
    if path.suffix != ".keras":
        raise ModelFormatError(f"model.file {path}: expected a Keras 3 .keras file, got '{path.suffix}'")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        # Keras raises KeyError for a zip archive without the config.json of a saved model.
        raise ModelFormatError(
            f"model.file {path}: cannot load the Keras model in safe mode ({exc!r}); "
            "pass a model saved with model.save('NAME.keras')"
        ) from exc
    expected_input = (None, *input_shape)
    if tuple(model.input_shape) != expected_input:
        raise ModelFormatError(
            f"model.file {path}: input shape {tuple(model.input_shape)} does not match the records' "
            f"{expected_input}; the features must be the model's inputs"
        )
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if not isinstance(last, keras.layers.Dense) or activation != "linear" or last.units != n_classes:
        raise ModelFormatError(
            f"model.file {path}: the last layer must be a Dense layer with {n_classes} units (one per class) "
            f"and no activation, so that the model outputs logits; found {type(last).__name__} "
            f"'{last.name}' with activation {activation}"
        )
    return model


def build_model(architecture: str, input_shape: tuple[int, ...], n_classes: int):
    """Build an untrained model: a built-in architecture, or a clone of a .keras file's (KERAS_FILE_PREFIX)."""
    if architecture.startswith(KERAS_FILE_PREFIX):
        model = load_keras_file(Path(architecture[len(KERAS_FILE_PREFIX):]), input_shape, n_classes)
        return import_keras().models.clone_model(model)
    return ARCHITECTURES[architecture](input_shape, n_classes)
