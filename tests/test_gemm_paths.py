"""Every instruction-set path of the int8 GEMM returns the exact integer product, and
its fp32 output stage the same bytes as the scalar reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgemia import _native

PATHS = _native.available_isas()
SHAPES = [
    (1, 1, 1),
    (1, 7, 3),
    (3, 1, 5),
    (5, 17, 33),
    (64, 64, 64),
    (63, 65, 129),
    (2, 1000, 300),
    (130, 10, 784),
    (7, 33, 1),
    (97, 48, 1024),
    (200, 3, 2),
]
# Sizes around every tile edge of every path: rows per tile (4, 6, 12), columns
# per panel (4, 8, 16, 32) and k per step (2, 4, 16, 64).
EDGE_M = [1, 2, 4, 5, 6, 7, 11, 12, 13, 25, 96, 97]
EDGE_N = [1, 2, 3, 4, 5, 8, 9, 15, 16, 17, 31, 32, 33, 48, 65]
EDGE_K = [1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 129]


def exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.int64) @ b.astype(np.int64).T).astype(np.int32)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_path_exact_on_random(isa, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    np.testing.assert_array_equal(_native.gemm_s8(isa, a, b), exact_product(a, b))


@pytest.mark.parametrize("isa", PATHS)
def test_path_exact_on_tile_edges(isa):
    rng = np.random.default_rng(7)
    for m, n, k in itertools.product(EDGE_M, EDGE_N, EDGE_K):
        a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        got = _native.gemm_s8(isa, a, b)
        assert np.array_equal(got, exact_product(a, b)), f"{isa} differs at m={m} n={n} k={k}"


@pytest.mark.parametrize("isa", PATHS)
def test_path_exact_on_extremes(isa):
    # -128 * -128 pairs overflow a 16-bit pair sum; 127 * -128 does on u8 x s8 paths.
    k = 515
    a = np.stack([np.full(k, -128), np.full(k, 127), np.resize([-128, 127], k), np.resize([127, -128], k)])
    b = np.stack([np.full(k, -128), np.full(k, 127), np.resize([-128, -128, 127], k), np.zeros(k)])
    a, b = a.astype(np.int8), b.astype(np.int8)
    np.testing.assert_array_equal(_native.gemm_s8(isa, a, b), exact_product(a, b))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("value", [-128, 127])
def test_path_exact_at_largest_sums(isa, value):
    # The largest depth the contract allows, with every product at its extreme:
    # 131071 * 16384 is just below 2^31.
    k = 131071
    a = np.full((3, k), -128, dtype=np.int8)
    b = np.full((2, k), value, dtype=np.int8)
    np.testing.assert_array_equal(_native.gemm_s8(isa, a, b), exact_product(a, b))


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("n,k", [(19, 45), (40, 150)])
def test_path_reads_strided_rows(isa, n, k):
    # A conv's 1x1 GEMM reads rows of a wider tensor: only k of every stride bytes. At a
    # depth of 150 the avx512vnni path copies the rows with flipped sign bits first.
    rng = np.random.default_rng(11)
    wide = rng.integers(-128, 128, size=(37, k + 55), dtype=np.int8)
    b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    a = wide[:, 10:10 + k]
    assert a.strides == (k + 55, 1)
    np.testing.assert_array_equal(_native.gemm_s8(isa, a, b), exact_product(a, b))


def test_gemm_rejects_bad_depth():
    a = np.zeros((2, 0), dtype=np.int8)
    with pytest.raises(ValueError, match="k is 0"):
        _native.gemm_s8("scalar", a, np.zeros((3, 0), dtype=np.int8))


def test_unsigned_bytes_example():
    # Unsigned 210, 198, 234 are int8 82, 70, 106 after subtracting 128.
    a = (np.array([[210, 198, 234]]) - 128).astype(np.int8)
    b = np.array([[-81, -80, 127]], dtype=np.int8)
    for isa in PATHS:
        assert _native.gemm_s8(isa, a, b)[0, 0] == 82 * -81 + 70 * -80 + 106 * 127


def requantize_reference(acc, bias, scale, lo, hi, zero_point):
    """XNNPACK's fp32 output stage in numpy float32, rounding half to even."""
    f = (acc + bias).astype(np.float32) * scale
    f = np.clip(f, np.float32(lo), np.float32(hi))
    return (np.rint(f).astype(np.int32) + zero_point).astype(np.int8)


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 16, 17, 33, 64])
def test_output_stage_matches_reference(isa, n):
    rng = np.random.default_rng(n)
    m = 13
    acc = rng.integers(-40000, 40000, size=(m, n), dtype=np.int32)
    bias = rng.integers(-3000, 3000, size=n, dtype=np.int32)
    scale = rng.uniform(0.0005, 0.01, size=n).astype(np.float32)
    # Sums that land exactly on x.5 after scaling probe the tie rule.
    scale[0] = np.float32(0.5)
    acc[:, 0] = np.arange(m) * 2 + 1 - bias[0]
    lo, hi, zero_point = -128.0 - 5, 127.0 - 5, 5
    got = _native.requantize_fp32(isa, acc, bias, scale, lo, hi, zero_point)
    np.testing.assert_array_equal(got, requantize_reference(acc, bias, scale, lo, hi, zero_point))
    np.testing.assert_array_equal(got, _native.requantize_fp32("scalar", acc, bias, scale, lo, hi, zero_point))


