"""Dynamic-range ONNX models (quantize_dynamic) on the native kernel against ONNX Runtime.

quantize_dynamic writes DynamicQuantizeLinear -> MatMulInteger or ConvInteger
-> Cast -> Mul (-> Add) chains. ONNX Runtime takes the dynamic scale over the
whole input tensor, so it runs here one record at a time, which is what the
native kernel computes for every record of a batch. Each instruction-set path
must give ONNX Runtime's bytes.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemia import _native
from edgemia.errors import ModelFormatError, UnsupportedModelError
from edgemia.runtime.native import NativeSession
from edgemia.runtime.onnx_model import read_onnx

MODELS = ["digits-cnn", "tabular-mlp", "conv"]


@pytest.fixture(scope="module")
def dynamic_models(tmp_path_factory):
    from edgemia._tf import import_keras
    from edgemia.compression.onnx_export import export_dynamic, export_float
    from edgemia.training.models import digits_cnn, tabular_mlp
    from op_models import conv_variants

    keras = import_keras()
    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("dynamic-models")
    builders = {"digits-cnn": lambda: digits_cnn((8, 8, 1), 10), "tabular-mlp": lambda: tabular_mlp((30,), 3),
                "conv": lambda: conv_variants(groups=1)}
    paths = {}
    for name in MODELS:
        model = builders[name]()
        # Random non-zero biases: the exporter drops an Add of zeros, and trained models have biases.
        for layer in model.layers:
            weights = layer.get_weights()
            if weights:
                layer.set_weights([w + rng.normal(0.0, 0.1, w.shape).astype(np.float32) for w in weights])
        export_float(model, folder / f"{name}-float.onnx")
        paths[name] = folder / f"{name}-dynamic.onnx"
        export_dynamic(folder / f"{name}-float.onnx", paths[name])
    return paths


def run_onnxruntime_per_record(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def records_for(model, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.5, 2.5, size=(n, *model.input().shape[1:])).astype(np.float32)
    x[0] = 0.0  # min == max == 0: scale 1
    x[1] = 100.0  # all positive: zero point 0
    x[2] = -3.0  # all negative: zero point 255
    x[3] *= 1e-6
    return x


@pytest.mark.slow
@pytest.mark.parametrize("isa", _native.available_isas())
@pytest.mark.parametrize("name", MODELS)
def test_dynamic_onnx_equals_onnxruntime(dynamic_models, monkeypatch, name, isa):
    import onnx

    kinds = {node.op_type for node in onnx.load(str(dynamic_models[name])).graph.node}
    assert "MatMulInteger" in kinds
    assert ("ConvInteger" in kinds) == (name != "tabular-mlp")
    monkeypatch.setenv("EDGEMIA_ISA", isa)
    model = read_onnx(dynamic_models[name])
    x = records_for(model, 400, seed=len(name))
    expected = run_onnxruntime_per_record(dynamic_models[name], x)
    session = NativeSession(model, threads=2)
    assert session.isa == isa
    np.testing.assert_array_equal(session.run(x), expected)


@pytest.mark.slow
def test_dynamic_onnx_records_independent_of_batch(dynamic_models):
    from edgemia.runtime.onnxruntime import OnnxRuntimeSession

    model = read_onnx(dynamic_models["tabular-mlp"])
    x = records_for(model, 50, seed=4)
    native = NativeSession(model, threads=2)
    np.testing.assert_array_equal(native.run(x[10:20]), native.run(x)[10:20])
    backend = OnnxRuntimeSession(model, threads=1)
    try:
        np.testing.assert_array_equal(backend.run(x), native.run(x))
    finally:
        backend.close()


# ---------------------------------------------------------------------------
# Malformed and unsupported dynamic graphs, built with onnx.helper.


def _dynamic_graph(tmp_path, weights: np.ndarray, weight_zero_point=np.int8(0), op: str = "MatMulInteger",
                   zero_point_from: str = "x_zero_point", attributes: dict | None = None, out_hw=(5, 5),
                   weight_scale=np.float32(0.01)):
    """Write x -> DynamicQuantizeLinear -> `op` -> Cast -> Mul(x_scale * w_scale) -> y and return its path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv = op == "ConvInteger"
    in_shape = [None, 3, 5, 5] if conv else [None, 6]
    out_shape = [None, weights.shape[0], *out_hw] if conv else [None, weights.shape[-1]]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zero_point"], name="quantize"),
        helper.make_node("Mul", ["x_scale", "w_scale"], ["scales"], name="scales"),
        helper.make_node(op, ["x_q", "w", zero_point_from, "w_zero_point"], ["sum"], name="product",
                         **(attributes or {})),
        helper.make_node("Cast", ["sum"], ["sum_float"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sum_float", "scales"], ["y"], name="scale"),
    ]
    initializers = [
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(np.asarray(weight_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.asarray(weight_zero_point), "w_zero_point"),
        numpy_helper.from_array(np.array(7, np.uint8), "other_zero_point"),
    ]
    graph = helper.make_graph(
        nodes, "dynamic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("weight_scale", [np.float32(0.01), np.array([0.01, 0.003, 0.02, 0.5], np.float32)])
def test_handmade_matmulinteger_equals_onnxruntime(tmp_path, weight_scale):
    weights = np.random.default_rng(0).integers(-128, 128, size=(6, 4)).astype(np.int8)
    path = _dynamic_graph(tmp_path, weights, weight_scale=weight_scale)
    model = read_onnx(path)
    x = records_for(model, 40, seed=1)
    np.testing.assert_array_equal(NativeSession(model).run(x), run_onnxruntime_per_record(path, x))


@pytest.mark.parametrize("isa", _native.available_isas())
@pytest.mark.parametrize("group,attributes,out_hw", [
    (1, {"pads": [1, 1, 1, 1]}, (5, 5)),
    (3, {"pads": [1, 0, 2, 1]}, (6, 4)),
    (1, {"pads": [1, 1, 1, 1], "dilations": [2, 2]}, (3, 3)),
    (1, {"pads": [0, 1, 1, 0], "strides": [2, 1]}, (2, 4)),
])
def test_handmade_convinteger_equals_onnxruntime(tmp_path, monkeypatch, group, attributes, out_hw, isa):
    weights = np.random.default_rng(group).integers(-128, 128, size=(6, 3 // group, 3, 3)).astype(np.int8)
    path = _dynamic_graph(tmp_path, weights, op="ConvInteger", attributes={**attributes, "group": group},
                          out_hw=out_hw)
    monkeypatch.setenv("EDGEMIA_ISA", isa)
    model = read_onnx(path)
    x = records_for(model, 40, seed=group)
    np.testing.assert_array_equal(NativeSession(model).run(x), run_onnxruntime_per_record(path, x))


@pytest.mark.parametrize("case,error,message", [
    ("uint8 weights", UnsupportedModelError, "node 'product' \\(MatMulInteger\\).*int8 tensor of rank 2"),
    ("weights of rank 3", UnsupportedModelError, "node 'product' \\(MatMulInteger\\).*rank 2"),
    ("asymmetric weights", UnsupportedModelError, "node 'product' \\(MatMulInteger\\).*symmetric"),
    ("foreign zero point", UnsupportedModelError, "node 'product' \\(MatMulInteger\\).*zero point"),
    ("depth mismatch", ModelFormatError, "node 'product' \\(MatMulInteger\\).*expect 9 features"),
    ("conv group mismatch", ModelFormatError, "node 'product' \\(ConvInteger\\).*groups"),
])
def test_malformed_dynamic_node_named(tmp_path, case, error, message):
    rng = np.random.default_rng(0)
    weights = rng.integers(-128, 128, size=(6, 4)).astype(np.int8)
    kwargs = {}
    if case == "uint8 weights":
        weights = weights.astype(np.uint8)
    elif case == "weights of rank 3":
        weights = weights.reshape(6, 2, 2)
    elif case == "asymmetric weights":
        kwargs["weight_zero_point"] = np.int8(3)
    elif case == "foreign zero point":
        kwargs["zero_point_from"] = "other_zero_point"
    elif case == "depth mismatch":
        weights = rng.integers(-128, 128, size=(9, 4)).astype(np.int8)
    elif case == "conv group mismatch":
        weights = rng.integers(-128, 128, size=(4, 2, 3, 3)).astype(np.int8)
        kwargs.update(op="ConvInteger", attributes={"pads": [1, 1, 1, 1]})
    path = _dynamic_graph(tmp_path, weights, **kwargs)
    with pytest.raises(error, match=message) as raised:
        NativeSession(read_onnx(path))
    assert str(path) in str(raised.value)


def test_dynamic_ops_rejected_outside_onnxruntime_numerics():
    graph = _native.Graph()
    x = graph.add_tensor("x", "float32", [4], None, [], [], 0)
    w = graph.add_tensor("w", "int8", [2, 4], bytes(8), [0.5], [0], 0)
    y = graph.add_tensor("y", "float32", [2], None, [], [], 0)
    graph.add_op("DYNAMIC_FULLY_CONNECTED", "fc", [x, w], [y], {}, {})
    with pytest.raises(_native.UnsupportedError, match="onnxruntime numerics"):
        graph.finalize([x], [y], "litert")


@pytest.mark.parametrize("kind,filter_shape,options,message", [
    ("DYNAMIC_FULLY_CONNECTED", [3, 5], {}, "multiple of the filter depth"),
    ("DYNAMIC_CONV_2D", [2, 3, 3, 4], {"padding": 1, "stride_h": 1, "stride_w": 1, "dilation_h": 1,
                                        "dilation_w": 1}, "channels"),
    ("DYNAMIC_CONV_2D", [2, 3, 3, 3], {"padding": 7, "stride_h": 1, "stride_w": 1, "dilation_h": 1,
                                        "dilation_w": 1}, "padding code"),
])
def test_kernel_checks_dynamic_op_at_load(kind, filter_shape, options, message):
    graph = _native.Graph()
    conv = kind == "DYNAMIC_CONV_2D"
    x = graph.add_tensor("x", "float32", [5, 5, 3] if conv else [4], None, [], [], 0)
    w = graph.add_tensor("w", "int8", filter_shape, bytes(int(np.prod(filter_shape))), [0.5], [0], 0)
    y = graph.add_tensor("y", "float32", [3, 3, 2] if conv else [3], None, [], [], 0)
    graph.add_op(kind, "op", [x, w], [y], options, {})
    with pytest.raises(_native.ModelError, match=message):
        graph.finalize([x], [y], "onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits-cnn", "tabular-mlp"])
def test_mutated_dynamic_models_fail_cleanly(dynamic_models, tmp_path, name):
    import onnx

    from onnx_mutations import assert_fails_cleanly, mutated_models

    model = read_onnx(dynamic_models[name])
    records = records_for(model, 8, seed=0)
    outcomes = [assert_fails_cleanly(tmp_path / f"m{i}.onnx", mutated, records)
                for i, (_, mutated) in enumerate(mutated_models(onnx.load(str(dynamic_models[name])), 80, seed=7))]
    assert any(outcomes)


@pytest.mark.slow
def test_audit_captures_dynamic_onnx_on_native(tmp_path):
    from edgemia.audit import AuditConfig, run_audit

    report = run_audit(AuditConfig(out=tmp_path, variants=["int8-dynamic"], backends=["native", "onnxruntime"],
                                   epochs=5, references=0, bootstrap=100))
    skipped = {(row["backend"], row["format"]) for row in report["skipped"]}
    assert ("native", "onnx") not in skipped
    agreement = [row for row in report["backend_agreement"] if row["format"] == "onnx"]
    assert len(agreement) == 1
    assert agreement[0]["identical_records"] == agreement[0]["n_records"]
    assert agreement[0]["max_abs_logit_difference"] == 0.0
