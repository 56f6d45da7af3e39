"""Each op of the native kernel against LiteRT on real converted models.

`litert` numerics must equal LiteRT's default interpreter (XNNPACK delegate)
and `litert-reference` numerics its BUILTIN_REF op resolver, byte for byte,
on random records and on edge inputs (all -128, all 127, and alternating
extremes that overflow a 16-bit pair sum).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemia.runtime.native import NativeSession
from edgemia.runtime.tflite_model import read_tflite
from op_models import BUILDERS, convert

pytestmark = pytest.mark.slow

RESOLVERS = {"litert": "AUTO", "litert-reference": "BUILTIN_REF"}


@pytest.fixture(scope="module")
def op_models(tmp_path_factory):
    from edgemia._tf import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("op-models")
    paths = {}
    for name, build in BUILDERS.items():
        paths[name] = folder / f"{name}.tflite"
        convert(build(), paths[name])
    paths["float-io"] = folder / "float-io.tflite"
    convert(BUILDERS["elementwise"](), paths["float-io"], int8_io=False)
    return paths


def edge_inputs(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, *shape)).astype(np.int8)
    x[0] = -128
    x[1] = 127
    alternating = np.resize(np.array([-128, 127], dtype=np.int8), int(np.prod(shape)))
    x[2] = alternating.reshape(shape)
    x[3] = -alternating.reshape(shape) - 1
    return x


def run_litert(path, x: np.ndarray, resolver: str) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=getattr(OpResolverType, resolver))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("numerics", list(RESOLVERS))
@pytest.mark.parametrize("name", ["conv", "wide-conv", "depthwise", "dilated", "dilated-activations", "pooling", "elementwise",
                                  "tiny-addend", "dense", "sequence-dense", "single-row-dense", "permuted-rows"])
def test_int8_model_equals_litert(op_models, name, numerics):
    model = read_tflite(op_models[name])
    x = edge_inputs(model.input().shape[1:], 1200, seed=len(name))
    expected = run_litert(op_models[name], x, RESOLVERS[numerics])
    got = NativeSession(model, numerics=numerics, threads=2).run(x)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, expected)


def _ops_of(model, kind):
    return [op for op in model.operators if op.kind == kind]


def test_tiny_addend_is_outside_xnnpack_range(op_models):
    """The model's ADD takes TFLite's builtin kernel in LiteRT, which litert numerics then computes."""
    model = read_tflite(op_models["tiny-addend"])
    (add,) = _ops_of(model, "ADD")
    out_scale = model.tensors[add.outputs[0]].scales[0]
    ratios = [model.tensors[i].scales[0] / out_scale for i in add.inputs]
    assert min(ratios) < 2.0**-10


def test_sequence_dense_folds_shape_ops(op_models):
    """GATHER, REDUCE_PROD and CONCATENATION on shape values fold at load time; the model runs as rows."""
    model = read_tflite(op_models["sequence-dense"])
    kinds = {op.kind for op in model.operators}
    assert {"GATHER", "REDUCE_PROD", "CONCATENATION"} <= kinds
    session = NativeSession(model)
    assert session.run(edge_inputs((6, 7), 10, seed=0)).shape == (10, 4)


def test_sequence_dense_bad_shape_ops(op_models):
    from dataclasses import replace

    from edgemia.errors import ModelFormatError, UnsupportedModelError

    model = read_tflite(op_models["sequence-dense"])
    gather = _ops_of(model, "GATHER")[0]
    indices = model.tensors[gather.inputs[1]]

    def with_tensor(tensor):
        tensors = list(model.tensors)
        tensors[tensor.index] = tensor
        return replace(model, tensors=tensors)

    def with_op(op):
        return replace(model, operators=[op if o.index == op.index else o for o in model.operators])

    bad_index = with_tensor(replace(indices, data=np.array([0, 3], dtype=np.int32)))
    with pytest.raises(ModelFormatError, match=r"operator \d+ \(GATHER\): index 3 is outside 0..2"):
        NativeSession(bad_index)
    with pytest.raises(UnsupportedModelError, match=r"\(GATHER\): batch_dims other than 0"):
        NativeSession(with_op(replace(gather, options={"axis": 0, "batch_dims": 1})))
    with pytest.raises(ModelFormatError, match=r"\(GATHER\): axis 4 is out of range for rank 1"):
        NativeSession(with_op(replace(gather, options={"axis": 4, "batch_dims": 0})))

    # The first dense layer's output still has its 6 rows per record in the batch.
    inner = _ops_of(model, "FULLY_CONNECTED")[0].outputs[0]
    with pytest.raises(UnsupportedModelError, match="has 6 rows per record in its batch dimension"):
        NativeSession(replace(model, outputs=[inner]))
    # The bias ADD after the first layer, moved onto the rows with a constant of one value per row and unit.
    add = next(op for op in _ops_of(model, "ADD") if model.tensors[op.inputs[1]].constant)
    bias = model.tensors[add.inputs[1]]
    per_row = replace(bias, shape=(6, *bias.shape), data=np.repeat(bias.data[None], 6, axis=0))
    moved = replace(model, tensors=[per_row if t.index == bias.index else t for t in model.tensors])
    moved = replace(moved, operators=[replace(add, inputs=[inner, bias.index]) if o.index == add.index else o
                                      for o in model.operators])
    with pytest.raises(UnsupportedModelError, match=r"\(ADD\): constant .* of shape \[6, \d+\] varies across rows"):
        NativeSession(moved)
    tanh = _ops_of(model, "TANH")[0]
    folded_tanh = replace(tanh, inputs=[inner], kind="AVERAGE_POOL_2D")
    with pytest.raises(UnsupportedModelError, match=r"\(AVERAGE_POOL_2D\): reads a tensor whose rows a RESHAPE"):
        NativeSession(with_op(folded_tanh))


def test_transpose_of_batch_axis_refused(op_models):
    """A permutation that moves the batch axis is named as such, not as a fixed batch of the output."""
    from dataclasses import replace

    from edgemia.errors import UnsupportedModelError

    model = read_tflite(op_models["permuted-rows"])
    transpose = _ops_of(model, "TRANSPOSE")[0]
    perm, out = model.tensors[transpose.inputs[1]], model.tensors[transpose.outputs[0]]
    swapped = {perm.index: replace(perm, data=np.array([1, 0, 2], dtype=perm.data.dtype)),
               out.index: replace(out, shape=(out.shape[1], 1, out.shape[2]), shape_signature=None)}
    moved = replace(model, tensors=[swapped.get(t.index, t) for t in model.tensors])
    with pytest.raises(UnsupportedModelError, match=r"\(TRANSPOSE\): permutation \[1, 0, 2\] moves the batch axis"):
        NativeSession(moved)


@pytest.mark.parametrize("classes", [511, 512, 1000])
def test_many_class_softmax_equals_litert(tmp_path, classes):
    """litert numerics run the softmax sizes that litert-reference refuses, and equal LiteRT's default interpreter."""
    from edgemia._tf import import_keras
    from edgemia.compression.tflite_export import export_int8

    keras = import_keras()
    x = keras.Input((classes,))
    data = np.random.default_rng(classes).uniform(-2, 2, size=(50, classes)).astype(np.float32)
    path = tmp_path / "softmax.tflite"
    path.write_bytes(export_int8(keras.Model(x, keras.layers.Softmax()(x)), data))
    model = read_tflite(path)
    records = edge_inputs((classes,), 200, seed=classes)
    records[4] = model.input().zero_points[0]  # every logit equal
    np.testing.assert_array_equal(NativeSession(model).run(records), run_litert(path, records, "AUTO"))