@pytest.mark.parametrize("isa", PATHS)
def test_fused_output_stage_matches_two_steps(isa):
    # Paths with a fused GEMM and output stage must give the bytes of the GEMM followed by the stage.
    rng = np.random.default_rng(11)
    for m, n, k in itertools.product(EDGE_M, EDGE_N, [1, 5, 64, 129]):
        a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        bias = rng.integers(-3000, 3000, size=n, dtype=np.int32)
        scale = rng.uniform(0.0005, 0.01, size=n).astype(np.float32)
        expected = requantize_reference(exact_product(a, b), bias, scale, -128.0 - 5, 127.0 - 5, 5)
        got = _native.gemm_requantize_fp32(isa, a, b, bias, scale, -128.0 - 5, 127.0 - 5, 5)
        np.testing.assert_array_equal(got, expected, err_msg=f"m={m} n={n} k={k}")


@pytest.mark.parametrize("isa", PATHS)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_fused_stage_on_narrow_layers(isa, n):
    # Layers of up to 4 columns run 16 rows at a time in their own avx512vnni kernel.
    # It reads 16 bytes of k per step and masks the last step unless at most 3 bytes
    # of it are past k, and it interleaves the columns when it stores. Strided rows of
    # a and of y, extreme records and both sides of the saturation rule must all give
    # the reference bytes, and the bytes between output rows must stay untouched.
    rng = np.random.default_rng(100 + n)
    for m, k, a_pad, y_pad in itertools.product([16, 17, 31, 32, 48, 100], [1, 3, 4, 12, 13, 16, 17, 28, 29, 32, 64, 129],
                                                 [0, 5], [0, 3]):
        rows = rng.integers(-128, 128, size=(m, k + a_pad), dtype=np.int8)
        rows[0, :k], rows[1, :k] = -128, 127
        rows[2, :k:2], rows[2, 1:k:2] = -128, 127
        a = rows[:, :k]
        b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        b[0, ::2] = -128
        bias = rng.integers(-3000, 3000, size=n, dtype=np.int32)
        scale = rng.uniform(0.0005, 0.01, size=n).astype(np.float32)
        for lo, hi, zero_point in [(-128.0 - 5, 127.0 - 5, 5), (0.0, 255.0, -128)]:
            expected = requantize_reference(exact_product(a, b), bias, scale, lo, hi, zero_point)
            got = _native.gemm_requantize_fp32(isa, a, b, bias, scale, lo, hi, zero_point, y_stride=n + y_pad)
            where = f"m={m} k={k} row padding {a_pad}, {y_pad} lo={lo}"
            np.testing.assert_array_equal(got[:, :n], expected, err_msg=where)
            assert np.all(got[:, n:] == 0x55), f"bytes between output rows changed at {where}"


@pytest.mark.parametrize("isa", PATHS)
def test_output_stage_clamps_to_activation_range(isa):
    # A fused ReLU with zero point -128 keeps outputs in -128..127 but clamps at 0 in float.
    acc = np.array([[-1000, -1, 0, 1, 1000, 10**9, -(10**9)]], dtype=np.int32)
    bias = np.zeros(7, dtype=np.int32)
    scale = np.full(7, 0.25, dtype=np.float32)
    got = _native.requantize_fp32(isa, acc, bias, scale, 0.0, 255.0, -128)
    np.testing.assert_array_equal(got, [[-128, -128, -128, -128, 122, 127, -128]])


def saturation_clamps_reference(b, bias, scale, lo, hi, zero_point):
    """The closed form of gemm::SaturationClamps: a full int8 range and |f| below 2^30."""
    if lo + zero_point > -128 or hi + zero_point < 127:
        return False
    bound = 128.0 * np.abs(b.astype(np.int64)).sum(axis=1) + np.abs(bias.astype(np.float64))
    return bool(np.all((bound < 2.0**30) & (bound * scale.astype(np.float64) < 2.0**30)))


