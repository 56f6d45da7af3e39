// The float32 fully connected layer of the avx512vnni path. A tile of up to
// 12 rows and one weight panel (32 units in two registers) keeps one sum per
// output in a lane and adds each k's products in order, so the bits are the
// portable loop's (fc_float.h). Rows go in blocks whose panels stay in the
// L2 cache while every tile of the block reads them.
#include "fc_float.h"

#if defined(__x86_64__) && defined(__AVX512F__)

#include <immintrin.h>

namespace edgemia {
namespace kernels {
namespace {

constexpr int kMaxRows = 12;
constexpr int64_t kRowBlock = 8 * kMaxRows;

// The bias, the clamp to [lo, hi] (v < lo ? lo : v, then hi < low ? hi :
// low, so a NaN passes both) and the canonical NaN, on 16 lanes.
inline __m512 Finish(__m512 sum, __m512 bias, __m512 lo, __m512 hi, __m512 nan) {
  const __m512 v = _mm512_add_ps(sum, bias);
  const __m512 low = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), v, lo);
  const __m512 out = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(hi, low, _CMP_LT_OQ), low, hi);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(out, out, _CMP_UNORD_Q), out, nan);
}

// y for rows [0, R) of x and the units of one panel; `width` of its units are real.
template <int R, int NB>
void Tile(const FloatFc& fc, const float* x, const float* panel, int64_t u0, int64_t width, float* y) {
  const int64_t depth = fc.depth;
  __m512 acc[R][NB];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) acc[r][q] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < depth; ++k, panel += kFloatPanelUnits) {
    __m512 w[NB];
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) w[q] = _mm512_loadu_ps(panel + 16 * q);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * depth + k]);
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q) acc[r][q] = _mm512_add_ps(acc[r][q], _mm512_mul_ps(w[q], xv));
    }
  }
  const __m512 lo = _mm512_set1_ps(fc.lo);
  const __m512 hi = _mm512_set1_ps(fc.hi);
  const __m512 nan = _mm512_set1_ps(CanonicalNan(__builtin_nanf("")));
  __mmask16 lanes[NB];
  __m512 bias[NB];
#pragma GCC unroll 2
  for (int q = 0; q < NB; ++q) {
    const int64_t n = width - 16 * q;
    lanes[q] = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1);
    bias[q] = _mm512_maskz_loadu_ps(lanes[q], fc.bias + u0 + 16 * q);
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) {
      _mm512_mask_storeu_ps(y + r * fc.units + u0 + 16 * q, lanes[q], Finish(acc[r][q], bias[q], lo, hi, nan));
    }
  }
}

using TileKernel = void (*)(const FloatFc&, const float*, const float*, int64_t, int64_t, float*);

template <int NB>
constexpr TileKernel kTilesOf[kMaxRows] = {Tile<1, NB>, Tile<2, NB>, Tile<3, NB>, Tile<4, NB>,
                                           Tile<5, NB>, Tile<6, NB>, Tile<7, NB>, Tile<8, NB>,
                                           Tile<9, NB>, Tile<10, NB>, Tile<11, NB>, Tile<12, NB>};

// For each block of rows, every panel runs over the block's tiles, whose
// heights differ by at most one.
void RunFloatFcAvx512(const FloatFc& fc, const float* x, int64_t rows, float* y) {
  const int64_t panels = (fc.units + kFloatPanelUnits - 1) / kFloatPanelUnits;
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t block = rows - r0 < kRowBlock ? rows - r0 : kRowBlock;
    const int64_t tiles = (block + kMaxRows - 1) / kMaxRows;
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t u0 = p * kFloatPanelUnits;
      const int64_t width = fc.units - u0 < kFloatPanelUnits ? fc.units - u0 : kFloatPanelUnits;
      const float* panel = fc.panels + u0 * fc.depth;
      int64_t r = r0;
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t height = block / tiles + (t < block % tiles ? 1 : 0);
        const TileKernel kernel = width > 16 ? kTilesOf<2>[height - 1] : kTilesOf<1>[height - 1];
        kernel(fc, x + r * fc.depth, panel, u0, width, y + r * fc.units);
        r += height;
      }
    }
  }
}

}  // namespace

FloatFcKernel FloatFcAvx512() { return RunFloatFcAvx512; }

}  // namespace kernels
}  // namespace edgemia

#else

namespace edgemia {
namespace kernels {

// This build does not target x86-64 with AVX-512, so no CPU it runs on takes this path.
FloatFcKernel FloatFcAvx512() { return nullptr; }

}  // namespace kernels
}  // namespace edgemia

#endif
