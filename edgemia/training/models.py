"""Model architectures for the built-in data sets.

Every model ends in a Dense layer named "logits" without softmax, so that
captures hold logits and the attacks apply the softmax themselves.
"""

from __future__ import annotations

from edgemia._tf import import_keras


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
