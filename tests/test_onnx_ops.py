"""ONNX models on the native kernel against ONNX Runtime.

int8 QDQ models (ONNX Runtime's quantize_static) must equal ONNX Runtime's
fused integer kernels byte for byte; float models agree up to the order of
additions.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemia.compression.onnx_export import export_float, export_int4, export_int8
from edgemia.errors import ModelFormatError, UnsupportedModelError
from edgemia.runtime.native import NativeSession
from edgemia.runtime.onnx_model import read_onnx
from op_models import BUILDERS, calibration_data, conv_variants

pytestmark = pytest.mark.slow

ONNX_MODELS = ["conv", "depthwise", "mlp"]


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    from edgemia._tf import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(5)
    folder = tmp_path_factory.mktemp("onnx-models")
    paths = {}
    for name in [*ONNX_MODELS, "maxpool", "elementwise", "dense", "softmax", "matmul", "wide-padding", "sequence"]:
        if name == "conv":
            model = conv_variants(groups=1)
        elif name == "sequence":
            model = _sequence_model(keras)
        elif name == "matmul":
            model = _matmul_model(keras)
        elif name == "wide-padding":
            model = _wide_padding_model(keras)
        else:
            model = BUILDERS[name]() if name in BUILDERS else _maxpool_model(keras)
        data = calibration_data(model)
        model.compile(optimizer="adam", loss="mse")
        model.fit(data, np.random.default_rng(2).normal(size=(len(data), *model.outputs[0].shape[1:])),
                  epochs=2, verbose=0)
        paths[f"{name}-float"] = folder / f"{name}-float.onnx"
        export_float(model, paths[f"{name}-float"])
        paths[f"{name}-int8"] = folder / f"{name}-int8.onnx"
        export_int8(paths[f"{name}-float"], data, paths[f"{name}-int8"])
        paths[f"{name}-qoperator"] = folder / f"{name}-qoperator.onnx"
        export_int8(paths[f"{name}-float"], data, paths[f"{name}-qoperator"], operator_form=True)
        if name in ("mlp", "maxpool"):
            unfused = folder / f"{name}-unfused.onnx"
            export_float(model, unfused, fuse=False)
            for symmetric in (True, False):
                key = f"{name}-int4-{'sym' if symmetric else 'asym'}"
                paths[key] = folder / f"{key}.onnx"
                export_int4(unfused, paths[key], block_size=16 if name == "mlp" else 32, symmetric=symmetric)
    return paths


def _maxpool_model(keras):
    layers = keras.layers
    x = keras.Input((13, 12, 4))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = layers.MaxPooling2D(2)(h)
    h = layers.MaxPooling2D(3, strides=2, padding="same")(h)
    h = layers.Conv2D(6, 3, strides=2, padding="valid", activation="relu")(h)
    return keras.Model(x, layers.Dense(5)(layers.Flatten()(h)))


def _wide_padding_model(keras):
    # The exporter folds each ZeroPadding2D into the next Conv's pads, here as wide as the 3x3 window or wider.
    layers = keras.layers
    x = keras.Input((8, 7, 3))
    h = layers.Conv2D(4, 3)(layers.ZeroPadding2D(3)(x))
    h = layers.Conv2D(5, 3, strides=2, activation="relu")(layers.ZeroPadding2D(((1, 4), (0, 3)))(h))
    return keras.Model(x, layers.Dense(3)(layers.Flatten()(h)))


def _matmul_model(keras):
    # Dense layers without bias export as plain MatMul, which becomes QLinearMatMul.
    layers = keras.layers
    x = keras.Input((24,))
    h = layers.Dense(16, use_bias=False)(x)
    return keras.Model(x, layers.Dense(5, use_bias=False)(h))


def _sequence_model(keras):
    # Dense layers on records of 6 rows: Reshape to [-1, 7], MatMul, Reshape back, then the bias Add.
    layers = keras.layers
    x = keras.Input((6, 7))
    h = layers.Dense(5)(layers.Dense(8, activation="relu")(x))
    return keras.Model(x, layers.Dense(4)(layers.Flatten()(h)))


def run_onnxruntime(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def records_for(model, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = model.input().shape[1:]
    x = rng.uniform(-2.5, 2.5, size=(n, *shape)).astype(np.float32)
    x[0] = -100.0  # saturates the int8 input
    x[1] = 100.0
    return x


@pytest.mark.parametrize("form", ["int8", "qoperator"])
@pytest.mark.parametrize("name", [*ONNX_MODELS, "maxpool", "matmul", "elementwise", "wide-padding", "dense",
                                  "softmax"])
def test_int8_onnx_equals_onnxruntime(onnx_models, name, form):
    import onnx

    path = onnx_models[f"{name}-{form}"]
    if form == "qoperator" and name == "matmul":
        assert "QLinearMatMul" in {node.op_type for node in onnx.load(str(path)).graph.node}
    model = read_onnx(path)
    x = records_for(model, 1500, seed=len(name))
    expected = run_onnxruntime(path, x)
    got = NativeSession(model, threads=2).run(x)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", [*ONNX_MODELS, "maxpool", "elementwise", "wide-padding", "softmax"])
def test_float_onnx_close_to_onnxruntime(onnx_models, name):
    model = read_onnx(onnx_models[f"{name}-float"])
    x = records_for(model, 300, seed=1)
    expected = run_onnxruntime(onnx_models[f"{name}-float"], x)
    got = NativeSession(model).run(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _pad_concat_mul_model(path, axis: int) -> None:
    """Write a float graph: Pad, Relu, Concat of both along `axis`, Mul by a constant and by itself."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = [3, 5 + 1 + 2, 4 + 2 + 1]  # [C, H, W] after the padding
    joined = list(shape)
    joined[axis % 4 - 1] *= 2
    rng = np.random.default_rng(axis % 4)
    initializers = [
        numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64), "pads"),
        numpy_helper.from_array(rng.normal(size=(1, joined[0], 1, 1)).astype(np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["padded"], name="pad", mode="constant"),
        helper.make_node("Relu", ["padded"], ["relu"], name="relu"),
        helper.make_node("Concat", ["padded", "relu"], ["joined"], name="concat", axis=axis),
        helper.make_node("Mul", ["joined", "scale"], ["scaled"], name="scale"),
        helper.make_node("Mul", ["scaled", "joined"], ["y"], name="square"),
    ]
    graph = helper.make_graph(
        nodes, "pad-concat-mul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", *joined])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
