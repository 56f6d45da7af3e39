"""Run a fixed int8 graph on the instruction-set path that EDGEMIA_ISA selects.

Usage: python isa_graph_outputs.py OUT.npz
       python isa_graph_outputs.py OUT.npz MODEL.tflite INPUT.npy

The first form runs graphs built here. One chains every GEMM caller with
shapes that hit tile edges: a 3x3 convolution, a dilated one, a 1x1
convolution (read in place), a strided grouped one, max pooling and a fully
connected layer with several rows per record. Two more chain depthwise
convolutions and pooling on 37, 16 and 7 channels (vector blocks of 16 plus a
remainder, one whole block, which avx512vnni runs two columns at a time, and a
remainder alone): 3x3 with SAME padding, 3x3 with stride 2 on
an odd width, 1x1, a dilated 5x3, a 2x4 (an even number of taps), a 9x8
(72 taps), depth multiplier 2, then average and max pooling with SAME padding. Each runs in
both numerics modes at 1, 2 and 3 threads on random and extreme inputs. Two
int8 fully connected layers deep and wide enough for the amx path's tiles
run on more records than any path's chunk. A last one chains float fully
connected layers. OUT.npz receives every output
and the path the graph used.
The second form runs a .tflite model through the native backend on the int8
records in INPUT.npy, in both numerics modes and at 1 and 2 threads.
"""

from __future__ import annotations

import sys

import numpy as np

from edgemia import _native

SAME, VALID, RELU = 0, 1, 1
INPUT_SHAPE = (12, 11, 6)


def conv_options(stride: int, dilation: int, padding: int, activation: int) -> dict[str, int]:
    return {"stride_h": stride, "stride_w": stride, "dilation_h": dilation, "dilation_w": dilation,
            "padding": padding, "activation": activation}


def build(numerics: str) -> _native.Graph:
    rng = np.random.default_rng(2024)
    g = _native.Graph()
    in_scale = 0.05
    x = g.add_tensor("x", "int8", list(INPUT_SHAPE), None, [in_scale], [-3], 0)

    def weights(name, shape, scale_count):
        w = rng.integers(-128, 128, size=shape, dtype=np.int8)
        scales = rng.uniform(0.002, 0.01, size=scale_count).astype(np.float32)
        return g.add_tensor(name, "int8", list(shape), w.tobytes(), [float(s) for s in scales], [0] * scale_count,
                            0), float(scales.mean())

    def bias(name, count):
        values = rng.integers(-20000, 20000, size=count).astype(np.int32)
        # A quantized bias, as the TFLite converter writes it; LiteRT's int8 path needs one.
        return g.add_tensor(name, "int32", [count], values.tobytes(), [1e-4] * count, [0] * count, 0)

    def activation(name, shape, scale, zero_point):
        return g.add_tensor(name, "int8", list(shape), None, [scale], [zero_point], 0)

    layers = [
        # name, filter shape (O, H, W, I), output shape, options
        ("conv3x3", (20, 3, 3, 6), (12, 11, 20), conv_options(1, 1, SAME, RELU)),
        ("dilated", (17, 3, 3, 20), (12, 11, 17), conv_options(1, 2, SAME, 0)),
        ("conv1x1", (33, 1, 1, 17), (12, 11, 33), conv_options(1, 1, SAME, RELU)),
        ("grouped", (9, 3, 3, 11), (5, 5, 9), conv_options(2, 1, VALID, 0)),
    ]
    current, current_scale = x, in_scale
    for name, filter_shape, out_shape, options in layers:
        w, w_scale = weights(name + "/w", filter_shape, filter_shape[0])
        b = bias(name + "/b", filter_shape[0])
        out_scale = current_scale * w_scale * 1500.0
        y = activation(name, out_shape, out_scale, 4)
        g.add_op("CONV_2D", name, [current, w, b], [y], options)
        current, current_scale = y, out_scale

    pooled = activation("pool", (2, 2, 9), current_scale, 4)
    g.add_op("MAX_POOL_2D", "pool", [current], [pooled],
             {"filter_h": 2, "filter_w": 2, "stride_h": 2, "stride_w": 2, "padding": VALID, "activation": 0})
    w, w_scale = weights("dense/w", (17, 9), 17)
    b = bias("dense/b", 17)
    y = activation("dense", (4, 17), current_scale * w_scale * 300.0, -6)
    g.add_op("FULLY_CONNECTED", "dense", [pooled, w, b], [y], {"activation": 0})
    g.finalize([x], [y], numerics)
    return g


