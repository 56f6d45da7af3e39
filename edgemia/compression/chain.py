"""Keras models as chains of layers: listing their weighted layers and rebuilding them narrower or wider.

Structured pruning and distillation change the number of units and filters of
a model and need to rebuild it. They accept models whose layers form a
single chain (each layer reads the previous layer's output), as the built-in
architectures do.
"""

from __future__ import annotations

import numpy as np

from edgemia._tf import import_keras
from edgemia.errors import InputError

# Layers whose output width a step may change, with the config key of that width.
WIDTH_KEYS = {"Conv2D": "filters", "Dense": "units"}

# Layers without weights that keep the channel axis as it is.
_CHANNEL_PRESERVING = {
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Dropout",
    "Activation", "ReLU", "Flatten", "InputLayer",
}


def chain_layers(model) -> list:
    """Return the model's layers after its input, checking that they form one chain."""
    keras = import_keras()
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(f"model '{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "this compression step needs a single-input, single-output model")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        kind = type(layer).__name__
        if kind not in WIDTH_KEYS and kind not in _CHANNEL_PRESERVING and kind != "BatchNormalization":
            raise InputError(
                f"model '{model.name}': layer '{layer.name}' ({kind}) is not supported by structured pruning "
                f"and distillation; they rebuild chains of {', '.join(sorted({*WIDTH_KEYS, *_CHANNEL_PRESERVING}))} "
                "and BatchNormalization layers"
            )
        if layer.input is not previous:
            raise InputError(
                f"model '{model.name}': layer '{layer.name}' does not read the previous layer's output; "
                "structured pruning and distillation need a model whose layers form one chain"
            )
        previous = layer.output
    return layers


def resizable_layers(model) -> list:
    """Return the Conv2D and Dense layers whose width may change: all except the output layer."""
    layers = chain_layers(model)
    weighted = [layer for layer in layers if type(layer).__name__ in WIDTH_KEYS]
    return [layer for layer in weighted if layer is not weighted[-1]]


def rebuild(model, widths: dict[str, int]):
    """Build a fresh, untrained copy of a chain model with the given layers' widths changed.

    Layer names and every other setting are kept; weights are initialized
    anew from Keras's global seed.
    """
    keras = import_keras()
    layers = chain_layers(model)
    source = model.inputs[0]
    inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype,
                         name=model.layers[0].name if isinstance(model.layers[0], keras.layers.InputLayer) else None)
    h = inputs
    for layer in layers:
        config = layer.get_config()
        if layer.name in widths:
            config[WIDTH_KEYS[type(layer).__name__]] = int(widths[layer.name])
        h = type(layer).from_config(config)(h)
    return keras.Model(inputs, h, name=model.name)


def parameter_count(model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def uncompiled_copy(model):
    """Return a copy of `model` with the same weights and no compile state (loss, optimizer)."""
    keras = import_keras()
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy
