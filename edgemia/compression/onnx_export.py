"""Export Keras models to ONNX: float32 through Keras's exporter, int8 through ONNX Runtime.

The float graph is cleaned before quantization so that ONNX Runtime fuses
every quantized op into an integer kernel: the flatten's dynamic shape
computation becomes a constant reshape, and ONNX Runtime's pre-processing
folds MatMul + Add into Gemm. A graph that ONNX Runtime partly runs in
float would give outputs no integer kernel reproduces.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from pathlib import Path

import numpy as np

from edgemia._stderr import native_stderr_to_log
from edgemia._tf import import_tensorflow
from edgemia.errors import InputError

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _evaluate(model, names: list[str], batch: int) -> dict[str, np.ndarray]:
    """Run `model` on zeros with the given batch and return the named intermediate tensors."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    graph_input = probe.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else batch for d in graph_input.type.tensor_type.shape.dim]
    dims[0] = batch
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(names, {graph_input.name: np.zeros(dims, dtype=np.float32)})
    return dict(zip(names, values))


def _static_reshapes(model):
    """Replace reshape targets computed from Shape ops by constants.

    Keras's Flatten exports as Shape -> Gather -> ... -> Reshape so that the
    batch stays dynamic. The target is evaluated at batch 1 and batch 2:
    when only its first entry follows the batch, it becomes the constant
    [-1, d1, ...], and the shape computation is dead code, which is removed.
    """
    import onnx
    from onnx import numpy_helper

    initializers = {init.name for init in model.graph.initializer}
    dynamic = [node for node in model.graph.node if node.op_type == "Reshape" and node.input[1] not in initializers]
    if dynamic:
        names = [node.input[1] for node in dynamic]
        one, two = _evaluate(model, names, 1), _evaluate(model, names, 2)
        for node in dynamic:
            a, b = one[node.input[1]], two[node.input[1]]
            if a.shape != b.shape or a.size == 0 or a[0] != 1 or b[0] != 2 or not (a[1:] == b[1:]).all():
                continue
            name = f"{node.output[0]}__static_shape"
            target = np.array([-1, *a[1:]], dtype=np.int64)
            model.graph.initializer.append(numpy_helper.from_array(target, name))
            node.input[1] = name
    # Drop nodes whose outputs nobody reads, then unread initializers.
    while True:
        used = {name for node in model.graph.node for name in node.input}
        used |= {output.name for output in model.graph.output}
        dead = [node for node in model.graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    live = {name for node in model.graph.node for name in node.input}
    for init in [init for init in model.graph.initializer if init.name not in live]:
        model.graph.initializer.remove(init)
    onnx.checker.check_model(model)
    return model


def _canonical_names(model):
    """Rename nodes and intermediate tensors so that the same model always gets the same names.

    tf2onnx appends '__<n>' to the names it generates, with n from a counter
    that lives as long as the process, so a second export of the same model
    gets other names and other bytes. The suffix is replaced by one counted
    within this graph. Graph inputs and outputs keep their names.
    """
    graph = model.graph
    kept = {value.name for value in (*graph.input, *graph.output)}
    counts: dict[str, int] = {name: 1 for name in kept}
    tensors: dict[str, str] = {name: name for name in kept}
    tensors[""] = ""  # an omitted optional input

    def rename(name: str, mapping: dict[str, str], used: dict[str, int]) -> str:
        if name not in mapping:
            base = re.sub(r"__\d+(?=:\d+$|$)", "", name)
            n = used.get(base, 0)
            used[base] = n + 1
            mapping[name] = base if n == 0 else f"{base}__{n}"
        return mapping[name]

    node_names: dict[str, str] = {}
    node_counts: dict[str, int] = {}
    for node in graph.node:
        node.name = rename(node.name, node_names, node_counts)
        node.input[:] = [rename(name, tensors, counts) for name in node.input]
        node.output[:] = [rename(name, tensors, counts) for name in node.output]
    for init in graph.initializer:
        init.name = rename(init.name, tensors, counts)
    for value in graph.value_info:
        value.name = rename(value.name, tensors, counts)
    # Symbolic dimensions ('unk__<n>') come from the same counter.
    dimensions: dict[str, str] = {}
    dimension_counts: dict[str, int] = {}
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = rename(dim.dim_param, dimensions, dimension_counts)
    # The doc string names the traced TensorFlow function, whose number also grows per trace.
    graph.doc_string = re.sub(r"_\d+'$", "'", graph.doc_string)
    if len(set(tensors.values())) != len(tensors):
        raise RuntimeError("renaming ONNX tensors produced duplicate names")
    return model


def _check_single_input(proto, model) -> None:
    """Raise InputError when the exported graph has inputs besides the records.

    Keras's ONNX export leaves some layers' constants out of the file and
    makes them graph inputs instead: Keras's Normalization layer does, for
    its mean and variance. No runtime can run such a file on records alone.
    """
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value.name for value in proto.graph.input if value.name not in initializers]
    if len(inputs) > 1:
        layers = sorted({type(layer).__name__ for layer in model.layers if "Normalization" in type(layer).__name__})
        hint = f" (the model has {', '.join(layers)} layers, whose constants Keras's exporter leaves out)" if layers \
            else ""
        raise InputError(
            f"the ONNX export of model '{model.name}' needs inputs besides the records: "
            f"{', '.join(inputs[1:])}{hint}; apply that preprocessing to the records and remove the layer from the "
            "model, so that every exported file runs on the records alone"
        )


