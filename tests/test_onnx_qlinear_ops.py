"""int8 Add, Mul, Concat, Pad, average pooling, Sigmoid and Softmax in ONNX files against ONNX Runtime.

ONNX Runtime fuses DequantizeLinear -> Add / Mul / Concat / AveragePool /
GlobalAveragePool / Sigmoid -> QuantizeLinear into QLinearAdd, QLinearMul,
QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool and
QLinearSigmoid (com.microsoft), and QOperator files name those ops directly.
On x86-64 it first converts int8 QDQ activations to uint8, which changes the
rounding of QLinearAdd, QLinearMul and QLinearAveragePool, so both forms are
compared, on every instruction-set path.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemia import _native
from edgemia.errors import ModelFormatError, UnsupportedModelError
from edgemia.runtime.native import NativeSession
from edgemia.runtime.onnx_model import read_onnx

ISAS = _native.available_isas()


def run_onnxruntime(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def records_for(model, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.5, 2.5, size=(n, *model.input().shape[1:])).astype(np.float32)
    x[0] = -100.0  # saturates the int8 input
    x[1] = 100.0
    return x


# ---------------------------------------------------------------------------
# Keras models through tf2onnx and quantize_static.


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    from edgemia._tf import import_keras
    from edgemia.compression.onnx_export import export_float, export_int8
    from op_models import calibration_data

    keras = import_keras()
    keras.utils.set_random_seed(3)
    layers = keras.layers
    folder = tmp_path_factory.mktemp("qlinear-models")

    def pooling():
        x = keras.Input((10, 9, 3))
        h = layers.Conv2D(6, 3, padding="same")(x)
        h = layers.AveragePooling2D(2)(h)
        h = layers.AveragePooling2D(3, strides=2, padding="same")(h)
        return keras.Model(x, layers.Dense(5)(layers.Flatten()(h)))

    def residual():
        x = keras.Input((10, 9, 3))
        a = layers.Conv2D(6, 3, padding="same")(x)
        b = layers.Conv2D(6, 1, padding="same", activation="relu")(x)
        h = layers.AveragePooling2D(2)(layers.Add()([a, b]))
        h = layers.AveragePooling2D(3, strides=2, padding="same")(h)
        return keras.Model(x, layers.Dense(5)(layers.GlobalAveragePooling2D()(h)))

    def sigmoid():
        x = keras.Input((20,))
        h = layers.Dense(16, activation="sigmoid")(x)
        return keras.Model(x, layers.Dense(5)(h))

    paths = {}
    for name, build in (("pooling", pooling), ("residual", residual), ("sigmoid", sigmoid)):
        model = build()
        data = calibration_data(model)
        model.compile(optimizer="adam", loss="mse")
        model.fit(data, np.random.default_rng(2).normal(size=(len(data), 5)), epochs=2, verbose=0)
        export_float(model, folder / f"{name}-float.onnx")
        paths[f"{name}-qdq"] = folder / f"{name}-qdq.onnx"
        export_int8(folder / f"{name}-float.onnx", data, paths[f"{name}-qdq"])
        paths[f"{name}-qoperator"] = folder / f"{name}-qoperator.onnx"
        export_int8(folder / f"{name}-float.onnx", data, paths[f"{name}-qoperator"], operator_form=True)
    return paths


# In the residual QDQ file both convolutions read one shared DequantizeLinear,
# and ONNX Runtime 1.32 then runs them in float, so only its QOperator form
# is compared here.
@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("key,ops", [
    ("pooling-qdq", {"AveragePool"}),
    ("pooling-qoperator", {"QLinearAveragePool"}),
    ("residual-qoperator", {"QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool"}),
    ("sigmoid-qdq", {"Sigmoid"}),
    ("sigmoid-qoperator", {"QLinearSigmoid"}),
])
def test_keras_qlinear_ops_equal_onnxruntime(keras_models, monkeypatch, key, ops, isa):
    import onnx

    kinds = {node.op_type for node in onnx.load(str(keras_models[key])).graph.node}
    assert ops <= kinds
    monkeypatch.setenv("EDGEMIA_ISA", isa)
    model = read_onnx(keras_models[key])
    x = records_for(model, 1500, seed=len(key))
    session = NativeSession(model, threads=2)
    assert session.isa == isa
    np.testing.assert_array_equal(session.run(x), run_onnxruntime(keras_models[key], x))


# ---------------------------------------------------------------------------
# Graphs built with onnx.helper: the op alone, with random quantization.


def _quantized_input(helper, numpy_helper, name: str, scale: float, zero_point: int):
    """Nodes and initializers of x -> QuantizeLinear -> DequantizeLinear, ending in `name`."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}_quantize"),
        helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name], name=f"{name}_dq"),
    ]
    initializers = [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
                    numpy_helper.from_array(np.array(zero_point, np.int8), f"{name}_z")]
    return nodes, initializers


def _write_qdq_graph(tmp_path, op: str, seed: int, attributes: dict | None = None):
    """x [C, H, W] -> Q/DQ (twice for Add, Mul, Concat) -> `op` -> Q -> DQ -> y, with random quantization.

    Pad's output keeps its input's quantization, as quantize_static writes it.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, initializers, inputs = [], [], []
    for name in ("a", "b") if op in ("Add", "Mul", "Concat") else ("a",):
        scale, zero_point = float(rng.uniform(0.01, 0.05)), int(rng.integers(-60, 60))
        more_nodes, more_initializers = _quantized_input(helper, numpy_helper, name, scale, zero_point)
        nodes += more_nodes
        initializers += more_initializers
        inputs.append(name)
    if op == "Pad":
        pads = (attributes or {}).pop("pads")
        initializers.append(numpy_helper.from_array(np.array(pads, np.int64), "pads"))
        inputs.append("pads")
        out_scale, out_zero_point = scale, zero_point
    else:
        out_scale, out_zero_point = rng.uniform(0.005, 0.05), rng.integers(-60, 60)
    nodes += [
        helper.make_node(op, inputs, ["r"], name="op", **(attributes or {})),
        helper.make_node("QuantizeLinear", ["r", "r_s", "r_z"], ["r_q"], name="r_quantize"),
        helper.make_node("DequantizeLinear", ["r_q", "r_s", "r_z"], ["y"], name="r_dq"),
    ]
    initializers += [numpy_helper.from_array(np.array(out_scale, np.float32), "r_s"),
                     numpy_helper.from_array(np.array(out_zero_point, np.int8), "r_z")]
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 7, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = onnx.shape_inference.infer_shapes(model)
    path = tmp_path / f"{op}-{seed}.onnx"
    onnx.save(model, str(path))
    return path


HANDMADE = [
    ("Add", None),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ("AveragePool", {"kernel_shape": [7, 6]}),  # the whole image: ONNX Runtime's global path
    ("GlobalAveragePool", None),
    ("Sigmoid", None),
    ("Mul", None),
    ("Concat", {"axis": 1}),  # channels: the innermost native axis
    ("Concat", {"axis": 2}),
    ("Concat", {"axis": -1}),
    ("Pad", {"pads": [0, 1, 2, 0, 0, 0, 1, 3]}),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("op,attributes", HANDMADE)
def test_handmade_qdq_op_equals_onnxruntime(tmp_path, monkeypatch, op, attributes, isa):
    monkeypatch.setenv("EDGEMIA_ISA", isa)
    for seed in range(6):
        path = _write_qdq_graph(tmp_path, op, seed, dict(attributes or {}))
        model = read_onnx(path)
        x = np.random.default_rng(seed).uniform(-3.0, 3.0, size=(300, 4, 7, 6)).astype(np.float32)
        x[0] = -100.0
        x[1] = 100.0
        x[2, :2] = np.nan  # ONNX Runtime quantizes NaN to the lowest value
        np.testing.assert_array_equal(NativeSession(model).run(x), run_onnxruntime(path, x), err_msg=f"seed {seed}")


def test_pad_with_int32_pads_rejected(tmp_path):
    import onnx
    from onnx import numpy_helper

    path = _write_qdq_graph(tmp_path, "Pad", 0, {"pads": [0, 1, 2, 0, 0, 0, 1, 3]})
    model = onnx.load(str(path))
    pads = next(init for init in model.graph.initializer if init.name == "pads")
    pads.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(pads).astype(np.int32), "pads"))
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match="node 'op' \\(Pad\\): the pads are int32; ONNX requires int64"):
        NativeSession(read_onnx(path))


def _write_qoperator_graph(tmp_path, op: str, inputs: list[str], attributes: dict | None = None):
    """x -> QuantizeLinear -> `op` (com.microsoft) -> DequantizeLinear -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quantize"),
        helper.make_node(op, inputs, ["r"], name="op", domain="com.microsoft", **(attributes or {})),
        helper.make_node("DequantizeLinear", ["r", "s", "z"], ["y"], name="dequantize"),
    ]
    initializers = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                    numpy_helper.from_array(np.array(3, np.int8), "z"),
                    numpy_helper.from_array(np.array(5, np.int8), "other_z")]
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 7, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 7, 6])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, str(path))
    return path