def test_float_pad_concat_mul_equal_onnxruntime(tmp_path, axis):
    path = tmp_path / "pad-concat-mul.onnx"
    _pad_concat_mul_model(path, axis)
    x = np.random.default_rng(axis % 4).normal(size=(64, 3, 5, 4)).astype(np.float32)
    # Padding and joining move values, and each product is one float multiply, so the bytes agree.
    np.testing.assert_array_equal(NativeSession(read_onnx(path)).run(x), run_onnxruntime(path, x))


@pytest.mark.parametrize("shape, perm", [
    ([7], [0, 1]),
    ([5, 3], [0, 2, 1]),
    ([3, 4, 5], [0, 3, 1, 2]),
    ([3, 4, 5], [0, 2, 3, 1]),
    ([2, 3, 4, 5], [0, 4, 2, 1, 3]),
    ([1, 6, 1], [0, 3, 2, 1]),
    ([20, 35], [0, 2, 1]),  # tiles of 16 and partial tiles
    ([17, 9, 33], [0, 2, 3, 1]),
])
@pytest.mark.parametrize("elem_type", ["FLOAT", "INT8"])
def test_transpose_equals_onnxruntime(tmp_path, shape, perm, elem_type):
    """A float Transpose, and an int8 one between QuantizeLinear and DequantizeLinear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out_shape = [(["n"] + shape)[p] for p in perm]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="transpose", perm=perm)]
    initializers = []
    if elem_type == "INT8":
        initializers = [numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale"),
                        numpy_helper.from_array(np.array(3, dtype=np.int8), "zero")]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quantize"),
            helper.make_node("Transpose", ["q"], ["tq"], name="transpose", perm=perm),
            helper.make_node("DequantizeLinear", ["tq", "scale", "zero"], ["t"], name="dequantize"),
        ]
    graph = helper.make_graph(
        nodes, "transpose", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *shape])],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, out_shape)], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "transpose.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(len(perm)).normal(size=(9, *shape)).astype(np.float32)
    got = NativeSession(read_onnx(path)).run(x)
    np.testing.assert_array_equal(got, run_onnxruntime(path, x))
    if elem_type == "FLOAT":
        np.testing.assert_array_equal(got, np.transpose(x, perm))


def _tanh_model(path, quantize_output: bool) -> None:
    """Write QuantizeLinear, DequantizeLinear and Tanh, then a second pair when quantize_output is set."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(np.array(0.03, dtype=np.float32), "in_scale"),
                    numpy_helper.from_array(np.array(-5, dtype=np.int8), "in_zero"),
                    numpy_helper.from_array(np.array(1 / 128, dtype=np.float32), "out_scale"),
                    numpy_helper.from_array(np.array(0, dtype=np.int8), "out_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "in_scale", "in_zero"], ["q"], name="quantize"),
             helper.make_node("DequantizeLinear", ["q", "in_scale", "in_zero"], ["dq"], name="dequantize"),
             helper.make_node("Tanh", ["dq"], ["t" if quantize_output else "y"], name="tanh")]
    if quantize_output:
        nodes += [helper.make_node("QuantizeLinear", ["t", "out_scale", "out_zero"], ["tq"], name="requantize"),
                  helper.make_node("DequantizeLinear", ["tq", "out_scale", "out_zero"], ["y"], name="output")]
    graph = helper.make_graph(nodes, "tanh", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 256])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_int8_tanh_every_input_equals_onnxruntime(tmp_path):
    """Each of the 256 int8 inputs, through ONNX Runtime's float Tanh between DequantizeLinear and QuantizeLinear."""
    path = tmp_path / "tanh.onnx"
    _tanh_model(path, quantize_output=True)
    # Input k of the row quantizes to int8 value k - 128.
    x = ((np.arange(256, dtype=np.float32) - 128 + 5) * np.float32(0.03))[None, :].repeat(3, axis=0)
    x[1] *= -1
    np.testing.assert_array_equal(NativeSession(read_onnx(path)).run(x), run_onnxruntime(path, x))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("operator_form", [False, True])
