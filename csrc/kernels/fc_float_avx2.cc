// The float32 fully connected layer of the avx2 path: the AVX-512 kernel's
// steps in ymm registers. A tile of up to 6 rows and half a weight panel (16
// units in two registers) keeps one sum per output in a lane and adds each
// k's products in order, so the bits are the portable loop's (fc_float.h).
// This file is compiled with -mavx2 but not -mfma: a fused multiply-add
// would round once where the portable loop rounds twice.
#include "fc_float.h"

#if defined(__x86_64__) && defined(__AVX2__)

#include <immintrin.h>

#include <cstring>

namespace edgemia {
namespace kernels {
namespace {

constexpr int kMaxRows = 6;
constexpr int64_t kHalfPanel = kFloatPanelUnits / 2;
constexpr int64_t kRowBlock = 16 * kMaxRows;

// The bias, the clamp to [lo, hi] (v < lo ? lo : v, then hi < low ? hi :
// low, so a NaN passes both) and the canonical NaN, on 8 lanes.
inline __m256 Finish(__m256 sum, __m256 bias, __m256 lo, __m256 hi, __m256 nan) {
  const __m256 v = _mm256_add_ps(sum, bias);
  const __m256 low = _mm256_blendv_ps(v, lo, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
  const __m256 out = _mm256_blendv_ps(low, hi, _mm256_cmp_ps(hi, low, _CMP_LT_OQ));
  return _mm256_blendv_ps(out, nan, _mm256_cmp_ps(out, out, _CMP_UNORD_Q));
}

// y for rows [0, R) of x and units [u0, u0 + width) (width <= 16), whose
// weights start at `half` in their panel.
template <int R>
void Tile(const FloatFc& fc, const float* x, const float* half, int64_t u0, int64_t width, float* y) {
  const int64_t depth = fc.depth;
  __m256 acc[R][2];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < depth; ++k, half += kFloatPanelUnits) {
    const __m256 w0 = _mm256_loadu_ps(half);
    const __m256 w1 = _mm256_loadu_ps(half + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * depth + k);
      acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_mul_ps(w0, xv));
      acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_mul_ps(w1, xv));
    }
  }
  const __m256 lo = _mm256_set1_ps(fc.lo);
  const __m256 hi = _mm256_set1_ps(fc.hi);
  const __m256 nan = _mm256_set1_ps(CanonicalNan(__builtin_nanf("")));
  // The bias and the outputs of a partial half panel go through local copies.
  alignas(32) float bias[kHalfPanel] = {};
  std::memcpy(bias, fc.bias + u0, static_cast<size_t>(width) * sizeof(float));
  const __m256 b0 = _mm256_load_ps(bias);
  const __m256 b1 = _mm256_load_ps(bias + 8);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    float* yr = y + r * fc.units + u0;
    const __m256 v0 = Finish(acc[r][0], b0, lo, hi, nan);
    const __m256 v1 = Finish(acc[r][1], b1, lo, hi, nan);
    if (width == kHalfPanel) {
      _mm256_storeu_ps(yr, v0);
      _mm256_storeu_ps(yr + 8, v1);
    } else {
      alignas(32) float out[kHalfPanel];
      _mm256_store_ps(out, v0);
      _mm256_store_ps(out + 8, v1);
      std::memcpy(yr, out, static_cast<size_t>(width) * sizeof(float));
    }
  }
}

using TileKernel = void (*)(const FloatFc&, const float*, const float*, int64_t, int64_t, float*);

constexpr TileKernel kTiles[kMaxRows] = {Tile<1>, Tile<2>, Tile<3>, Tile<4>, Tile<5>, Tile<6>};

// For each block of rows, every half panel runs over the block's tiles,
// whose heights differ by at most one.
void RunFloatFcAvx2(const FloatFc& fc, const float* x, int64_t rows, float* y) {
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t block = rows - r0 < kRowBlock ? rows - r0 : kRowBlock;
    const int64_t tiles = (block + kMaxRows - 1) / kMaxRows;
    for (int64_t u0 = 0; u0 < fc.units; u0 += kHalfPanel) {
      const int64_t width = fc.units - u0 < kHalfPanel ? fc.units - u0 : kHalfPanel;
      const float* half = fc.panels + u0 / kFloatPanelUnits * kFloatPanelUnits * fc.depth + u0 % kFloatPanelUnits;
      int64_t r = r0;
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t height = block / tiles + (t < block % tiles ? 1 : 0);
        kTiles[height - 1](fc, x + r * fc.depth, half, u0, width, y + r * fc.units);
        r += height;
      }
    }
  }
}

}  // namespace

FloatFcKernel FloatFcAvx2() { return RunFloatFcAvx2; }

}  // namespace kernels
}  // namespace edgemia

#else

namespace edgemia {
namespace kernels {

// This build does not target x86-64 with AVX2, so no CPU it runs on takes this path.
FloatFcKernel FloatFcAvx2() { return nullptr; }

}  // namespace kernels
}  // namespace edgemia

#endif