def test_int8_softmax_equals_litert(op_models):
    model = read_tflite(op_models["softmax"])
    x = edge_inputs(model.input().shape[1:], 5000, seed=9)
    expected = run_litert(op_models["softmax"], x, "AUTO")
    np.testing.assert_array_equal(NativeSession(model).run(x), expected)


@pytest.fixture(scope="module")
def softmax_heads(tmp_path_factory):
    """Dense -> Softmax models whose softmax input scales span two orders of magnitude."""
    from edgemia._tf import import_keras
    from edgemia.compression.tflite_export import export_int8

    keras = import_keras()
    folder = tmp_path_factory.mktemp("softmax-heads")
    paths = {}
    for depth, gain in [(3, 0.05), (10, 1.0), (10, 8.0), (100, 3.0), (7, 60.0)]:
        x = keras.Input((depth,))
        dense = keras.layers.Dense(depth, use_bias=False)
        model = keras.Model(x, keras.layers.Softmax()(dense(x)))
        rng = np.random.default_rng(depth)
        dense.set_weights([gain * (np.eye(depth) + 0.3 * rng.normal(size=(depth, depth))).astype(np.float32)])
        data = rng.uniform(-2.0, 2.0, size=(200, depth)).astype(np.float32)
        paths[(depth, gain)] = folder / f"softmax-{depth}-{gain}.tflite"
        paths[(depth, gain)].write_bytes(export_int8(model, data))
    return paths


