"""The native backend: edgemia's C++ kernel executing the .tflite graph itself.

The shape computations that converters emit around RESHAPE (SHAPE,
STRIDED_SLICE, PACK) are evaluated here at load time, and the remaining ops
are handed to the kernel, which checks them again and runs them.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from edgemia.errors import InputError, ModelFormatError, UnsupportedModelError
from edgemia.runtime.io import check_io
from edgemia.runtime.tflite_model import OperatorInfo, TensorInfo, TfliteModel

logger = logging.getLogger(__name__)

# Numerics modes by model format; the first is the default.
NUMERICS_MODES = {"tflite": ("litert", "litert-reference"), "onnx": ("onnxruntime",)}

# Ops evaluated at load time on constant int32 shape vectors.
_FOLDED_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")
_NATIVE_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.int8): "int8", np.dtype(np.int32): "int32"}


def _fuse_dilated_convolutions(model: TfliteModel) -> list[OperatorInfo]:
    """Rewrite SPACE_TO_BATCH_ND -> (DEPTHWISE_)CONV_2D -> BATCH_TO_SPACE_ND into one dilated conv.

    The TFLite converter lowers a dilated convolution into this chain: the
    batch-to-space pair pads the input, splits it into block phases that the
    convolution runs on with VALID padding, and crops the result. One
    convolution with dilation equal to the block, explicit padding
    (paddings minus crops) and the same filter computes the same sums, and
    keeps the batch dimension the native kernel relies on.
    """
    operators = list(model.operators)
    readers: dict[int, list[int]] = {}
    for position, op in enumerate(operators):
        for tensor in op.inputs:
            readers.setdefault(tensor, []).append(position)
    result, skip = [], set()
    for position, op in enumerate(operators):
        if position in skip:
            continue
        if op.kind != "SPACE_TO_BATCH_ND" or len(readers.get(op.outputs[0], [])) != 1:
            result.append(op)
            continue
        conv_at = readers[op.outputs[0]][0]
        conv = operators[conv_at]
        b2s_positions = readers.get(conv.outputs[0], []) if conv.outputs else []
        if conv.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D") or len(b2s_positions) != 1:
            result.append(op)
            continue
        b2s = operators[b2s_positions[0]]
        block = model.tensors[op.inputs[1]].data if len(op.inputs) > 1 else None
        paddings = model.tensors[op.inputs[2]].data if len(op.inputs) > 2 else None
        b2s_block = model.tensors[b2s.inputs[1]].data if len(b2s.inputs) > 1 else None
        crops = model.tensors[b2s.inputs[2]].data if len(b2s.inputs) > 2 else None
        plain_conv = (conv.options.get("padding") == 1 and conv.options.get("stride_h") == 1
                      and conv.options.get("stride_w") == 1 and conv.options.get("dilation_h") == 1
                      and conv.options.get("dilation_w") == 1)
        if (b2s.kind != "BATCH_TO_SPACE_ND" or not plain_conv or any(v is None for v in (block, paddings, b2s_block, crops))
                or block.shape != (2,) or paddings.shape != (2, 2) or crops.shape != (2, 2)
                or not np.array_equal(block, b2s_block)):
            result.append(op)
            continue
        pads = paddings.astype(np.int64) - crops.astype(np.int64)
        if (pads < 0).any():
            result.append(op)
            continue
        options = dict(conv.options)
        options.update(
            padding=2, dilation_h=int(block[0]), dilation_w=int(block[1]),
            pad_top=int(pads[0, 0]), pad_bottom=int(pads[0, 1]), pad_left=int(pads[1, 0]), pad_right=int(pads[1, 1]),
        )
        fused = OperatorInfo(index=conv.index, kind=conv.kind, inputs=[op.inputs[0], *conv.inputs[1:]],
                             outputs=list(b2s.outputs), options=options)
        result.append(fused)
        skip.update({conv_at, b2s_positions[0]})
    return result


class NativeKernelMissing(InputError):
    """The compiled kernel is not importable in this installation."""


def _load_extension():
    try:
        from edgemia import _native
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise NativeKernelMissing(
            f"the native kernel is not built ({exc}); reinstall edgemia with `pip install .`"
        ) from exc
    return _native


class _Folder:
    """Evaluates shape-only ops on known values (constants and folded results)."""

    def __init__(self, model: TfliteModel):
        self.model = model
        self.values: dict[int, np.ndarray] = {
            t.index: t.data for t in model.tensors if t.data is not None
        }

    def fail(self, op: OperatorInfo, message: str) -> ModelFormatError:
        return ModelFormatError(f"{self.model.path}: {op.label()}: {message}")

    def unsupported(self, op: OperatorInfo, message: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{self.model.path}: {op.label()}: {message}")

    def known(self, op: OperatorInfo, position: int) -> np.ndarray:
        if position >= len(op.inputs) or op.inputs[position] < 0:
            raise self.fail(op, f"input {position} is missing")
        tensor_id = op.inputs[position]
        if tensor_id not in self.values:
            tensor = self.model.tensors[tensor_id]
            raise self.unsupported(
                op,
                f"input {tensor.label()} is computed from the data, so the op cannot be "
                "evaluated at load time; the native kernel folds shape computations only",
            )
        return self.values[tensor_id]

    def fold(self, op: OperatorInfo) -> None:
        if len(op.outputs) != 1:
            raise self.fail(op, f"has {len(op.outputs)} outputs, expected 1")
        if op.kind == "SHAPE":
            if not op.inputs or op.inputs[0] < 0:
                raise self.fail(op, "input 0 is missing")
            # The batch dimension is 1 in the file; RESHAPE later treats it as the batch.
            result = np.array(self.model.tensors[op.inputs[0]].shape, dtype=np.int32)
        elif op.kind == "STRIDED_SLICE":
            result = self._strided_slice(op)
        else:  # PACK
            count = int(op.options.get("values_count", len(op.inputs)))
            if count != len(op.inputs) or count < 1:
                raise self.fail(op, f"values_count {count} does not match its {len(op.inputs)} inputs")
            parts = [np.asarray(self.known(op, i)) for i in range(count)]
            if any(p.shape != parts[0].shape for p in parts):
                raise self.fail(op, "inputs have different shapes")
            axis = int(op.options.get("axis", 0))
            if not -(parts[0].ndim + 1) <= axis <= parts[0].ndim:
                raise self.fail(op, f"axis {axis} is out of range")
            result = np.stack(parts, axis=axis)
        self.values[op.outputs[0]] = result

    def _strided_slice(self, op: OperatorInfo) -> np.ndarray:
        x = np.asarray(self.known(op, 0))
        begin, end, strides = (np.asarray(self.known(op, i)).reshape(-1) for i in (1, 2, 3))
        if x.ndim != 1 or begin.size != 1 or end.size != 1 or strides.size != 1:
            raise self.unsupported(op, "only one-dimensional slices of shape vectors can be folded")
        if op.options.get("ellipsis_mask") or op.options.get("new_axis_mask"):
            raise self.unsupported(op, "ellipsis and new-axis masks are not supported")
        stride = int(strides[0])
        if stride == 0:
            raise self.fail(op, "stride is 0")
        start = None if int(op.options.get("begin_mask", 0)) & 1 else int(begin[0])
        stop = None if int(op.options.get("end_mask", 0)) & 1 else int(end[0])
        if int(op.options.get("shrink_axis_mask", 0)) & 1:
            index = 0 if start is None else start
            if not -x.size <= index < x.size:
                raise self.fail(op, f"index {index} is outside a vector of {x.size}")
            return np.asarray(x[index])
        return x[start:stop:stride]


def _record_shape(model: TfliteModel, tensor: TensorInfo) -> list[int]:
    """Shape of one record of an activation tensor, checking that dimension 0 is the batch."""
    if not tensor.shape:
        raise UnsupportedModelError(
            f"{model.path}: activation {tensor.label()} has no batch dimension; "
            "the native kernel runs models whose activations are [batch, ...]"
        )
    dynamic = tensor.shape_signature is not None and tensor.shape_signature[:1] == (-1,)
    if tensor.shape[0] != 1 and not dynamic:
        raise UnsupportedModelError(
            f"{model.path}: activation {tensor.label()} has a fixed batch of {tensor.shape[0]}; "
            "export the model with batch 1 or a dynamic batch"
        )
    return list(tensor.shape[1:])


def _reshape_target(model: TfliteModel, folder: _Folder, op: OperatorInfo, in_elements: int) -> list[int]:
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        target = [int(d) for d in np.asarray(folder.known(op, 1)).reshape(-1)]
    elif "new_shape" in op.options:
        target = list(op.options["new_shape"])
    else:
        target = list(model.tensors[op.outputs[0]].shape)
    if not target or target[0] not in (1, -1):
        raise folder.unsupported(
            op, f"new shape {target} does not keep the batch as dimension 0, which the native kernel needs"
        )
    record = target[1:]
    if record.count(-1) > 1 or any(d < -1 or d == 0 for d in record):
        raise folder.fail(op, f"new shape {target} is invalid")
    if -1 in record:
        known = int(np.prod([d for d in record if d != -1], dtype=np.int64))
        if known == 0 or in_elements % known:
            raise folder.fail(op, f"new shape {target} does not divide {in_elements} values per record")
        record[record.index(-1)] = in_elements // known
    return record


_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _reject_hybrid(model: TfliteModel, op: OperatorInfo) -> None:
    """Raise UnsupportedModelError for a hybrid op: float32 activations with int8 weights.

    Dynamic-range quantization writes such ops, and LiteRT quantizes their
    input at run time. The kernel's own checks would call the model malformed,
    so the op is named here as a valid one the kernel does not run.
    """
    if op.kind not in _WEIGHTED_OPS or len(op.inputs) < 2 or min(op.inputs[:2]) < 0:
        return
    activation, weights = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]
    if activation.dtype == np.float32 and weights.constant and weights.dtype != np.float32:
        raise UnsupportedModelError(
            f"{model.path}: {op.label()} is a hybrid (dynamic-range) op with float32 input and "
            f"{weights.type_name} weights, which the native kernel does not run"
        )


class NativeSession:
    """A .tflite or .onnx model loaded into the native kernel, ready to run batches."""

    backend = "native"

    def __init__(self, model, threads: int = 0, numerics: str | None = None):
        from edgemia.runtime.onnx_model import OnnxModel

        model_format = "onnx" if isinstance(model, OnnxModel) else "tflite"
        modes = NUMERICS_MODES[model_format]
        numerics = numerics or modes[0]
        if numerics not in modes:
            raise InputError(
                f"numerics mode '{numerics}' is not supported for {model_format} models; valid modes: "
                f"{', '.join(modes)}"
            )
        self.format = model_format
        check_io(model)
        native = _load_extension()
        requested = os.environ.get("EDGEMIA_ISA", "")
        if requested and requested not in native.available_isas():
            raise InputError(
                f"EDGEMIA_ISA={requested!r} is not an instruction-set path this build and CPU can "
                f"run; available: {', '.join(native.available_isas())}; unset it to choose automatically"
            )
        self.model = model
        self.numerics = numerics
        self.threads = threads if threads > 0 else (os.cpu_count() or 1)
        self.input = model.input()
        self.output = model.output()
        self._graph = native.Graph()
        try:
            if model_format == "onnx":
                from edgemia.runtime.onnx_model import build_native_graph

                input_id, output_id = build_native_graph(model, self._graph)
                self._graph.finalize([input_id], [output_id], self.numerics)
            else:
                self._build(native)
        except native.UnsupportedError as exc:
            raise UnsupportedModelError(f"{model.path}: {exc}") from exc
        except native.ModelError as exc:
            raise ModelFormatError(f"{model.path}: {exc}") from exc
        except (TypeError, OverflowError) as exc:
            # A value that does not fit the kernel's types, e.g. a zero point beyond int32.
            raise ModelFormatError(f"{model.path}: a tensor parameter is out of range ({exc})") from exc

    @property
    def isa(self) -> str:
        return self._graph.isa

    def _build(self, native) -> None:
        model = self.model
        folder = _Folder(model)
        ids: dict[int, int] = {}
        record_shapes: dict[int, list[int]] = {}

        def native_id(tensor_id: int, shape: list[int] | None = None) -> int:
            if tensor_id in ids:
                return ids[tensor_id]
            tensor = model.tensors[tensor_id]
            dtype = _NATIVE_DTYPES.get(tensor.dtype) if tensor.dtype is not None else None
            if dtype is None:
                raise UnsupportedModelError(
                    f"{model.path}: {tensor.label()} has type {tensor.type_name}, which the native "
                    "kernel does not support (supported: float32, int8, int32)"
                )
            constant = tensor.constant
            if constant and tensor.data is None:
                raise UnsupportedModelError(
                    f"{model.path}: constant {tensor.label()} has type {tensor.type_name}, which the "
                    "native kernel does not read"
                )
            if constant:
                dims = list(tensor.shape)
                data = np.ascontiguousarray(tensor.data).tobytes()
            else:
                dims = shape if shape is not None else _record_shape(model, tensor)
                data = None
                record_shapes[tensor_id] = dims
            ids[tensor_id] = self._graph.add_tensor(
                name=tensor.name,
                dtype=dtype,
                shape=dims,
                data=data,
                scales=[float(s) for s in tensor.scales],
                zero_points=[int(z) for z in tensor.zero_points],
                quantized_dimension=int(tensor.quantized_dimension),
            )
            return ids[tensor_id]

        kernel_ops = set(native.supported_ops())
        native_id(model.inputs[0])
        for op in _fuse_dilated_convolutions(model):
            if op.kind in _FOLDED_OPS:
                folder.fold(op)
                continue
            if op.kind not in kernel_ops:
                raise UnsupportedModelError(
                    f"{model.path}: {op.label()} is not supported by the native kernel; supported "
                    f"ops: {', '.join(sorted(kernel_ops))}, plus {', '.join(_FOLDED_OPS)} on shapes"
                )
            _reject_hybrid(model, op)
            if op.kind == "RESHAPE":
                source = op.inputs[0] if op.inputs else -1
                if source < 0 or source in folder.values:
                    raise folder.unsupported(op, "reshapes a constant, which the native kernel does not run")
                native_id(source)
                in_elements = int(np.prod(record_shapes[source], dtype=np.int64))
                target = _reshape_target(model, folder, op, in_elements)
                declared = model.tensors[op.outputs[0]].shape
                if declared and list(declared[1:]) != target:
                    raise folder.fail(
                        op, f"new shape {target} disagrees with the output's declared shape {list(declared)}"
                    )
                inputs = [ids[source]]
                outputs = [native_id(op.outputs[0], target)]
            else:
                for t in op.inputs:
                    if t >= 0 and t in folder.values and model.tensors[t].data is None:
                        raise folder.fail(op, "reads a folded shape value, which only RESHAPE may do")
                inputs = [native_id(t) if t >= 0 else -1 for t in op.inputs]
                outputs = [native_id(t) for t in op.outputs]
            options = {k: int(v) for k, v in op.options.items() if isinstance(v, (int, np.integer))}
            float_options = {k: float(v) for k, v in op.options.items() if isinstance(v, float)}
            self._graph.add_op(op.kind, str(op.index), inputs, outputs, options, float_options)
        if model.outputs[0] not in ids:
            raise ModelFormatError(f"{model.path}: no executed op writes the model output")
        self._graph.finalize([ids[model.inputs[0]]], [ids[model.outputs[0]]], self.numerics)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of inputs already in the input tensor's dtype; return the raw output."""
        return self._graph.run(np.ascontiguousarray(x), self.threads)[0]

    def close(self) -> None:
        """Release nothing: the graph lives as long as the session object."""
