"""The native kernel on hand-built graphs: int8 arithmetic against a numpy reference, and
load-time checks that turn bad graphs into ModelError instead of crashes."""

from __future__ import annotations

import numpy as np
import pytest

from edgemia import _native

RELU, RELU6 = 1, 3
SAME, VALID = 0, 1


def requantize_fp32(acc, in_scale, w_scales, out_scale, out_zp, lo=-128, hi=127):
    """XNNPACK's fp32 requantization, written out in numpy float32."""
    scale = (np.float32(in_scale) * np.asarray(w_scales, np.float32)) / np.float32(out_scale)
    f = acc.astype(np.float32) * scale
    f = np.clip(f, np.float32(lo - out_zp), np.float32(hi - out_zp))
    return (np.rint(f) + out_zp).astype(np.int8)


def conv_reference(x, w, bias, in_zp, stride, dilation, padding):
    """The int64 sums of an int8 convolution; `dilation` is one value or (height, width)."""
    n, h, wd, c = x.shape
    o, kh, kw, _ = w.shape
    dilation_h, dilation_w = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    eff_h, eff_w = (kh - 1) * dilation_h + 1, (kw - 1) * dilation_w + 1
    if padding == SAME:
        oh, ow = -(-h // stride), -(-wd // stride)
        pad_t = max((oh - 1) * stride + eff_h - h, 0) // 2
        pad_l = max((ow - 1) * stride + eff_w - wd, 0) // 2
    else:
        oh, ow = (h - eff_h) // stride + 1, (wd - eff_w) // stride + 1
        pad_t = pad_l = 0
    acc = np.zeros((n, oh, ow, o), np.int64) + bias
    xs = x.astype(np.int64) - in_zp
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    iy, ix = oy * stride - pad_t + ky * dilation_h, ox * stride - pad_l + kx * dilation_w
                    if 0 <= iy < h and 0 <= ix < wd:
                        acc[:, oy, ox, :] += xs[:, iy, ix, :] @ w[:, ky, kx, :].astype(np.int64).T
    return acc


def build_conv(x_shape, w, bias, in_q, w_scales, out_q, out_shape, stride, dilation, padding, act):
    g = _native.Graph()
    x = g.add_tensor("x", "int8", list(x_shape), None, [in_q[0]], [in_q[1]], 0)
    wt = g.add_tensor("w", "int8", list(w.shape), w.tobytes(), list(w_scales), [0] * len(w_scales), 0)
    bias_scales = [float(np.float32(in_q[0]) * np.float32(s)) for s in w_scales]
    b = g.add_tensor("b", "int32", [len(bias)], bias.astype(np.int32).tobytes(), bias_scales, [0] * len(bias), 0)
    y = g.add_tensor("y", "int8", list(out_shape), None, [out_q[0]], [out_q[1]], 0)
    dilation_h, dilation_w = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    g.add_op("CONV_2D", "0", [x, wt, b], [y], {
        "stride_h": stride, "stride_w": stride, "dilation_h": dilation_h, "dilation_w": dilation_w,
        "padding": padding, "activation": act})
    g.finalize([x], [y], "litert")
    return g


@pytest.mark.parametrize(
    "h,w_,c,o,k,stride,dilation,padding",
    [
        (8, 8, 1, 16, 3, 1, 1, SAME),
        (7, 5, 3, 5, 3, 2, 1, SAME),
        (9, 9, 4, 3, 3, 2, 1, VALID),
        (6, 6, 2, 4, 1, 1, 1, VALID),
        (10, 10, 3, 2, 3, 1, 2, SAME),
        (5, 4, 1, 1, 5, 3, 1, SAME),
        (11, 9, 3, 6, 3, 1, (2, 1), SAME),  # rows apart, columns adjacent
        (12, 10, 5, 4, 3, 2, (1, 2), VALID),
        # Image lines of 3, 4 and 64 bytes, which the framed copy moves without
        # touching the padding beside them.
        (6, 3, 1, 4, 3, 1, 1, SAME),
        (5, 2, 2, 3, 3, 1, 1, SAME),
        (4, 4, 16, 32, 3, 1, 1, SAME),
    ],
)
def test_conv_int8_matches_reference(h, w_, c, o, k, stride, dilation, padding):
    rng = np.random.default_rng(h * 100 + o)
    x = rng.integers(-128, 128, size=(37, h, w_, c), dtype=np.int8)
    w = rng.integers(-127, 128, size=(o, k, k, c), dtype=np.int8)
    bias = rng.integers(-5000, 5000, size=o)
    in_q, out_q = (np.float32(0.02), -7), (np.float32(0.5), 3)
    w_scales = rng.uniform(0.001, 0.01, size=o).astype(np.float32)
    acc = conv_reference(x, w, bias, in_q[1], stride, dilation, padding)
    for act in (0, RELU, RELU6):
        g = build_conv(x.shape[1:], w, bias, in_q, w_scales, out_q, acc.shape[1:], stride, dilation, padding, act)
        lo = out_q[1] if act in (RELU, RELU6) else -128
        hi = min(127, int(np.rint(np.float32(6.0) / out_q[0] + out_q[1]))) if act == RELU6 else 127
        expected = requantize_fp32(acc, in_q[0], w_scales, out_q[0], out_q[1], lo, hi)
        for threads in (1, 2, 3):
            np.testing.assert_array_equal(g.run(x, threads)[0], expected)


def test_fully_connected_int8_extremes():
    # All -128 or 127 inputs against full-range weights: sums far outside int16.
    rng = np.random.default_rng(5)
    depth, units = 300, 7
    w = rng.integers(-127, 128, size=(units, depth), dtype=np.int8)
    w[0] = 127
    w[1] = -127
    x = np.stack([np.full(depth, -128), np.full(depth, 127), np.tile([-128, 127], depth // 2)]).astype(np.int8)
    g = _native.Graph()
    xi = g.add_tensor("x", "int8", [depth], None, [0.05], [5], 0)
    wi = g.add_tensor("w", "int8", [units, depth], w.tobytes(), [0.003], [0], 0)
    yi = g.add_tensor("y", "int8", [units], None, [400.0], [-2], 0)
    g.add_op("FULLY_CONNECTED", "0", [xi, wi, -1], [yi], {"activation": 0})
    g.finalize([xi], [yi], "litert")
    acc = (x.astype(np.int64) - 5) @ w.astype(np.int64).T
    assert np.abs(acc).max() > 2**15  # the case a 16-bit pair sum would get wrong
    expected = requantize_fp32(acc, 0.05, [0.003], 400.0, -2)
    np.testing.assert_array_equal(g.run(x, 1)[0], expected)


def test_exact_sum_of_unsigned_bytes():
    # Unsigned bytes 210, 198, 234 are int8 82, 70, 106 after the zero-point shift of 128.
    x = np.array([[82, 70, 106]], dtype=np.int8)
    w = np.array([[-81, -80, 127]], dtype=np.int8)
    g = _native.Graph()
    xi = g.add_tensor("x", "int8", [3], None, [1.0], [-128], 0)
    wi = g.add_tensor("w", "int8", [1, 3], w.tobytes(), [1.0], [0], 0)
    yi = g.add_tensor("y", "int8", [1], None, [128.0], [0], 0)
    g.add_op("FULLY_CONNECTED", "0", [xi, wi, -1], [yi], {"activation": 0})
    g.finalize([xi], [yi], "litert")
    exact = 210 * -81 + 198 * -80 + 234 * 127  # 13068
    assert g.run(x, 1)[0][0, 0] == np.int8(np.rint(exact / 128.0))


# Channel counts below, at and past one 16-byte block, with and without a fused ReLU.
@pytest.mark.parametrize("channels,activation", [(3, 0), (16, 0), (37, 0), (37, 1)])
def test_max_pool_int8_with_padding(channels, activation):
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, size=(9, 5, 5, channels), dtype=np.int8)
    g = _native.Graph()
    xi = g.add_tensor("x", "int8", [5, 5, channels], None, [0.1], [-4], 0)
    yi = g.add_tensor("y", "int8", [3, 3, channels], None, [0.1], [-4], 0)
    g.add_op("MAX_POOL_2D", "0", [xi], [yi], {"filter_h": 2, "filter_w": 2, "stride_h": 2, "stride_w": 2,
                                              "padding": SAME, "activation": activation})
    g.finalize([xi], [yi], "litert")
    padded = np.full((9, 6, 6, channels), -128, np.int8)
    padded[:, :5, :5] = x
    expected = padded.reshape(9, 3, 2, 3, 2, channels).max(axis=(2, 4))
    if activation == 1:
        expected = np.maximum(expected, -4)  # ReLU: the zero point is the quantized 0
    np.testing.assert_array_equal(g.run(x, 2)[0], expected)


# Windows that all lie inside the image: whole 16-channel blocks take the
# row-by-row loop (2x2, 3x3 and other filters), other channel counts the
# clipped one. The last lines and columns of some images are in no window.
@pytest.mark.parametrize(
    "h,w_,channels,k_h,k_w,stride",
    [(8, 8, 16, 2, 2, 2), (7, 9, 32, 3, 3, 2), (6, 6, 16, 3, 3, 1), (7, 7, 48, 2, 3, 1), (5, 5, 24, 2, 2, 2)],
)
@pytest.mark.parametrize("activation", [0, RELU6])
def test_max_pool_int8_inside_image(h, w_, channels, k_h, k_w, stride, activation):
    rng = np.random.default_rng(h * 10 + channels)
    x = rng.integers(-128, 128, size=(41, h, w_, channels), dtype=np.int8)
    out_h, out_w = (h - k_h) // stride + 1, (w_ - k_w) // stride + 1
    g = _native.Graph()
    xi = g.add_tensor("x", "int8", [h, w_, channels], None, [0.05], [-20], 0)
    yi = g.add_tensor("y", "int8", [out_h, out_w, channels], None, [0.05], [-20], 0)
    g.add_op("MAX_POOL_2D", "0", [xi], [yi], {"filter_h": k_h, "filter_w": k_w, "stride_h": stride,
                                              "stride_w": stride, "padding": VALID, "activation": activation})
    g.finalize([xi], [yi], "litert")
    expected = np.empty((41, out_h, out_w, channels), np.int8)
    for oy in range(out_h):
        for ox in range(out_w):
            window = x[:, oy * stride:oy * stride + k_h, ox * stride:ox * stride + k_w]
            expected[:, oy, ox] = window.max(axis=(1, 2))
    if activation == RELU6:
        expected = np.clip(expected, -20, -20 + 120)  # 6 / 0.05 = 120 steps above the zero point
    for threads in (1, 2):
        np.testing.assert_array_equal(g.run(x, threads)[0], expected)


# Each float output adds its products in the order of k, each product and
# sum rounded to float32, then the bias: numpy's float32 steps give the bits.
# 45 units fill one panel of 32 and part of another; 131 rows make tiles of
# several heights.
@pytest.mark.parametrize("isa", _native.available_isas())
@pytest.mark.parametrize("activation", [0, RELU6])
def test_float_fully_connected_adds_in_order(activation, isa, monkeypatch):
    monkeypatch.setenv("EDGEMIA_ISA", isa)
    rng = np.random.default_rng(23)
    depth, units, rows = 50, 45, 131
    w = rng.normal(size=(units, depth)).astype(np.float32)
    b = rng.normal(size=units).astype(np.float32)
    x = (rng.normal(size=(rows, depth)) * rng.uniform(0.1, 1e3, size=(rows, 1))).astype(np.float32)
    g = _native.Graph()
    xi = g.add_tensor("x", "float32", [depth], None, [], [], 0)
    wi = g.add_tensor("w", "float32", [units, depth], w.tobytes(), [], [], 0)
    bi = g.add_tensor("b", "float32", [units], b.tobytes(), [], [], 0)
    yi = g.add_tensor("y", "float32", [units], None, [], [], 0)
    g.add_op("FULLY_CONNECTED", "0", [xi, wi, bi], [yi], {"activation": activation})
    g.finalize([xi], [yi], "litert")
    assert g.isa == isa
    acc = np.zeros((rows, units), np.float32)
    for k in range(depth):
        acc = acc + x[:, k:k + 1] * w[:, k]
    expected = acc + b
    if activation == RELU6:
        expected = np.clip(expected, np.float32(0), np.float32(6))
    for threads in (1, 2):
        np.testing.assert_array_equal(g.run(x, threads)[0], expected)


def _binary_int8_graph(kind, a_scale, b_scale, out_scale, numerics):
    """x (kind) a constant operand of every int8 value, in the given numerics."""
    g = _native.Graph()
    x = g.add_tensor("x", "int8", [2, 128], None, [a_scale], [3], 0)
    values = np.arange(-128, 128, dtype=np.int8).reshape(2, 128)
    b = g.add_tensor("b", "int8", [2, 128], values.tobytes(), [b_scale], [-5], 0)
    y = g.add_tensor("y", "int8", [2, 128], None, [out_scale], [-2], 0)
    g.add_op(kind, "op", [x, b], [y], {"activation": 0})
    g.finalize([x], [y], numerics)
    return g


# Below the scale range that LiteRT's XNNPACK delegate takes, LiteRT runs
# TFLite's builtin kernel, which computes the litert-reference formula.
@pytest.mark.parametrize("kind,scales", [("ADD", (0.05, 1e-5, 0.05)), ("MUL", (1e-3, 1e-3, 1.0))])
def test_binary_int8_below_xnnpack_range(kind, scales):
    x = np.random.default_rng(31).integers(-128, 128, size=(300, 2, 128), dtype=np.int8)
    reference = _binary_int8_graph(kind, *scales, "litert-reference").run(x, 1)[0]
    np.testing.assert_array_equal(_binary_int8_graph(kind, *scales, "litert").run(x, 1)[0], reference)


# At 2^8 and above, LiteRT's builtin kernel saturates to the opposite end of
# the int8 range, which litert numerics does not reproduce.
@pytest.mark.parametrize("kind,scales", [("ADD", (1.0, 0.5, 0.003)), ("MUL", (0.5, 0.5, 2.0**-10))])
def test_binary_int8_above_xnnpack_range_rejected(kind, scales):
    with pytest.raises(_native.UnsupportedError, match="2\\^8, where LiteRT runs TFLite's builtin kernel"):
        _binary_int8_graph(kind, *scales, "litert")
    _binary_int8_graph(kind, *scales, "litert-reference")


# NaN, infinities and values far beyond the int8 range. litert follows XNNPACK
# (tests/test_tflite_ops.py compares it with LiteRT); litert-reference clamps
# where TFLite's reference converts to int32 unclamped; onnxruntime follows MLAS.
@pytest.mark.parametrize("numerics,nan", [("litert", 127), ("litert-reference", -128), ("onnxruntime", -128)])
@pytest.mark.parametrize("zero_point", [-128, 0, 127])
def test_quantize_nan_infinities_and_huge_values(numerics, nan, zero_point):
    g = _native.Graph()
    xi = g.add_tensor("x", "float32", [6], None, [], [], 0)
    yi = g.add_tensor("y", "int8", [6], None, [0.05], [zero_point], 0)
    g.add_op("QUANTIZE", "quantize", [xi], [yi], {}, {})
    g.finalize([xi], [yi], numerics)
    x = np.array([[np.nan, np.inf, -np.inf, 3e38, -3e38, 2.5e9]] * 3, dtype=np.float32)
    expected = np.array([[nan, 127, -128, 127, -128, 127]] * 3, dtype=np.int8)
    np.testing.assert_array_equal(g.run(x, 1)[0], expected)


def _graph_with_input():
    g = _native.Graph()
    x = g.add_tensor("x", "int8", [4], None, [0.1], [0], 0)
    return g, x


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda g, x: g.add_tensor("w", "int8", [2, 4], b"\x00" * 7, [0.1], [0], 0), "contains 7 bytes"),
        (lambda g, x: g.add_tensor("big", "int8", [2**31 - 1, 2**31 - 1, 2**31 - 1], None, [], [], 0), "too large"),
        (lambda g, x: g.add_tensor("neg", "int8", [-3], None, [], [], 0), "invalid dimension -3"),
        (lambda g, x: g.add_tensor("s", "int8", [4], None, [0.0], [0], 0), "invalid quantization scale"),
        (lambda g, x: g.add_tensor("s", "int8", [4], None, [0.1, 0.2], [0], 0), "2 scales but 1 zero points"),
        (lambda g, x: g.add_op("RESHAPE", "0", [x, 99], [x], {}), "refers to tensor 99"),
        (lambda g, x: g.add_op("RESHAPE", "0", [x], [-5], {}), "writes tensor -5"),
    ],
)
def test_bad_tensors_and_ops_raise_model_error(build, message):
    g, x = _graph_with_input()
    with pytest.raises(_native.ModelError, match=message):
        build(g, x)


