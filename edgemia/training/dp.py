"""DP-SGD for Keras 3 models, with privacy accounting by Google's dp-accounting package.

Each step samples every training record independently with probability
q = batch_size / n (Poisson sampling), computes one gradient per sampled
record (batched, see per_example_gradients), clips each to L2 norm C over all trainable
variables together, sums them, adds Gaussian noise of standard deviation
noise * C to every coordinate, and divides by the expected batch size
q * n. The noisy mean gradient drives Adam, which as post-processing costs
no privacy. An L2 penalty, when the chain has one, depends on the weights
alone, so its gradient is added after the noise without clipping.

The privacy cost of `steps` such steps is the composition of `steps`
Poisson-subsampled Gaussian mechanisms (sampling rate q, noise multiplier
sigma), which dp-accounting's RDP accountant turns into (epsilon, delta).
tensorflow_privacy is not used: it needs Keras 2 and switches `tf.keras` to
it when imported.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from edgemia._tf import import_keras, import_tensorflow

logger = logging.getLogger(__name__)

ACCOUNTANT = "dp_accounting.rdp.RdpAccountant"

# Search interval of the noise multiplier for a target epsilon.
_NOISE_BRACKET = (0.1, 500.0)


@dataclass(frozen=True)
class DpSgdSettings:
    """Epochs, expected batch size and Adam learning rate of DP-SGD training."""

    epochs: int
    batch_size: int
    learning_rate: float


# The dp-sgd step's defaults, in place of the recipe's plain-training settings. Noisy
# gradients want larger batches and a larger step, and at a fixed epsilon fewer steps
# need less noise each. Chosen on digits at eps=1 with benchmarks/dp_sgd_accuracy.py
# (BENCHMARKS.md); NOTE: not measured on the tabular data sets.
DEFAULT_SETTINGS = DpSgdSettings(epochs=20, batch_size=128, learning_rate=1e-2)


def step_settings(step) -> DpSgdSettings:
    """Return the epochs, batch size and learning rate of a parsed dp-sgd step (defaults filled in by parsing)."""
    return DpSgdSettings(epochs=step["epochs"], batch_size=step["batch"], learning_rate=step["lr"])


@dataclass(frozen=True)
class DpSgdPlan:
    """The quantities that fix DP-SGD's privacy cost: sampling rate, noise multiplier, steps and delta."""

    sampling_rate: float  # q, the probability that a step samples a given record
    noise_multiplier: float  # sigma: noise standard deviation divided by the clipping norm
    steps: int
    delta: float

    def epsilon(self) -> float:
        return dp_sgd_epsilon(self.sampling_rate, self.noise_multiplier, self.steps, self.delta)


def dp_sgd_event(sampling_rate: float, noise_multiplier: float, steps: int):
    """Return the dp-accounting event of `steps` Poisson-subsampled Gaussian mechanisms."""
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps
    )


class _UnconvergedOrders(logging.Filter):
    """Filter that drops and counts dp-accounting's warnings about RDP orders it left out."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "failed to converge" in record.getMessage():
            self.count += 1
            return False
        return True


@contextlib.contextmanager
def _quiet_unconverged_orders():
    """Replace dp-accounting's warning per left-out RDP order with one debug line.

    For a large noise multiplier, the series of some fractional orders does
    not converge, and the accountant leaves those orders out. The epsilon of
    the remaining orders is still an upper bound, so the warnings (dozens per
    noise search) tell the user nothing to act on.
    """
    absl = logging.getLogger("absl")
    orders = _UnconvergedOrders()
    absl.addFilter(orders)
    try:
        yield
    finally:
        absl.removeFilter(orders)
        if orders.count:
            logger.debug("dp-accounting left out %d RDP orders whose series did not converge", orders.count)


def dp_sgd_epsilon(sampling_rate: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """Return the epsilon that dp-accounting's RDP accountant gives DP-SGD at `delta`."""
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    with _quiet_unconverged_orders():
        accountant.compose(dp_sgd_event(sampling_rate, noise_multiplier, steps))
        return float(accountant.get_epsilon(delta))