@pytest.mark.parametrize("numerics", list(RESOLVERS))
def test_int8_softmax_heads_equal_litert(softmax_heads, numerics):
    for (depth, gain), path in softmax_heads.items():
        model = read_tflite(path)
        x = edge_inputs((depth,), 3000, seed=depth)
        expected = run_litert(path, x, RESOLVERS[numerics])
        got = NativeSession(model, numerics=numerics).run(x)
        np.testing.assert_array_equal(got, expected, err_msg=f"depth {depth}, gain {gain}")


def test_reference_softmax_differs_from_default(softmax_heads):
    # The fixed-point reference kernel and the float-table default kernel
    # round differently; the test above would pass trivially if the native
    # kernel ignored the numerics mode and LiteRT's two resolvers agreed.
    path = softmax_heads[(10, 8.0)]
    x = edge_inputs((10,), 20000, seed=10)
    assert (run_litert(path, x, "AUTO") != run_litert(path, x, "BUILTIN_REF")).any()


@pytest.mark.parametrize("numerics", list(RESOLVERS))
def test_float_io_quantize_and_dequantize(op_models, numerics):
    model = read_tflite(op_models["float-io"])
    kinds = [op.kind for op in model.operators]
    assert kinds[0] == "QUANTIZE"
    assert kinds[-1] == "DEQUANTIZE"
    rng = np.random.default_rng(4)
    x = rng.uniform(-3.0, 3.0, size=(1000, *model.input().shape[1:])).astype(np.float32)
    # Values on exact multiples of half a quantization step probe the rounding.
    scale = float(model.tensors[model.operators[0].outputs[0]].scales[0])
    x[:50] = (rng.integers(-300, 300, size=x[:50].shape) + 0.5).astype(np.float32) * np.float32(scale)
    expected = run_litert(op_models["float-io"], x, RESOLVERS[numerics])
    got = NativeSession(model, numerics=numerics).run(x)
    np.testing.assert_array_equal(got, expected)


def test_float_io_nan_and_infinity_equal_litert(op_models):
    """XNNPACK clamps the top first with minps, so NaN quantizes to the highest value."""
    model = read_tflite(op_models["float-io"])
    rng = np.random.default_rng(5)
    x = rng.uniform(-3.0, 3.0, size=(8, *model.input().shape[1:])).astype(np.float32)
    flat = x.reshape(len(x), -1)
    flat[0] = np.nan
    flat[1] = np.inf
    flat[2] = -np.inf
    flat[3, ::2] = np.nan
    flat[4, ::3] = 3e38
    flat[5, ::3] = -3e38
    expected = run_litert(op_models["float-io"], x, "AUTO")
    np.testing.assert_array_equal(NativeSession(model, numerics="litert").run(x), expected)


@pytest.mark.parametrize("kind", ["LOGISTIC", "TANH"])
def test_lookup_ops_exhaustive(op_models, kind):
    # All 256 int8 inputs through the whole dense model, one per record.
    model = read_tflite(op_models["dense"])
    assert kind in {op.kind for op in model.operators}
    x = np.repeat(np.arange(-128, 128, dtype=np.int8)[:, None], model.input().shape[1], axis=1)
    for numerics, resolver in RESOLVERS.items():
        np.testing.assert_array_equal(NativeSession(model, numerics=numerics).run(x), run_litert(op_models["dense"], x, resolver))