@pytest.mark.parametrize(
    "kind,options,message",
    [
        ("BATCH_TO_SPACE_ND", {}, "not supported by the native kernel"),
        ("FULLY_CONNECTED", {"activation": 9}, "fused activation code 9"),
    ],
)
def test_bad_ops_fail_at_finalize(kind, options, message):
    g, x = _graph_with_input()
    w = g.add_tensor("w", "int8", [2, 4], b"\x01" * 8, [0.1], [0], 0)
    y = g.add_tensor("y", "int8", [2], None, [0.1], [0], 0)
    g.add_op(kind, "0", [x, w], [y], options)
    with pytest.raises(_native.ModelError, match=message):
        g.finalize([x], [y], "litert")


def test_op_reading_unwritten_tensor_rejected():
    g, x = _graph_with_input()
    z = g.add_tensor("z", "int8", [4], None, [0.1], [0], 0)
    y = g.add_tensor("y", "int8", [4], None, [0.1], [0], 0)
    g.add_op("RESHAPE", "0", [z], [y], {})
    with pytest.raises(_native.ModelError, match="before any op writes it"):
        g.finalize([x], [y], "litert")


def test_run_rejects_wrong_input():
    g, x = _graph_with_input()
    y = g.add_tensor("y", "int8", [2, 2], None, [0.1], [0], 0)
    g.add_op("RESHAPE", "0", [x], [y], {})
    g.finalize([x], [y], "litert")
    with pytest.raises(ValueError, match="dtype"):
        g.run(np.zeros((3, 4), np.float32), 1)
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        g.run(np.zeros((3, 5), np.int8), 1)
    assert g.run(np.zeros((0, 4), np.int8), 1)[0].shape == (0, 2, 2)


