"""Small Keras models that exercise each TFLite op the native kernel runs.

Each builder returns a Keras model; `convert` turns it into an int8 (or
float32) .tflite file with the TFLite converter, as edgemia's export does.
"""

from __future__ import annotations

import numpy as np


def _layers():
    from edgemia._tf import import_keras

    keras = import_keras()
    return keras, keras.layers


def conv_variants(groups: int = 2):
    """Convolutions of several shapes; tf2onnx cannot export grouped ones, so ONNX tests pass groups=1."""
    keras, L = _layers()
    x = keras.Input((11, 10, 3))
    a = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    b = L.Conv2D(6, 5, strides=2, padding="valid", activation="relu6")(a)
    c = L.Conv2D(4, 3, padding="same")(b)
    d = L.Conv2D(6, 1, padding="same", groups=groups, activation="relu")(c)
    e = L.Conv2D(5, 3, strides=(2, 1), padding="same")(d)
    return keras.Model(x, L.Dense(7)(L.Flatten()(e)))


def wide_conv_variants():
    """Convolutions whose filter rows (width x input channels) take 4 and more than 4
    16-byte words: the framed gather copies a fixed number of words up to 4."""
    keras, L = _layers()
    x = keras.Input((9, 7, 24))
    a = L.Conv2D(21, 3, padding="same", activation="relu")(x)
    b = L.Conv2D(6, 3, strides=2, padding="same")(a)
    c = L.Conv2D(5, (2, 5), padding="valid", activation="relu")(a)
    merged = L.Concatenate()([L.Flatten()(b), L.Flatten()(c)])
    return keras.Model(x, L.Dense(7)(merged))


def depthwise_variants():
    keras, L = _layers()
    x = keras.Input((12, 12, 3))
    h = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    h = L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="valid", activation="relu6")(h)
    h = L.DepthwiseConv2D(2, padding="same")(h)
    return keras.Model(x, L.Dense(6)(L.Flatten()(h)))


def pooling_variants():
    keras, L = _layers()
    x = keras.Input((13, 12, 4))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    a = L.MaxPooling2D(2)(h)
    a = L.MaxPooling2D(3, strides=2, padding="same")(a)
    b = L.AveragePooling2D(2)(h)
    b = L.AveragePooling2D(3, strides=2, padding="same")(b)
    c = L.GlobalAveragePooling2D()(h)
    d = L.GlobalAveragePooling2D(keepdims=True)(b)
    merged = L.Concatenate()([L.Flatten()(a), L.Flatten()(b), c, L.Flatten()(d)])
    return keras.Model(x, L.Dense(5)(merged))


def elementwise_variants():
    keras, L = _layers()
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same")(x)
    b = L.Conv2D(6, 1, padding="same", activation="relu")(x)
    h = L.Add()([a, b])
    h = L.Multiply()([h, b])
    h = L.Concatenate()([h, a])
    h = L.ZeroPadding2D(((1, 2), (0, 1)))(h)
    h = L.Conv2D(4, 3, strides=2)(h)
    h = L.Activation("relu")(L.Add()([h, h]))
    return keras.Model(x, L.Dense(5)(L.Flatten()(h)))


def tiny_addend():
    """An ADD whose second operand's scale is below 2^-10 of the output's.

    LiteRT's XNNPACK delegate does not take such an ADD and leaves it to
    TFLite's builtin kernel.
    """
    keras, L = _layers()
    x = keras.Input((12,))
    a = L.Dense(8)(x)
    b = L.Rescaling(1e-4)(L.Dense(8, activation="relu")(x))
    h = L.Add()([a, b])
    return keras.Model(x, L.Dense(3)(h))


def dense_heads(softmax: bool):
    keras, L = _layers()
    x = keras.Input((20,))
    h = L.Dense(16, activation="sigmoid")(x)
    h = L.Dense(12, activation="tanh")(h)
    h = L.Dense(10, activation="relu6")(h)
    out = L.Dense(4)(h)
    if softmax:
        out = L.Softmax()(out)
    return keras.Model(x, out)


def dilated_variants():
    """Dilated convolutions, which the converter lowers to SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND."""
    keras, L = _layers()
    x = keras.Input((13, 11, 3))
    h = L.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(x)
    h = L.Conv2D(6, 3, padding="valid", dilation_rate=(2, 3))(h)
    h = L.DepthwiseConv2D(3, padding="same", dilation_rate=2)(h)
    return keras.Model(x, L.Dense(4)(L.Flatten()(h)))


def dilated_activations():
    """Dilated convolutions with fused ReLU and ReLU6: the converter leaves each clamp as its own op after
    BATCH_TO_SPACE_ND, with an output quantization of its own."""
    keras, L = _layers()
    x = keras.Input((10, 8, 3))
    h = L.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(x)
    h = L.Conv2D(6, 3, padding="same", dilation_rate=(2, 1), activation="relu6")(h)
    return keras.Model(x, L.Dense(4)(L.Flatten()(h)))


def relu_mlp():
    keras, L = _layers()
    x = keras.Input((20,))
    h = L.Dense(16, activation="relu")(x)
    h = L.Dense(12, activation="relu")(h)
    return keras.Model(x, L.Dense(4)(h))


def sequence_dense():
    """Dense layers on records of 6 rows: the converter moves the rows into the batch around each layer."""
    keras, L = _layers()
    x = keras.Input((6, 7))
    h = L.Dense(8, activation="relu")(x)
    h = L.Add()([L.Dense(6, activation="tanh")(h), L.Dense(6, activation="sigmoid")(h)])
    h = L.Softmax()(L.Dense(5)(h))
    return keras.Model(x, L.Dense(4)(L.Flatten()(h)))


def single_row_dense():
    """Dense layers on records of one row: the converter declares the rows' placeholder shape [1, 1]."""
    keras, L = _layers()
    x = keras.Input((1, 7))
    h = L.Dense(5, activation="relu")(x)
    return keras.Model(x, L.Dense(3)(L.Flatten()(h)))


def permuted_rows():
    """A Dense on rows, then Permute, which the converter writes as TRANSPOSE with a permutation input."""
    keras, L = _layers()
    x = keras.Input((6, 7))
    h = L.Permute((2, 1))(L.Dense(8, activation="relu")(x))
    return keras.Model(x, L.Dense(4)(L.Flatten()(h)))


BUILDERS = {
    "mlp": relu_mlp,
    "dilated": dilated_variants,
    "conv": conv_variants,
    "wide-conv": wide_conv_variants,
    "depthwise": depthwise_variants,
    "pooling": pooling_variants,
    "elementwise": elementwise_variants,
    "tiny-addend": tiny_addend,
    "dense": lambda: dense_heads(softmax=False),
    "softmax": lambda: dense_heads(softmax=True),
    "dilated-activations": dilated_activations,
    "sequence-dense": sequence_dense,
    "single-row-dense": single_row_dense,
    "permuted-rows": permuted_rows,
}


def calibration_data(model, n: int = 200, seed: int = 0) -> np.ndarray:
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(n, *shape)).astype(np.float32)


def convert(model, path, int8_io: bool = True) -> None:
    """Train `model` briefly, then write it as a full-integer int8 .tflite file."""
    from edgemia.compression.tflite_export import export_int8

    data = calibration_data(model)
    # A short fit so that weights and activations are not all near zero.
    model.compile(optimizer="adam", loss="mse")
    target = np.random.default_rng(1).normal(size=(len(data), *model.outputs[0].shape[1:]))
    model.fit(data, target, epochs=2, verbose=0)
    with open(path, "wb") as f:
        f.write(export_int8(model, data, int8_io=int8_io))