def test_saturation_clamps_decision():
    b = np.full((3, 1000), -128, dtype=np.int8)  # sum |b| = 128,000 per column
    bias = np.array([5, -7, 0], dtype=np.int32)
    scale = np.full(3, 0.01, dtype=np.float32)
    cases = [
        (b, bias, scale, -128.0 + 3, 127.0 + 3, -3, True),
        # A ReLU6 range or a ReLU with zero point above -128 narrows the output range.
        (b, bias, scale, 0.0, 127.0 + 100, -100, False),
        (b, bias, scale, -128.0, 60.0, 0, False),
        # 128 * 128,000 * 65.5 = 1.07e9 stays below 2^30; 65.6 does not.
        (b, bias, np.full(3, 65.5, dtype=np.float32), -128.0, 127.0, 0, True),
        (b, bias, np.array([0.01, 65.6, 0.01], dtype=np.float32), -128.0, 127.0, 0, False),
        # A bias near the int32 limits alone exceeds the bound, even with a small scale.
        (b, np.array([0, 2**30, 0], dtype=np.int32), scale, -128.0, 127.0, 0, False),
        (b, bias, np.array([0.01, np.nan, 0.01], dtype=np.float32), -128.0, 127.0, 0, False),
    ]
    for b_, bias_, scale_, lo, hi, zero_point, expected in cases:
        assert saturation_clamps_reference(b_, bias_, scale_, lo, hi, zero_point) is expected
        assert _native.saturation_clamps(b_, bias_, scale_, lo, hi, zero_point) is expected