def test_unknown_numerics_mode_rejected():
    g, x = _graph_with_input()
    with pytest.raises(_native.ModelError, match="numerics mode 'fast'"):
        g.finalize([x], [x], "fast")


def test_unquantized_bias_unsupported_in_litert_mode():
    # LiteRT's XNNPACK delegate rejects such a bias and falls back to other kernels.
    g = _native.Graph()
    x = g.add_tensor("x", "int8", [4], None, [0.1], [0], 0)
    w = g.add_tensor("w", "int8", [2, 4], b"\x01" * 8, [0.1], [0], 0)
    b = g.add_tensor("b", "int32", [2], b"\x00" * 8, [], [], 0)
    y = g.add_tensor("y", "int8", [2], None, [0.1], [0], 0)
    g.add_op("FULLY_CONNECTED", "0", [x, w, b], [y], {"activation": 0})
    with pytest.raises(_native.UnsupportedError, match="bias 'b' has no quantization parameters"):
        g.finalize([x], [y], "litert")


@pytest.mark.parametrize("numerics,depth,error", [
    ("litert-reference", 511, None),
    ("litert-reference", 512, "TFLite's reference kernel aborts when a row's exponentials sum to 512"),
    ("litert", 512, None),
])
def test_reference_softmax_class_limit(numerics, depth, error):
    """TFLite's reference int8 softmax aborts once a row's exp sum reaches 512, so 512 classes are refused."""
    g = _native.Graph()
    x = g.add_tensor("x", "int8", [depth], None, [0.05], [0], 0)
    y = g.add_tensor("y", "int8", [depth], None, [1 / 256], [-128], 0)
    g.add_op("SOFTMAX", "0", [x], [y], {}, {"beta": 1.0})
    if error is None:
        g.finalize([x], [y], numerics)
        out = g.run(np.zeros((2, depth), dtype=np.int8), 1)[0]
        assert out.shape == (2, depth)
    else:
        with pytest.raises(_native.UnsupportedError, match=error):
            g.finalize([x], [y], numerics)