def export_float(model, path: Path, fuse: bool = True) -> None:
    """Write `model` as a float32 ONNX file with a dynamic batch dimension.

    With `fuse`, ONNX Runtime's pre-processing also folds MatMul + Add into
    Gemm; weight-only int4 quantization needs the unfused MatMul nodes.
    """
    import onnx

    import_tensorflow()
    # Keras's exporter traces the model, which needs one call first.
    model(np.zeros((1, *model.inputs[0].shape[1:]), dtype=np.float32))
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "keras.onnx"
        chatter = io.StringIO()
        with contextlib.redirect_stdout(chatter), native_stderr_to_log("ONNX export"):
            model.export(str(raw), format="onnx", verbose=False)
        logger.debug("Keras ONNX export output:\n%s", chatter.getvalue())
        exported = onnx.load(str(raw))
        _check_single_input(exported, model)
        cleaned = Path(scratch) / "static.onnx"
        onnx.save(_canonical_names(_static_reshapes(exported)), str(cleaned))
        if fuse:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            with native_stderr_to_log("ONNX Runtime pre-processing"):
                quant_pre_process(str(cleaned), str(path), skip_symbolic_shape=False)
        else:
            Path(path).write_bytes(cleaned.read_bytes())


def export_int8(
    float_path: Path, calibration_x: np.ndarray, path: Path, method: str = "minmax", operator_form: bool = False
) -> None:
    """Quantize a float ONNX file to int8 with ONNX Runtime's quantize_static.

    Weights are per-channel symmetric int8; activations are per-tensor int8
    with ranges from `calibration_x`, by the given calibration method. The
    graph is in QDQ form (QuantizeLinear / DequantizeLinear around float ops)
    unless `operator_form` asks for integer operators (QLinearConv, QGemm,
    QLinearMatMul).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(f"unknown calibration method '{method}'; valid methods: {', '.join(methods)}")
    input_name = onnx.load(str(float_path)).graph.input[0].name
    calibration_x = np.asarray(calibration_x, dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._rows = iter(range(calibration_x.shape[0]))

        def get_next(self):
            row = next(self._rows, None)
            return None if row is None else {input_name: calibration_x[row : row + 1]}

    # The entropy and percentile calibrators print their progress to stdout.
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), native_stderr_to_log("ONNX Runtime quantization"):
        quantize_static(
            str(float_path),
            str(path),
            Reader(),
            quant_format=QuantFormat.QOperator if operator_form else QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
        )
    logger.debug("ONNX Runtime quantization output:\n%s", chatter.getvalue())


def export_int4(float_path: Path, path: Path, block_size: int = 32, symmetric: bool = True) -> None:
    """Quantize every MatMul's weights to 4 bits, block-wise (ONNX Runtime's MatMulNBits).

    `float_path` must hold the unfused float graph (export_float with
    fuse=False): the quantizer rewrites MatMul nodes and leaves Gemm alone.
    Activations stay float32; convolutions are not quantized.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size} must be a power of two, 16 or more")
    quantizer = MatMulNBitsQuantizer(onnx.load(str(float_path)), bits=4, block_size=block_size,
                                     is_symmetric=symmetric)
    with native_stderr_to_log("ONNX Runtime int4 quantization"):
        quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            quantizer.process()
        finally:
            quiet.setLevel(level)
    quantizer.model.save_model_to_file(str(path))


def export_dynamic(float_path: Path, path: Path) -> None:
    """Quantize a float ONNX file with ONNX Runtime's quantize_dynamic (dynamic-range int8).

    Weights become per-tensor symmetric int8, the function's defaults in
    ONNX Runtime 1.32. Activations are quantized to uint8 at run time by
    DynamicQuantizeLinear, and ConvInteger and MatMulInteger compute in
    integers.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with native_stderr_to_log("ONNX Runtime dynamic quantization"):
        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
