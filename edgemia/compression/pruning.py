"""Pruning for Keras 3: unstructured magnitude pruning, and structured pruning of units and filters.

tensorflow_model_optimization is not used: it needs Keras 2 and switches
`tf.keras` to it when imported. Magnitude pruning here keeps a 0/1 mask per
kernel as a Keras variable and installs it as the kernel's constraint, which
the optimizer applies after every update, so pruned weights stay exactly
zero between mask updates. The masks follow a polynomial schedule during
fine-tuning and are removed afterwards, leaving a plain model whose zeros
the exporters write as ordinary dense weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edgemia._tf import import_keras
from edgemia.compression.chain import WIDTH_KEYS, chain_layers, rebuild, resizable_layers, uncompiled_copy

logger = logging.getLogger(__name__)

# The fraction of the fine-tuning epochs over which the sparsity rises to its
# target; the remaining epochs fine-tune at the final sparsity.
RAMP_FRACTION = 0.7


@dataclass(frozen=True)
class FineTuning:
    """Training settings of compression steps: batch size and Adam learning rate, usually the target's recipe's.

    `epochs` is the recipe's number of training epochs, which training steps
    (defenses) retrain the model with; None where no recipe is known.
    """

    batch_size: int = 32
    learning_rate: float = 1e-3
    epochs: int | None = None
    # The recipe (edgemia.training.train.Recipe) whose optimizer and augmentation the
    # training steps use; fine-tuning after pruning and distillation uses Adam.
    recipe: object | None = None


def prunable_kernels(model) -> list:
    """Return the kernel variables of the model's Conv2D and Dense layers, in layer order."""
    return [layer.kernel for layer in model.layers if type(layer).__name__ in WIDTH_KEYS]


def polynomial_sparsity(final: float, epoch: int, ramp_epochs: int) -> float:
    """Sparsity in force during `epoch` (0-based): final * (1 - (1 - t)^3), t = (epoch + 1) / ramp_epochs, capped at 1."""
    progress = min(1.0, (epoch + 1) / max(1, ramp_epochs))
    return final * (1.0 - (1.0 - progress) ** 3)


def magnitude_masks(kernels: list[np.ndarray], sparsity: float, scope: str) -> list[np.ndarray]:
    """Return 0/1 masks that zero the `sparsity` fraction of weights with the smallest magnitude.

    With scope 'global' the weights of all kernels compete together; with
    'layer' each kernel loses the same fraction. The count is exact,
    round(sparsity * size); ties are broken by position, so the masks are
    deterministic.
    """
    if scope == "layer":
        return [magnitude_masks([kernel], sparsity, "global")[0] for kernel in kernels]
    flat = np.concatenate([np.abs(kernel).reshape(-1) for kernel in kernels])
    n_pruned = int(round(sparsity * flat.size))
    keep = np.ones(flat.size, dtype=np.float32)
    keep[np.argsort(flat, kind="stable")[:n_pruned]] = 0.0
    masks, offset = [], 0
    for kernel in kernels:
        masks.append(keep[offset : offset + kernel.size].reshape(kernel.shape))
        offset += kernel.size
    return masks


