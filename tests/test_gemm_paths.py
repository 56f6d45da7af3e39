"""Every instruction-set path of the int8 GEMM returns the exact integer product."""

from __future__ import annotations

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
]


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
def test_path_exact_on_extremes(isa):
    # -128 * -128 pairs overflow a 16-bit pair sum; 127 * -128 does on u8 x s8 paths.
    k = 515
    a = np.stack([np.full(k, -128), np.full(k, 127), np.resize([-128, 127], k), np.resize([127, -128], k)])
    b = np.stack([np.full(k, -128), np.full(k, 127), np.resize([-128, -128, 127], k), np.zeros(k)])
    a, b = a.astype(np.int8), b.astype(np.int8)
    np.testing.assert_array_equal(_native.gemm_s8(isa, a, b), exact_product(a, b))


def test_unsigned_bytes_example():
    # Unsigned 210, 198, 234 are int8 82, 70, 106 after subtracting 128.
    a = (np.array([[210, 198, 234]]) - 128).astype(np.int8)
    b = np.array([[-81, -80, 127]], dtype=np.int8)
    for isa in PATHS:
        assert _native.gemm_s8(isa, a, b)[0, 0] == 82 * -81 + 70 * -80 + 106 * 127


def test_scalar_always_available():
    assert PATHS[0] == "scalar"
