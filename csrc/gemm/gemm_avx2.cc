// int8 GEMM for the avx2 instruction-set path.
//
// Both operands are sign-extended to int16 when packed, and vpmaddwd
// multiplies pairs of int16 and adds each pair into an int32 lane. A pair of
// int8 products is at most 2 * 128 * 128 = 2^15 in magnitude, which int32
// holds, so nothing saturates. (vpmaddubsw, the u8 x s8 instruction, would
// saturate its int16 pair sums and is not used.)
#include "gemm.h"
#include "tiling.h"

#if defined(__x86_64__) && defined(__AVX2__)

#include <immintrin.h>

#include <cstring>

namespace edgemia {
namespace gemm {
namespace {

constexpr int64_t kMr = 6;              // rows of A per microkernel call
constexpr int64_t kNr = 16;             // columns per weight panel: two ymm of 8 int32
constexpr int64_t kRowBlock = 16 * kMr;  // rows of A packed at a time

// Panel p holds columns [16p, 16p + 16) (the last one 8 wide when at most 8
// columns remain). For each pair of k it stores two int16 per column:
// columns 0..7 of the panel, then 8..15. Padding holds zeros.
void PackS8S32Nr16C2(const int8_t* b, int64_t n, int64_t k, PackedB* out) {
  const int64_t kp = RoundUp(k, 2);
  const int64_t panels = (n + kNr - 1) / kNr;
  int8_t* data = PreparePackedB(out, n, k, panels * kNr * kp * static_cast<int64_t>(sizeof(int16_t)), 0);
  PackPanels(b, n, k, kp, kNr, 2, 8, reinterpret_cast<int16_t*>(data));
}

// Rows of A sign-extended to int16 in a contiguous block, k padded to even.
void PackRows(const int8_t* a, int64_t a_stride, int64_t rows, int64_t k, int64_t kp, int16_t* packed) {
  for (int64_t i = 0; i < rows; ++i) {
    const int8_t* ai = a + i * a_stride;
    int16_t* pi = packed + i * kp;
    int64_t q = 0;
    for (; q + 16 <= k; q += 16) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ai + q));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pi + q), _mm256_cvtepi8_epi16(bytes));
    }
    for (; q < k; ++q) pi[q] = ai[q];
    for (; q < kp; ++q) pi[q] = 0;
  }
}

// C[MR rows][8 * NB columns] = A . B for one panel. Rows of `a` are kp int16
// apart and `pairs` = kp / 2.
template <int MR, int NB>
void s8s32_gemm_MRx16c2__avx2(const int16_t* a, int64_t kp, const int16_t* w, int64_t pairs, int32_t* c,
                              int64_t c_stride, int64_t width) {
  __m256i acc[MR][NB];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) acc[r][q] = _mm256_setzero_si256();
  }
  for (int64_t g = 0; g < pairs; ++g) {
    __m256i b[NB];
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) b[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + q * 16));
    w += NB * 16;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      int32_t a2;
      std::memcpy(&a2, a + r * kp + g * 2, 4);
      const __m256i va = _mm256_set1_epi32(a2);
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q) acc[r][q] = _mm256_add_epi32(acc[r][q], _mm256_madd_epi16(va, b[q]));
    }
  }
  // A partial panel goes through a local tile (CopyTileColumns).
  int32_t* out = c;
  int64_t out_stride = c_stride;
  alignas(32) int32_t tile[MR][8 * NB];
  if (width < 8 * NB) {
    out = &tile[0][0];
    out_stride = 8 * NB;
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * out_stride + 8 * q), acc[r][q]);
    }
  }
  if (out != c) CopyTileColumns(&tile[0][0], 8 * NB, MR, width, c, c_stride);
}

using Microkernel = void (*)(const int16_t*, int64_t, const int16_t*, int64_t, int32_t*, int64_t, int64_t);

// kMicrokernels[NB - 1][MR - 1].
constexpr Microkernel kMicrokernels[2][kMr] = {
    {s8s32_gemm_MRx16c2__avx2<1, 1>, s8s32_gemm_MRx16c2__avx2<2, 1>, s8s32_gemm_MRx16c2__avx2<3, 1>,
     s8s32_gemm_MRx16c2__avx2<4, 1>, s8s32_gemm_MRx16c2__avx2<5, 1>, s8s32_gemm_MRx16c2__avx2<6, 1>},
    {s8s32_gemm_MRx16c2__avx2<1, 2>, s8s32_gemm_MRx16c2__avx2<2, 2>, s8s32_gemm_MRx16c2__avx2<3, 2>,
     s8s32_gemm_MRx16c2__avx2<4, 2>, s8s32_gemm_MRx16c2__avx2<5, 2>, s8s32_gemm_MRx16c2__avx2<6, 2>},
};