def test_int8_model_ending_in_float_activation(tmp_path, activation, operator_form):
    """quantize_static leaves a last tanh or sigmoid in float after DequantizeLinear; the bytes equal ONNX Runtime's."""
    from edgemia._tf import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(8)
    x_in = keras.Input((12,))
    model = keras.Model(x_in, keras.layers.Dense(8, activation=activation)(keras.layers.Dense(16)(x_in)))
    data = np.random.default_rng(3).normal(size=(200, 12)).astype(np.float32)
    export_float(model, tmp_path / "float.onnx")
    export_int8(tmp_path / "float.onnx", data, tmp_path / "int8.onnx", operator_form=operator_form)
    x = np.random.default_rng(4).normal(scale=2.0, size=(1000, 12)).astype(np.float32)
    got = NativeSession(read_onnx(tmp_path / "int8.onnx")).run(x)
    np.testing.assert_array_equal(got, run_onnxruntime(tmp_path / "int8.onnx", x))


@pytest.mark.parametrize("op", ["Tanh", "Sigmoid"])
def test_float_tanh_and_sigmoid_bits_equal_onnxruntime(tmp_path, op):
    """In onnxruntime numerics the float ops are MLAS's FMA3 kernels, bit for bit."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="op")], "unary",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1000])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "op.onnx"))
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.uniform(-20, 20, size=(300, 1000)), rng.normal(0, 0.5, size=(300, 1000)),
                        rng.uniform(-0.01, 0.01, size=(100, 1000))]).astype(np.float32)
    got = NativeSession(read_onnx(tmp_path / "op.onnx")).run(x)
    assert got.tobytes() == run_onnxruntime(tmp_path / "op.onnx", x).tobytes()


def test_int8_tanh_with_float_output_equals_onnxruntime(tmp_path):
    path = tmp_path / "tanh-float-output.onnx"
    _tanh_model(path, quantize_output=False)
    x = np.random.default_rng(6).uniform(-5.0, 5.0, size=(50, 256)).astype(np.float32)
    assert NativeSession(read_onnx(path)).run(x).tobytes() == run_onnxruntime(path, x).tobytes()


@pytest.mark.parametrize("second", ["float", "dequantized", "itself"])
def test_concat_left_in_float_equals_onnxruntime(tmp_path, second):
    """Check a Concat that ONNX Runtime leaves in float: a float input beside a dequantized one, or no
    QuantizeLinear after it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = [numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale"),
                    numpy_helper.from_array(np.array(3, dtype=np.int8), "zero"),
                    numpy_helper.from_array(np.array(0.02, dtype=np.float32), "scale2"),
                    numpy_helper.from_array(np.array(-4, dtype=np.int8), "zero2")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quantize"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dequantize"),
             helper.make_node("Tanh", ["dq"], ["t"], name="tanh")]
    if second == "dequantized":
        nodes += [helper.make_node("QuantizeLinear", ["t", "scale2", "zero2"], ["tq"], name="requantize"),
                  helper.make_node("DequantizeLinear", ["tq", "scale2", "zero2"], ["joined"], name="dequantize2")]
    joined = {"float": "t", "dequantized": "joined", "itself": "dq"}[second]
    nodes.append(helper.make_node("Concat", ["dq", joined], ["y"], name="concat", axis=1))
    graph = helper.make_graph(nodes, "concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "concat.onnx"))
    x = np.random.default_rng(12).uniform(-4.0, 4.0, size=(100, 16)).astype(np.float32)
    got = NativeSession(read_onnx(tmp_path / "concat.onnx")).run(x)
    assert got.tobytes() == run_onnxruntime(tmp_path / "concat.onnx", x).tobytes()


def _reshape_model(path, target: list[int], allowzero: int = 0) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="fold", allowzero=allowzero)], "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5, 17])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"] + [d if d > 0 else 5 for d in target[1:]])],
        [numpy_helper.from_array(np.array(target, dtype=np.int64), "shape")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("target, allowzero, error, message", [
    # Valid ONNX, as Keras writes for a Dense layer on rank-3 input; the output keeps 5 rows per record.
    ([-1, 17], 0, UnsupportedModelError, r"the output 'y' has 5 rows per record in its batch dimension"),
    # Valid ONNX for an even batch: each row joins two records.
    ([-1, 170], 0, UnsupportedModelError, r"'fold'.*\[-1, 170\] makes rows of 170 values, which do not divide the 85"),
    ([-1, -1, 17], 0, ModelFormatError, r"'fold'.*\[-1, -1, 17\] has more than one -1"),
    ([0, 85], 1, UnsupportedModelError, r"'fold'.*allowzero=1 makes a zero-size dimension"),
])
def test_reshape_targets_rejected(tmp_path, target, allowzero, error, message):
    _reshape_model(tmp_path / "fold.onnx", target, allowzero)
    with pytest.raises(error, match=message):
        NativeSession(read_onnx(tmp_path / "fold.onnx"))


def test_sequence_dense_equals_onnxruntime(onnx_models):
    """The rows that a Reshape moves into the batch run as rows of each record, in float and in int8 QDQ."""
    model = read_onnx(onnx_models["sequence-int8"])
    x = records_for(model, 1500, seed=4)
    np.testing.assert_array_equal(NativeSession(model).run(x), run_onnxruntime(onnx_models["sequence-int8"], x))
    model = read_onnx(onnx_models["sequence-float"])
    got = NativeSession(model).run(x)
    np.testing.assert_allclose(got, run_onnxruntime(onnx_models["sequence-float"], x), rtol=1e-4, atol=1e-4)
    # In QOperator form the bias is a constant operand of QLinearAdd, which MLAS broadcasts.
    with pytest.raises(UnsupportedModelError, match=r"\(QLinearAdd\): operand '.*' is a constant"):
        NativeSession(read_onnx(onnx_models["sequence-qoperator"]))


@pytest.mark.parametrize("form", ["unfused", "int4"])
def test_dense_keeping_rows_equals_onnxruntime(tmp_path, form):
    """Dense layers on records of 6 rows whose output keeps the rows.

    The unfused export, and the int4 one made from it, declare the output as
    [unk, unk, 5]; the shape comes from the last Reshape's constant target.
    """
    from edgemia._tf import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(8)
    x = keras.Input((6, 7))
    model = keras.Model(x, keras.layers.Dense(5)(keras.layers.Dense(40, activation="relu")(x)))
    path = tmp_path / "rows-unfused.onnx"
    export_float(model, path, fuse=False)
    if form == "int4":
        export_int4(path, tmp_path / "rows-int4.onnx")
        path = tmp_path / "rows-int4.onnx"
    loaded = read_onnx(path)
    assert loaded.output().shape_signature == (-1, 6, 5)
    records = records_for(loaded, 300, seed=6)
    got = NativeSession(loaded).run(records)
    expected = run_onnxruntime(path, records)
    assert got.shape == expected.shape == (300, 6, 5)
    # Float32 products in another order of additions: within float rounding.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


@pytest.mark.parametrize("opset, axis", [(13, None), (13, -1), (11, 1), (11, None)])
def test_float_softmax_close_to_onnxruntime(tmp_path, opset, axis):
    import onnx
    from onnx import TensorProto, helper

    attributes = {} if axis is None else {"axis": axis}
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="softmax", **attributes)], "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 12])],
    )
    path = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    x = np.random.default_rng(opset).normal(scale=4.0, size=(500, 12)).astype(np.float32)
    x[0] = 80.0  # equal values far from zero
    got = NativeSession(read_onnx(path)).run(x)
    np.testing.assert_allclose(got, run_onnxruntime(path, x), rtol=1e-5, atol=1e-6)


