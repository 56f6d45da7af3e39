"""Knowledge distillation: a student of another width trained on the teacher's softened outputs."""

from __future__ import annotations

import numpy as np

from edgemia._stderr import native_stderr_to_log
from edgemia._tf import import_keras
from edgemia.compression.chain import rebuild, resizable_layers, uncompiled_copy
from edgemia.compression.pruning import FineTuning


def soft_targets(teacher_logits: np.ndarray, temperature: float) -> np.ndarray:
    """Return softmax(logits / temperature) per row, in float32."""
    scaled = teacher_logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    p = np.exp(scaled)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def distill(teacher, transfer_x: np.ndarray, width: float, temperature: float, epochs: int,
            tuning: FineTuning, seed: int):
    """Train a fresh student `width` times as wide as `teacher` on its outputs for `transfer_x`.

    The student has the teacher's layers, with round(width * units) units or
    filters (at least one) in every Conv2D and Dense layer except the output
    layer. Its loss is T^2 * cross-entropy(softmax(teacher / T),
    softmax(student / T)), which differs from the KL divergence only by a
    constant. No labels are used, so the transfer set may be unlabeled
    population data.
    """
    from edgemia.training.train import fine_tune

    keras = import_keras()
    with native_stderr_to_log("TensorFlow inference"):
        teacher_logits = teacher.predict(transfer_x, batch_size=1024, verbose=0)
    targets = soft_targets(teacher_logits, temperature)
    widths = {}
    for layer in resizable_layers(teacher):
        size = layer.kernel.shape[-1]
        widths[layer.name] = max(1, int(round(width * size)))
    keras.utils.set_random_seed(seed)
    student = rebuild(teacher, widths)
    squared = float(temperature) ** 2

    def distillation_loss(y_true, y_pred):
        return squared * keras.losses.categorical_crossentropy(y_true, y_pred / temperature, from_logits=True)

    fine_tune(student, transfer_x, targets, distillation_loss, epochs, tuning.batch_size, tuning.learning_rate, seed)
    return uncompiled_copy(student)
