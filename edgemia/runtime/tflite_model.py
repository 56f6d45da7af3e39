"""Read a .tflite flatbuffer into plain Python objects, without TensorFlow or LiteRT.

Every index, shape, buffer and quantization field is checked here, and a file
that is truncated, corrupt or not TFLite at all raises ModelFormatError with
the file name and the tensor or operator at fault.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
import tflite

from edgemia.errors import ModelFormatError

# TFLite TensorType codes -> numpy dtypes, for the types edgemia reads.
_TENSOR_TYPES: dict[int, np.dtype] = {
    tflite.TensorType.FLOAT32: np.dtype(np.float32),
    tflite.TensorType.INT32: np.dtype(np.int32),
    tflite.TensorType.UINT8: np.dtype(np.uint8),
    tflite.TensorType.INT64: np.dtype(np.int64),
    tflite.TensorType.BOOL: np.dtype(np.bool_),
    tflite.TensorType.INT16: np.dtype(np.int16),
    tflite.TensorType.INT8: np.dtype(np.int8),
    tflite.TensorType.FLOAT64: np.dtype(np.float64),
}
_TYPE_NAMES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_OPERATOR_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

# The file identifier that TFLite writes at bytes 4..8 of every model.
_FILE_IDENTIFIER = b"TFL3"


@dataclass
class TensorInfo:
    """One tensor of the model's main subgraph."""

    index: int
    name: str
    dtype: np.dtype | None  # None for types edgemia does not read (string, int4, float16, ...)
    type_name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...] | None
    data: np.ndarray | None  # constant tensors of a readable type: values with `shape`
    scales: np.ndarray  # float32, empty when not quantized
    zero_points: np.ndarray  # int64
    quantized_dimension: int
    constant: bool = False  # has a data buffer, even when its type is not readable

    @property
    def quantized(self) -> bool:
        return self.scales.size > 0

    def label(self) -> str:
        return f"tensor {self.index} '{self.name}'"


@dataclass
class OperatorInfo:
    """One operator, with its builtin options as plain values."""

    index: int
    kind: str  # builtin operator name, e.g. "CONV_2D"
    inputs: list[int]  # -1 marks an omitted optional input
    outputs: list[int]
    options: dict[str, object] = field(default_factory=dict)

    def label(self) -> str:
        return f"operator {self.index} ({self.kind})"


@dataclass
class TfliteModel:
    path: Path
    sha256: str
    tensors: list[TensorInfo]
    operators: list[OperatorInfo]
    inputs: list[int]
    outputs: list[int]

    def input(self) -> TensorInfo:
        return self.tensors[self.inputs[0]]

    def output(self) -> TensorInfo:
        return self.tensors[self.outputs[0]]


def _raw_builtin_code(code) -> int:
    """Return the stored `builtin_code` field of an OperatorCode, 0 when absent.

    LiteRT takes an operator's code as max(builtin_code,
    deprecated_builtin_code): codes above 127 fit only the first field, and
    older files fill only the second. The `tflite` package's BuiltinCode()
    returns the deprecated field whenever the stored code is below 127, which
    turns a DEQUANTIZE (6) with deprecated code 0, as ai-edge-quantizer
    writes it, into ADD (0). The field is therefore read directly.
    """
    offset = code._tab.Offset(10)  # builtin_code is the OperatorCode table's fourth field
    if offset == 0:
        return 0
    return int(code._tab.Get(flatbuffers.number_types.Int32Flags, offset + code._tab.Pos))


def _fail(path: Path, message: str) -> ModelFormatError:
    return ModelFormatError(f"{path}: {message}")