def build_wide_dense(numerics: str) -> _native.Graph:
    """Build two int8 fully connected layers deep and wide enough for the amx path's tiles.

    Depths 200 and 150 (three and a half steps of 64, and two and a third), 150 and 37
    units (pairs of 16-column panels plus a remainder), two rows per record.
    """
    rng = np.random.default_rng(77)
    g = _native.Graph()
    x = g.add_tensor("x", "int8", [2, 200], None, [0.05], [3], 0)
    current, current_scale = x, 0.05
    for name, units, depth, activation, zero_point in [("wide1", 150, 200, RELU, -128), ("wide2", 37, 150, 0, 5)]:
        w = rng.integers(-128, 128, size=(units, depth), dtype=np.int8)
        w_scales = rng.uniform(0.002, 0.01, size=units).astype(np.float32)
        wt = g.add_tensor(name + "/w", "int8", [units, depth], w.tobytes(), [float(v) for v in w_scales],
                          [0] * units, 0)
        values = rng.integers(-20000, 20000, size=units).astype(np.int32)
        bt = g.add_tensor(name + "/b", "int32", [units], values.tobytes(), [1e-4] * units, [0] * units, 0)
        out_scale = current_scale * float(w_scales.mean()) * 800.0
        y = g.add_tensor(name, "int8", [2, units], None, [out_scale], [zero_point], 0)
        g.add_op("FULLY_CONNECTED", name, [current, wt, bt], [y], {"activation": activation})
        current, current_scale = y, out_scale
    g.finalize([x], [current], numerics)
    return g


def depthwise_options(stride: int, dilation: int, padding: int, activation: int, multiplier: int = 1):
    return {**conv_options(stride, dilation, padding, activation), "depth_multiplier": multiplier}


def pool_options(size: int, stride: int, padding: int) -> dict[str, int]:
    return {"filter_h": size, "filter_w": size, "stride_h": stride, "stride_w": stride, "padding": padding,
            "activation": 0}


def build_depthwise(numerics: str, channels: int) -> _native.Graph:
    """Depthwise convolutions and pooling on a 15x13 image with `channels` channels."""
    rng = np.random.default_rng(channels)
    g = _native.Graph()
    scale, zero_point = 0.04, 5
    x = g.add_tensor("x", "int8", [15, 13, channels], None, [scale], [zero_point], 0)
    layers = [
        # name, filter (H, W), multiplier, output (H, W), options
        ("dw3x3", (3, 3), 1, (15, 13), depthwise_options(1, 1, SAME, RELU)),
        ("dw3x3-stride2", (3, 3), 1, (7, 6), depthwise_options(2, 1, VALID, 0)),
        ("dw1x1", (1, 1), 1, (7, 6), depthwise_options(1, 1, SAME, 0)),
        ("dw5x3-dilated", (5, 3), 1, (7, 6), depthwise_options(1, 2, SAME, RELU)),
        ("dw2x4", (2, 4), 1, (7, 6), depthwise_options(1, 1, SAME, 0)),  # an even number of taps
        # 72 taps, more than the avx512vnni path's fused row kernel takes.
        ("dw9x8", (9, 8), 1, (7, 6), depthwise_options(1, 1, SAME, RELU)),
        ("dw-multiplier2", (2, 2), 2, (7, 6), depthwise_options(1, 1, SAME, 0, 2)),
    ]
    current, current_channels = x, channels
    for name, (k_h, k_w), multiplier, (out_h, out_w), options in layers:
        out_channels = current_channels * multiplier
        w = rng.integers(-128, 128, size=(1, k_h, k_w, out_channels), dtype=np.int8)
        w_scales = rng.uniform(0.002, 0.01, size=out_channels).astype(np.float32)
        wt = g.add_tensor(name + "/w", "int8", list(w.shape), w.tobytes(), [float(v) for v in w_scales],
                          [0] * out_channels, 3)
        b = rng.integers(-5000, 5000, size=out_channels).astype(np.int32)
        bt = g.add_tensor(name + "/b", "int32", [out_channels], b.tobytes(), [1e-4] * out_channels,
                          [0] * out_channels, 0)
        out_scale = scale * float(w_scales.mean()) * 40.0
        y = g.add_tensor(name, "int8", [out_h, out_w, out_channels], None, [out_scale], [-7], 0)
        g.add_op("DEPTHWISE_CONV_2D", name, [current, wt, bt], [y], options)
        current, current_channels, scale = y, out_channels, out_scale
    averaged = g.add_tensor("avgpool", "int8", [4, 3, current_channels], None, [scale], [-7], 0)
    g.add_op("AVERAGE_POOL_2D", "avgpool", [current], [averaged], pool_options(3, 2, SAME))
    pooled = g.add_tensor("maxpool", "int8", [2, 2, current_channels], None, [scale], [-7], 0)
    g.add_op("MAX_POOL_2D", "maxpool", [averaged], [pooled], pool_options(2, 2, SAME))
    g.finalize([x], [current, pooled], numerics)
    return g