void RunAvx2(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride) {
  const int64_t kp = RoundUp(b.k, 2);
  auto* packed = reinterpret_cast<int16_t*>(
      ThreadScratch((m < kRowBlock ? m : kRowBlock) * kp * static_cast<int64_t>(sizeof(int16_t))));
  const auto* weights = reinterpret_cast<const int16_t*>(b.panels());
  ForEachTile(
      m, b.n, kMr, kNr, kRowBlock,
      [&](int64_t first, int64_t rows) { PackRows(a + first * a_stride, a_stride, rows, b.k, kp, packed); },
      [&](int64_t first, int64_t offset, int64_t rows, int64_t panel, int64_t width) {
        kMicrokernels[width > 8 ? 1 : 0][rows - 1](packed + offset * kp, kp, weights + panel * kNr * kp, kp / 2,
                                                   c + (first + offset) * c_stride + panel * kNr, c_stride, width);
      });
}

// Eight outputs of the fp32 stage, written to y[0..7].
inline void Requantize8(const int32_t* acc, const int32_t* bias, const float* scale, __m256 lo, __m256 hi,
                        __m256i zero_point, int8_t* y) {
  const __m256i sum = _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc)),
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias)));
  __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), _mm256_loadu_ps(scale));
  f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
  // vcvtps2dq rounds in the MXCSR mode, as std::nearbyint does.
  const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(f), zero_point);
  // The values are already in -128..127, so the saturating packs are exact.
  const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(y), _mm_packs_epi16(words, words));
}

void qs8_requantize_fp32__avx2(const int32_t* acc, int64_t acc_stride, int64_t m, int64_t n,
                               const Fp32Requantization& stage, int8_t* y, int64_t y_stride) {
  const __m256 lo = _mm256_set1_ps(stage.min_less_zero_point);
  const __m256 hi = _mm256_set1_ps(stage.max_less_zero_point);
  const __m256i zero_point = _mm256_set1_epi32(stage.zero_point);
  ForEachColumnBlock<8>(acc, acc_stride, m, n, stage, y, y_stride,
                        [&](const int32_t* a, const int32_t* bias, const float* scale, int8_t* out) {
                          Requantize8(a, bias, scale, lo, hi, zero_point, out);
                        });
}

// Six independent vpmaddwd + vpaddd chains with their own operands: the
// instruction pair of the microkernel above, 16 multiply-accumulates per
// pair. Written in asm because GCC 12 spills the accumulators of the same
// loop in intrinsics.
int64_t PeakLoopAvx2(int64_t iterations) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0;
  const __m256i u0 = _mm256_set1_epi16(1), u1 = _mm256_set1_epi16(2), u2 = _mm256_set1_epi16(3);
  const __m256i u3 = _mm256_set1_epi16(4), u4 = _mm256_set1_epi16(5), u5 = _mm256_set1_epi16(6);
  const __m256i s = _mm256_set1_epi16(-5);
  __m256i t0, t1;
  for (int64_t it = 0; it < iterations; ++it) {
    asm volatile(
        "vpmaddwd %[s], %[u0], %[t0]\n\t"
        "vpmaddwd %[s], %[u1], %[t1]\n\t"
        "vpaddd %[t0], %[a0], %[a0]\n\t"
        "vpaddd %[t1], %[a1], %[a1]\n\t"
        "vpmaddwd %[s], %[u2], %[t0]\n\t"
        "vpmaddwd %[s], %[u3], %[t1]\n\t"
        "vpaddd %[t0], %[a2], %[a2]\n\t"
        "vpaddd %[t1], %[a3], %[a3]\n\t"
        "vpmaddwd %[s], %[u4], %[t0]\n\t"
        "vpmaddwd %[s], %[u5], %[t1]\n\t"
        "vpaddd %[t0], %[a4], %[a4]\n\t"
        "vpaddd %[t1], %[a5], %[a5]\n\t"
        : [a0] "+x"(acc0), [a1] "+x"(acc1), [a2] "+x"(acc2), [a3] "+x"(acc3), [a4] "+x"(acc4), [a5] "+x"(acc5),
          [t0] "=&x"(t0), [t1] "=&x"(t1)
        : [u0] "x"(u0), [u1] "x"(u1), [u2] "x"(u2), [u3] "x"(u3), [u4] "x"(u4), [u5] "x"(u5), [s] "x"(s));
  }
  const __m256i total = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(acc0, acc1), _mm256_add_epi32(acc2, acc3)),
                                         _mm256_add_epi32(acc4, acc5));
  volatile int32_t sink = _mm256_extract_epi32(total, 0);
  (void)sink;
  return iterations * 6 * 16;
}

}  // namespace

const Int8Gemm* Avx2Gemm() {
  static const Int8Gemm gemm{"avx2", PackS8S32Nr16C2, RunAvx2, qs8_requantize_fp32__avx2, PeakLoopAvx2,
                             nullptr, nullptr};
  return &gemm;
}

}  // namespace gemm
}  // namespace edgemia

#else

namespace edgemia {
namespace gemm {

// This build does not target x86-64 with AVX2, so no CPU it runs on takes this path.
const Int8Gemm* Avx2Gemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia

#endif
