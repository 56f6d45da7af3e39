// The float32 fully connected layer of the avx512vnni path. One zmm register
// contains the 16 partial sums of one dot product, so the sums are the portable
// loop's (fc_float.h). A block of up to 4 rows and 6 units shares each load:
// 24 accumulators. Weights and inputs are taken in cache-sized blocks. Small
// layers (UseColumns) run a row at a time with 16 units per register instead.
#include "fc_float.h"

#if defined(__x86_64__) && defined(__AVX512F__)

#include <immintrin.h>

namespace edgemia {
namespace kernels {
namespace {

constexpr int kRows = 4;
constexpr int kUnits = 6;
// 64 rows of x and 48 rows of weights fit a 1 MiB L2 cache for depths up to about 2,000.
constexpr int64_t kRowBlock = 64;
constexpr int64_t kUnitBlock = 48;

// The reduction and output stage of the portable loop, on one register of
// partial sums: lanes l and l + 8, then l and l + 4, l and l + 2, 0 and 1.
// This file is compiled with -mavx512f, so it calls no template that other
// files also instantiate (std::min, std::max): the linker could keep this
// copy for all of them.
inline float Finish(__m512 sums, float bias, float lo, float hi) {
  // Zero-masking shuffles throughout: GCC 12 warns of an uninitialized
  // source in the unmasked forms and in the 512-to-256-bit casts.
  const __m512 eight = _mm512_add_ps(sums, _mm512_maskz_shuffle_f32x4(0x00FF, sums, sums, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 four = _mm512_add_ps(eight, _mm512_maskz_shuffle_f32x4(0x000F, eight, eight, _MM_SHUFFLE(0, 0, 0, 1)));
  const __m512 two = _mm512_add_ps(four, _mm512_maskz_shuffle_ps(0x0003, four, four, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 one = _mm512_add_ps(two, _mm512_maskz_shuffle_ps(0x0001, two, two, _MM_SHUFFLE(1, 1, 1, 1)));
  const float v = _mm512_cvtss_f32(one) + bias;
  const float low = v < lo ? lo : v;  // std::max(v, lo)
  return CanonicalNan(hi < low ? hi : low);  // std::min(low, hi)
}

template <int R, int U>
void Tile(const FloatFc& fc, const float* x, int64_t u0, float* y) {
  const int64_t depth = fc.depth;
  const float* w = fc.weights + u0 * depth;
  __m512 acc[R][U];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 6
    for (int u = 0; u < U; ++u) acc[r][u] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + kFloatDotLanes <= depth; k += kFloatDotLanes) {
    __m512 xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) xv[r] = _mm512_loadu_ps(x + r * depth + k);
#pragma GCC unroll 6
    for (int u = 0; u < U; ++u) {
      const __m512 wv = _mm512_loadu_ps(w + u * depth + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][u] = _mm512_add_ps(acc[r][u], _mm512_mul_ps(wv, xv[r]));
    }
  }
  if (k < depth) {
    // Only the lanes inside the depth are added to, as in the portable loop.
    const auto mask = static_cast<__mmask16>((1u << (depth - k)) - 1);
    __m512 xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) xv[r] = _mm512_maskz_loadu_ps(mask, x + r * depth + k);
#pragma GCC unroll 6
    for (int u = 0; u < U; ++u) {
      const __m512 wv = _mm512_maskz_loadu_ps(mask, w + u * depth + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][u] = _mm512_mask_add_ps(acc[r][u], mask, acc[r][u], _mm512_mul_ps(wv, xv[r]));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 6
    for (int u = 0; u < U; ++u) y[r * fc.units + u0 + u] = Finish(acc[r][u], fc.bias[u0 + u], fc.lo, fc.hi);
  }
}

// All units of one row, 16 in the lanes of each register. Register l contains
// the 16 units' partial sums of lane class l (k = l mod 16), added in the
// order of k as in the portable loop, and the pairwise reduction of the
// classes is the same vertical adds. So the bits are the portable loop's.
void RowByColumns(const FloatFc& fc, const float* x, float* y) {
  const int64_t depth = fc.depth;
  const __m512 lo = _mm512_set1_ps(fc.lo);
  const __m512 hi = _mm512_set1_ps(fc.hi);
  const __m512 nan = _mm512_set1_ps(CanonicalNan(__builtin_nanf("")));
  const float* w = fc.columns;
  for (int64_t u0 = 0; u0 < fc.units; u0 += 16) {
    __m512 part[kFloatDotLanes];
#pragma GCC unroll 16
    for (int l = 0; l < kFloatDotLanes; ++l) part[l] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + kFloatDotLanes <= depth; k += kFloatDotLanes, w += 256) {
#pragma GCC unroll 16
      for (int l = 0; l < kFloatDotLanes; ++l) {
        const __m512 wv = _mm512_loadu_ps(w + l * 16);
        part[l] = _mm512_add_ps(part[l], _mm512_mul_ps(wv, _mm512_set1_ps(x[k + l])));
      }
    }
    if (k < depth) {
      // Only the lane classes inside the depth are added to, as in the portable loop.
#pragma GCC unroll 16
      for (int l = 0; l < kFloatDotLanes; ++l) {
        if (k + l < depth) {
          const __m512 wv = _mm512_loadu_ps(w + l * 16);
          part[l] = _mm512_add_ps(part[l], _mm512_mul_ps(wv, _mm512_set1_ps(x[k + l])));
        }
      }
      w += 256;
    }
#pragma GCC unroll 4
    for (int width = kFloatDotLanes / 2; width > 0; width /= 2) {
#pragma GCC unroll 8
      for (int l = 0; l < width; ++l) part[l] = _mm512_add_ps(part[l], part[l + width]);
    }
    const int64_t n = fc.units - u0 < 16 ? fc.units - u0 : 16;
    const auto lanes = static_cast<__mmask16>(n == 16 ? 0xFFFF : (1u << n) - 1);
    const __m512 v = _mm512_add_ps(part[0], _mm512_maskz_loadu_ps(lanes, fc.bias + u0));
    // v < lo ? lo : v, then hi < low ? hi : low, as Finish does: a NaN passes both.
    const __m512 low = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), v, lo);
    __m512 out = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(hi, low, _CMP_LT_OQ), low, hi);
    out = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(out, out, _CMP_UNORD_Q), out, nan);
    _mm512_mask_storeu_ps(y + u0, lanes, out);
  }
}