def test_gemm_with_activation_as_c(tmp_path):
    """A Dense without bias added to its own input exports as Gemm with the activation as C."""
    from edgemia._tf import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(7)
    layers = keras.layers
    x = keras.Input((12,))
    a = layers.Dense(8, activation="relu")(x)
    model = keras.Model(x, layers.Dense(3)(layers.Add()([layers.Dense(8, use_bias=False)(a), a])))
    data = calibration_data(model)
    export_float(model, tmp_path / "float.onnx")
    export_int8(tmp_path / "float.onnx", data, tmp_path / "int8.onnx")
    import onnx

    gemms = [n for n in onnx.load(str(tmp_path / "float.onnx")).graph.node if n.op_type == "Gemm"]
    assert any(n.input[2].endswith("Relu:0") for n in gemms)
    model = read_onnx(tmp_path / "float.onnx")
    x = records_for(model, 400, seed=7)
    got = NativeSession(model).run(x)
    np.testing.assert_allclose(got, run_onnxruntime(tmp_path / "float.onnx", x), rtol=1e-4, atol=1e-4)
    with pytest.raises(UnsupportedModelError, match=r"\(Gemm\): C input '.*' is an activation, not a bias"):
        NativeSession(read_onnx(tmp_path / "int8.onnx"))


def test_int8_add_of_constant_to_shared_activation_unsupported(tmp_path):
    """The activation's DequantizeLinear feeds two nodes, so ONNX Runtime keeps it int8 and may fuse the Add."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = [
        numpy_helper.from_array(np.array(0.05, dtype=np.float32), "s"),
        numpy_helper.from_array(np.array(3, dtype=np.int8), "z"),
        numpy_helper.from_array(np.arange(8, dtype=np.int8), "bias_q"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("DequantizeLinear", ["bias_q", "s", "z"], ["bias"], name="dq_bias"),
        helper.make_node("Add", ["xd", "bias"], ["sum"], name="add"),
        helper.make_node("Mul", ["xd", "sum"], ["y"], name="mul"),
    ]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "shared.onnx"))
    with pytest.raises(UnsupportedModelError, match=r"'add' \(Add\): an int8 Add of an activation and a constant"):
        NativeSession(read_onnx(tmp_path / "shared.onnx"))


@pytest.mark.parametrize("node, extra, message", [
    # A Concat would join rows of different records.
    (("Concat", ["r", "r"], {"axis": 1}), None, r"'op' \(Concat\): reads a tensor whose rows a Reshape"),
    # ONNX broadcasts a [5, 17] constant against the batch of rows, not against each record.
    (("Add", ["r", "c"], {}), np.ones((5, 17), np.float32), r"'op' \(Add\): constant 'c' of shape \[5, 17\] varies"),
    # A 0 would copy the batch of rows.
    (("Reshape", ["r", "c"], {}), np.array([0, -1], np.int64), r"'op' \(Reshape\): a 0 in the target shape"),
])
def test_rows_in_batch_reach_only_row_ops(tmp_path, node, extra, message):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    op_type, inputs, attributes = node
    initializers = [numpy_helper.from_array(np.array([-1, 17], dtype=np.int64), "rows"),
                    numpy_helper.from_array(np.array([-1, 85], dtype=np.int64), "back")]
    if extra is not None:
        initializers.append(numpy_helper.from_array(extra, "c"))
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "rows"], ["r"], name="fold"),
         helper.make_node(op_type, inputs, ["o"], name="op", **attributes),
         helper.make_node("Reshape", ["o", "back"], ["y"], name="unfold")], "rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5, 17])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 85])], initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "rows.onnx"))
    with pytest.raises(UnsupportedModelError, match=message):
        NativeSession(read_onnx(tmp_path / "rows.onnx"))


@pytest.mark.parametrize("order", [("gate", "x"), ("x", "gate")])
def test_float_mul_broadcasts_either_operand(tmp_path, order):
    """A [1, 8] gate times [6, 8] rows, in either operand order, as Keras's Multiply exports it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "flat"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "w"], ["g"], name="gemm"),
         helper.make_node("Reshape", ["g", "gate_shape"], ["gate"], name="gate"),
         helper.make_node("Mul", list(order), ["y"], name="mul")], "gate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6, 8])],
        [numpy_helper.from_array(np.array([-1, 48], dtype=np.int64), "flat"),
         numpy_helper.from_array(rng.normal(size=(48, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([-1, 1, 8], dtype=np.int64), "gate_shape")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "gate.onnx"))
    x = rng.normal(size=(50, 6, 8)).astype(np.float32)
    got = NativeSession(read_onnx(tmp_path / "gate.onnx")).run(x)
    np.testing.assert_allclose(got, run_onnxruntime(tmp_path / "gate.onnx", x), rtol=1e-4, atol=1e-4)


def test_int8_graph_output_rejected_with_advice(tmp_path):
    """An int8 output has no scale in ONNX, so capture could not dequantize it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["y"], name="quantize")], "int8-output",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, ["n", 4])],
        [numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale"),
         numpy_helper.from_array(np.array(0, dtype=np.int8), "zero")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "out.onnx"))
    with pytest.raises(UnsupportedModelError, match="int8 with no scale or zero point; end the model with a "
                                                    "DequantizeLinear"):
        NativeSession(read_onnx(tmp_path / "out.onnx"))


def test_float_sigmoid_and_tanh(onnx_models):
    model = read_onnx(onnx_models["dense-float"])
    x = records_for(model, 300, seed=2)
    np.testing.assert_allclose(NativeSession(model).run(x), run_onnxruntime(onnx_models["dense-float"], x),
                               rtol=1e-4, atol=1e-5)


def test_onnx_numerics_mode_checked(onnx_models):
    from edgemia.errors import InputError

    model = read_onnx(onnx_models["mlp-int8"])
    with pytest.raises(InputError, match="valid modes: onnxruntime"):
        NativeSession(model, numerics="litert")


@pytest.mark.parametrize("key", ["mlp-int4-sym", "mlp-int4-asym", "maxpool-int4-sym", "maxpool-int4-asym"])
def test_int4_matmulnbits_close_to_onnxruntime(onnx_models, key):
    import onnx

    kinds = {node.op_type for node in onnx.load(str(onnx_models[key])).graph.node}
    assert "MatMulNBits" in kinds
    assert "MatMul" not in kinds
    model = read_onnx(onnx_models[key])
    x = records_for(model, 500, seed=3)
    expected = run_onnxruntime(onnx_models[key], x)
    got = NativeSession(model).run(x)
    # Both dequantize the 4-bit weights and multiply in float32; only the order of additions differs.
    difference = float(np.abs(got - expected).max())
    assert difference < 1e-4 * max(1.0, float(np.abs(expected).max())), difference


def test_int4_nan_scale_rejected(onnx_models, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgemia.errors import InputError

    proto = onnx.load(str(onnx_models["mlp-int4-sym"]))
    node = next(node for node in proto.graph.node if node.op_type == "MatMulNBits")
    initializer = next(init for init in proto.graph.initializer if init.name == node.input[2])
    scales = numpy_helper.to_array(initializer).copy()
    scales.reshape(-1)[3] = np.nan
    initializer.CopyFrom(numpy_helper.from_array(scales, initializer.name))
    path = tmp_path / "nan-scale.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(InputError, match="block scale 3 .* is nan; every scale must be finite"):
        NativeSession(read_onnx(path))