def _write_shared_dq_graph(tmp_path, seed: int, layout: str):
    """Write a QDQ graph whose layout decides which of its ops ONNX Runtime fuses.

    "mixed": one DequantizeLinear feeds Add, Mul and Concat. ONNX Runtime's x86-64 build leaves that
    activation int8 while the others become uint8, so it runs all three ops in float between
    DequantizeLinear and QuantizeLinear. "all-shared": both Add inputs and its output feed two nodes each,
    so all three stay int8 and it fuses the Add as an int8 QLinearAdd. The Mul squares that output into a
    uint8 activation, so it runs in float. "add-output": the Add's QuantizeLinear -> DequantizeLinear pair is
    the graph's output, which becomes uint8 like the inputs, so the Add is fused in uint8. The scales make
    the fused ops' ratios exactly 1/2, so half the fused results are exact ties, which the float path
    rounds either way: the two forms then differ often.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    tenth, fifth = np.float32(0.1), np.float32(0.2)
    scales = {"a": tenth, "b": tenth, "sum": fifth, "product": np.float32(tenth * fifth) * 2, "joined": fifth}
    for name, scale in scales.items():
        initializers += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
                         numpy_helper.from_array(np.array(rng.integers(-40, 40), np.int8), f"{name}_z")]
    initializers.append(numpy_helper.from_array(rng.normal(size=(4, 7, 6)).astype(np.float32), "factor"))

    def qdq(source: str, name: str) -> str:
        nodes.append(helper.make_node("QuantizeLinear", [source, f"{name}_s", f"{name}_z"], [f"{name}_q"],
                                      name=f"{name}_quantize"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"],
                                      name=f"{name}_dequantize"))
        return f"{name}_dq"

    a = qdq("x", "a")
    nodes.append(helper.make_node("Mul", ["x", "factor"], ["xb"], name="factor"))
    b = qdq("xb", "b")
    nodes.append(helper.make_node("Add", [a, b], ["sum"], name="add"))
    total = qdq("sum", "sum")
    if layout == "add-output":
        output, channels = total, 4
    else:
        all_shared = layout == "all-shared"
        nodes.append(helper.make_node("Mul", [total, total] if all_shared else [a, total], ["product"], name="mul"))
        joined = [qdq("product", "product"), a, b] if all_shared else [qdq("product", "product"), a]
        nodes.append(helper.make_node("Concat", joined, ["joined"], name="concat", axis=1))
        output, channels = qdq("joined", "joined"), 4 * len(joined)
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 7, 6])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, channels, 7, 6])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / f"shared-{seed}-{layout}.onnx"
    onnx.save(model, str(path))
    return path


def _write_qoperator_pair_graph(tmp_path, op: str, seed: int, attributes: dict | None = None):
    """x -> two QuantizeLinear (one after a float Mul) -> QLinearMul / QLinearConcat or Pad -> DequantizeLinear -> y.

    QLinearConcat's inputs and output each have their own quantization, so it rescales both.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.01, 0.05, size=3).astype(np.float32)
    zero_points = rng.integers(-60, 60, size=3).astype(np.int8)
    initializers = [numpy_helper.from_array(rng.normal(size=(4, 7, 6)).astype(np.float32), "factor")]
    for i in range(3):
        initializers += [numpy_helper.from_array(np.array(scales[i]), f"s{i}"),
                         numpy_helper.from_array(np.array(zero_points[i]), f"z{i}")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s0", "z0"], ["qa"], name="quantize_a"),
        helper.make_node("Mul", ["x", "factor"], ["xb"], name="factor"),
        helper.make_node("QuantizeLinear", ["xb", "s1", "z1"], ["qb"], name="quantize_b"),
    ]
    if op == "Pad":
        pads, value = attributes["pads"], attributes.get("value")
        initializers.append(numpy_helper.from_array(np.array(pads, np.int64), "pads"))
        inputs = ["qa", "pads"]
        if value is not None:
            initializers.append(numpy_helper.from_array(np.array(value, np.int8), "value"))
            inputs.append("value")
        nodes.append(helper.make_node("Pad", inputs, ["r"], name="op", mode="constant"))
        out = ("s0", "z0")
    else:
        inputs = (["qa", "s0", "z0", "qb", "s1", "z1", "s2", "z2"] if op == "QLinearMul"
                  else ["s2", "z2", "qa", "s0", "z0", "qb", "s1", "z1"])
        nodes.append(helper.make_node(op, inputs, ["r"], name="op", domain="com.microsoft", **(attributes or {})))
        out = ("s2", "z2")
    nodes.append(helper.make_node("DequantizeLinear", ["r", *out], ["y"], name="dequantize"))
    shape = [None, 4, 7, 6]
    if op == "Pad":
        shape = [None] + [d + pads[i] + pads[i + 4] for i, d in enumerate(shape) if i]
    elif op == "QLinearConcat":
        shape[attributes["axis"]] *= 2
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 7, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / f"{op}-{seed}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("layout", ["mixed", "all-shared", "add-output"])
def test_shared_dequantize_matches_onnxruntime(tmp_path, layout):
    for seed in range(8):
        path = _write_shared_dq_graph(tmp_path, seed, layout)
        x = np.random.default_rng(seed).uniform(-3.0, 3.0, size=(2000, 4, 7, 6)).astype(np.float32)
        np.testing.assert_array_equal(NativeSession(read_onnx(path)).run(x), run_onnxruntime(path, x),
                                      err_msg=f"seed {seed}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("op,attributes", [
    ("QLinearMul", None),
    ("QLinearConcat", {"axis": 1}),
    ("QLinearConcat", {"axis": 3}),
    ("Pad", {"pads": [0, 2, 1, 0, 0, 1, 0, 2]}),  # pads with 0, which ONNX uses when no value is given
    ("Pad", {"pads": [0, 0, 1, 1, 0, 0, 2, 1], "value": -7}),
])
def test_handmade_qoperator_op_equals_onnxruntime(tmp_path, monkeypatch, op, attributes, isa):
    monkeypatch.setenv("EDGEMIA_ISA", isa)
    for seed in range(4):
        path = _write_qoperator_pair_graph(tmp_path, op, seed, attributes)
        x = np.random.default_rng(seed).uniform(-3.0, 3.0, size=(300, 4, 7, 6)).astype(np.float32)
        x[0] = -100.0
        x[1] = 100.0
        np.testing.assert_array_equal(NativeSession(read_onnx(path)).run(x), run_onnxruntime(path, x),
                                      err_msg=f"seed {seed}")