def extreme_inputs(count: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random int8 records, the first three all -128, all 127 and alternating extremes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(count, *shape), dtype=np.int8)
    x[0] = -128
    x[1] = 127
    x[2] = np.resize(np.array([-128, 127], dtype=np.int8), shape)
    return x


def inputs() -> np.ndarray:
    return extreme_inputs(203, INPUT_SHAPE, 7)


def build_float_dense() -> _native.Graph:
    """Build float fully connected layers whose depths and unit counts miss the vector tiles.

    The unit counts are 13, 16, 1, 7, 130, 20, 40 and 5: panels of 32 units
    that are full, hold 17 to 31 units (two registers, one partly used), or
    at most 16 (one register). The depths are those counts and 37. Each
    record has two rows, and each activation appears.
    """
    rng = np.random.default_rng(7)
    g = _native.Graph()
    x = g.add_tensor("x", "float32", [2, 37], None, [], [], 0)
    layers = [("dense37", 13, 2), ("dense13", 16, 0), ("dense16", 1, 1), ("dense1", 7, 3), ("dense7", 130, 0),
              ("dense130", 20, 1), ("dense20", 40, 2), ("dense40", 5, 1)]
    current, depth = x, 37
    for name, units, act in layers:
        w = rng.normal(size=(units, depth)).astype(np.float32)
        b = rng.normal(size=units).astype(np.float32)
        wt = g.add_tensor(name + "/w", "float32", [units, depth], w.tobytes(), [], [], 0)
        bt = g.add_tensor(name + "/b", "float32", [units], b.tobytes(), [], [], 0)
        y = g.add_tensor(name, "float32", [2, units], None, [], [], 0)
        g.add_op("FULLY_CONNECTED", name, [current, wt, bt], [y], {"activation": act, "keep_num_dims": 1})
        current, depth = y, units
    g.finalize([x], [current], "litert")
    return g


def float_inputs(n: int) -> np.ndarray:
    """Normal values, with NaN, infinities, signed zeros and huge values in the first records."""
    x = np.random.default_rng(11).normal(size=(n, 2, 37)).astype(np.float32)
    x[0] = 0.0
    x[1] = -0.0
    x[2, 0, 5] = np.nan
    x[2, 1, 7] = -np.nan  # a NaN with the sign bit set, which x86 propagates from either operand
    x[6, 1, 3:5] = [np.nan, -np.nan]
    x[3, 1, 36] = np.inf
    x[4, 0, :] = -np.inf
    x[5] *= np.float32(3e37)
    return x


def main(out_path: str) -> None:
    x = inputs()
    outputs = {}
    for numerics in ("litert", "litert-reference"):
        graph = build(numerics)
        outputs["isa"] = np.array(graph.isa)
        for threads in (1, 2, 3):
            outputs[f"{numerics}-{threads}"] = graph.run(x, threads)[0]
        outputs[f"{numerics}-single"] = graph.run(x[5:6], 1)[0]
        for channels in (37, 16, 7):
            graph = build_depthwise(numerics, channels)
            records = extreme_inputs(67, (15, 13, channels), channels)
            for threads in (1, 2):
                for index, output in enumerate(graph.run(records, threads)):
                    outputs[f"depthwise{channels}-{numerics}-{threads}-output{index}"] = output
        # More records than the largest chunk of any path, so that every path
        # splits them at one thread too.
        wide = build_wide_dense(numerics)
        records = extreme_inputs(1100, (2, 200), 3)
        for threads in (1, 2, 3):
            outputs[f"wide-dense-{numerics}-{threads}"] = wide.run(records, threads)[0]
    dense = build_float_dense()
    records = float_inputs(67)
    for threads in (1, 2, 3):
        outputs[f"float-dense-{threads}"] = dense.run(records, threads)[0]
    np.savez(out_path, **outputs)


def run_model(out_path: str, model_path: str, input_path: str) -> None:
    from edgemia.runtime.native import NativeSession
    from edgemia.runtime.tflite_model import read_tflite

    model = read_tflite(model_path)
    x = np.load(input_path)
    outputs = {}
    for numerics in ("litert", "litert-reference"):
        for threads in (1, 2):
            session = NativeSession(model, threads=threads, numerics=numerics)
            outputs["isa"] = np.array(session.isa)
            outputs[f"{numerics}-{threads}"] = session.run(x)
    np.savez(out_path, **outputs)


if __name__ == "__main__":
    if len(sys.argv) == 4:
        run_model(*sys.argv[1:])
    else:
        main(sys.argv[1])
