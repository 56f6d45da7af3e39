"""Values that the ONNX translator tracks per ONNX tensor name, before and after they reach the native graph.

Internal to edgemia.runtime.onnx_model and the handler modules it combines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Value:
    """An activation already in the native graph."""

    native_id: int
    dtype: str  # "float32" or "int8"
    shape: list[int]  # logical ONNX shape without the batch
    nhwc: bool = False  # logical [C, H, W] stored as [H, W, C]
    scale: float = 0.0
    zero_point: int = 0

    def physical_shape(self) -> list[int]:
        if self.nhwc:
            c, h, w = self.shape
            return [h, w, c]
        return list(self.shape)


@dataclass
class _Dequantized:
    """The float output of DequantizeLinear on an int8 activation."""

    source: _Value
    # Whether ONNX Runtime's x86-64 build turns the QuantizeLinear -> DequantizeLinear pair into uint8.
    uint8: bool = True


@dataclass
class _QuantizedConstant:
    """DequantizeLinear of an initializer: integer data with scales and zero points."""

    data: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int


@dataclass
class _DynamicQuantized:
    """An output of DynamicQuantizeLinear: the uint8 values, their scale or their zero point."""

    source: _Value  # the float activation quantized at run time
    role: str  # "values", "scale" or "zero_point"


@dataclass
class _IntegerProduct:
    """The int32 output of MatMulInteger or ConvInteger on dynamically quantized values, not yet emitted."""

    node: object
    source: _Value
    weights: np.ndarray  # int8, [N, K] for MatMulInteger and [O, I, H, W] for ConvInteger
    cast: bool = False  # True after the Cast to float


@dataclass
class _ScaleProduct:
    """Mul of DynamicQuantizeLinear's scale and a constant weight scale."""

    source: _Value
    weight_scales: np.ndarray