def prune_magnitude(model, x, y, sparsity: float, scope: str, epochs: int, tuning: FineTuning, seed: int):
    """Return a copy of `model` with `sparsity` of its Conv2D and Dense kernel weights set to zero, fine-tuned on (x, y).

    The sparsity rises along polynomial_sparsity over the first
    RAMP_FRACTION of `epochs`. At the start of each epoch the masks are
    recomputed from the current weights. Pruned weights are zero, so they stay
    pruned, and each update removes the smallest survivors. The result has no
    masks or constraints left.
    """
    from edgemia.training.train import fine_tune

    keras = import_keras()
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    kernels = prunable_kernels(pruned)
    masks = [keras.Variable(np.ones(k.shape, np.float32), trainable=False, name=f"{k.name}_mask") for k in kernels]
    for kernel, mask in zip(kernels, masks):
        kernel.constraint = _MaskConstraint(mask)
    ramp_epochs = max(1, int(round(RAMP_FRACTION * epochs)))

    def update_masks(target: float) -> None:
        values = magnitude_masks([np.asarray(k.numpy()) for k in kernels], target, scope)
        for kernel, mask, value in zip(kernels, masks, values):
            mask.assign(value)
            kernel.assign(np.asarray(kernel.numpy()) * value)

    class Schedule(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            update_masks(polynomial_sparsity(sparsity, epoch, ramp_epochs))

    fine_tune(
        pruned, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        epochs, tuning.batch_size, tuning.learning_rate, seed, callbacks=[Schedule()],
    )
    # The last epochs ran at the final sparsity; apply its masks once more so
    # that the count is exact even if the ramp ended early.
    update_masks(sparsity)
    for kernel in kernels:
        kernel.constraint = None
    stripped = keras.models.clone_model(model)
    stripped.set_weights(pruned.get_weights())
    return stripped


class _MaskConstraint:
    """Multiplies a kernel by its mask; the optimizer calls it after every update."""

    def __init__(self, mask):
        self.mask = mask

    def __call__(self, weights):
        return weights * self.mask


def prune_structured(model, x, y, fraction: float, epochs: int, tuning: FineTuning, seed: int):
    """Return a narrower copy of `model` without the `fraction` of units and filters of smallest L1 norm, fine-tuned.

    Every Conv2D and Dense layer except the output layer loses
    round(fraction * width) of its output channels, keeping at least one;
    the next layers drop the matching input rows, and a Flatten in between
    maps channels to the features it produces.
    """
    from edgemia.training.train import fine_tune

    keras = import_keras()
    narrowed = {}
    for layer in resizable_layers(model):
        kernel = np.asarray(layer.kernel.numpy())
        norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
        n_keep = max(1, kernel.shape[-1] - int(round(fraction * kernel.shape[-1])))
        # Largest norms first; the stable sort keeps the lower index on ties.
        narrowed[layer.name] = np.sort(np.argsort(-norms, kind="stable")[:n_keep])
    keras.utils.set_random_seed(seed)
    student = rebuild(model, {name: len(kept) for name, kept in narrowed.items()})
    _copy_kept_weights(model, student, narrowed)
    fine_tune(
        student, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        epochs, tuning.batch_size, tuning.learning_rate, seed,
    )
    return uncompiled_copy(student)


def _copy_kept_weights(model, narrow, kept_outputs: dict[str, np.ndarray]) -> None:
    """Copy the kept rows and columns of each layer of `model` into the same layer of `narrow`."""
    kept = None  # kept indices along the current activation's last axis; None keeps all
    for layer, target in zip(chain_layers(model), chain_layers(narrow)):
        kind = type(layer).__name__
        weights = layer.get_weights()
        if kind == "Flatten" and kept is not None:
            # NHWC flattening puts the channel axis fastest: feature = position * C + channel.
            channels = layer.input.shape[-1]
            positions = int(np.prod(layer.input.shape[1:-1]))
            kept = (np.arange(positions)[:, None] * channels + kept[None, :]).reshape(-1)
        elif kind in WIDTH_KEYS:
            kernel, *rest = weights
            if kept is not None:
                kernel = kernel[..., kept, :]
            outputs = kept_outputs.get(layer.name)
            if outputs is not None:
                kernel = kernel[..., outputs]
                rest = [bias[outputs] for bias in rest]
            target.set_weights([kernel, *rest])
            kept = outputs
        elif kind == "BatchNormalization":
            target.set_weights([w if kept is None else w[kept] for w in weights])


def layer_sparsity(model) -> list[dict]:
    """Return, per Conv2D and Dense layer, the kernel's shape, size, zero count and sparsity."""
    rows = []
    for layer in model.layers:
        if type(layer).__name__ not in WIDTH_KEYS:
            continue
        kernel = np.asarray(layer.kernel.numpy())
        zeros = int((kernel == 0).sum())
        rows.append({
            "layer": layer.name,
            "kernel_shape": list(kernel.shape),
            "size": int(kernel.size),
            "zeros": zeros,
            "sparsity": zeros / kernel.size,
        })
    return rows
