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