def _write_qlinear_matmul_graph(tmp_path):
    """x -> QuantizeLinear -> QLinearMatMul with int8 weights -> DequantizeLinear -> y, as a QOperator Dense."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(3).integers(-127, 128, size=(8, 5), dtype=np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quantize"),
        helper.make_node("QLinearMatMul", ["q", "s", "z", "w", "w_s", "w_z", "y_s", "y_z"], ["r"], name="dense"),
        helper.make_node("DequantizeLinear", ["r", "y_s", "y_z"], ["y"], name="dequantize"),
    ]
    initializers = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                    numpy_helper.from_array(np.array(3, np.int8), "z"),
                    numpy_helper.from_array(weights, "w"),
                    numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
                    numpy_helper.from_array(np.array(0, np.int8), "w_z"),
                    numpy_helper.from_array(np.array(0.05, np.float32), "y_s"),
                    numpy_helper.from_array(np.array(-4, np.int8), "y_z")]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "qlinear_matmul.onnx"
    onnx.save(model, str(path))
    return path


def test_onnxruntime_backend_runs_qlinear_matmul(tmp_path):
    # ONNX Runtime 1.32 has no int8 QLinearMatMul kernel under the
    # exact-precision option that the backend sets first.
    from edgemia.runtime.onnxruntime import OnnxRuntimeSession

    path = _write_qlinear_matmul_graph(tmp_path)
    x = np.random.default_rng(4).uniform(-3.0, 3.0, size=(200, 8)).astype(np.float32)
    x[0] = -100.0
    x[1] = 100.0
    model = read_onnx(path)
    backend = OnnxRuntimeSession(model, threads=1)
    try:
        captured = backend.run(x)
    finally:
        backend.close()
    np.testing.assert_array_equal(captured, run_onnxruntime(path, x))
    np.testing.assert_array_equal(NativeSession(model).run(x), captured)


@pytest.mark.parametrize("op,inputs,attributes,error,message", [
    ("QLinearAdd", ["q", "s", "z", "q", "s"], None, ModelFormatError, "has 5 inputs, expected 8"),
    ("QLinearAdd", ["q", "s", "other_z", "q", "s", "z", "s", "z"], None, UnsupportedModelError, "differs from its own"),
    ("QLinearAveragePool", ["q", "s", "z"], {"kernel_shape": [2, 2]}, ModelFormatError, "has 3 inputs, expected 5"),
    ("QLinearAveragePool", ["q", "s", "z", "s", "z"], {"kernel_shape": [2, 2], "channels_last": 1},
     UnsupportedModelError, "channels_last"),
    ("QLinearAveragePool", ["q", "s", "z", "s", "z"], {"kernel_shape": [9, 9]}, ModelFormatError, "does not fit"),
    ("QLinearAveragePool", ["q", "s", "z", "s", "z"], {"kernel_shape": [2, 2], "count_include_pad": 1},
     UnsupportedModelError, "count_include_pad"),
    ("QLinearGlobalAveragePool", ["q", "s", "z", "x", "z"], None, UnsupportedModelError, "constant"),
    ("QLinearSigmoid", ["q", "s", "z", "s"], None, ModelFormatError, "has 4 inputs, expected 5"),
    ("QLinearMul", ["q", "s", "z", "q", "s", "z", "s"], None, ModelFormatError, "has 7 inputs, expected 8"),
    ("QLinearConcat", ["s", "z", "q", "s", "z", "q"], {"axis": 1}, ModelFormatError, "has 6 inputs"),
    ("QLinearConcat", ["s", "z", "q", "s", "other_z"], {"axis": 1}, UnsupportedModelError, "differs from its own"),
    ("QLinearMul", ["q", "s", "z", "q", "s", "z", "s", "z", "z"], None, ModelFormatError, "has 9 inputs, expected 8"),
    ("QLinearConcat", ["s", "z", "q", "s", "z"], {"axis": -5}, UnsupportedModelError, "axis -5 is not an axis"),
    ("QLinearConcat", ["s", "z", "q", "s", "z"], None, ModelFormatError, "has no axis attribute"),
])
def test_malformed_qlinear_node_named(tmp_path, op, inputs, attributes, error, message):
    path = _write_qoperator_graph(tmp_path, op, inputs, attributes)
    with pytest.raises(error, match=f"node 'op' \\({op}\\).*{message}") as raised:
        NativeSession(read_onnx(path))
    assert str(path) in str(raised.value)


# ---------------------------------------------------------------------------
# Load-time checks of the kernel itself.


def _int8(graph, name, shape, scale=0.02, zero_point=0):
    return graph.add_tensor(name, "int8", shape, None, [scale], [zero_point], 0)


@pytest.mark.parametrize("kind", ["ADD", "MUL"])
def test_broadcast_int8_binary_rejected_in_onnxruntime_numerics(kind):
    graph = _native.Graph()
    a, y = _int8(graph, "a", [4, 3]), _int8(graph, "y", [4, 3])
    b = graph.add_tensor("b", "int8", [1, 3], bytes(3), [0.02], [0], 0)
    graph.add_op(kind, "op", [a, b], [y], {"activation": 0}, {})
    with pytest.raises(_native.UnsupportedError, match="same shape"):
        graph.finalize([a], [y], "onnxruntime")


@pytest.mark.parametrize("kind", ["ADD", "AVERAGE_POOL_2D"])
def test_invalid_uint8_domain_option_rejected(kind):
    graph = _native.Graph()
    x = _int8(graph, "x", [4, 4, 2])
    inputs = [x, x] if kind == "ADD" else [x]
    options = {"uint8_domain": 5, "activation": 0}
    if kind == "AVERAGE_POOL_2D":
        options.update(padding=1, filter_h=2, filter_w=2, stride_h=2, stride_w=2)
    y = _int8(graph, "y", [4, 4, 2] if kind == "ADD" else [2, 2, 2])
    graph.add_op(kind, "op", inputs, [y], options, {})
    with pytest.raises(_native.ModelError, match="uint8_domain"):
        graph.finalize([x], [y], "onnxruntime")


def test_global_pool_scale_outside_onnxruntime_range_rejected():
    graph = _native.Graph()
    x = _int8(graph, "x", [4, 4, 2], scale=1.0)
    y = _int8(graph, "y", [1, 1, 2], scale=1e-5)
    graph.add_op("AVERAGE_POOL_2D", "pool", [x], [y],
                 {"padding": 1, "filter_h": 4, "filter_w": 4, "stride_h": 1, "stride_w": 1, "activation": 0}, {})
    with pytest.raises(_native.UnsupportedError, match="ONNX Runtime rejects"):
        graph.finalize([x], [y], "onnxruntime")


@pytest.mark.parametrize("op,attributes", HANDMADE)
def test_mutated_qdq_graphs_fail_cleanly(tmp_path, op, attributes):
    import onnx

    from onnx_mutations import assert_fails_cleanly, mutated_models

    path = _write_qdq_graph(tmp_path, op, 0, dict(attributes or {}))
    records = np.random.default_rng(0).uniform(-3.0, 3.0, size=(8, 4, 7, 6)).astype(np.float32)
    outcomes = [assert_fails_cleanly(tmp_path / f"m{i}.onnx", mutated, records)
                for i, (_, mutated) in enumerate(mutated_models(onnx.load(str(path)), 60, seed=len(op)))]
    assert any(outcomes)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["residual-qoperator", "sigmoid-qoperator", "pooling-qdq"])
def test_mutated_keras_qlinear_models_fail_cleanly(keras_models, tmp_path, key):
    import onnx

    from onnx_mutations import assert_fails_cleanly, mutated_models

    model = read_onnx(keras_models[key])
    records = records_for(model, 8, seed=0)
    outcomes = [assert_fails_cleanly(tmp_path / f"m{i}.onnx", mutated, records)
                for i, (_, mutated) in enumerate(mutated_models(onnx.load(str(keras_models[key])), 60, seed=3))]
    assert any(outcomes)


def _write_softmax_graph(tmp_path, form: str, depth: int, quantization: tuple, axis: int = -1):
    """x [depth] -> QuantizeLinear -> Softmax in QDQ form, or QLinearSoftmax -> DequantizeLinear -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    in_scale, in_zero_point, out_scale, out_zero_point = quantization
    initializers = [numpy_helper.from_array(np.array(in_scale, np.float32), "s"),
                    numpy_helper.from_array(np.array(in_zero_point, np.int8), "z"),
                    numpy_helper.from_array(np.array(out_scale, np.float32), "os"),
                    numpy_helper.from_array(np.array(out_zero_point, np.int8), "oz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quantize")]
    if form == "qdq":
        nodes += [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dequantize"),
                  helper.make_node("Softmax", ["d"], ["p"], name="softmax", axis=axis),
                  helper.make_node("QuantizeLinear", ["p", "os", "oz"], ["r"], name="requantize")]
    else:
        nodes.append(helper.make_node("QLinearSoftmax", ["q", "s", "z", "os", "oz"], ["r"], name="softmax",
                                      domain="com.microsoft", axis=axis, opset=13))
    nodes.append(helper.make_node("DequantizeLinear", ["r", "os", "oz"], ["y"], name="output"))
    graph = helper.make_graph(nodes, "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, depth])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, depth])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / f"softmax-{form}-{depth}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
@pytest.mark.parametrize("depth", [1, 2, 10, 37, 300])
@pytest.mark.parametrize("quantization", [(0.05, 3, 1 / 256, -128), (0.3, -20, 0.004, -20), (0.01, 0, 1 / 256, -128),
                                          (0.05, 0, 1 / 255, -128), (0.05, 3, 1 / 2000, -128)])
def test_int8_softmax_equals_onnxruntime(tmp_path, form, depth, quantization):
    """QLinearSoftmax in uint8 (QDQ on x86-64) and in int8 (QOperator), with probabilities of 1, which
    clamp to 127, and output scales whose t * floor(1 / scale) would overflow float32 (1/255, 1/2000)."""
    path = _write_softmax_graph(tmp_path, form, depth, quantization)
    rng = np.random.default_rng(depth)
    x = rng.normal(scale=2.0, size=(600, depth)).astype(np.float32)
    x[0], x[1], x[2] = -100.0, 100.0, 0.0
    x[3:200, 0] += 50.0  # one class far ahead: probabilities of 1
    x[200:250] = np.where(rng.random((50, depth)) < 0.5, 100.0, -100.0)
    np.testing.assert_array_equal(NativeSession(read_onnx(path)).run(x), run_onnxruntime(path, x))


def test_softmax_axis_and_unfused_form_rejected(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"'softmax' \(Softmax\): softmax over axis 0 of rank 2"):
        NativeSession(read_onnx(_write_softmax_graph(tmp_path, "qdq", 10, (0.05, 3, 1 / 256, -128), axis=0)))
    # A second DequantizeLinear of the input keeps it int8 while the output becomes uint8, so the types
    # differ and ONNX Runtime runs the Softmax in float.
    import onnx

    path = _write_softmax_graph(tmp_path, "qdq", 10, (0.05, 3, 1 / 256, -128))
    model = onnx.load(str(path))
    model.graph.node.append(onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["unused"], name="second"))
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedModelError, match=r"runs this Softmax in float"):
        NativeSession(read_onnx(path))