@pytest.mark.parametrize("isa", PATHS)
def test_fused_stage_saturation_limits(isa):
    # The extreme records meet weights of -128 and 127, with scales on both sides of
    # the limit where the stage may clamp by saturation, and ranges that forbid it.
    # Converting f beyond 2^31 without the clamps would give the lowest value.
    k = 1000
    a = np.zeros((4, k), dtype=np.int8)
    a[0], a[1] = -128, 127
    a[2, ::2], a[2, 1::2] = -128, 127
    a[3] = np.arange(k) % 256 - 128
    b = np.stack([np.full(k, -128), np.full(k, 127), np.tile([127, -128], k // 2), np.arange(k) % 7 - 3]).astype(np.int8)
    bias = np.array([3, -2**20, 2**20, 0], dtype=np.int32)
    for scale_value in (0.001, 0.4, 65.0, 65.6, 200.0):
        scale = np.full(4, scale_value, dtype=np.float32)
        for lo, hi, zero_point in [(-128.0 - 7, 127.0 - 7, 7), (0.0, 255.0, -128), (0.0, 127.0 + 100, -100)]:
            expected = requantize_reference(exact_product(a, b), bias, scale, lo, hi, zero_point)
            got = _native.gemm_requantize_fp32(isa, a, b, bias, scale, lo, hi, zero_point)
            np.testing.assert_array_equal(got, expected, err_msg=f"scale={scale_value} lo={lo} zero point={zero_point}")


# The amx path runs products of at least 16 rows, 5 columns and a depth of 128 on
# tiles. Tiles have 16 rows by 16 columns and take 64 bytes of k per step, in pairs,
# and A is staged in blocks of 128 rows. Sizes around each of those edges:
TILE_PATHS = [isa for isa in PATHS if isa == "amx"]
TILE_M = [15, 16, 17, 31, 32, 33, 48, 127, 128, 129, 161]
TILE_N = [4, 5, 15, 16, 17, 31, 32, 33, 48, 65]
TILE_K = [63, 64, 65, 127, 128, 200]


@pytest.mark.parametrize("isa", TILE_PATHS)
def test_tile_path_on_tile_edges(isa):
    # Strided rows of A and of y, extreme records in the first rows, and both the int32
    # sums and the fused output stage, with the bytes between output rows untouched.
    rng = np.random.default_rng(41)
    for m, n, k in itertools.product(TILE_M, TILE_N, TILE_K):
        rows = rng.integers(-128, 128, size=(m, k + 3), dtype=np.int8)
        rows[0, :k], rows[1, :k] = -128, 127
        rows[2, :k:2], rows[2, 1:k:2] = -128, 127
        a = rows[:, :k]
        b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        b[0, ::2] = -128
        where = f"m={m} n={n} k={k}"
        product = exact_product(a, b)
        np.testing.assert_array_equal(_native.gemm_s8(isa, a, b), product, err_msg=where)
        bias = rng.integers(-3000, 3000, size=n, dtype=np.int32)
        scale = rng.uniform(0.0005, 0.01, size=n).astype(np.float32)
        expected = requantize_reference(product, bias, scale, -128.0 - 5, 127.0 - 5, 5)
        got = _native.gemm_requantize_fp32(isa, a, b, bias, scale, -128.0 - 5, 127.0 - 5, 5, y_stride=n + 3)
        np.testing.assert_array_equal(got[:, :n], expected, err_msg=where)
        assert np.all(got[:, n:] == 0x55), f"bytes between output rows changed at {where}"


@pytest.mark.parametrize("isa", TILE_PATHS)
@pytest.mark.parametrize("value", [-128, 127])
def test_tile_path_at_largest_sums(isa, value):
    # Enough rows and columns for tiles, at the largest depth the contract allows. The
    # tiles take a + 128: rows of -128 enter as 0 and leave the sum to the correction
    # term, rows of 127 enter as 255.
    k = 131071
    a = np.full((17, k), -128, dtype=np.int8)
    a[1::2] = 127
    b = np.full((5, k), value, dtype=np.int8)
    np.testing.assert_array_equal(_native.gemm_s8(isa, a, b), exact_product(a, b))


@pytest.mark.parametrize("isa", PATHS[1:])
def test_peak_is_positive(isa):
    assert _native.int8_peak_gmacs(isa, 1) > 0


def test_peak_rejects_scalar_and_bad_threads():
    with pytest.raises(ValueError, match="no peak loop"):
        _native.int8_peak_gmacs("scalar", 1)
    if len(PATHS) > 1:
        with pytest.raises(ValueError, match="threads must be at least 1"):
            _native.int8_peak_gmacs(PATHS[-1], 0)


def test_unknown_path_lists_available():
    with pytest.raises(ValueError, match="available: scalar"):
        _native.gemm_s8("sse9", np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int8))


def test_scalar_always_available():
    assert PATHS[0] == "scalar"


SEGMENT_PATHS = [isa for isa in PATHS if isa in ("avx512vnni", "amx")]


@pytest.mark.parametrize("isa", SEGMENT_PATHS)
def test_segmented_rows_match_reference(isa):
    # Row i of A is `segments` runs of `segment` bytes of one image, segment_stride
    # apart, read in place: the filter rows of convolution windows. Rows of every tile
    # height, one and two panels, a last run at the image's end and extreme bytes.
    rng = np.random.default_rng(21)
    for segments, segment, segment_stride, m, n in itertools.product(
            [1, 3], [4, 12, 48], [0, 50, 97], [1, 2, 5, 12, 13, 25, 100], [1, 7, 16, 17, 33]):
        last = (segments - 1) * segment_stride + segment
        image = rng.integers(-128, 128, size=400, dtype=np.int8)
        image[:64] = -128
        image[64:128] = 127
        starts = rng.integers(0, image.size - last + 1, size=m)
        starts[-1] = image.size - last
        a = np.stack([np.concatenate([image[s + j * segment_stride:s + j * segment_stride + segment]
                                      for j in range(segments)]) for s in starts])
        b = rng.integers(-128, 128, size=(n, segments * segment), dtype=np.int8)
        bias = rng.integers(-3000, 3000, size=n, dtype=np.int32)
        scale = rng.uniform(0.0005, 0.01, size=n).astype(np.float32)
        for lo, hi, zero_point in [(-128.0 - 5, 127.0 - 5, 5), (0.0, 255.0, -128)]:
            expected = requantize_reference(exact_product(a, b), bias, scale, lo, hi, zero_point)
            got = _native.gemm_segments_requantize_fp32(isa, image, starts, segments, segment, segment_stride, b, bias,
                                                        scale, lo, hi, zero_point)
            np.testing.assert_array_equal(got, expected, err_msg=f"{segments} x {segment} stride {segment_stride} "
                                                                 f"m={m} n={n} lo={lo}")


def test_segmented_rows_checks_arguments():
    b = np.zeros((2, 8), dtype=np.int8)
    bias, scale = np.zeros(2, dtype=np.int32), np.ones(2, dtype=np.float32)
    image = np.zeros(32, dtype=np.int8)
    with pytest.raises(ValueError, match="leaves the image"):
        _native.gemm_segments_requantize_fp32(PATHS[-1], image, np.array([30]), 2, 4, 8, b, bias, scale, -128, 127, 0)
    with pytest.raises(ValueError, match="multiple of 4"):
        _native.gemm_segments_requantize_fp32(PATHS[-1], image, np.array([0]), 4, 2, 8, b, bias, scale, -128, 127, 0)