using TileKernel = void (*)(const FloatFc&, const float*, int64_t, float*);

// kTiles[R - 1][U - 1].
constexpr TileKernel kTiles[kRows][kUnits] = {
    {Tile<1, 1>, Tile<1, 2>, Tile<1, 3>, Tile<1, 4>, Tile<1, 5>, Tile<1, 6>},
    {Tile<2, 1>, Tile<2, 2>, Tile<2, 3>, Tile<2, 4>, Tile<2, 5>, Tile<2, 6>},
    {Tile<3, 1>, Tile<3, 2>, Tile<3, 3>, Tile<3, 4>, Tile<3, 5>, Tile<3, 6>},
    {Tile<4, 1>, Tile<4, 2>, Tile<4, 3>, Tile<4, 4>, Tile<4, 5>, Tile<4, 6>},
};

void RunFloatFcAvx512(const FloatFc& fc, const float* x, int64_t rows, float* y) {
  if (fc.columns != nullptr) {
    for (int64_t r = 0; r < rows; ++r) RowByColumns(fc, x + r * fc.depth, y + r * fc.units);
    return;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
    const int64_t r_end = r0 + kRowBlock < rows ? r0 + kRowBlock : rows;
    for (int64_t b0 = 0; b0 < fc.units; b0 += kUnitBlock) {
      const int64_t b_end = b0 + kUnitBlock < fc.units ? b0 + kUnitBlock : fc.units;
      for (int64_t r = r0; r < r_end; r += kRows) {
        const int64_t n_rows = r_end - r < kRows ? r_end - r : kRows;
        for (int64_t u = b0; u < b_end; u += kUnits) {
          const int64_t n_units = b_end - u < kUnits ? b_end - u : kUnits;
          kTiles[n_rows - 1][n_units - 1](fc, x + r * fc.depth, u, y + r * fc.units);
        }
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
