"""Export Keras models to TFLite: float32, and int8 with full-integer quantization."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np

from edgemia._stderr import native_stderr_to_log
from edgemia._tf import import_tensorflow

logger = logging.getLogger(__name__)


def _convert(converter) -> bytes:
    # The converter prints the traced signature to stdout; keep it off the console.
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), native_stderr_to_log("TFLite converter"):
        model_bytes = converter.convert()
    logger.debug("TFLite converter output:\n%s", chatter.getvalue())
    return model_bytes


def export_float(model) -> bytes:
    """Convert a Keras model to a float32 .tflite flatbuffer."""
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return _convert(converter)


def export_int8(model, calibration_x: np.ndarray, int8_io: bool = True) -> bytes:
    """Convert with full-integer post-training quantization.

    Every op is int8 (the conversion fails otherwise), weights are
    per-channel symmetric, and activation ranges come from running
    `calibration_x` one record at a time. With `int8_io`, the input and
    output tensors are int8 too, as on a device that feeds the model
    quantized data: the capture stage quantizes records with the input
    tensor's scale and zero point. Without it, the model keeps float32 input
    and output and quantizes inside (QUANTIZE and DEQUANTIZE ops).
    """
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    calibration_x = np.asarray(calibration_x, dtype=np.float32)

    def representative_dataset():
        for i in range(calibration_x.shape[0]):
            yield [calibration_x[i : i + 1]]

    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # The converter warns that input statistics are missing. It needs them
        # only to quantize float inputs itself, and here the capture stage does that.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return _convert(converter)


def _representative_dataset(calibration_x: np.ndarray):
    calibration_x = np.asarray(calibration_x, dtype=np.float32)

    def records():
        for i in range(calibration_x.shape[0]):
            yield [calibration_x[i : i + 1]]

    return records


def export_dynamic_range(model) -> bytes:
    """Convert with dynamic-range quantization: int8 weights, float32 activations quantized at run time.

    The converter's default optimization without a representative data set;
    input and output stay float32.
    """
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return _convert(converter)


def export_int16x8(model, calibration_x: np.ndarray) -> bytes:
    """Convert with 16-bit activations and 8-bit weights (the converter's 16x8 ops set).

    Activation ranges come from `calibration_x`. Input and output stay
    float32, so the model starts with QUANTIZE and ends with DEQUANTIZE.
    """
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative_dataset(calibration_x)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return _convert(converter)


def int4_available() -> bool:
    """Return whether ai-edge-quantizer, which writes int4 TFLite files, is installed."""
    import importlib.util

    return importlib.util.find_spec("ai_edge_quantizer") is not None


def export_int4(float_tflite: bytes, block_size: int = 32) -> tuple[bytes | None, list[str]]:
    """Quantize the FULLY_CONNECTED weights of a float32 .tflite model to 4 bits, block-wise.

    Uses ai-edge-quantizer's dynamic recipe: symmetric int4 weights with one
    float16 scale per block of `block_size` (32, 64, 128 or 256) along the
    input axis, and activations quantized to int8 at run time. Its weight-only
    recipe does not accept block-wise FULLY_CONNECTED weights (version
    0.10.0). Convolutions stay float32, as in the ONNX MatMulNBits variant.

    The quantizer rejects an input depth that is not a multiple of the block
    size, so those layers stay float32. Returns the file, or None when no
    layer qualifies, and notes naming the layers left in float32.
    """
    import re
    import tempfile
    from pathlib import Path

    from ai_edge_quantizer import qtyping, quantizer

    from edgemia.runtime.tflite_model import read_tflite

    granularity = getattr(qtyping.QuantGranularity, f"BLOCKWISE_{block_size}")
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "float.tflite"
        source.write_bytes(float_tflite)
        model = read_tflite(source)
        eligible, left_float = [], []
        for op in model.operators:
            if op.kind != "FULLY_CONNECTED":
                continue
            output_name = model.tensors[op.outputs[0]].name
            depth = model.tensors[op.inputs[1]].shape[-1]
            (eligible if depth % block_size == 0 else left_float).append(output_name)
        notes = [
            f"the TFLite file keeps FULLY_CONNECTED '{name}' in float32: ai-edge-quantizer needs an input "
            f"depth that is a multiple of the block size {block_size}"
            for name in left_float
        ]
        if not eligible:
            return None, notes
        chatter = io.StringIO()
        with contextlib.redirect_stdout(chatter), native_stderr_to_log("ai-edge-quantizer"):
            engine = quantizer.Quantizer(str(source))
            engine.add_dynamic_config(
                # The quantizer matches this against each op's scope: its output names, each followed by ';'.
                regex="^(?:" + "|".join(re.escape(name) for name in eligible) + ");$",
                operation_name=qtyping.TFLOperationName.FULLY_CONNECTED,
                num_bits=4,
                granularity=granularity,
            )
            result = engine.quantize()
        logger.debug("ai-edge-quantizer output:\n%s", chatter.getvalue())
        return bytes(result.quantized_model), notes
