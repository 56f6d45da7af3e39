"""Read an .onnx file and translate it into the native kernel's graph form.

These kinds of graph are accepted: float32 graphs (Conv, Gemm, MatMul, Add,
Mul, Concat, Pad, Relu, Clip, Sigmoid, Tanh, Softmax, MaxPool, AveragePool,
GlobalAveragePool, Reshape, Flatten, Transpose, Squeeze); int8 QDQ graphs as
ONNX Runtime's quantize_static writes them; int8 QOperator graphs
(QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearMul, QLinearConcat,
QLinearAveragePool, QLinearGlobalAveragePool, QLinearSigmoid, QLinearSoftmax,
Pad); int4
weight-only MatMulNBits; and dynamic-range graphs as quantize_dynamic writes
them (DynamicQuantizeLinear -> MatMulInteger or ConvInteger -> Cast -> Mul,
with an optional bias Add), each chain becoming one DYNAMIC_FULLY_CONNECTED or
DYNAMIC_CONV_2D op that quantizes every record on its own. A QDQ graph is
translated the way ONNX Runtime fuses it: DequantizeLinear ->
Conv/Gemm/MatMul -> QuantizeLinear becomes one integer op, DequantizeLinear
-> Add/Mul/Concat/AveragePool/GlobalAveragePool/Sigmoid/Softmax -> QuantizeLinear
becomes the matching QLinear op (or stays a float op between DEQUANTIZE and
QUANTIZE where ONNX Runtime leaves it unfused, see fused_domain), and
QuantizeLinear / DequantizeLinear pairs around MaxPool, Pad, Reshape and
Transpose disappear (a Reshape or Transpose whose quantization changes moves
the dequantized floats, as ONNX Runtime does). Any other pattern would run in float inside ONNX
Runtime, which the integer kernels do not reproduce, so it is reported as
unsupported.

ONNX convolutions are NCHW while the native kernels are NHWC: activations
that the ONNX graph holds as [C, H, W] are stored as [H, W, C], and a
TRANSPOSE is inserted only where the layouts meet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgemia.errors import EdgemiaError, ModelFormatError, UnsupportedModelError
from edgemia.runtime.onnx_dynamic import DynamicQuantizationHandlers
from edgemia.runtime.onnx_values import _Dequantized, _QuantizedConstant, _Value
from edgemia.runtime.tflite_model import TensorInfo


@dataclass
class OnnxModel:
    path: Path
    sha256: str
    proto: object  # onnx.ModelProto
    input_info: TensorInfo
    output_info: TensorInfo

    def input(self) -> TensorInfo:
        return self.input_info

    def output(self) -> TensorInfo:
        return self.output_info


# ONNX Runtime's x86-64 build converts int8 QDQ activations to uint8 (value +
# 128) before fusing where it can (see becomes_uint8), so its QLinearAdd,
# QLinearMul and QLinearAveragePool round with the shifted zero points;
# QOperator files keep int8. NOTE: ARM builds keep int8 QDQ activations, so on
# ARM these ops can differ in the last bit.

_ELEMENT_TYPES = {1: np.dtype(np.float32), 3: np.dtype(np.int8), 6: np.dtype(np.int32), 7: np.dtype(np.int64)}


def _value_info(path: Path, value, role: str, index: int) -> TensorInfo:
    tensor_type = value.type.tensor_type
    dtype = _ELEMENT_TYPES.get(tensor_type.elem_type)
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    if not dims:
        raise UnsupportedModelError(f"{path}: the {role} '{value.name}' has no shape")
    if any(d <= 0 for d in dims[1:]):
        raise UnsupportedModelError(
            f"{path}: the {role} '{value.name}' has shape {dims}; only the batch dimension may be dynamic"
        )
    return TensorInfo(
        index=index,
        name=value.name,
        dtype=dtype,
        type_name=str(dtype) if dtype is not None else f"onnx type {tensor_type.elem_type}",
        shape=(1, *dims[1:]),
        shape_signature=(dims[0], *dims[1:]),
        data=None,
        scales=np.zeros(0, np.float32),
        zero_points=np.zeros(0, np.int64),
        quantized_dimension=0,
    )


def read_onnx(path: str | Path) -> OnnxModel:
    """Parse and check an .onnx file: one float32 input and one float32 output."""
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory; pass a model file (.onnx)")
    if not path.is_file():
        raise ModelFormatError(f"{path}: model file not found")
    raw = path.read_bytes()
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError as exc:
        raise ModelFormatError(f"reading .onnx files needs the onnx package ({exc}); pip install onnx") from exc
    try:
        proto = onnx.load_from_string(raw)
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise UnsupportedModelError(
            f"{path}: the model has {len(inputs)} inputs and {len(proto.graph.output)} outputs; edgemia "
            "captures models with one input and one output"
        )
    return OnnxModel(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        proto=proto,
        input_info=_value_info(path, inputs[0], "input", 0),
        output_info=_value_info(path, _inferred_output(proto), "output", 1),
    )


def _inferred_output(proto):
    """Return the graph output, with its shape filled in from the graph where the file leaves dims open.

    Converters write open dims after Reshape nodes whose target has a -1, such as those
    around a Dense layer on records of several rows. ONNX shape inference follows such
    targets, but stops at contrib ops such as MatMulNBits, so a last Reshape to a
    constant target of the form [-1, d1, d2, ...] also settles the shape.
    """
    import onnx
    from onnx import numpy_helper

    output = proto.graph.output[0]
    if all(d.HasField("dim_value") for d in output.type.tensor_type.shape.dim[1:]):
        return output
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        found = next(value for value in inferred.graph.output if value.name == output.name)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError, StopIteration):
        found = output
    if all(d.HasField("dim_value") for d in found.type.tensor_type.shape.dim[1:]):
        return found
    producer = next((node for node in proto.graph.node if output.name in node.output), None)
    targets = {init.name: init for init in proto.graph.initializer}
    if producer is None or producer.op_type != "Reshape" or len(producer.input) < 2 or producer.input[1] not in targets:
        return output
    try:
        target = numpy_helper.to_array(targets[producer.input[1]]).reshape(-1)
    except (ValueError, TypeError):
        return output
    if target.dtype.kind not in "iu" or target.size < 2 or target[0] != -1 or np.any(target[1:] <= 0):
        return output
    settled = onnx.ValueInfoProto()
    settled.CopyFrom(output)
    dims = settled.type.tensor_type.shape.dim
    del dims[:]
    dims.add().dim_param = "batch"
    for value in target[1:]:
        dims.add().dim_value = int(value)
    return settled


# ---------------------------------------------------------------------------
# Translation into the native graph.


@dataclass
class _Translator(DynamicQuantizationHandlers):
    model: OnnxModel
    graph: object  # edgemia._native.Graph
    values: dict = field(default_factory=dict)  # ONNX name -> _Value | _Dequantized | _QuantizedConstant
    constants: dict = field(default_factory=dict)  # ONNX name -> np.ndarray
    consumers: dict = field(default_factory=dict)  # ONNX name -> list of nodes
    skipped: set = field(default_factory=set)  # ids of nodes folded into an earlier op
    # ONNX name -> rows per record, for activations whose rows a Reshape moved into the batch
    batch_rows: dict = field(default_factory=dict)
    reshape_rows: int = 1  # rows per record of the Reshape being translated
    ops: int = 0

    # -- helpers -------------------------------------------------------------

    def fail(self, node, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.model.path}: node '{node.name}' ({node.op_type}): {message}")

    def unsupported(self, node, message: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{self.model.path}: node '{node.name}' ({node.op_type}): {message}")

    def add_activation(self, name: str, dtype: str, physical: list[int], scale: float = 0.0, zero_point: int = 0) -> int:
        quant = ([float(np.float32(scale))], [int(zero_point)]) if dtype == "int8" else ([], [])
        return self.graph.add_tensor(name, dtype, physical, None, quant[0], quant[1], 0)

    def add_constant(self, name: str, array: np.ndarray, dtype: str, scales=(), zero_points=(), axis: int = 0) -> int:
        data = np.ascontiguousarray(array).tobytes()
        return self.graph.add_tensor(
            name, dtype, list(array.shape), data, [float(s) for s in scales], [int(z) for z in zero_points], axis
        )

    def add_op(self, kind: str, node_name: str, inputs: list[int], outputs: list[int], options=None) -> None:
        self.graph.add_op(kind, node_name, inputs, outputs, options or {}, {})
        self.ops += 1

    def scalar(self, node, name: str):
        if name not in self.constants:
            raise self.unsupported(node, f"'{name}' must be a constant")
        value = self.constants[name]
        if value.size != 1:
            raise self.unsupported(node, f"'{name}' must hold one value (per-tensor quantization)")
        return value.reshape(-1)[0]

    def sole_consumer(self, name: str):
        nodes = self.consumers.get(name, [])
        outputs = {output.name for output in self.model.proto.graph.output}
        return nodes[0] if len(nodes) == 1 and name not in outputs else None

    def attributes(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def as_layout(self, value: _Value, nhwc: bool, node) -> _Value:
        """Return `value` stored in the requested layout, inserting a TRANSPOSE if needed."""
        if value.nhwc == nhwc:
            return value
        if len(value.shape) != 3:
            raise self.unsupported(node, f"needs a [C, H, W] activation, got shape {value.shape}")
        c, h, w = value.shape
        # [C, H, W] -> [H, W, C] reads axes (1, 2, 0); the reverse reads (2, 0, 1).
        perm = (1, 2, 0) if nhwc else (2, 0, 1)
        physical = [h, w, c] if nhwc else [c, h, w]
        converted = _Value(0, value.dtype, value.shape, nhwc, value.scale, value.zero_point)
        converted.native_id = self.add_activation(f"{node.name}:layout", value.dtype, physical, value.scale,
                                                  value.zero_point)
        if _moves_only_unit_axes(value.physical_shape(), perm):
            # Only axes of size 1 move, so the bytes stay in order: a reshape suffices.
            self.add_op("RESHAPE", f"{node.name}:layout", [value.native_id], [converted.native_id])
        else:
            self.add_op("TRANSPOSE", f"{node.name}:layout", [value.native_id], [converted.native_id],
                        {f"perm{i}": p for i, p in enumerate(perm)})
        return converted

    def _input_rows(self, node) -> int:
        """Return the rows per record in the batch of the node's activations, if the node may read them."""
        activations = [name for name in node.input if isinstance(self.values.get(name), (_Value, _Dequantized))]
        rows = {self.batch_rows.get(name, 1) for name in activations}
        if rows == {1} or not rows:
            return 1
        if node.op_type not in _ROW_OP_TYPES:
            raise self.unsupported(node, "reads a tensor whose rows a Reshape moved into the batch. On such tensors "
                                         f"the native kernel runs only {', '.join(_ROW_OP_TYPES)}")
        if len(rows) > 1:
            raise self.unsupported(node, "combines tensors with different rows per record in the batch")
        if node.op_type in ("Add", "Mul"):
            for name in node.input:
                value = self.values.get(name)
                data = value.data if isinstance(value, _QuantizedConstant) else self.constants.get(name)
                if data is not None and int(np.prod(data.shape[:-1])) != 1:
                    # ONNX broadcasts it against the batch of rows, which the kernel keeps per record.
                    raise self.unsupported(node, f"constant '{name}' of shape {list(data.shape)} varies across rows; "
                                                 "against rows in the batch only a constant row is supported")
        if node.op_type == "Reshape" and node.input[1] in self.constants and 0 in self.constants[node.input[1]]:
            raise self.unsupported(node, "a 0 in the target shape copies a dimension of the batch of rows, which the "
                                         "native kernel keeps per record")
        return rows.pop()

    # -- translation ---------------------------------------------------------

    def run(self) -> tuple[int, int]:
        from onnx import numpy_helper

        proto = self.model.proto
        for init in proto.graph.initializer:
            try:
                self.constants[init.name] = numpy_helper.to_array(init)
            except (ValueError, TypeError) as exc:
                raise ModelFormatError(f"{self.model.path}: initializer '{init.name}' is malformed ({exc})") from exc
        for node in proto.graph.node:
            if node.op_type == "Constant":
                attrs = self.attributes(node)
                if "value" not in attrs:
                    raise self.unsupported(node, "only tensor constants are supported")
                self.constants[node.output[0]] = numpy_helper.to_array(attrs["value"])
            elif node.op_type == "Reshape" and all(name in self.constants for name in node.input[:2]):
                # quantize_dynamic reshapes each convolution bias to [1, C, 1, 1].
                self.constants[node.output[0]] = self._reshape_constant(node)
                self.skipped.add(id(node))
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

        info = self.model.input()
        input_value = _Value(self.add_activation(info.name, "float32", list(info.shape[1:])), "float32",
                             list(info.shape[1:]))
        self.values[info.name] = input_value

        for node in proto.graph.node:
            if id(node) in self.skipped or node.op_type == "Constant":
                continue
            handler = getattr(self, f"_{node.op_type}", None)
            if handler is None:
                raise self.unsupported(node, "this ONNX op is not supported by the native kernel")
            rows = self._input_rows(node)
            written = set(self.values)
            self.reshape_rows = 1
            try:
                handler(node)
            except (IndexError, KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as exc:
                # The handlers check what valid files vary in; a mutated or hand-written file can still miss an
                # input or carry a value of the wrong kind, which must be reported against its node.
                if isinstance(exc, EdgemiaError) or type(exc).__module__.startswith("edgemia._native"):
                    raise
                raise self.fail(node, f"is malformed ({type(exc).__name__}: {exc})") from exc
            rows = self.reshape_rows if node.op_type == "Reshape" else rows
            if rows > 1:
                self.batch_rows.update((name, rows) for name in set(self.values) - written)

        output = proto.graph.output[0].name
        if output in self.batch_rows:
            raise UnsupportedModelError(
                f"{self.model.path}: the output '{output}' has {self.batch_rows[output]} rows per record in its "
                "batch dimension; the native kernel needs one output row per record"
            )
        value = self.values.get(output)
        if isinstance(value, _Dequantized):
            source = self.as_layout(value.source, False, _NodeName(output))
            out_id = self.add_activation(output, "float32", source.shape)
            self.add_op("DEQUANTIZE", output, [source.native_id], [out_id])
        elif isinstance(value, _Value):
            if value.dtype != "float32":
                raise UnsupportedModelError(f"{self.model.path}: the output '{output}' is not float32")
            out_id = self.as_layout(value, False, _NodeName(output)).native_id
        else:
            raise ModelFormatError(f"{self.model.path}: no node computes the output '{output}'")
        return input_value.native_id, out_id

    # DequantizeLinear / QuantizeLinear ------------------------------------

    def _DequantizeLinear(self, node) -> None:
        source = node.input[0]
        scale = self.constants.get(node.input[1])
        zero_point = self.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            raise self.unsupported(node, "the scale must be a constant")
        if source in self.constants:
            data = self.constants[source]
            if data.dtype not in (np.int8, np.int32):
                raise self.unsupported(node, f"constant '{source}' has type {data.dtype}; int8 or int32 expected")
            zp = np.zeros_like(scale, dtype=np.int64) if zero_point is None else zero_point.astype(np.int64)
            axis = int(self.attributes(node).get("axis", 1))
            self.values[node.output[0]] = _QuantizedConstant(data, scale.astype(np.float32).reshape(-1),
                                                             zp.reshape(-1), axis)
            return
        value = self.values.get(source)
        if not isinstance(value, _Value) or value.dtype != "int8":
            raise self.unsupported(node, f"'{source}' is not an int8 activation")
        if float(np.float32(self.scalar(node, node.input[1]))) != value.scale or (
            zero_point is not None and int(self.scalar(node, node.input[2])) != value.zero_point
        ):
            raise self.unsupported(node, "dequantizes with parameters other than the tensor was quantized with")
        self.values[node.output[0]] = _Dequantized(value, self.becomes_uint8(source))

    def becomes_uint8(self, name: str) -> bool:
        """Return whether ONNX Runtime's x86-64 build converts the int8 activation `name` to uint8.

        It first gives each consumer of a shared DequantizeLinear its own copy, keeping the original for a
        graph output, then converts a QuantizeLinear -> DequantizeLinear pair to uint8 only when that
        QuantizeLinear feeds one node. So `name` is converted when it feeds one DequantizeLinear, and that
        one feeds one node, or is only the graph's output.
        """
        dq = self.sole_consumer(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return False
        uses = len(self.consumers.get(dq.output[0], []))
        return uses == 0 or self.sole_consumer(dq.output[0]) is not None

    def fused_domain(self, node, operands: list) -> int | None:
        """Return the uint8_domain (0 or 1) in which ONNX Runtime fuses DequantizeLinear -> `node` -> QuantizeLinear.

        Return None when ONNX Runtime runs `node` in float, because its inputs and output differ in type (int8 or
        uint8).
        """
        q = self.sole_consumer(node.output[0])
        kinds = {value.uint8 for value in operands}
        if q is not None and q.op_type == "QuantizeLinear":
            kinds.add(self.becomes_uint8(q.output[0]))
        return int(kinds.pop()) if len(kinds) == 1 else None

    def dequantized_inputs(self, node) -> list:
        """Return `node`'s inputs in float, as ONNX Runtime runs them when it leaves a QDQ group unfused.

        Its DequantizeLinear, float op and QuantizeLinear then run here as DEQUANTIZE, the float op and QUANTIZE;
        for Add, Mul and Concat that gives the same bytes, since each float result is one rounding.
        """
        values = []
        for position, name in enumerate(node.input):
            value = self.values.get(name)
            if isinstance(value, _Dequantized):
                source = value.source
                out = _Value(0, "float32", list(source.shape), source.nhwc)
                out.native_id = self.add_activation(f"{node.name}:dequantized:{position}", "float32",
                                                    source.physical_shape())
                self.add_op("DEQUANTIZE", f"{node.name}:dequantize:{position}", [source.native_id],
                            [out.native_id])
                value = out
            values.append(value)
        return values

    def _QuantizeLinear(self, node) -> None:
        value = self.values.get(node.input[0])
        if isinstance(value, _Dequantized):
            # A Q that repeats the DQ's parameters gives back the int8 values.
            same = (float(np.float32(self.scalar(node, node.input[1]))) == value.source.scale
                    and int(self.scalar(node, node.input[2])) == value.source.zero_point)
            if not same:
                raise self.unsupported(node, "requantizing to other parameters is not supported")
            self.values[node.output[0]] = value.source
            return
        if not isinstance(value, _Value) or value.dtype != "float32":
            raise self.unsupported(node, f"'{node.input[0]}' is not a float activation")
        scale = float(np.float32(self.scalar(node, node.input[1])))
        zero_point = self.scalar(node, node.input[2]) if len(node.input) > 2 else np.int8(0)
        if np.asarray(zero_point).dtype != np.int8:
            raise self.unsupported(node, "only int8 quantization is supported (not uint8)")
        out = _Value(0, "int8", value.shape, value.nhwc, scale, int(zero_point))
        out.native_id = self.add_activation(node.output[0], "int8", value.physical_shape(), scale, int(zero_point))
        self.add_op("QUANTIZE", node.name, [value.native_id], [out.native_id])
        self.values[node.output[0]] = out

    def _fused_output(self, node):
        """The QuantizeLinear that consumes `node`'s output, with its scale and zero point."""
        q = self.sole_consumer(node.output[0])
        if q is None or q.op_type != "QuantizeLinear":
            uses = len(self.consumers.get(node.output[0], []))
            where = "goes to several nodes" if uses > 1 else "is not quantized again"
            raise self.unsupported(
                node,
                f"its inputs are dequantized int8 values but its output {where}, so ONNX Runtime would run it "
                "in float; re-quantize the model with quantize_static",
            )
        if len(q.input) < 3 or not q.input[2]:
            raise self.unsupported(q, "only int8 quantization is supported; a missing zero point means uint8")
        scale = float(np.float32(self.scalar(q, q.input[1])))
        zero_point = self.scalar(q, q.input[2])
        if np.asarray(zero_point).dtype != np.int8:
            raise self.unsupported(q, "only int8 quantization is supported (not uint8)")
        self.skipped.add(id(q))
        return q, scale, int(zero_point)

    def _weights(self, node, name: str, channel_axis: int) -> _QuantizedConstant:
        weights = self.values.get(name)
        if not isinstance(weights, _QuantizedConstant) or weights.data.dtype != np.int8:
            raise self.unsupported(node, f"weights '{name}' must be a dequantized int8 constant")
        if (weights.zero_points != 0).any():
            raise self.unsupported(node, "weights must be symmetric (zero point 0)")
        if weights.scales.size > 1 and weights.axis % weights.data.ndim != channel_axis:
            raise self.unsupported(node, f"per-channel weight scales must lie on axis {channel_axis}")
        return weights

    def _bias(self, node, name: str | None, channels: int):
        if not name:
            return None
        bias = self.values.get(name)
        if not isinstance(bias, _QuantizedConstant) or bias.data.dtype != np.int32 or bias.data.shape != (channels,):
            raise self.unsupported(node, f"bias '{name}' must be a dequantized int32 constant of {channels} values")
        return bias

    # Conv ---------------------------------------------------------------

    def _conv_options(self, node, kernel: list[int]) -> dict:
        attrs = self.attributes(node)
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.unsupported(node, "auto_pad is not supported; export with explicit pads")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        if len(pads) != 4 or len(strides) != 2 or len(dilations) != 2 or len(kernel) != 2:
            raise self.unsupported(node, "only 2-D windows are supported")
        if min(*strides, *dilations, *kernel) < 1 or min(pads) < 0:
            raise self.fail(node, f"invalid window: kernel {kernel}, strides {strides}, dilations {dilations}, "
                                  f"pads {pads}; sizes must be positive and pads non-negative")
        return {
            "padding": 2, "pad_top": pads[0], "pad_left": pads[1], "pad_bottom": pads[2], "pad_right": pads[3],
            "stride_h": strides[0], "stride_w": strides[1], "dilation_h": dilations[0], "dilation_w": dilations[1],
            "activation": 0,
        }

    def _Conv(self, node) -> None:
        x = self.values.get(node.input[0])
        group = int(self.attributes(node).get("group", 1))
        if isinstance(x, _Dequantized):
            weights = self._weights(node, node.input[1], 0)
            bias = self._bias(node, node.input[2] if len(node.input) > 2 else None, weights.data.shape[0])
            q, scale, zero_point = self._fused_output(node)
            self._conv_int8(node, x.source, weights, bias, q.output[0], scale, zero_point)
            return
        if not isinstance(x, _Value) or x.dtype != "float32":
            raise self.unsupported(node, "the input must be float32 or a dequantized int8 activation")
        w = self.constants.get(node.input[1])
        if w is None or w.ndim != 4:
            raise self.unsupported(node, "the weights must be a constant [O, I, H, W] tensor")
        o, _, kh, kw = w.shape
        source = self.as_layout(x, True, node)
        options = self._conv_options(node, [kh, kw])
        inputs = [source.native_id, self.add_constant(node.input[1], np.ascontiguousarray(
            w.astype(np.float32).transpose(0, 2, 3, 1)), "float32"), -1]
        if len(node.input) > 2 and node.input[2]:
            inputs[2] = self.add_constant(node.input[2], self.constants[node.input[2]].astype(np.float32), "float32")
        out = self._conv_output(node, node.output[0], source, o, [kh, kw], options, "float32")
        self.add_op("CONV_2D", node.name, inputs, [out.native_id], options)
        self.values[node.output[0]] = out

    def _conv_int8(self, node, x: _Value, weights: _QuantizedConstant, bias, name: str, scale: float,
                   zero_point: int) -> None:
        """Emit an int8 (depthwise) convolution writing `name` with the given output quantization."""
        group = int(self.attributes(node).get("group", 1))
        o, i, kh, kw = weights.data.shape
        source = self.as_layout(x, True, node)
        options = self._conv_options(node, [kh, kw])
        w_ohwi = np.ascontiguousarray(weights.data.transpose(0, 2, 3, 1))
        depthwise = group > 1 and i == 1 and group == source.shape[0]
        if depthwise:
            # A grouped conv with one input channel per group is a depthwise conv: filter [1, H, W, O].
            w_id = self.add_constant(f"{node.name}:weights", np.ascontiguousarray(w_ohwi.transpose(3, 1, 2, 0)),
                                     "int8", weights.scales, weights.zero_points, 3)
            options["depth_multiplier"] = o // group
        else:
            w_id = self.add_constant(f"{node.name}:weights", w_ohwi, "int8", weights.scales, weights.zero_points, 0)
        inputs = [source.native_id, w_id, -1]
        if bias is not None:
            inputs[2] = self.add_constant(f"{node.name}:bias", bias.data, "int32", bias.scales, bias.zero_points, 0)
        out = self._conv_output(node, name, source, o, [kh, kw], options, "int8", scale, zero_point)
        self.add_op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", node.name, inputs, [out.native_id], options)
        self.values[name] = out

    def _conv_output(self, node, name, source: _Value, channels, kernel, options, dtype, scale=0.0, zero_point=0):
        _, h, w = source.shape
        effective_h = (kernel[0] - 1) * options.get("dilation_h", 1) + 1
        effective_w = (kernel[1] - 1) * options.get("dilation_w", 1) + 1
        out_h = (h + options["pad_top"] + options["pad_bottom"] - effective_h) // options["stride_h"] + 1
        out_w = (w + options["pad_left"] + options["pad_right"] - effective_w) // options["stride_w"] + 1
        if out_h < 1 or out_w < 1:
            raise self.fail(node, f"the window does not fit the {h}x{w} input")
        value = _Value(0, dtype, [channels, out_h, out_w], True, scale, zero_point)
        value.native_id = self.add_activation(name, dtype, value.physical_shape(), scale, zero_point)
        return value

    # Gemm / MatMul --------------------------------------------------------

    def _fully_connected(self, node, a_name: str, weights_nk, scales, zero_points, bias, float_bias=None) -> None:
        a = self.values.get(a_name)
        quantized = isinstance(a, _Dequantized)
        source = a.source if quantized else a
        if not isinstance(source, _Value):
            raise self.unsupported(node, f"'{a_name}' is not an activation")
        source = self.as_layout(source, False, node)
        units, depth = weights_nk.shape
        if not source.shape or source.shape[-1] != depth:
            raise self.fail(node, f"the input has shape {source.shape} but the weights expect {depth} features")
        if quantized:
            q, scale, zero_point = self._fused_output(node)
            self._fully_connected_int8(node, source, weights_nk, scales, bias, q.output[0], scale, zero_point)
            return
        w_id = self.add_constant(f"{node.name}:weights", weights_nk.astype(np.float32), "float32")
        inputs = [source.native_id, w_id, -1]
        if float_bias is not None:
            inputs[2] = self.add_constant(f"{node.name}:bias", float_bias.astype(np.float32), "float32")
        shape = [*source.shape[:-1], units]
        out = _Value(self.add_activation(node.output[0], "float32", shape), "float32", shape)
        self.add_op("FULLY_CONNECTED", node.name, inputs, [out.native_id], {"activation": 0})
        self.values[node.output[0]] = out

    def _fully_connected_int8(self, node, a: _Value, weights_nk, scales, bias, name: str, scale: float,
                              zero_point: int) -> None:
        """Emit an int8 fully connected op on the last axis, writing `name` with the given output quantization."""
        source = self.as_layout(a, False, node)
        units, depth = weights_nk.shape
        if not source.shape or source.shape[-1] != depth:
            raise self.fail(node, f"the input has shape {source.shape} but the weights expect {depth} features")
        w_id = self.add_constant(f"{node.name}:weights", weights_nk, "int8", scales, [0] * len(scales), 0)
        inputs = [source.native_id, w_id, -1]
        if bias is not None:
            inputs[2] = self.add_constant(f"{node.name}:bias", bias.data, "int32", bias.scales, bias.zero_points, 0)
        shape = [*source.shape[:-1], units]
        out = _Value(self.add_activation(name, "int8", shape, scale, zero_point), "int8", shape, False, scale,
                     zero_point)
        self.add_op("FULLY_CONNECTED", node.name, inputs, [out.native_id], {"activation": 0})
        self.values[name] = out

    def _Gemm(self, node) -> None:
        attrs = self.attributes(node)
        if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
            raise self.unsupported(node, "only Gemm with transA = 0, alpha = 1 and beta = 1 is supported")
        trans_b = bool(attrs.get("transB", 0))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        if has_bias and isinstance(self.values.get(node.input[2]), (_Value, _Dequantized)):
            self._gemm_plus_activation(node, trans_b)
            return
        if isinstance(self.values.get(node.input[0]), _Dequantized):
            weights = self._weights(node, node.input[1], 0 if trans_b else 1)
            data = weights.data if trans_b else weights.data.T
            bias = self._bias(node, node.input[2] if has_bias else None, data.shape[0])
            self._fully_connected(node, node.input[0], np.ascontiguousarray(data), weights.scales,
                                  weights.zero_points, bias)
            return
        w = self.constants.get(node.input[1])
        if w is None or w.ndim != 2:
            raise self.unsupported(node, "the weights must be a constant matrix")
        data = w if trans_b else w.T
        float_bias = self.constants.get(node.input[2]) if has_bias else None
        if has_bias and (float_bias is None or float_bias.shape != (data.shape[0],)):
            raise self.unsupported(node, "the bias must be a constant vector")
        self._fully_connected(node, node.input[0], np.ascontiguousarray(data), (), (), None, float_bias)

    def _gemm_plus_activation(self, node, trans_b: bool) -> None:
        """Emit a float Gemm whose C input is an activation (a residual that the exporter fused into MatMul + Add)
        as FULLY_CONNECTED, then ADD."""
        operands = [self.values.get(name) for name in node.input[:3]]
        if any(isinstance(value, _Dequantized) for value in operands):
            raise self.unsupported(node, f"C input '{node.input[2]}' is an activation, not a bias; ONNX Runtime runs "
                                         "such an int8 Gemm in float, which the native kernel does not reproduce")
        w = self.constants.get(node.input[1])
        if w is None or w.ndim != 2:
            raise self.unsupported(node, "the weights must be a constant matrix")
        self._fully_connected(node, node.input[0], np.ascontiguousarray(w if trans_b else w.T), (), (), None)
        product = self.values.pop(node.output[0])
        addend = self.as_layout(operands[2], False, node)
        if addend.dtype != "float32" or addend.shape != product.shape:
            raise self.unsupported(node, f"C input '{node.input[2]}' has shape {addend.shape}, not the product's "
                                         f"{product.shape}")
        out = _Value(self.add_activation(node.output[0], "float32", list(product.shape)), "float32",
                     list(product.shape))
        self.add_op("ADD", f"{node.name}:add", [product.native_id, addend.native_id], [out.native_id],
                    {"activation": 0})
        self.values[node.output[0]] = out

    def _MatMul(self, node) -> None:
        if isinstance(self.values.get(node.input[0]), _Dequantized):
            weights = self._weights(node, node.input[1], 1)
            self._fully_connected(node, node.input[0], np.ascontiguousarray(weights.data.T), weights.scales,
                                  weights.zero_points, None)
            return
        w = self.constants.get(node.input[1])
        if w is None or w.ndim != 2:
            raise self.unsupported(node, "the second operand must be a constant matrix")
        self._fully_connected(node, node.input[0], np.ascontiguousarray(w.T), (), (), None)

    def _MatMulNBits(self, node) -> None:
        """Weight-only int4 MatMul (com.microsoft): the weights are dequantized once, at load.

        ONNX Runtime's default accuracy level dequantizes block by block and
        multiplies in float32 too, so the outputs agree up to float rounding.
        """
        attrs = self.attributes(node)
        bits, block = int(attrs.get("bits", 4)), int(attrs.get("block_size", 0))
        k, n = int(attrs.get("K", 0)), int(attrs.get("N", 0))
        if bits != 4:
            raise self.unsupported(node, f"only 4-bit weights are supported, not {bits}")
        if block < 16 or block & (block - 1) or k < 1 or n < 1:
            raise self.fail(node, f"invalid K={k}, N={n} or block_size={block}")
        if len(node.input) > 4 and node.input[4]:
            raise self.unsupported(node, "the g_idx input is not supported")
        names = list(node.input) + [""] * (6 - len(node.input))
        packed = self.constants.get(names[1])
        scales = self.constants.get(names[2])
        if packed is None or scales is None:
            raise self.unsupported(node, "the packed weights and scales must be constants")
        k_blocks = -(-k // block)
        if packed.dtype != np.uint8 or packed.size != n * k_blocks * (block // 2):
            raise self.fail(node, f"packed weights of {packed.size} bytes do not match N={n}, K={k}, block_size={block}")
        if scales.size != n * k_blocks:
            raise self.fail(node, f"{scales.size} scales do not match N={n} and {k_blocks} blocks")
        if not np.isfinite(scales).all():
            first = int(np.flatnonzero(~np.isfinite(scales.reshape(-1)))[0])
            raise self.fail(node, f"block scale {first} of '{names[2]}' is {scales.reshape(-1)[first]}; "
                                  "every scale must be finite, so re-quantize the model")
        nibbles = np.empty((n, k_blocks, block), dtype=np.float32)
        bytes_ = packed.reshape(n, k_blocks, block // 2)
        nibbles[:, :, 0::2] = bytes_ & 0x0F  # the low nibble holds the even element
        nibbles[:, :, 1::2] = bytes_ >> 4
        if names[3]:
            zero_points = self.constants.get(names[3])
            if zero_points is None:
                raise self.unsupported(node, "the zero points must be constants")
            if zero_points.dtype == np.uint8:
                unpacked = np.empty((n, 2 * zero_points.reshape(n, -1).shape[1]), dtype=np.float32)
                unpacked[:, 0::2] = zero_points.reshape(n, -1) & 0x0F
                unpacked[:, 1::2] = zero_points.reshape(n, -1) >> 4
                zero = unpacked[:, :k_blocks]
            else:
                zero = zero_points.astype(np.float32).reshape(n, k_blocks)
        else:
            zero = np.full((n, k_blocks), 8.0, dtype=np.float32)  # the default for 4 bits
        weights = (nibbles - zero[:, :, None]) * scales.astype(np.float32).reshape(n, k_blocks)[:, :, None]
        weights = np.ascontiguousarray(weights.reshape(n, k_blocks * block)[:, :k].astype(np.float32))
        bias = self.constants.get(names[5]) if names[5] else None
        if names[5] and (bias is None or bias.shape != (n,)):
            raise self.unsupported(node, "the bias must be a constant vector of N values")
        self._fully_connected(node, node.input[0], weights, (), (), None, bias)

    def _Add(self, node) -> None:
        operands = [self.values.get(name) for name in node.input]
        if any(isinstance(value, _Dequantized) for value in operands):
            self.qdq_binary(node, "ADD", operands)
            return
        self.float_binary(node, "ADD")

    def qdq_binary(self, node, kind: str, operands: list) -> None:
        """Emit the int8 ADD or MUL (`kind`) that ONNX Runtime fuses from DequantizeLinear -> `node` -> QuantizeLinear."""
        if len(operands) != 2 or not all(isinstance(value, (_Dequantized, _QuantizedConstant)) for value in operands):
            raise self.unsupported(node, f"int8 {node.op_type} needs two dequantized int8 activations")
        if any(isinstance(value, _QuantizedConstant) for value in operands):
            # ONNX Runtime's x86-64 build leaves an int8 constant in int8. When it converts the activation to
            # uint8 the types differ, so it runs the op in float. Otherwise it may fuse a broadcasting QLinear op.
            if not all(value.uint8 for value in operands if isinstance(value, _Dequantized)):
                raise self.unsupported(node, f"an int8 {node.op_type} of an activation and a constant may run as a "
                                             "broadcasting QLinear op in ONNX Runtime, which the native kernel "
                                             "does not reproduce")
            self.float_binary(node, kind, self.dequantized_inputs(node))
            return
        domain = self.fused_domain(node, operands)
        if domain is None:
            self.float_binary(node, kind, self.dequantized_inputs(node))
            return
        q, scale, zero_point = self._fused_output(node)
        self._binary_int8(node, kind, operands[0].source, operands[1].source, q.output[0], scale, zero_point,
                          {"uint8_domain": domain})

    def float_binary(self, node, kind: str, operands: list | None = None) -> None:
        """Emit the float32 ADD or MUL (`kind`) of `node`'s two operands, activations or constants.

        `operands` replaces the values of `node`'s inputs. The activations are
        stored in ONNX's own layout, so that constants broadcast against them
        as in ONNX Runtime.
        """
        operands = [self.values.get(name) for name in node.input] if operands is None else operands
        if sum(isinstance(value, _Value) for value in operands) == 0:
            raise self.unsupported(node, f"the {node.op_type} of two constants is not supported")
        inputs, shapes = [], []
        for name, value in zip(node.input, operands):
            if isinstance(value, _Value):
                if value.dtype != "float32":
                    raise self.unsupported(node, f"only float {node.op_type} is supported")
                value = self.as_layout(value, False, node)
                inputs.append(value.native_id)
                shapes.append(list(value.shape))
            elif name in self.constants:
                inputs.append(self.add_constant(f"{node.name}:{name}", self.constants[name].astype(np.float32),
                                                "float32"))
            elif isinstance(value, _QuantizedConstant) and value.scales.size == 1:
                # DequantizeLinear of a constant, as ONNX Runtime computes it: float(x - zero point) * scale.
                centered = value.data.astype(np.int64) - int(value.zero_points[0])
                floats = centered.astype(np.float32) * np.float32(value.scales[0])
                inputs.append(self.add_constant(f"{node.name}:{name}", floats, "float32"))
            else:
                raise self.unsupported(node, f"'{name}' is neither an activation nor a constant")
        # Records broadcast against each other only at equal rank, where ONNX's batch dimensions line up.
        if len({len(shape) for shape in shapes}) > 1:
            raise self.unsupported(node, f"activations of shapes {shapes} have different ranks; the native kernel "
                                         "broadcasts activations only at equal rank")
        try:
            shape = list(np.broadcast_shapes(*map(tuple, shapes)))
        except ValueError:
            raise self.fail(node, f"activations of shapes {shapes} do not broadcast") from None
        out = _Value(self.add_activation(node.output[0], "float32", shape), "float32", shape, False)
        self.add_op(kind, node.name, inputs, [out.native_id], {"activation": 0})
        self.values[node.output[0]] = out

    def _Concat(self, node) -> None:
        operands = [self.values.get(name) for name in node.input]
        if any(isinstance(value, _Dequantized) for value in operands):
            # ONNX Runtime fuses DequantizeLinear -> Concat -> QuantizeLinear into QLinearConcat when every
            # input is dequantized, the output is quantized again and the types agree. Otherwise it joins the
            # dequantized values in float.
            q = self.sole_consumer(node.output[0])
            if (all(isinstance(value, _Dequantized) for value in operands) and q is not None
                    and q.op_type == "QuantizeLinear" and self.fused_domain(node, operands) is not None):
                q, scale, zero_point = self._fused_output(node)
                self._concat(node, [value.source for value in operands], q.output[0], scale, zero_point)
                return
            operands = self.dequantized_inputs(node)
        if not all(isinstance(value, _Value) and value.dtype == "float32" for value in operands):
            raise self.unsupported(node, "only the Concat of activations is supported")
        self._concat(node, operands, node.output[0])

    def _QLinearConcat(self, node) -> None:
        if len(node.input) < 5 or (len(node.input) - 2) % 3:
            raise self.fail(node, f"has {len(node.input)} inputs, expected 2 and then 3 for each joined tensor")
        scale, zero_point = self._int8_output(node, node.input[0], node.input[1])
        operands = [self._int8_input(node, position) for position in range(2, len(node.input), 3)]
        self._concat(node, operands, node.output[0], scale, zero_point)

    def _concat(self, node, operands: list[_Value], name: str, scale: float | None = None,
                zero_point: int = 0) -> None:
        """Emit a CONCATENATION of `operands` writing `name`: int8 with the output quantization `scale`, else float."""
        rank = len(operands[0].shape)
        if any(len(value.shape) != rank for value in operands):
            raise self.fail(node, f"the inputs have different ranks: {[value.shape for value in operands]}")
        attributes = self.attributes(node)
        if "axis" not in attributes:
            raise self.fail(node, "has no axis attribute, which Concat requires")
        given = int(attributes["axis"])
        axis = given + rank + 1 if given < 0 else given
        if not 1 <= axis <= rank:
            raise self.unsupported(node, f"axis {given} is not an axis of the records (rank {rank + 1} with the batch)")
        # [C, H, W] activations are joined as [H, W, C]: ONNX axes 1, 2, 3 are native axes 3, 1, 2.
        nhwc = rank == 3
        operands = [self.as_layout(value, nhwc, node) for value in operands]
        shape = list(operands[0].shape)
        shape[axis - 1] = sum(value.shape[axis - 1] for value in operands)
        if any(value.shape[:axis - 1] + value.shape[axis:] != shape[:axis - 1] + shape[axis:] for value in operands):
            raise self.fail(node, f"the inputs' shapes {[value.shape for value in operands]} differ off axis {axis}")
        if scale is None:
            out = _Value(0, "float32", shape, nhwc)
            out.native_id = self.add_activation(name, "float32", out.physical_shape())
        else:
            out = _Value(0, "int8", shape, nhwc, scale, zero_point)
            out.native_id = self.add_activation(name, "int8", out.physical_shape(), scale, zero_point)
        native_axis = {1: 3, 2: 1, 3: 2}[axis] if nhwc else axis
        self.add_op("CONCATENATION", node.name, [value.native_id for value in operands], [out.native_id],
                    {"axis": native_axis, "activation": 0})
        self.values[name] = out

    def _Pad(self, node) -> None:
        x = self.values.get(node.input[0])
        name = node.output[0]
        dequantized = isinstance(x, _Dequantized)
        if dequantized:
            # ONNX Runtime pads the dequantized values with 0, which the QuantizeLinear after it turns into the
            # zero point. With the same quantization on both sides, the other values come back unchanged.
            q, scale, zero_point = self._fused_output(node)
            if scale != x.source.scale or zero_point != x.source.zero_point:
                raise self.unsupported(node, "the quantization changes across this Pad, which the native kernel "
                                       "does not reproduce")
            x, name = x.source, q.output[0]
        elif not isinstance(x, _Value):
            raise self.unsupported(node, f"'{node.input[0]}' is not an activation")
        if self.attributes(node).get("mode", b"constant") not in (b"constant", "constant"):
            raise self.unsupported(node, "only constant padding is supported")
        if len(node.input) < 2 or node.input[1] not in self.constants:
            raise self.unsupported(node, "the pads must be a constant")
        if len(node.input) > 3 and node.input[3]:
            raise self.unsupported(node, "padding selected axes is not supported")
        fill = None
        if len(node.input) > 2 and node.input[2]:
            fill = self.constants.get(node.input[2])
            if fill is None or fill.size != 1:
                raise self.unsupported(node, "the constant value must be a constant scalar")
        if x.dtype == "float32" or dequantized:
            if fill is not None and float(fill.reshape(-1)[0]) != 0.0:
                raise self.unsupported(node, "only padding with 0 is supported")
            fill = None
        elif fill is not None and fill.dtype != np.int8:
            raise self.unsupported(node, f"the constant value of an int8 Pad must be int8, not {fill.dtype}")
        elif fill is None:
            fill = np.zeros(1, np.int8)  # ONNX pads a quantized tensor with the value 0, not its zero point

        rank = len(x.shape) + 1
        if self.constants[node.input[1]].dtype != np.int64:
            raise self.fail(node, f"the pads are {self.constants[node.input[1]].dtype}; ONNX requires int64")
        pads = [int(p) for p in self.constants[node.input[1]].reshape(-1)]
        if len(pads) != 2 * rank:
            raise self.fail(node, f"has {len(pads)} pads, expected {2 * rank} for a rank-{rank} input")
        before, after = pads[:rank], pads[rank:]
        if min(pads) < 0:
            raise self.unsupported(node, "negative pads (cropping) are not supported")
        if before[0] or after[0]:
            raise self.unsupported(node, "padding the batch axis is not supported")

        shape = [d + lo + hi for d, lo, hi in zip(x.shape, before[1:], after[1:])]
        nhwc = len(x.shape) == 3
        source = self.as_layout(x, nhwc, node)
        # ONNX lists [batch, C, H, W]; the native tensor is [batch, H, W, C].
        order = [0, 2, 3, 1] if nhwc else list(range(rank))
        paddings = np.array([[before[axis], after[axis]] for axis in order], dtype=np.int32)
        out = _Value(0, x.dtype, shape, nhwc, x.scale, x.zero_point)
        out.native_id = self.add_activation(name, x.dtype, out.physical_shape(), x.scale, x.zero_point)
        inputs = [source.native_id, self.add_constant(f"{node.name}:pads", paddings, "int32")]
        if fill is not None:
            # PADV2 fills with the given value; PAD fills int8 with the zero point and float with 0.
            inputs.append(self.add_constant(f"{node.name}:value", fill.reshape(1).astype(np.int8), "int8"))
        self.add_op("PADV2" if fill is not None else "PAD", node.name, inputs, [out.native_id])
        self.values[name] = out

    # Dynamic quantization (quantize_dynamic) ---------------------------------

    def _reshape_constant(self, node) -> np.ndarray:
        data, shape = self.constants[node.input[0]], [int(d) for d in self.constants[node.input[1]].reshape(-1)]
        if int(self.attributes(node).get("allowzero", 0)) == 0:
            shape = [data.shape[i] if d == 0 and i < data.ndim else d for i, d in enumerate(shape)]
        try:
            return data.reshape(shape)
        except ValueError as exc:
            raise self.fail(node, f"cannot reshape a constant of shape {list(data.shape)} to {shape}") from exc

    def _binary_int8(self, node, kind: str, a: _Value, b: _Value, name: str, scale: float, zero_point: int,
                     uint8_domain: dict | None = None) -> None:
        """Emit an int8 ADD or MUL of two activations (ONNX Runtime's QLinearAdd, QLinearMul) writing `name`."""
        b = self.as_layout(b, a.nhwc, node) if len(b.shape) == 3 else b
        if a.shape != b.shape:
            raise self.unsupported(node, f"only operands of the same shape are supported, not {a.shape} and {b.shape}")
        out = _Value(0, "int8", list(a.shape), a.nhwc, scale, zero_point)
        out.native_id = self.add_activation(name, "int8", out.physical_shape(), scale, zero_point)
        self.add_op(kind, node.name, [a.native_id, b.native_id], [out.native_id],
                    {"activation": 0, **(uint8_domain or {})})
        self.values[name] = out

    def _pool_int8(self, node, x: _Value, kernel: list[int], options: dict, name: str, scale: float,
                   zero_point: int, uint8_domain: dict | None = None) -> None:
        """Emit an int8 average pool (ONNX Runtime's QLinearAveragePool) writing `name`."""
        source = self.as_layout(x, True, node)
        c, h, w = source.shape
        out_h = (h + options["pad_top"] + options["pad_bottom"] - kernel[0]) // options["stride_h"] + 1
        out_w = (w + options["pad_left"] + options["pad_right"] - kernel[1]) // options["stride_w"] + 1
        if out_h < 1 or out_w < 1:
            raise self.fail(node, f"the window does not fit the {h}x{w} input")
        out = _Value(0, "int8", [c, out_h, out_w], True, scale, zero_point)
        out.native_id = self.add_activation(name, "int8", out.physical_shape(), scale, zero_point)
        self.add_op("AVERAGE_POOL_2D", node.name, [source.native_id], [out.native_id], {**options, **(uint8_domain or {})})
        self.values[name] = out

    def _QLinearAdd(self, node) -> None:
        self._qlinear_binary(node, "ADD")

    def _QLinearMul(self, node) -> None:
        self._qlinear_binary(node, "MUL")

    def _qlinear_binary(self, node, kind: str) -> None:
        if len(node.input) != 8:
            raise self.fail(node, f"has {len(node.input)} inputs, expected 8")
        for position in (0, 3):
            if node.input[position] in self.constants:
                raise self.unsupported(node, f"operand '{node.input[position]}' is a constant; the native kernel runs "
                                             f"{node.op_type} only on two activations of the same shape")
        a = self._int8_input(node, 0)
        b = self._int8_input(node, 3)
        scale, zero_point = self._int8_output(node, node.input[6], node.input[7])
        self._binary_int8(node, kind, a, b, node.output[0], scale, zero_point)

    def _qlinear_pool_input(self, node) -> _Value:
        if len(node.input) < 5:
            raise self.fail(node, f"has {len(node.input)} inputs, expected 5")
        if int(self.attributes(node).get("channels_last", 0)):
            raise self.unsupported(node, "channels_last = 1 is not supported")
        x = self._int8_input(node, 0)
        if len(x.shape) != 3:
            raise self.unsupported(node, f"needs a [C, H, W] activation, got shape {x.shape}")
        return x

    def _QLinearAveragePool(self, node) -> None:
        x = self._qlinear_pool_input(node)
        kernel, options = self._pool_options(node, "AVERAGE_POOL_2D")
        scale, zero_point = self._int8_output(node, node.input[3], node.input[4])
        self._pool_int8(node, x, kernel, options, node.output[0], scale, zero_point)

    def _QLinearGlobalAveragePool(self, node) -> None:
        x = self._qlinear_pool_input(node)
        scale, zero_point = self._int8_output(node, node.input[3], node.input[4])
        self._pool_int8(node, x, x.shape[1:], _global_pool_options(x.shape), node.output[0], scale, zero_point)

    def _GlobalAveragePool(self, node) -> None:
        x = self.values.get(node.input[0])
        source = x.source if isinstance(x, _Dequantized) else x
        if not isinstance(source, _Value) or len(source.shape) != 3:
            raise self.unsupported(node, f"'{node.input[0]}' is not a [C, H, W] activation")
        options = _global_pool_options(source.shape)
        if isinstance(x, _Dequantized):
            domain = self.pool_domain(node, x)
            q, scale, zero_point = self._fused_output(node)
            self._pool_int8(node, source, source.shape[1:], options, q.output[0], scale, zero_point, domain)
            return
        self._pass_through(node, "AVERAGE_POOL_2D", options, True, lambda shape: [shape[0], 1, 1])

    # QOperator format: integer ops with explicit quantization inputs ---------

    def _int8_input(self, node, position: int) -> _Value:
        value = self.values.get(node.input[position])
        if not isinstance(value, _Value) or value.dtype != "int8":
            raise self.unsupported(node, f"'{node.input[position]}' is not an int8 activation")
        scale = float(np.float32(self.scalar(node, node.input[position + 1])))
        zero_point = int(self.scalar(node, node.input[position + 2]))
        if scale != value.scale or zero_point != value.zero_point:
            raise self.unsupported(node, f"the quantization given for '{node.input[position]}' differs from its own")
        return value

    def _int8_weights(self, node, position: int, channel_axis: int) -> _QuantizedConstant:
        data = self.constants.get(node.input[position])
        scales = self.constants.get(node.input[position + 1])
        zero_points = self.constants.get(node.input[position + 2])
        if data is None or scales is None or data.dtype != np.int8:
            raise self.unsupported(node, f"weights '{node.input[position]}' must be an int8 constant with constant scales")
        zero_points = np.zeros(scales.size, np.int64) if zero_points is None else zero_points.astype(np.int64)
        if (zero_points != 0).any():
            raise self.unsupported(node, "weights must be symmetric (zero point 0)")
        return _QuantizedConstant(data, scales.astype(np.float32).reshape(-1), zero_points.reshape(-1), channel_axis)

    def _int8_output(self, node, scale_name: str, zero_point_name: str) -> tuple[float, int]:
        zero_point = self.scalar(node, zero_point_name)
        if np.asarray(zero_point).dtype != np.int8:
            raise self.unsupported(node, "only int8 outputs are supported (not uint8)")
        return float(np.float32(self.scalar(node, scale_name))), int(zero_point)

    def _QLinearConv(self, node) -> None:
        x = self._int8_input(node, 0)
        weights = self._int8_weights(node, 3, 0)
        scale, zero_point = self._int8_output(node, node.input[6], node.input[7])
        bias = self.constants.get(node.input[8]) if len(node.input) > 8 and node.input[8] else None
        if len(node.input) > 8 and node.input[8] and (bias is None or bias.dtype != np.int32):
            raise self.unsupported(node, "the bias must be an int32 constant")
        if bias is not None:
            bias = _QuantizedConstant(bias, np.float32(x.scale) * weights.scales, np.zeros(weights.scales.size, np.int64), 0)
        self._conv_int8(node, x, weights, bias, node.output[0], scale, zero_point)

    def _QLinearMatMul(self, node) -> None:
        a = self._int8_input(node, 0)
        weights = self._int8_weights(node, 3, 1)
        scale, zero_point = self._int8_output(node, node.input[6], node.input[7])
        self._fully_connected_int8(node, a, np.ascontiguousarray(weights.data.T), weights.scales, None,
                                   node.output[0], scale, zero_point)

    def _QGemm(self, node) -> None:
        attrs = self.attributes(node)
        if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0:
            raise self.unsupported(node, "only QGemm with transA = 0 and alpha = 1 is supported")
        if len(node.input) < 9 or not node.input[7]:
            raise self.unsupported(node, "only QGemm with a quantized output (y_scale) is supported")
        a = self._int8_input(node, 0)
        trans_b = bool(attrs.get("transB", 0))
        weights = self._int8_weights(node, 3, 0 if trans_b else 1)
        data = weights.data if trans_b else weights.data.T
        bias = None
        if node.input[6]:
            values = self.constants.get(node.input[6])
            if values is None or values.dtype != np.int32 or values.shape != (data.shape[0],):
                raise self.unsupported(node, "the bias must be an int32 constant vector")
            bias = _QuantizedConstant(values, np.float32(a.scale) * weights.scales * np.ones(data.shape[0], np.float32),
                                      np.zeros(data.shape[0], np.int64), 0)
        scale, zero_point = self._int8_output(node, node.input[7], node.input[8])
        self._fully_connected_int8(node, a, np.ascontiguousarray(data), weights.scales, bias, node.output[0], scale,
                                   zero_point)

    # Pooling, activations and layout --------------------------------------

    def _drops_qdq(self, node, x: _Dequantized) -> bool:
        """Return whether ONNX Runtime drops the DequantizeLinear -> `node` -> QuantizeLinear pair around a
        data-movement op, which it does when the QuantizeLinear repeats the input's parameters."""
        q = self.sole_consumer(node.output[0])
        if q is None or q.op_type != "QuantizeLinear":
            return False
        scale = float(np.float32(self.scalar(q, q.input[1])))
        zero_point = int(self.scalar(q, q.input[2]))
        return scale == x.source.scale and zero_point == x.source.zero_point

    def _pass_through(self, node, kind: str | None, options: dict, nhwc: bool, out_shape, x=None) -> None:
        """Emit a data-movement or pooling op, on int8 when ONNX Runtime drops the QDQ pair around it.

        With `kind` None no op is emitted: the output shares the input's bytes. `x` replaces the value of the
        node's input when given.
        """
        if x is None:
            x = self.values.get(node.input[0])
        if isinstance(x, _Dequantized) and kind in (None, "RESHAPE", "TRANSPOSE") and not self._drops_qdq(node, x):
            # ONNX Runtime moves the float values between DequantizeLinear and the next node. Moving the
            # dequantized values here gives the same floats, and a QuantizeLinear after it runs as QUANTIZE.
            source = _Value(0, "float32", list(x.source.shape), x.source.nhwc)
            source.native_id = self.add_activation(f"{node.name}:dequantized", "float32",
                                                   x.source.physical_shape())
            self.add_op("DEQUANTIZE", f"{node.name}:dequantize", [x.source.native_id], [source.native_id])
            x = source
        if isinstance(x, _Dequantized):
            q = self.sole_consumer(node.output[0])
            if q is None or q.op_type != "QuantizeLinear":
                raise self.unsupported(node, "a dequantized input must be quantized again after this op")
            scale = float(np.float32(self.scalar(q, q.input[1])))
            zero_point = int(self.scalar(q, q.input[2]))
            if scale != x.source.scale or zero_point != x.source.zero_point:
                raise self.unsupported(node, "the quantization changes across this op, so ONNX Runtime keeps it in float")
            self.skipped.add(id(q))
            source, name = x.source, q.output[0]
        elif isinstance(x, _Value):
            source, name = x, node.output[0]
        else:
            raise self.unsupported(node, f"'{node.input[0]}' is not an activation")
        if kind is None:
            self.values[name] = _Value(source.native_id, source.dtype, out_shape(source.shape), nhwc, source.scale,
                                       source.zero_point)
            return
        source = self.as_layout(source, nhwc, node)
        shape = out_shape(source.shape)
        out = _Value(0, source.dtype, shape, nhwc, source.scale, source.zero_point)
        out.native_id = self.add_activation(name, source.dtype, out.physical_shape(), source.scale, source.zero_point)
        self.add_op(kind, node.name, [source.native_id], [out.native_id], options)
        self.values[name] = out

    def _pool_options(self, node, kind: str) -> tuple[list[int], dict]:
        attrs = self.attributes(node)
        kernel = list(attrs.get("kernel_shape", []))
        if kind == "AVERAGE_POOL_2D" and attrs.get("count_include_pad", 0):
            raise self.unsupported(node, "count_include_pad = 1 is not supported")
        if attrs.get("ceil_mode", 0):
            raise self.unsupported(node, "ceil_mode = 1 is not supported")
        options = self._conv_options(node, kernel)
        if options["dilation_h"] != 1 or options["dilation_w"] != 1:
            raise self.unsupported(node, "dilated pooling is not supported")
        options.update(filter_h=kernel[0], filter_w=kernel[1])
        for key in ("dilation_h", "dilation_w"):
            options.pop(key)
        return kernel, options

    def _pool(self, node, kind: str) -> None:
        kernel, options = self._pool_options(node, kind)

        def out_shape(shape):
            c, h, w = shape
            out_h = (h + options["pad_top"] + options["pad_bottom"] - kernel[0]) // options["stride_h"] + 1
            out_w = (w + options["pad_left"] + options["pad_right"] - kernel[1]) // options["stride_w"] + 1
            return [c, out_h, out_w]

        x = self.values.get(node.input[0])
        if kind == "AVERAGE_POOL_2D" and isinstance(x, _Dequantized):
            if len(x.source.shape) != 3:
                raise self.unsupported(node, f"needs a [C, H, W] activation, got shape {x.source.shape}")
            domain = self.pool_domain(node, x)
            q, scale, zero_point = self._fused_output(node)
            self._pool_int8(node, x.source, kernel, options, q.output[0], scale, zero_point, domain)
            return
        self._pass_through(node, kind, options, True, out_shape)

    def pool_domain(self, node, x: _Dequantized) -> dict:
        """Return the uint8_domain option of an int8 average pool from a QDQ group.

        NOTE: when ONNX Runtime leaves the group unfused, it pools in float, which is not reproduced. The
        fused uint8 form is used then, and it can differ in the last bit.
        """
        domain = self.fused_domain(node, [x])
        return {"uint8_domain": 1 if domain is None else domain}

    def _MaxPool(self, node) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise self.unsupported(node, "the indices output is not supported")
        self._pool(node, "MAX_POOL_2D")

    def _AveragePool(self, node) -> None:
        self._pool(node, "AVERAGE_POOL_2D")

    def _Relu(self, node) -> None:
        x = self.values.get(node.input[0])
        if not isinstance(x, _Value) or x.dtype != "float32":
            raise self.unsupported(node, "only float Relu is supported; quantize_static folds Relu into the range")
        self._pass_through(node, "RELU", {}, x.nhwc, lambda shape: list(shape))

    def _float_unary(self, node, kind: str, x=None) -> None:
        if x is None:
            x = self.values.get(node.input[0])
        if not isinstance(x, _Value) or x.dtype != "float32":
            raise self.unsupported(node, f"'{node.input[0]}' must be a float32 activation")
        self._pass_through(node, kind, {}, x.nhwc, lambda shape: list(shape), x)

    def _Clip(self, node) -> None:
        bounds = []
        for position in (1, 2):
            name = node.input[position] if len(node.input) > position else ""
            if not name:
                bounds.append(None)
            elif name in self.constants:
                bounds.append(float(self.constants[name].reshape(-1)[0]))
            else:
                raise self.unsupported(node, "clip bounds must be constants")
        kinds = {(0.0, None): "RELU", (0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}
        kind = kinds.get(tuple(bounds))
        if kind is None:
            raise self.unsupported(node, f"only Clip to [0, inf), [0, 6] or [-1, 1] is supported, not {bounds}")
        x = self.values.get(node.input[0])
        if not isinstance(x, _Value) or x.dtype != "float32":
            raise self.unsupported(node, "only float Clip is supported; quantize_static folds it into the range")
        self._pass_through(node, kind, {}, x.nhwc, lambda shape: list(shape))

    def _Sigmoid(self, node) -> None:
        # Followed by QuantizeLinear, ONNX Runtime fuses it into QLinearSigmoid.
        self._table_or_float_unary(node, "LOGISTIC")

    def _QLinearSigmoid(self, node) -> None:
        if len(node.input) < 5:
            raise self.fail(node, f"has {len(node.input)} inputs, expected 5")
        x = self._int8_input(node, 0)
        scale, zero_point = self._int8_output(node, node.input[3], node.input[4])
        self._table_int8(node, "LOGISTIC", x, node.output[0], scale, zero_point)

    def _softmax_axis_is_last(self, node, rank: int, opset: int) -> None:
        """Reject a Softmax that does not normalize over the last axis alone (rank counts the batch)."""
        axis = int(self.attributes(node).get("axis", -1 if opset >= 13 else 1))
        if not -rank <= axis < rank:
            raise self.fail(node, f"axis {axis} is out of range for rank {rank}")
        if axis % rank != rank - 1:
            raise self.unsupported(node, f"softmax over axis {axis} of rank {rank}; only the last axis is supported")

    def _Softmax(self, node) -> None:
        opset = next((int(o.version) for o in self.model.proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        x = self.values.get(node.input[0])
        source = x.source if isinstance(x, _Dequantized) else x
        if not isinstance(source, _Value):
            raise self.unsupported(node, f"'{node.input[0]}' is not an activation")
        self._softmax_axis_is_last(node, len(source.shape) + 1, opset)
        if isinstance(x, _Dequantized):
            # ONNX Runtime fuses DequantizeLinear -> Softmax -> QuantizeLinear into QLinearSoftmax when the
            # types agree. Otherwise it runs MLAS's float softmax, whose exp approximation the kernel lacks.
            if self.fused_domain(node, [x]) is None:
                raise self.unsupported(node, "ONNX Runtime runs this Softmax in float between DequantizeLinear and "
                                             "QuantizeLinear, which the native kernel does not reproduce exactly")
            q, scale, zero_point = self._fused_output(node)
            self._softmax_int8(node, x.source, q.output[0], scale, zero_point)
            return
        self._float_unary(node, "SOFTMAX", self.as_layout(x, False, node))

    def _QLinearSoftmax(self, node) -> None:
        if len(node.input) < 5:
            raise self.fail(node, f"has {len(node.input)} inputs, expected 5")
        x = self._int8_input(node, 0)
        self._softmax_axis_is_last(node, len(x.shape) + 1, int(self.attributes(node).get("opset", 13)))
        scale, zero_point = self._int8_output(node, node.input[3], node.input[4])
        self._softmax_int8(node, x, node.output[0], scale, zero_point)

    def _softmax_int8(self, node, x: _Value, name: str, scale: float, zero_point: int) -> None:
        """Emit ONNX Runtime's QLinearSoftmax over the last axis (its uint8 and int8 forms give the same bytes)."""
        x = self.as_layout(x, False, node)
        out = _Value(0, "int8", list(x.shape), False, scale, zero_point)
        out.native_id = self.add_activation(name, "int8", list(x.shape), scale, zero_point)
        self.add_op("SOFTMAX", node.name, [x.native_id], [out.native_id])
        self.values[name] = out

    def _table_int8(self, node, kind: str, x: _Value, name: str, scale: float, zero_point: int) -> None:
        """Emit an int8 LOGISTIC or TANH writing `name`: a table of MLAS's function of the dequantized input."""
        out = _Value(0, "int8", list(x.shape), x.nhwc, scale, zero_point)
        out.native_id = self.add_activation(name, "int8", x.physical_shape(), scale, zero_point)
        self.add_op(kind, node.name, [x.native_id], [out.native_id])
        self.values[name] = out

    def _Tanh(self, node) -> None:
        # ONNX Runtime has no int8 Tanh, so after DequantizeLinear it runs in float.
        self._table_or_float_unary(node, "TANH")

    def _table_or_float_unary(self, node, kind: str) -> None:
        """Emit an int8 LOGISTIC or TANH table where a QuantizeLinear follows a dequantized input, else the float op.

        The table gives the bytes of ONNX Runtime's float function followed by QuantizeLinear. Without a
        QuantizeLinear after it (a model's last Sigmoid or Tanh), the values are dequantized and the float
        kernel runs, which is MLAS's function in onnxruntime numerics.
        """
        x = self.values.get(node.input[0])
        if isinstance(x, _Dequantized):
            q = self.sole_consumer(node.output[0])
            if q is not None and q.op_type == "QuantizeLinear":
                q, scale, zero_point = self._fused_output(node)
                self._table_int8(node, kind, x.source, q.output[0], scale, zero_point)
                return
            x = self.dequantized_inputs(node)[0]
        self._float_unary(node, kind, x)

    def _reshape_to(self, node, target: list[int]) -> None:
        x = self.values.get(node.input[0])
        source = x.source if isinstance(x, _Dequantized) else x
        if not isinstance(source, _Value):
            raise self.unsupported(node, f"'{node.input[0]}' is not an activation")
        elements = int(np.prod(source.shape))
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            if known == 0 or elements % known:
                raise self.fail(node, f"shape {target} does not divide {elements} values")
            target = [elements // known if d == -1 else d for d in target]
        if int(np.prod(target)) != elements:
            raise self.fail(node, f"shape {target} does not hold {elements} values")
        self._pass_through(node, "RESHAPE", {}, False, lambda shape: list(target))

    def _Reshape(self, node) -> None:
        shape = self.constants.get(node.input[1])
        if shape is None:
            raise self.unsupported(node, "the target shape must be a constant")
        shape = [int(d) for d in shape.reshape(-1)]
        if shape.count(-1) > 1:
            raise self.fail(node, f"target shape {shape} has more than one -1")
        if int(self.attributes(node).get("allowzero", 0)) != 0 and 0 in shape:
            raise self.unsupported(node, f"target shape {shape} has a 0, which allowzero=1 makes a zero-size "
                                         "dimension; only allowzero=0 (copy the input dimension) is supported")
        x = self.values.get(node.input[0])
        source = x.source if isinstance(x, _Dequantized) else x
        if not shape or shape[0] not in (-1, 0):
            raise self.unsupported(node, f"target shape {shape} must keep the batch as dimension 0 (0 or -1)")
        record = [source.shape[i - 1] if d == 0 and i - 1 < len(source.shape) else d
                  for i, d in enumerate(shape)][1:]
        if isinstance(source, _Value) and shape[0] == -1 and -1 not in record:
            elements, row = int(np.prod(source.shape)), int(np.prod(record))
            if row < 1:
                raise self.fail(node, f"target shape {shape} is invalid")
            if elements % row:
                raise self.unsupported(node, f"target shape {shape} makes rows of {row} values, which do not divide "
                                             f"the {elements} values of a record; the native kernel runs records "
                                             "independently, so it does not support this")
            if row != elements:
                # Keras writes a Dense layer on records of [6, 7] as a Reshape to [-1, 7] around a
                # MatMul: the batch then counts rows, 6 per record, until a Reshape restores it.
                self.reshape_rows = elements // row
                record = [self.reshape_rows, *record]
        self._reshape_to(node, record)

    def _Flatten(self, node) -> None:
        if int(self.attributes(node).get("axis", 1)) != 1:
            raise self.unsupported(node, "only Flatten with axis 1 is supported")
        self._reshape_to(node, [-1])

    def _Squeeze(self, node) -> None:
        x = self.values.get(node.input[0])
        source = x.source if isinstance(x, _Dequantized) else x
        self._reshape_to(node, [d for d in source.shape if d != 1])

    def _Transpose(self, node) -> None:
        perm = [int(p) for p in self.attributes(node).get("perm", [])]
        x = self.values.get(node.input[0])
        source = x.source if isinstance(x, _Dequantized) else x
        if not isinstance(source, _Value) or not perm or perm[0] != 0:
            raise self.unsupported(node, "only transposes that keep the batch first are supported")
        record_perm = [p - 1 for p in perm[1:]]
        if source.nhwc and record_perm == [1, 2, 0]:
            # [C, H, W] held as [H, W, C] becomes [H, W, C]: the bytes already are.
            self._pass_through(node, None, {}, False, lambda shape: [shape[1], shape[2], shape[0]])
            return
        options = {f"perm{i}": p for i, p in enumerate(record_perm)}
        self._pass_through(node, "TRANSPOSE", options, False, lambda shape: [shape[p] for p in record_perm])



@dataclass
class _NodeName:
    """A stand-in node for messages about graph outputs."""

    name: str
    op_type: str = "output"


# Ops that treat each row of their input alone, so that they may run on
# activations whose rows a Reshape moved into the batch.
_ROW_OP_TYPES = (
    "MatMul", "Gemm", "MatMulNBits", "QLinearMatMul", "QGemm", "Add", "Mul", "QLinearAdd", "QLinearMul", "Relu",
    "Clip", "Sigmoid", "QLinearSigmoid", "Tanh", "Softmax", "QLinearSoftmax", "QuantizeLinear", "DequantizeLinear",
    "Reshape",
)


def _global_pool_options(shape: list[int]) -> dict:
    """Options of an AVERAGE_POOL_2D whose window is the whole [C, H, W] image."""
    _, h, w = shape
    return {"padding": 2, "pad_top": 0, "pad_left": 0, "pad_bottom": 0, "pad_right": 0, "stride_h": 1,
            "stride_w": 1, "filter_h": h, "filter_w": w, "activation": 0}


def _moves_only_unit_axes(shape: list[int], perm: tuple[int, ...]) -> bool:
    """True when permuting `shape` by `perm` leaves the bytes in the same order."""
    kept = [axis for axis in perm if shape[axis] != 1]
    return kept == sorted(kept)


def build_native_graph(model: OnnxModel, graph) -> tuple[int, int]:
    """Add the translated model to `graph`; returns the native input and output tensor ids."""
    return _Translator(model, graph).run()