def noise_for_epsilon(epsilon: float, sampling_rate: float, steps: int, delta: float) -> float:
    """Return the smallest noise multiplier (within 1e-3) whose epsilon at `delta` is at most `epsilon`.

    Raises ValueError when even the largest multiplier searched gives more.
    """
    import dp_accounting
    from dp_accounting import rdp

    low, high = _NOISE_BRACKET
    if dp_sgd_epsilon(sampling_rate, high, steps, delta) > epsilon:
        raise ValueError(
            f"epsilon {epsilon:g} at delta {delta:g} needs a noise multiplier above {high:g} for {steps} steps "
            f"at sampling rate {sampling_rate:.4g}; raise eps or train fewer epochs"
        )
    if dp_sgd_epsilon(sampling_rate, low, steps, delta) <= epsilon:
        return low
    with _quiet_unconverged_orders():
        return float(dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            lambda sigma: dp_sgd_event(sampling_rate, sigma, steps),
            epsilon,
            delta,
            dp_accounting.ExplicitBracketInterval(low, high),
            tol=1e-3,
        ))


def plan_dp_sgd(n_records: int, batch_size: int, epochs: int, delta: float, epsilon: float | None,
                noise_multiplier: float | None) -> DpSgdPlan:
    """Return the plan for `epochs` passes of expected batch `batch_size` over `n_records` records.

    Each epoch has ceil(n / batch_size) steps. The noise multiplier is the
    one given, or else the smallest that meets `epsilon`.
    """
    sampling_rate = min(1.0, batch_size / n_records)
    steps = epochs * math.ceil(n_records / batch_size)
    if noise_multiplier is None:
        noise_multiplier = noise_for_epsilon(epsilon, sampling_rate, steps, delta)
    return DpSgdPlan(sampling_rate, float(noise_multiplier), steps, delta)


def _forward(model, x, training: bool):
    """Run a chain model layer by layer; return its logits and (layer, input, pre-activation output) per weighted layer."""
    tf = import_tensorflow()
    from edgemia.compression.chain import chain_layers
    from edgemia.errors import InputError

    weighted = []
    h = x
    for layer in chain_layers(model):
        kind = type(layer).__name__
        if kind not in ("Conv2D", "Dense"):
            if layer.trainable_weights:
                raise InputError(
                    f"dp-sgd: layer '{layer.name}' ({kind}) has weights, and dp-sgd computes per-example "
                    "gradients for Conv2D and Dense layers only; use a model without it"
                )
            h = layer(h, training=training)
            continue
        if kind == "Dense" and len(h.shape) != 2:
            raise InputError(f"dp-sgd: Dense layer '{layer.name}' reads a tensor of rank {len(h.shape)}; "
                             "dp-sgd needs Dense layers on flat inputs (put a Flatten layer before it)")
        if kind == "Conv2D" and (layer.data_format != "channels_last" or layer.groups != 1):
            raise InputError(f"dp-sgd: Conv2D layer '{layer.name}' is grouped or channels_first; dp-sgd "
                             "supports channels_last convolutions without groups")
        kernel = layer.kernel.value
        if kind == "Dense":
            z = tf.matmul(h, kernel)
        else:
            z = tf.nn.conv2d(h, kernel, strides=layer.strides, padding=layer.padding.upper(),
                             dilations=layer.dilation_rate)
        if layer.use_bias:
            z = z + layer.bias.value
        weighted.append((layer, h, z))
        h = layer.activation(z)
    return h, weighted


def per_example_gradients(model, x, targets) -> list:
    """Return the gradient of each record's cross-entropy loss, one tensor [n, *variable.shape] per variable.

    `targets` are class probabilities (one-hot or smoothed), and the
    tensors follow model.trainable_variables. One backward pass of the
    summed loss gives each record's gradient with respect to every layer's
    pre-activation output, because a record's loss depends only on its own
    outputs. Each weight gradient then follows in closed form, batched over
    the records: the outer product of the layer's input and that gradient
    for Dense, and the same over image patches for Conv2D. There is no loop
    over records, so this needs layers that treat records independently
    (no BatchNormalization).
    """
    tf = import_tensorflow()
    keras = import_keras()
    with tf.GradientTape() as tape:
        logits, weighted = _forward(model, x, training=True)
        loss = tf.reduce_sum(keras.losses.categorical_crossentropy(targets, logits, from_logits=True))
    output_gradients = tape.gradient(loss, [z for _, _, z in weighted])

    by_variable = {}
    for (layer, inputs, _), dz in zip(weighted, output_gradients):
        if type(layer).__name__ == "Dense":
            kernel_gradient = tf.einsum("bi,bj->bij", inputs, dz)
            bias_gradient = dz
        else:
            kh, kw, channels_in, channels_out = layer.kernel.shape
            patches = tf.image.extract_patches(
                inputs, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
                rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper(),
            )
            kernel_gradient = tf.reshape(tf.einsum("bhwk,bhwc->bkc", patches, dz),
                                         [-1, kh, kw, channels_in, channels_out])
            bias_gradient = tf.reduce_sum(dz, axis=[1, 2])
        by_variable[id(layer.kernel)] = kernel_gradient
        if layer.use_bias:
            by_variable[id(layer.bias)] = bias_gradient
    return [by_variable[id(variable)] for variable in model.trainable_variables]