def _read_options(op, kind: str) -> dict[str, object]:
    """Return the builtin options edgemia uses for `kind`, as a dict."""
    table = op.BuiltinOptions()
    if kind == "CONV_2D" or kind == "DEPTHWISE_CONV_2D":
        cls = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
        o = cls()
        if table is None:
            raise ValueError("builtin options are missing")
        o.Init(table.Bytes, table.Pos)
        options = {
            "padding": o.Padding(),
            "stride_w": o.StrideW(),
            "stride_h": o.StrideH(),
            "dilation_w": o.DilationWFactor(),
            "dilation_h": o.DilationHFactor(),
            "activation": o.FusedActivationFunction(),
        }
        if kind == "DEPTHWISE_CONV_2D":
            options["depth_multiplier"] = o.DepthMultiplier()
        return options
    if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        if table is None:
            raise ValueError("builtin options are missing")
        o = tflite.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        return {
            "padding": o.Padding(),
            "stride_w": o.StrideW(),
            "stride_h": o.StrideH(),
            "filter_w": o.FilterWidth(),
            "filter_h": o.FilterHeight(),
            "activation": o.FusedActivationFunction(),
        }
    if kind == "FULLY_CONNECTED":
        if table is None:
            return {"activation": 0, "weights_format": 0, "keep_num_dims": 0}
        o = tflite.FullyConnectedOptions()
        o.Init(table.Bytes, table.Pos)
        return {
            "activation": o.FusedActivationFunction(),
            "weights_format": o.WeightsFormat(),
            "keep_num_dims": int(bool(o.KeepNumDims())),
        }
    if kind == "RESHAPE":
        if table is None:
            return {}
        o = tflite.ReshapeOptions()
        o.Init(table.Bytes, table.Pos)
        new_shape = o.NewShapeAsNumpy() if o.NewShapeLength() else None
        return {} if new_shape is None else {"new_shape": [int(d) for d in new_shape]}
    if kind == "STRIDED_SLICE":
        o = tflite.StridedSliceOptions()
        if table is None:
            return {"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0, "shrink_axis_mask": 0}
        o.Init(table.Bytes, table.Pos)
        return {
            "begin_mask": o.BeginMask(),
            "end_mask": o.EndMask(),
            "ellipsis_mask": o.EllipsisMask(),
            "new_axis_mask": o.NewAxisMask(),
            "shrink_axis_mask": o.ShrinkAxisMask(),
        }
    if kind in ("ADD", "MUL"):
        if table is None:
            return {"activation": 0}
        o = tflite.AddOptions() if kind == "ADD" else tflite.MulOptions()
        o.Init(table.Bytes, table.Pos)
        return {"activation": o.FusedActivationFunction()}
    if kind == "CONCATENATION":
        if table is None:
            raise ValueError("builtin options are missing")
        o = tflite.ConcatenationOptions()
        o.Init(table.Bytes, table.Pos)
        return {"axis": o.Axis(), "activation": o.FusedActivationFunction()}
    if kind == "SOFTMAX":
        if table is None:
            return {"beta": 1.0}
        o = tflite.SoftmaxOptions()
        o.Init(table.Bytes, table.Pos)
        return {"beta": float(o.Beta())}
    if kind in ("MEAN", "REDUCE_PROD"):
        if table is None:
            return {"keep_dims": 0}
        o = tflite.ReducerOptions()
        o.Init(table.Bytes, table.Pos)
        return {"keep_dims": int(bool(o.KeepDims()))}
    if kind == "GATHER":
        if table is None:
            return {"axis": 0, "batch_dims": 0}
        o = tflite.GatherOptions()
        o.Init(table.Bytes, table.Pos)
        return {"axis": o.Axis(), "batch_dims": o.BatchDims()}
    if kind == "PACK":
        if table is None:
            raise ValueError("builtin options are missing")
        o = tflite.PackOptions()
        o.Init(table.Bytes, table.Pos)
        return {"values_count": o.ValuesCount(), "axis": o.Axis()}
    return {}


def _buffer_bytes(path: Path, raw: bytes, model, buffer_index: int) -> bytes | None:
    if buffer_index < 0 or buffer_index >= model.BuffersLength():
        raise ValueError(f"buffer index {buffer_index} is outside 0..{model.BuffersLength() - 1}")
    buffer = model.Buffers(buffer_index)
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1:
        # Models over 2 GB keep buffers after the flatbuffer, addressed by offset.
        if offset + size > len(raw):
            raise ValueError(
                f"buffer {buffer_index} spans bytes {offset}..{offset + size}, past the end of the "
                f"{len(raw)}-byte file"
            )
        return raw[offset : offset + size]
    data = buffer.DataAsNumpy()
    if isinstance(data, int) or data.size == 0:
        return None
    return data.tobytes()


def _read_tensor(path: Path, raw: bytes, model, subgraph, index: int) -> TensorInfo:
    t = subgraph.Tensors(index)
    name = (t.Name() or b"").decode("utf-8", errors="replace")
    type_code = t.Type()
    dtype = _TENSOR_TYPES.get(type_code)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    signature = (
        tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else None
    )
    label = f"tensor {index} '{name}'"
    if any(d < 0 for d in shape):
        raise _fail(path, f"{label} has a negative dimension in shape {list(shape)}")

    q = t.Quantization()
    scales = np.zeros(0, dtype=np.float32)
    zero_points = np.zeros(0, dtype=np.int64)
    quantized_dimension = 0
    if q is not None:
        if q.ScaleLength():
            scales = q.ScaleAsNumpy().astype(np.float32)
        if q.ZeroPointLength():
            zero_points = q.ZeroPointAsNumpy().astype(np.int64)
        quantized_dimension = int(q.QuantizedDimension())
        if scales.size != zero_points.size:
            raise _fail(
                path, f"{label} has {scales.size} quantization scales but {zero_points.size} zero points"
            )
        outside = (zero_points < -(2**31)) | (zero_points >= 2**31)
        if outside.any():
            raise _fail(path, f"{label} has zero point {int(zero_points[outside][0])} outside the int32 range")
        if not np.isfinite(scales).all():
            raise _fail(path, f"{label} has a quantization scale that is NaN or infinite")

    data = None
    payload = _buffer_bytes(path, raw, model, t.Buffer())
    if payload is not None and dtype is not None:
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(payload) != expected:
            raise _fail(
                path,
                f"{label} has {len(payload)} bytes of data, but its shape {list(shape)} and type "
                f"{dtype.name} need {expected}",
            )
        data = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return TensorInfo(
        index=index,
        name=name,
        dtype=dtype,
        type_name=_TYPE_NAMES.get(type_code, str(type_code)).lower(),
        shape=shape,
        shape_signature=signature,
        data=data,
        scales=scales,
        zero_points=zero_points,
        quantized_dimension=quantized_dimension,
        constant=payload is not None,
    )


def _check_index_list(path: Path, values, n_tensors: int, owner: str, allow_omitted: bool) -> list[int]:
    result = [int(v) for v in values]
    low = -1 if allow_omitted else 0
    for v in result:
        if v < low or v >= n_tensors:
            raise _fail(path, f"{owner} refers to tensor {v}, but the subgraph has {n_tensors} tensors")
    return result


def read_tflite(path: str | Path) -> TfliteModel:
    """Parse and check a .tflite file's main subgraph."""
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory; pass a model file (.tflite)")
    if not path.is_file():
        raise ModelFormatError(f"{path}: model file not found")
    raw = path.read_bytes()
    if len(raw) < 8 or raw[4:8] != _FILE_IDENTIFIER:
        raise _fail(
            path,
            "not a TFLite model (the 'TFL3' file identifier is missing); pass a .tflite file "
            "written by the TFLite converter",
        )
    try:
        model = tflite.Model.GetRootAs(raw, 0)
        if model.SubgraphsLength() < 1:
            raise _fail(path, "the model has no subgraph")
        subgraph = model.Subgraphs(0)
        n_tensors = subgraph.TensorsLength()
        tensors = [_read_tensor(path, raw, model, subgraph, i) for i in range(n_tensors)]
        operators = []
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            code_index = op.OpcodeIndex()
            if code_index >= model.OperatorCodesLength():
                raise _fail(path, f"operator {i} uses opcode {code_index}, which the model does not define")
            code = model.OperatorCodes(code_index)
            builtin = max(_raw_builtin_code(code), code.DeprecatedBuiltinCode())
            kind = _OPERATOR_NAMES.get(builtin, f"BUILTIN_{builtin}")
            if kind == "CUSTOM":
                custom = (code.CustomCode() or b"").decode("utf-8", errors="replace")
                kind = f"CUSTOM:{custom}"
            inputs = _check_index_list(
                path, op.InputsAsNumpy() if op.InputsLength() else [], n_tensors,
                f"operator {i} ({kind}) input", allow_omitted=True,
            )
            outputs = _check_index_list(
                path, op.OutputsAsNumpy() if op.OutputsLength() else [], n_tensors,
                f"operator {i} ({kind}) output", allow_omitted=False,
            )
            try:
                options = _read_options(op, kind)
            except ValueError as exc:
                raise _fail(path, f"operator {i} ({kind}): {exc}") from exc
            operators.append(OperatorInfo(index=i, kind=kind, inputs=inputs, outputs=outputs, options=options))
        inputs = _check_index_list(
            path, subgraph.InputsAsNumpy() if subgraph.InputsLength() else [], n_tensors,
            "the subgraph input list", allow_omitted=False,
        )
        outputs = _check_index_list(
            path, subgraph.OutputsAsNumpy() if subgraph.OutputsLength() else [], n_tensors,
            "the subgraph output list", allow_omitted=False,
        )
    except ModelFormatError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, UnicodeDecodeError,
            OverflowError, RecursionError) as exc:
        raise _fail(
            path, f"the file is truncated or corrupt ({type(exc).__name__}: {exc}); export the model again"
        ) from exc
    if len(inputs) != 1 or len(outputs) != 1:
        raise _fail(
            path,
            f"the model has {len(inputs)} inputs and {len(outputs)} outputs; edgemia captures "
            "models with one input and one output",
        )
    return TfliteModel(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        tensors=tensors,
        operators=operators,
        inputs=inputs,
        outputs=outputs,
    )
