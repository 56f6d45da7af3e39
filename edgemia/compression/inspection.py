"""Inspection of exported files: their op lists and the sparsity of their weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_TFLITE_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_ONNX_WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "MatMulNBits")


def operator_list(path: Path, model_format: str) -> list[str]:
    """Return the distinct op names of a .tflite or .onnx file, in order of first use.

    ONNX ops outside the default domain carry their domain, e.g.
    'com.microsoft.MatMulNBits'.
    """
    names: list[str] = []
    if model_format == "tflite":
        from edgemia.runtime.tflite_model import read_tflite

        names = [op.kind for op in read_tflite(path).operators]
    else:
        import onnx

        for node in onnx.load(str(path)).graph.node:
            names.append(f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type)
    return list(dict.fromkeys(names))


def weight_sparsity(path: Path, model_format: str) -> dict:
    """Count the zero weights of the convolution and matrix-product ops of an exported file.

    Weights are read as stored: float32 values, or the integer values of
    quantized weights, whose zero point is 0 for the weights edgemia writes.
    Weights stored in a form edgemia does not read (4-bit, packed) are left
    out and counted in `unread_tensors`. `sparsity` is None when no weights
    are readable.
    """
    tensors, unread = _tflite_weights(path) if model_format == "tflite" else _onnx_weights(path)
    size = sum(int(t.size) for t in tensors)
    zeros = sum(int((t == 0).sum()) for t in tensors)
    return {
        "tensors": len(tensors),
        "unread_tensors": unread,
        "size": size,
        "zeros": zeros,
        "sparsity": zeros / size if size else None,
    }


def _tflite_weights(path: Path) -> tuple[list[np.ndarray], int]:
    from edgemia.runtime.tflite_model import read_tflite

    model = read_tflite(path)
    producers = {output: op for op in model.operators for output in op.outputs}
    weights, unread = [], 0
    for op in model.operators:
        if op.kind not in _TFLITE_WEIGHTED or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        tensor = model.tensors[op.inputs[1]]
        source = producers.get(tensor.index)
        if tensor.data is None and source is not None and source.kind == "DEQUANTIZE":
            tensor = model.tensors[source.inputs[0]]
        if tensor.data is not None:
            weights.append(tensor.data)
        else:
            unread += 1
    return weights, unread


def _onnx_weights(path: Path) -> tuple[list[np.ndarray], int]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    dequantized = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    weights, unread = [], 0
    for node in graph.node:
        if node.op_type not in _ONNX_WEIGHTED or len(node.input) < 2:
            continue
        name = dequantized.get(node.input[1], node.input[1])
        if node.op_type != "MatMulNBits" and name in initializers:
            weights.append(numpy_helper.to_array(initializers[name]))
        elif name in initializers:
            unread += 1
    return weights, unread