def clip_gradients(gradients: list, clip: float) -> tuple[list, object]:
    """Scale each record's gradient to L2 norm at most `clip`, over all variables together.

    Returns the clipped gradients and the norms before clipping, [n].
    """
    tf = import_tensorflow()
    squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1) for g in gradients]
    norms = tf.sqrt(tf.add_n(squares))
    scale = 1.0 / tf.maximum(1.0, norms / clip)
    clipped = [g * tf.reshape(scale, [-1] + [1] * (len(g.shape) - 1)) for g in gradients]
    return clipped, norms


def train_dp_sgd(model, x: np.ndarray, targets: np.ndarray, plan: DpSgdPlan, clip: float, batch_size: int,
                 learning_rate: float, seed: int, l2: float = 0.0) -> dict:
    """Train `model` in place with DP-SGD by `plan`; return the privacy and timing summary.

    `targets` are class probabilities per record. Sampling and noise come
    from a TensorFlow generator seeded with `seed`.
    """
    tf = import_tensorflow()
    keras = import_keras()
    n = len(x)
    steps_per_epoch = math.ceil(n / batch_size)
    epochs = plan.steps // steps_per_epoch
    x_all = tf.constant(np.asarray(x, dtype=np.float32))
    t_all = tf.constant(np.asarray(targets, dtype=np.float32))
    variables = model.trainable_variables
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    optimizer.build(variables)
    generator = tf.random.Generator.from_seed(seed)
    expected_batch = plan.sampling_rate * n
    kernel_ids = {id(layer.kernel) for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")}
    noise_stddev = plan.noise_multiplier * clip

    def summed_clipped(xb, tb):
        clipped, _ = clip_gradients(per_example_gradients(model, xb, tb), clip)
        return [tf.reduce_sum(g, axis=0) for g in clipped]

    def zeros():
        return [tf.zeros_like(v) for v in variables]

    @tf.function
    def run_epoch():
        for _ in tf.range(steps_per_epoch):
            sampled = tf.reshape(tf.where(generator.uniform([n]) < plan.sampling_rate), [-1])
            xb, tb = tf.gather(x_all, sampled), tf.gather(t_all, sampled)
            sums = tf.cond(tf.size(sampled) > 0, lambda: summed_clipped(xb, tb), zeros)
            noisy = [(s + generator.normal(tf.shape(s), stddev=noise_stddev)) / expected_batch for s in sums]
            if l2 > 0:
                # The gradient of l2 * sum(w^2) is 2 * l2 * w on kernels, and zero on biases.
                noisy = [g + 2.0 * l2 * v.value if id(v) in kernel_ids else g for g, v in zip(noisy, variables)]
            optimizer.apply_gradients(zip(noisy, variables))

    start = time.perf_counter()
    for _ in range(epochs):
        run_epoch()
    seconds = time.perf_counter() - start
    # The accounting covers the noisy steps the optimizer applied, counted by its iterations.
    steps_run = int(optimizer.iterations.numpy())
    epsilon = dp_sgd_epsilon(plan.sampling_rate, plan.noise_multiplier, steps_run, plan.delta)
    logger.info("DP-SGD: %d steps, q=%.4f, noise multiplier %.3f, clip %g: epsilon %.3f at delta %g in %.1f s",
                steps_run, plan.sampling_rate, plan.noise_multiplier, clip, epsilon, plan.delta, seconds)
    return {
        "method": "dp-sgd",
        "epsilon": epsilon,
        "delta": plan.delta,
        "noise_multiplier": plan.noise_multiplier,
        "clip": clip,
        "sampling_rate": plan.sampling_rate,
        "steps": steps_run,
        "epochs": epochs,
        "expected_batch_size": expected_batch,
        "accountant": f"{ACCOUNTANT}: {steps_run} compositions of a Poisson-subsampled Gaussian mechanism",
        "training_seconds": seconds,
    }