def test_int8_softmax_on_rows_in_batch_equals_onnxruntime(tmp_path):
    """Reshape [-1, 17] moves the 5 rows of each record into the batch; QLinearSoftmax then runs per row."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(np.array(0.04, np.float32), "s"),
                    numpy_helper.from_array(np.array(-3, np.int8), "z"),
                    numpy_helper.from_array(np.array(1 / 256, np.float32), "os"),
                    numpy_helper.from_array(np.array(-128, np.int8), "oz"),
                    numpy_helper.from_array(np.array([-1, 17], np.int64), "rows"),
                    numpy_helper.from_array(np.array([-1, 85], np.int64), "back")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quantize"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dequantize"),
             helper.make_node("Reshape", ["d", "rows"], ["r"], name="fold"),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="fold_quantize"),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rd"], name="fold_dequantize"),
             helper.make_node("Softmax", ["rd"], ["p"], name="softmax", axis=-1),
             helper.make_node("QuantizeLinear", ["p", "os", "oz"], ["pq"], name="requantize"),
             helper.make_node("DequantizeLinear", ["pq", "os", "oz"], ["pd"], name="output_dequantize"),
             helper.make_node("Reshape", ["pd", "back"], ["y"], name="unfold")]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, 17])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 85])], initializers)
    path = tmp_path / "rows-softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    x = np.random.default_rng(17).normal(scale=3.0, size=(400, 5, 17)).astype(np.float32)
    x[0] = 0.0
    x[1, :, 3] = 100.0
    np.testing.assert_array_equal(NativeSession(read_onnx(path)).run(x), run_onnxruntime(path, x))
