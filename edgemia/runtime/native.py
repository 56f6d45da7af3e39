"""The native backend: edgemia's C++ kernel executing the .tflite graph itself.

The shape computations that converters emit around RESHAPE (SHAPE,
STRIDED_SLICE, PACK) are evaluated here at load time, and the remaining ops
are handed to the kernel, which checks them again and runs them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np

from edgemia.errors import InputError, ModelFormatError, UnsupportedModelError
from edgemia.runtime.io import check_io
from edgemia.runtime.tflite_model import OperatorInfo, TensorInfo, TfliteModel

logger = logging.getLogger(__name__)

# Numerics modes by model format; the first is the default.
NUMERICS_MODES = {"tflite": ("litert", "litert-reference"), "onnx": ("onnxruntime",)}

# Ops evaluated at load time on constant int32 shape vectors.
_FOLDED_OPS = ("SHAPE", "STRIDED_SLICE", "PACK", "GATHER", "REDUCE_PROD")
# Kernel ops that are folded as well when every input is known at load time.
_FOLDED_WHEN_KNOWN = ("CONCATENATION",)
# Ops that treat each row of their input alone, so that they may run on
# tensors whose rows a RESHAPE moved into the batch (see _reshape_target).
_ROW_OPS = (
    "FULLY_CONNECTED", "ADD", "MUL", "QUANTIZE", "DEQUANTIZE", "LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1",
    "SOFTMAX",
)
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
        elif op.kind == "GATHER":
            result = self._gather(op)
        elif op.kind == "REDUCE_PROD":
            result = self._reduce_prod(op)
        elif op.kind == "CONCATENATION":
            result = self._concatenation(op)
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

    def _axis(self, op: OperatorInfo, axis: int, rank: int) -> int:
        if not -rank <= axis < rank:
            raise self.fail(op, f"axis {axis} is out of range for rank {rank}")
        return axis % rank

    def _gather(self, op: OperatorInfo) -> np.ndarray:
        params = np.asarray(self.known(op, 0))
        indices = np.asarray(self.known(op, 1))
        if int(op.options.get("batch_dims", 0)) != 0:
            raise self.unsupported(op, "batch_dims other than 0 cannot be folded")
        if params.ndim == 0:
            raise self.fail(op, "gathers from a scalar")
        axis = self._axis(op, int(op.options.get("axis", 0)), params.ndim)
        size = params.shape[axis]
        outside = indices[(indices < 0) | (indices >= size)]
        if outside.size:
            raise self.fail(op, f"index {int(outside.reshape(-1)[0])} is outside 0..{size - 1}")
        return np.take(params, indices.astype(np.int64), axis=axis)

    def _reduce_prod(self, op: OperatorInfo) -> np.ndarray:
        x = np.asarray(self.known(op, 0))
        axes = sorted({self._axis(op, int(a), max(x.ndim, 1)) for a in np.asarray(self.known(op, 1)).reshape(-1)})
        result = np.prod(x.astype(np.int64), axis=tuple(axes), keepdims=bool(op.options.get("keep_dims", 0)))
        if x.dtype == np.int32 and np.any(np.abs(result) > np.iinfo(np.int32).max):
            raise self.fail(op, "the product leaves the int32 range")
        return result.astype(x.dtype)

    def _concatenation(self, op: OperatorInfo) -> np.ndarray:
        parts = [np.asarray(self.known(op, i)) for i in range(len(op.inputs))]
        if not parts or any(p.ndim != parts[0].ndim or p.ndim == 0 for p in parts):
            raise self.fail(op, "inputs must have the same rank, at least 1")
        if int(op.options.get("activation", 0)) != 0:
            raise self.unsupported(op, "a fused activation on shape values cannot be folded")
        axis = self._axis(op, int(op.options.get("axis", 0)), parts[0].ndim)
        try:
            return np.concatenate(parts, axis=axis)
        except ValueError as exc:
            raise self.fail(op, f"inputs cannot be joined on axis {axis}: {exc}") from None

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


def _transpose_options(model: TfliteModel, folder: _Folder, op: OperatorInfo) -> dict[str, int]:
    """Return the native TRANSPOSE options (perm0, perm1, ...) for the record axes of a TFLite TRANSPOSE."""
    perm = [int(p) for p in np.asarray(folder.known(op, 1)).reshape(-1)]
    rank = len(model.tensors[op.inputs[0]].shape)
    if sorted(perm) != list(range(rank)):
        raise folder.fail(op, f"permutation {perm} is not a permutation of {rank} axes")
    if perm[0] != 0:
        raise folder.unsupported(op, f"permutation {perm} moves the batch axis, which the native kernel keeps first")
    return {f"perm{i}": p - 1 for i, p in enumerate(perm[1:])}


def _reshape_target(
    model: TfliteModel, folder: _Folder, op: OperatorInfo, in_elements: int
) -> tuple[list[int], int]:
    """Return the record shape that a RESHAPE writes and the rows per record it moves into the batch.

    Shape values are folded with a batch of 1. A new shape that keeps the batch as dimension 0
    gives 1 row. Keras writes a Dense layer on records of [5, 6] as a RESHAPE to [5, 6] (or
    [-1, 6]), after which the batch counts rows. That gives the record shape [5, 6] and 5 rows.
    The ops after it must treat each row alone (_ROW_OPS) until a RESHAPE restores the batch.
    """
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        target = [int(d) for d in np.asarray(folder.known(op, 1)).reshape(-1)]
    elif "new_shape" in op.options:
        target = list(op.options["new_shape"])
    else:
        target = list(model.tensors[op.outputs[0]].shape)
    if not target:
        raise folder.unsupported(op, "new shape [] has no batch dimension, which the native kernel needs")
    if target.count(-1) > 1 or any(d < -1 or d == 0 for d in target):
        raise folder.fail(op, f"new shape {target} is invalid")
    resolved = list(target)
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
        if in_elements % known:
            raise folder.fail(op, f"new shape {target} does not divide {in_elements} values per record")
        resolved[target.index(-1)] = in_elements // known
    elif target[0] != 1 and int(np.prod(target, dtype=np.int64)) != in_elements:
        raise folder.unsupported(
            op, f"new shape {target} does not keep the batch as dimension 0, which the native kernel needs"
        )
    if resolved[0] == 1:
        return resolved[1:], 1
    return resolved, resolved[0]


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
        # Activations whose rows a RESHAPE moved into the batch, with their rows per record.
        batch_rows: dict[int, int] = {}
        for op in _fuse_dilated_convolutions(model):
            known_inputs = bool(op.inputs) and all(t >= 0 and t in folder.values for t in op.inputs)
            if op.kind in _FOLDED_OPS or (op.kind in _FOLDED_WHEN_KNOWN and known_inputs):
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
                target, rows = _reshape_target(model, folder, op, in_elements)
                declared = model.tensors[op.outputs[0]].shape
                signature = model.tensors[op.outputs[0]].shape_signature
                # The converter declares 1 for each dimension it leaves dynamic (-1 in the signature),
                # as for a tensor whose batch counts rows.
                placeholder = rows > 1 or bool(signature and -1 in signature[1:])
                if not placeholder and declared and list(declared[1:]) != target:
                    raise folder.fail(
                        op, f"new shape {target} disagrees with the output's declared shape {list(declared)}"
                    )
                inputs = [ids[source]]
                outputs = [native_id(op.outputs[0], target)]
                if rows > 1:
                    batch_rows[op.outputs[0]] = rows
            elif op.kind == "TRANSPOSE" and not any(t in batch_rows for t in op.inputs):
                # The permutation is checked first: one that moves the batch axis leaves an output whose
                # first dimension is not the batch, which the record-shape check would misreport.
                op = replace(op, options={**op.options, **_transpose_options(model, folder, op)})
                inputs = [native_id(op.inputs[0])] if op.inputs and op.inputs[0] >= 0 else []
                outputs = [native_id(t) for t in op.outputs]
            elif any(t in batch_rows for t in op.inputs):
                rows = self._row_op_rows(op, batch_rows, folder)
                inputs = [native_id(t) if t >= 0 else -1 for t in op.inputs]
                outputs = [native_id(t, [rows, *model.tensors[t].shape[1:]]) for t in op.outputs]
                batch_rows.update((t, rows) for t in op.outputs)
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
        if model.outputs[0] in batch_rows:
            raise UnsupportedModelError(
                f"{model.path}: the model output {model.tensors[model.outputs[0]].label()} has "
                f"{batch_rows[model.outputs[0]]} rows per record in its batch dimension; the native kernel "
                "needs one output row per record"
            )
        self._graph.finalize([ids[model.inputs[0]]], [ids[model.outputs[0]]], self.numerics)

    def _row_op_rows(self, op: OperatorInfo, batch_rows: dict[int, int], folder: _Folder) -> int:
        """Return the rows per record of an op whose input has rows in the batch, if the op can run there."""
        if op.kind not in _ROW_OPS:
            raise folder.unsupported(
                op, "reads a tensor whose rows a RESHAPE moved into the batch. On such tensors the native "
                f"kernel runs only {', '.join(_ROW_OPS)}"
            )
        tensors = self.model.tensors
        activations = [t for t in op.inputs if t >= 0 and not tensors[t].constant]
        rows = {batch_rows.get(t, 1) for t in activations}
        if len(rows) > 1:
            raise folder.unsupported(op, "combines tensors with different rows per record in the batch")
        for t in op.inputs if op.kind in ("ADD", "MUL") else ():
            if t >= 0 and tensors[t].constant and int(np.prod(tensors[t].shape[:-1], dtype=np.int64)) != 1:
                # LiteRT broadcasts it against the batch of rows, which the kernel keeps per record.
                raise folder.unsupported(op, f"constant {tensors[t].label()} of shape {list(tensors[t].shape)} varies "
                                             "across rows; against rows in the batch only a constant row is supported")
        return rows.pop()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of inputs already in the input tensor's dtype; return the raw output."""
        return self._graph.run(np.ascontiguousarray(x), self.threads)[0]

    def close(self) -> None:
        """Release nothing: the graph lives as long as the session object."""
