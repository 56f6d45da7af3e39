"""Quantize records into a model's input tensor and dequantize its output.

Both backends use these functions, so they receive the same input bytes and
their outputs are compared on equal terms.
"""

from __future__ import annotations

import logging

import numpy as np

from edgemia.errors import ModelFormatError, UnsupportedModelError
from edgemia.runtime.tflite_model import TensorInfo, TfliteModel

logger = logging.getLogger(__name__)

SUPPORTED_IO_DTYPES = (np.dtype(np.float32), np.dtype(np.int8))


def check_io(model: TfliteModel) -> None:
    """Check that the model's input and output tensors are ones capture can feed and read."""
    for role, info in (("input", model.input()), ("output", model.output())):
        if info.dtype not in SUPPORTED_IO_DTYPES:
            raise UnsupportedModelError(
                f"{model.path}: the {role} {info.label()} has type {info.type_name}; "
                "edgemia captures models with float32 or int8 input and output"
            )
        if info.dtype == np.int8 and info.scales.size == 0:
            fix = ("end the model with a DequantizeLinear to float32" if role == "output"
                   else "give the model a float32 input and a QuantizeLinear")
            raise UnsupportedModelError(
                f"{model.path}: the {role} {info.label()} is int8 with no scale or zero point; {fix}, "
                "as quantize_static writes it"
            )
        if info.dtype == np.int8 and info.scales.size != 1:
            raise UnsupportedModelError(
                f"{model.path}: the {role} {info.label()} is int8 but has "
                f"{info.scales.size} quantization scales; expected one (per-tensor)"
            )
        if len(info.shape) < 1:
            raise ModelFormatError(f"{model.path}: the {role} {info.label()} has no batch dimension")


def check_classifier_output(model: TfliteModel) -> None:
    """Check that the model's output is [batch, classes], as captures need."""
    output_shape = model.output().shape
    if len(output_shape) != 2:
        raise ModelFormatError(
            f"{model.path}: the output {model.output().label()} has shape {list(output_shape)}; "
            "edgemia captures classifiers whose output is [batch, classes]"
        )


def record_shape(info: TensorInfo) -> tuple[int, ...]:
    """Shape of one record: the tensor shape without its leading batch dimension."""
    return tuple(info.shape[1:])


def quantize_records(x: np.ndarray, info: TensorInfo) -> tuple[np.ndarray, float]:
    """Convert float32 records to the input tensor's dtype; return them and the share of values clamped.

    int8 inputs use q = clamp(round_half_even(x / scale) + zero_point, -128, 127)
    with the division in float32.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if info.dtype == np.float32:
        return x, 0.0
    scale = np.float32(info.scales[0])
    zero_point = np.float32(info.zero_points[0])
    q = np.rint(x / scale) + zero_point
    clamped = float(((q < -128) | (q > 127)).mean()) if q.size else 0.0
    return np.clip(q, -128, 127).astype(np.int8), clamped


def warn_clamped(clamped: float, info: TensorInfo) -> None:
    """Log a warning when a share `clamped` of the input values fell outside the int8 input range of `info`."""
    if clamped <= 0:
        return
    scale = np.float32(info.scales[0])
    zero_point = np.float32(info.zero_points[0])
    logger.warning(
        "%.2f%% of the input values lie outside the int8 input range [%g, %g] and were clamped; "
        "the records may differ from the data the model was calibrated on",
        100.0 * clamped,
        float((-128 - zero_point) * scale),
        float((127 - zero_point) * scale),
    )


def quantize_input(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Convert float32 records to the input tensor's dtype (see quantize_records), warning when values were clamped."""
    q, clamped = quantize_records(x, info)
    warn_clamped(clamped, info)
    return q


def dequantize_output(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Return the output as float32 logits: (q - zero_point) * scale for int8 outputs."""
    if info.dtype == np.float32:
        return np.ascontiguousarray(raw, dtype=np.float32)
    scale = np.float32(info.scales[0])
    zero_point = np.float32(info.zero_points[0])
    return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)
