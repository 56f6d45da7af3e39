// int8 GEMM for the avx512vnni instruction-set path (AVX-512 F, BW, VL and VNNI).
//
// vpdpbusd multiplies unsigned by signed bytes and adds groups of four
// products into int32 lanes without saturating anything in between. The
// microkernel reads the activations in place, four bytes at a time, and
// flips their sign bits to get a + 128 (unsigned). The weights stay signed,
// so each sum is sum_k (a + 128) * b = sum_k a * b + 128 * sum_k b. Every
// accumulator starts at -128 * sum_k b of its column, computed when the
// weights are packed, to cancel the excess. Int32 additions wrap, so the
// result is exact whenever it fits in int32.
#include "gemm.h"
#include "tiling.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)

// GCC 12's AVX-512 headers start some intrinsics from a deliberately
// uninitialized vector, which -Wextra reports at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "flip_rows_avx512.h"
#include "fp32_stage_avx512.h"

namespace edgemia {
namespace gemm {
namespace {

constexpr int64_t kMr = 12;          // rows of A per microkernel call
constexpr int64_t kNr = 32;          // columns per weight panel: two zmm of 16 int32
constexpr int64_t kRowBlock = 8 * kMr;  // rows of A per pass over the weight panels
constexpr uint32_t kSignBits = 0x80808080u;  // a ^ kSignBits = a + 128 in each byte
constexpr int64_t kNarrowColumns = 4;   // widest layer the narrow kernel runs
constexpr int64_t kNarrowRows = 16;     // rows per narrow tile, one per int32 lane
constexpr int64_t kNarrowChunk = 16;    // bytes of k per row and step of the narrow kernel
// Rows per tile of segmented A (SegmentedRows). Each row has its own pointer,
// and with more than 8 of them GCC 12 runs out of general registers and keeps
// the accumulators on the stack.
constexpr int64_t kSegmentsMr = 8;
// Smallest depth at which RunTiles copies the rows of A with flipped sign bits.
constexpr int64_t kFlipDepth = 128;

// Panel p holds columns [32p, 32p + 32) (the last one 16 wide when at most 16
// columns remain). For each group of four k it stores 4 bytes per column:
// columns 0..15 of the panel, then 16..31. Padding rows and columns hold 0.
// out->column[j] = -128 * sum_k b[j][k], padded with zeros to whole panels.
//
// A layer of at most kNarrowColumns columns also gets the layout of the
// narrow kernel after its panel: B row-major with each row padded with zeros
// to a multiple of 16 bytes (NarrowWeights).
void PackS8S32Nr32C4(const int8_t* b, int64_t n, int64_t k, PackedB* out) {
  const int64_t kp = RoundUp(k, 4);
  const int64_t panels = (n + kNr - 1) / kNr;
  const int64_t narrow = n <= kNarrowColumns ? n * RoundUp(k, kNarrowChunk) : 0;
  int8_t* data = PreparePackedB(out, n, k, panels * kNr * kp + narrow, panels * kNr);
  PackPanels(b, n, k, kp, kNr, 4, 16, data);
  if (narrow > 0) {
    int8_t* rows = data + panels * kNr * kp;
    for (int64_t j = 0; j < n; ++j) std::memcpy(rows + j * RoundUp(k, kNarrowChunk), b + j * k, static_cast<size_t>(k));
  }
  for (int64_t j = 0; j < n; ++j) {
    int32_t sum = 0;
    for (int64_t q = 0; q < k; ++q) sum += b[j * k + q];
    out->column[static_cast<size_t>(j)] = -128 * sum;
  }
}

// The destination of a microkernel tile: int32 sums to c, or, when stage is
// set, the fp32 output stage of the panel's columns (from column0 on) to y
// (without its float clamps when stage->saturation_clamps is set).
struct TileOutput {
  int32_t* c = nullptr;
  int64_t c_stride = 0;
  const Fp32Requantization* stage = nullptr;
  int64_t column0 = 0;
  int8_t* y = nullptr;
  int64_t y_stride = 0;
};

// The fused output stage of a tile's sums in registers, to out.y from
// column out.column0 of the stage on. Without the float clamps when
// out.stage->saturation_clamps is set (SaturationClamps).
template <int MR, int NB>
__attribute__((always_inline)) inline void StoreStageTile(const __m512i (&acc)[MR][NB], const __mmask16 (&lanes)[NB],
                                                          const TileOutput& out) {
  const __m512 lo = _mm512_set1_ps(out.stage->min_less_zero_point);
  const __m512 hi = _mm512_set1_ps(out.stage->max_less_zero_point);
  const __m512i zero_point = _mm512_set1_epi32(out.stage->zero_point);
  __m512 scale[NB];
#pragma GCC unroll 2
  for (int q = 0; q < NB; ++q) scale[q] = _mm512_maskz_loadu_ps(lanes[q], out.stage->scale + out.column0 + 16 * q);
  int8_t* const y = out.y;
  const int64_t y_stride = out.y_stride;
  if (out.stage->saturation_clamps) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q) {
        const __m128i bytes = Fp32StageBytes(acc[r][q], scale[q], false, lo, hi, zero_point);
        _mm_mask_storeu_epi8(y + r * y_stride + 16 * q, lanes[q], bytes);
      }
    }
    return;
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) {
      const __m128i bytes = Fp32StageBytes(acc[r][q], scale[q], true, lo, hi, zero_point);
      _mm_mask_storeu_epi8(y + r * y_stride + 16 * q, lanes[q], bytes);
    }
  }
}

// C[MR rows][16 * NB columns] = A . B for one panel. Rows of `a` are a_stride
// bytes apart, `groups` = k rounded up to a multiple of 4, divided by 4, and
// the last group may read up to 3 bytes past the row, which meet zero
// weights. correction[j] is
// -128 * sum_k b[j][k] for the panel's columns. With one or two rows there are too few
// accumulators to hide the latency of vpdpbusd, so kSets sets of them take
// turns over the groups of k and are added at the end.
template <int MR, int NB, bool kFlipped>
void s8s32_gemm_MRx32c4__avx512vnni(const int8_t* a, int64_t a_stride, const int32_t* correction, const int8_t* w,
                                     int64_t groups, int64_t width, const TileOutput& out) {
  __mmask16 lanes[NB];
  __m512i start[NB];
#pragma GCC unroll 2
  for (int q = 0; q < NB; ++q) {
    lanes[q] = LowBits16(width - 16 * q);
    start[q] = _mm512_loadu_si512(correction + 16 * q);
    // The fused output stage adds the bias here: int32 additions wrap, so the order does not matter.
    if (out.stage != nullptr) {
      start[q] = _mm512_add_epi32(start[q],
                                  _mm512_maskz_loadu_epi32(lanes[q], out.stage->bias + out.column0 + 16 * q));
    }
  }
  constexpr int kSets = MR <= 2 ? 4 : 1;
  // The sign flip is a vector xor so that the compiler emits one vpxord with
  // a broadcast memory operand per row. A scalar xor needs a move from a
  // general register into a vector register per row. Those moves limited the
  // loop on the AMD EPYC of family 26 in BENCHMARKS.md, whose measured peak is
  // more than one vpdpbusd zmm per cycle.
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(kSignBits));
  __m512i acc[kSets][MR][NB];
#pragma GCC unroll 4
  for (int s = 0; s < kSets; ++s) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q) acc[s][r][q] = s == 0 ? start[q] : _mm512_setzero_si512();
    }
  }
  int64_t g = 0;
  for (; g + kSets <= groups; g += kSets) {
#pragma GCC unroll 4
    for (int s = 0; s < kSets; ++s) {
      __m512i b[NB];
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q) b[q] = _mm512_load_si512(w + q * 64);
      w += NB * 64;
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        int32_t a4;
        std::memcpy(&a4, a + r * a_stride + (g + s) * 4, 4);
        const __m512i va = kFlipped ? _mm512_set1_epi32(a4) : _mm512_xor_si512(_mm512_set1_epi32(a4), sign);
#pragma GCC unroll 2
        for (int q = 0; q < NB; ++q) acc[s][r][q] = _mm512_dpbusd_epi32(acc[s][r][q], va, b[q]);
      }
    }
  }
  if (kSets > 1) {
    for (; g < groups; ++g) {
      __m512i b[NB];
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q) b[q] = _mm512_load_si512(w + q * 64);
      w += NB * 64;
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        int32_t a4;
        std::memcpy(&a4, a + r * a_stride + g * 4, 4);
        const __m512i va = kFlipped ? _mm512_set1_epi32(a4) : _mm512_xor_si512(_mm512_set1_epi32(a4), sign);
#pragma GCC unroll 2
        for (int q = 0; q < NB; ++q) acc[0][r][q] = _mm512_dpbusd_epi32(acc[0][r][q], va, b[q]);
      }
    }
#pragma GCC unroll 4
    for (int s = 1; s < kSets; ++s) {
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
        for (int q = 0; q < NB; ++q) acc[0][r][q] = _mm512_add_epi32(acc[0][r][q], acc[s][r][q]);
      }
    }
  }
  if (out.stage != nullptr) {
    StoreStageTile<MR, NB>(acc[0], lanes, out);
    return;
  }
  // A partial panel goes through a local tile (CopyTileColumns).
  int32_t* c = out.c;
  int64_t c_stride = out.c_stride;
  alignas(64) int32_t tile[MR][16 * NB];
  if (width < 16 * NB) {
    c = &tile[0][0];
    c_stride = 16 * NB;
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) _mm512_storeu_si512(c + r * c_stride + 16 * q, acc[0][r][q]);
  }
  if (c != out.c) CopyTileColumns(&tile[0][0], 16 * NB, MR, width, out.c, out.c_stride);
}

// C[MR rows][width <= 8 columns] for a last panel that is 16 columns wide in
// the packing: the same steps as the zmm microkernel on the panel's first 8
// columns, in ymm registers. Zen 4 executes a zmm instruction as two 256-bit
// halves, so a narrow output layer, such as the two logits of a binary
// classifier, does half the work this way.
template <int MR>
void s8s32_gemm_MRx8c4__avx512vnni(const int8_t* a, int64_t a_stride, const int32_t* correction, const int8_t* w,
                                    int64_t groups, int64_t width, const TileOutput& out) {
  const __mmask8 lanes = static_cast<__mmask8>(LowBits16(width));
  __m256i start = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(correction));
  if (out.stage != nullptr) start = _mm256_add_epi32(start, _mm256_maskz_loadu_epi32(lanes, out.stage->bias + out.column0));
  constexpr int kSets = MR <= 2 ? 4 : 1;
  const __m256i sign = _mm256_set1_epi32(static_cast<int32_t>(kSignBits));
  __m256i acc[kSets][MR];
#pragma GCC unroll 4
  for (int s = 0; s < kSets; ++s) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) acc[s][r] = s == 0 ? start : _mm256_setzero_si256();
  }
  int64_t g = 0;
  for (; g + kSets <= groups; g += kSets) {
#pragma GCC unroll 4
    for (int s = 0; s < kSets; ++s) {
      const __m256i b = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      w += 64;  // a group of the 16-wide panel; its columns 8..15 are not read
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        int32_t a4;
        std::memcpy(&a4, a + r * a_stride + (g + s) * 4, 4);
        acc[s][r] = _mm256_dpbusd_epi32(acc[s][r], _mm256_xor_si256(_mm256_set1_epi32(a4), sign), b);
      }
    }
  }
  if (kSets > 1) {
    for (; g < groups; ++g) {
      const __m256i b = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
      w += 64;
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        int32_t a4;
        std::memcpy(&a4, a + r * a_stride + g * 4, 4);
        acc[0][r] = _mm256_dpbusd_epi32(acc[0][r], _mm256_xor_si256(_mm256_set1_epi32(a4), sign), b);
      }
    }
#pragma GCC unroll 4
    for (int s = 1; s < kSets; ++s) {
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) acc[0][r] = _mm256_add_epi32(acc[0][r], acc[s][r]);
    }
  }
  if (out.stage != nullptr) {
    const __m256 lo = _mm256_set1_ps(out.stage->min_less_zero_point);
    const __m256 hi = _mm256_set1_ps(out.stage->max_less_zero_point);
    const __m256i zero_point = _mm256_set1_epi32(out.stage->zero_point);
    const __m256 scale = _mm256_maskz_loadu_ps(lanes, out.stage->scale + out.column0);
    const bool clamp = !out.stage->saturation_clamps;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[0][r]), scale);
      if (clamp) f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
      const __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(f), zero_point);
      _mm_mask_storeu_epi8(out.y + r * out.y_stride, lanes, _mm256_cvtsepi32_epi8(v));
    }
    return;
  }
  alignas(32) int32_t tile[MR][8];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) _mm256_store_si256(reinterpret_cast<__m256i*>(tile[r]), acc[0][r]);
  CopyTileColumns(&tile[0][0], 8, MR, width, out.c, out.c_stride);
}

using Microkernel = void (*)(const int8_t*, int64_t, const int32_t*, const int8_t*, int64_t, int64_t,
                             const TileOutput&);

constexpr Microkernel kNarrowMicrokernels[kMr] = {
    s8s32_gemm_MRx8c4__avx512vnni<1>, s8s32_gemm_MRx8c4__avx512vnni<2>,  s8s32_gemm_MRx8c4__avx512vnni<3>,
    s8s32_gemm_MRx8c4__avx512vnni<4>, s8s32_gemm_MRx8c4__avx512vnni<5>,  s8s32_gemm_MRx8c4__avx512vnni<6>,
    s8s32_gemm_MRx8c4__avx512vnni<7>, s8s32_gemm_MRx8c4__avx512vnni<8>,  s8s32_gemm_MRx8c4__avx512vnni<9>,
    s8s32_gemm_MRx8c4__avx512vnni<10>, s8s32_gemm_MRx8c4__avx512vnni<11>, s8s32_gemm_MRx8c4__avx512vnni<12>};

// kMicrokernels[flipped][NB - 1][MR - 1]: `flipped` for rows of A whose sign bits are already flipped.
constexpr Microkernel kMicrokernels[2][2][kMr] = {
    {{s8s32_gemm_MRx32c4__avx512vnni<1, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<2, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<3, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<4, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<5, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<6, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<7, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<8, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<9, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<10, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<11, 1, false>, s8s32_gemm_MRx32c4__avx512vnni<12, 1, false>},
     {s8s32_gemm_MRx32c4__avx512vnni<1, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<2, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<3, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<4, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<5, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<6, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<7, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<8, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<9, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<10, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<11, 2, false>, s8s32_gemm_MRx32c4__avx512vnni<12, 2, false>}},
    {{s8s32_gemm_MRx32c4__avx512vnni<1, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<2, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<3, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<4, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<5, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<6, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<7, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<8, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<9, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<10, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<11, 1, true>, s8s32_gemm_MRx32c4__avx512vnni<12, 1, true>},
     {s8s32_gemm_MRx32c4__avx512vnni<1, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<2, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<3, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<4, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<5, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<6, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<7, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<8, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<9, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<10, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<11, 2, true>, s8s32_gemm_MRx32c4__avx512vnni<12, 2, true>}},
};

// The row-major weights of a layer with at most kNarrowColumns columns,
// which follow its panel: row j starts at j * RoundUp(k, kNarrowChunk).
const int8_t* NarrowWeights(const PackedB& b) { return b.panels() + kNr * RoundUp(b.k, 4); }

// Flips the sign bits of 16 bytes of k of four rows, a_stride apart, into
// one register: row r in 128-bit lane r. Masked bytes read as zero; they
// meet the zero padding of the weights.
template <bool kMasked>
inline __m512i LoadFourRows(const int8_t* a, int64_t a_stride, __mmask16 bytes, __m512i sign) {
  __m512i z;
  if (kMasked) {
    z = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(bytes, a));
    z = _mm512_inserti32x4(z, _mm_maskz_loadu_epi8(bytes, a + a_stride), 1);
    z = _mm512_inserti32x4(z, _mm_maskz_loadu_epi8(bytes, a + 2 * a_stride), 2);
    z = _mm512_inserti32x4(z, _mm_maskz_loadu_epi8(bytes, a + 3 * a_stride), 3);
  } else {
    z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + a_stride)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 2 * a_stride)), 2);
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 3 * a_stride)), 3);
  }
  return _mm512_xor_si512(z, sign);
}

// The fp32 output stage of 16 rows x NC columns, for layers too narrow for
// the panel microkernels (the logits of a binary classifier, say), which
// would leave most lanes of every vpdpbusd idle. Each step takes 16 bytes of
// k from 16 rows: four registers of four rows, one row per 128-bit lane,
// each multiplied with the column's 16 weights broadcast to every lane. Lane
// 4r + g of each of a column's four registers then has the sum of group g of
// its row r. Two rounds of pairwise sums across registers leave the sum of
// row r in lane r, and the stage then works on 16 rows of one column at once.
template <int NC>
void s8s32_gemm_16xNCc16__avx512vnni(const int8_t* a, int64_t a_stride, int64_t k, const int32_t* correction,
                                      const int8_t* w, const Fp32Requantization& stage, int8_t* y,
                                      int64_t y_stride) {
  const int64_t kq = RoundUp(k, kNarrowChunk);
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(kSignBits));
  __m512i acc[NC][4];
#pragma GCC unroll 4
  for (int j = 0; j < NC; ++j) {
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) acc[j][i] = _mm512_setzero_si512();
  }
  const auto step = [&](int64_t q, const __m512i (&rows)[4]) {
#pragma GCC unroll 4
    for (int j = 0; j < NC; ++j) {
      const __m512i wj = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(w + j * kq + q)));
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) acc[j][i] = _mm512_dpbusd_epi32(acc[j][i], rows[i], wj);
    }
  };
  // Whole steps may read up to kOverreadA bytes past k; the last step masks
  // the bytes beyond that.
  int64_t q = 0;
  for (; q + kNarrowChunk <= k + kOverreadA; q += kNarrowChunk) {
    __m512i rows[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) rows[i] = LoadFourRows<false>(a + 4 * i * a_stride + q, a_stride, 0, sign);
    step(q, rows);
  }
  if (q < k) {
    const __mmask16 bytes = LowBits16(k - q);
    __m512i rows[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) rows[i] = LoadFourRows<true>(a + 4 * i * a_stride + q, a_stride, bytes, sign);
    step(q, rows);
  }
  const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odds = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const auto pair_sums = [&](__m512i x, __m512i z) {
    return _mm512_add_epi32(_mm512_permutex2var_epi32(x, evens, z), _mm512_permutex2var_epi32(x, odds, z));
  };
  const __m512 lo = _mm512_set1_ps(stage.min_less_zero_point);
  const __m512 hi = _mm512_set1_ps(stage.max_less_zero_point);
  const __m512i zero_point = _mm512_set1_epi32(stage.zero_point);
  __m128i column[NC];
#pragma GCC unroll 4
  for (int j = 0; j < NC; ++j) {
    // Rows 0..7 and 8..15 with two halves each, then one sum per row.
    __m512i sum = pair_sums(pair_sums(acc[j][0], acc[j][1]), pair_sums(acc[j][2], acc[j][3]));
    // int32 additions wrap, so adding the correction and bias last gives the same sum.
    sum = _mm512_add_epi32(sum, _mm512_add_epi32(_mm512_set1_epi32(correction[j]), _mm512_set1_epi32(stage.bias[j])));
    const __m512 scale = _mm512_set1_ps(stage.scale[j]);
    column[j] = Fp32StageBytes(sum, scale, !stage.saturation_clamps, lo, hi, zero_point);
  }
  // Interleave the columns into rows where the output rows are contiguous.
  const auto store = [&](int64_t offset, __m128i bytes) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + offset), bytes);
  };
  if constexpr (NC == 1) {
    if (y_stride == 1) {
      store(0, column[0]);
      return;
    }
  } else if constexpr (NC == 2) {
    if (y_stride == 2) {
      store(0, _mm_unpacklo_epi8(column[0], column[1]));
      store(16, _mm_unpackhi_epi8(column[0], column[1]));
      return;
    }
  } else if constexpr (NC == 4) {
    if (y_stride == 4) {
      const __m128i low01 = _mm_unpacklo_epi8(column[0], column[1]);
      const __m128i high01 = _mm_unpackhi_epi8(column[0], column[1]);
      const __m128i low23 = _mm_unpacklo_epi8(column[2], column[3]);
      const __m128i high23 = _mm_unpackhi_epi8(column[2], column[3]);
      store(0, _mm_unpacklo_epi16(low01, low23));
      store(16, _mm_unpackhi_epi16(low01, low23));
      store(32, _mm_unpacklo_epi16(high01, high23));
      store(48, _mm_unpackhi_epi16(high01, high23));
      return;
    }
  }
  alignas(16) int8_t bytes[NC][kNarrowRows];
#pragma GCC unroll 4
  for (int j = 0; j < NC; ++j) _mm_store_si128(reinterpret_cast<__m128i*>(bytes[j]), column[j]);
  for (int64_t r = 0; r < kNarrowRows; ++r) {
    for (int j = 0; j < NC; ++j) y[r * y_stride + j] = bytes[j][r];
  }
}

using NarrowKernel = void (*)(const int8_t*, int64_t, int64_t, const int32_t*, const int8_t*,
                              const Fp32Requantization&, int8_t*, int64_t);

constexpr NarrowKernel kNarrowKernels[kNarrowColumns] = {
    s8s32_gemm_16xNCc16__avx512vnni<1>, s8s32_gemm_16xNCc16__avx512vnni<2>, s8s32_gemm_16xNCc16__avx512vnni<3>,
    s8s32_gemm_16xNCc16__avx512vnni<4>};

// Runs every tile of A . B, writing int32 sums (stage == nullptr) or int8 outputs.
// Products wider than 16 columns with a depth of at least kFlipDepth first copy
// each block of rows with the sign bits flipped. Their tiles read that copy,
// and the zmm microkernel broadcasts each group of four bytes with a plain
// load instead of a load and an xor. On the Intel Xeon of BENCHMARKS.md this
// made the GEMM-bound MLP about 30% faster (benchmarks/compare_builds.py). The
// tabular MLP, with depths of 30 and 64, was a few percent slower with the copy.
void RunTiles(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride,
              const Fp32Requantization* stage, int8_t* y, int64_t y_stride) {
  const int64_t kp = RoundUp(b.k, 4);
  const bool flip = b.n > 16 && b.k >= kFlipDepth && m >= kMr;
  int8_t* staged = nullptr;
  if (flip) staged = ThreadScratch(std::min(m, kRowBlock) * kp);
  ForEachTile(
      m, b.n, kMr, kNr, kRowBlock,
      [&](int64_t first, int64_t rows) {
        if (flip) CopyRowsFlipped(a + first * a_stride, a_stride, rows, b.k, kp, kp, staged);
      },
      [&](int64_t first, int64_t offset, int64_t rows, int64_t panel, int64_t width) {
        TileOutput out;
        if (stage == nullptr) {
          out.c = c + (first + offset) * c_stride + panel * kNr;
          out.c_stride = c_stride;
        } else {
          out.stage = stage;
          out.column0 = panel * kNr;
          out.y = y + (first + offset) * y_stride + panel * kNr;
          out.y_stride = y_stride;
        }
        const int8_t* w = b.panels() + panel * kNr * kp;
        const int32_t* correction = b.column.data() + panel * kNr;
        if (width <= 8) {
          // The ymm kernel flips the bytes itself, so it reads A in place.
          kNarrowMicrokernels[rows - 1](a + (first + offset) * a_stride, a_stride, correction, w, kp / 4, width, out);
        } else if (flip) {
          kMicrokernels[1][width > 16 ? 1 : 0][rows - 1](staged + offset * kp, kp, correction, w, kp / 4, width, out);
        } else {
          kMicrokernels[0][width > 16 ? 1 : 0][rows - 1](a + (first + offset) * a_stride, a_stride, correction, w,
                                                         kp / 4, width, out);
        }
      });
}

void RunAvx512Vnni(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride) {
  RunTiles(a, a_stride, m, b, c, c_stride, nullptr, nullptr, 0);
}

void RunRequantizeFp32Avx512Vnni(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b,
                                 const Fp32Requantization& stage, int8_t* y, int64_t y_stride) {
  // Narrow layers run 16 rows at a time in the narrow kernel; the rows left over go
  // through the panel microkernels.
  int64_t done = 0;
  if (b.n <= kNarrowColumns) {
    const NarrowKernel kernel = kNarrowKernels[b.n - 1];
    for (; done + kNarrowRows <= m; done += kNarrowRows) {
      kernel(a + done * a_stride, a_stride, b.k, b.column.data(), NarrowWeights(b), stage, y + done * y_stride,
             y_stride);
    }
  }
  if (done < m) RunTiles(a + done * a_stride, a_stride, m - done, b, nullptr, 0, &stage, y + done * y_stride, y_stride);
}

// The fused output stage of A . B for MR rows of segmented A (SegmentedRows)
// and one panel: the steps of the zmm microkernel, with group g of row r read
// at rows[r] + offsets[g]. Rows of one or two are tails, rare
// enough to run on a single set of accumulators.
// acc += the dot products of a (unsigned) and b (signed) bytes, in acc's
// register. With the intrinsic, GCC 12 copied each accumulator into another
// register and back in every step of the loop below, and spilled some.
inline void DpbusdInPlace(__m512i& acc, __m512i a, __m512i b) {
  asm("vpdpbusd %[b], %[a], %[acc]" : [acc] "+v"(acc) : [a] "v"(a), [b] "v"(b));
}

template <int MR, int NB>
void s8s32_gemm_MRx32c4_segments__avx512vnni(const int8_t* const* rows, const SegmentedRows& a,
                                              const int64_t* offsets, const int32_t* correction, const int8_t* w,
                                              int64_t width, const TileOutput& out) {
  __mmask16 lanes[NB];
  __m512i acc[MR][NB];
#pragma GCC unroll 2
  for (int q = 0; q < NB; ++q) {
    lanes[q] = LowBits16(width - 16 * q);
    const __m512i start = _mm512_add_epi32(_mm512_loadu_si512(correction + 16 * q),
                                           _mm512_maskz_loadu_epi32(lanes[q], out.stage->bias + out.column0 + 16 * q));
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) acc[r][q] = start;
  }
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(kSignBits));
  const int8_t* row[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) row[r] = rows[r];
  // One plain loop over the groups of four k, as in the microkernel above,
  // with each group's offset from a table.
  const int64_t groups = a.segments * a.segment / 4;
  for (int64_t g = 0; g < groups; ++g) {
    __m512i b[NB];
#pragma GCC unroll 2
    for (int q = 0; q < NB; ++q) b[q] = _mm512_load_si512(w + q * 64);
    w += NB * 64;
    const int64_t offset = offsets[g];
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      int32_t a4;
      std::memcpy(&a4, row[r] + offset, 4);
      const __m512i va = _mm512_xor_si512(_mm512_set1_epi32(a4), sign);
#pragma GCC unroll 2
      for (int q = 0; q < NB; ++q) DpbusdInPlace(acc[r][q], va, b[q]);
    }
  }
  StoreStageTile<MR, NB>(acc, lanes, out);
}

using SegmentsMicrokernel = void (*)(const int8_t* const*, const SegmentedRows&, const int64_t*, const int32_t*,
                                     const int8_t*, int64_t, const TileOutput&);

// kSegmentsMicrokernels[NB - 1][MR - 1].
constexpr SegmentsMicrokernel kSegmentsMicrokernels[2][kSegmentsMr] = {
    {s8s32_gemm_MRx32c4_segments__avx512vnni<1, 1>, s8s32_gemm_MRx32c4_segments__avx512vnni<2, 1>,
     s8s32_gemm_MRx32c4_segments__avx512vnni<3, 1>, s8s32_gemm_MRx32c4_segments__avx512vnni<4, 1>,
     s8s32_gemm_MRx32c4_segments__avx512vnni<5, 1>, s8s32_gemm_MRx32c4_segments__avx512vnni<6, 1>,
     s8s32_gemm_MRx32c4_segments__avx512vnni<7, 1>, s8s32_gemm_MRx32c4_segments__avx512vnni<8, 1>},
    {s8s32_gemm_MRx32c4_segments__avx512vnni<1, 2>, s8s32_gemm_MRx32c4_segments__avx512vnni<2, 2>,
     s8s32_gemm_MRx32c4_segments__avx512vnni<3, 2>, s8s32_gemm_MRx32c4_segments__avx512vnni<4, 2>,
     s8s32_gemm_MRx32c4_segments__avx512vnni<5, 2>, s8s32_gemm_MRx32c4_segments__avx512vnni<6, 2>,
     s8s32_gemm_MRx32c4_segments__avx512vnni<7, 2>, s8s32_gemm_MRx32c4_segments__avx512vnni<8, 2>},
};

void RunSegmentsRequantizeFp32Avx512Vnni(const SegmentedRows& a, int64_t m, const PackedB& b,
                                         const Fp32Requantization& stage, int8_t* y, int64_t y_stride) {
  const int64_t kp = RoundUp(b.k, 4);
  // The offset of each group of four k from the start of its row.
  const int64_t groups = kp / 4;
  auto* offsets = reinterpret_cast<int64_t*>(ThreadScratch(groups * static_cast<int64_t>(sizeof(int64_t))));
  for (int64_t g = 0; g < groups; ++g) offsets[g] = g * 4 / a.segment * a.segment_stride + g * 4 % a.segment;
  ForEachTile(
      m, b.n, kSegmentsMr, kNr, kRowBlock, [](int64_t, int64_t) {},
      [&](int64_t first, int64_t offset, int64_t rows, int64_t panel, int64_t width) {
        TileOutput out;
        out.stage = &stage;
        out.column0 = panel * kNr;
        out.y = y + (first + offset) * y_stride + panel * kNr;
        out.y_stride = y_stride;
        kSegmentsMicrokernels[width > 16 ? 1 : 0][rows - 1](a.rows + first + offset, a, offsets,
                                                            b.column.data() + panel * kNr,
                                                            b.panels() + panel * kNr * kp, width, out);
      });
}

// 16 outputs of the fp32 stage; lanes outside `mask` are neither read nor written.
inline void Requantize16(const int32_t* acc, const int32_t* bias, const float* scale, __mmask16 mask,
                         __m512 lo, __m512 hi, __m512i zero_point, int8_t* y) {
  const __m512i sum = _mm512_add_epi32(_mm512_maskz_loadu_epi32(mask, acc), _mm512_maskz_loadu_epi32(mask, bias));
  StoreBytes16(Fp32StageBytes(sum, _mm512_maskz_loadu_ps(mask, scale), true, lo, hi, zero_point), mask, y);
}

void qs8_requantize_fp32__avx512(const int32_t* acc, int64_t acc_stride, int64_t m, int64_t n,
                                 const Fp32Requantization& stage, int8_t* y, int64_t y_stride) {
  const __m512 lo = _mm512_set1_ps(stage.min_less_zero_point);
  const __m512 hi = _mm512_set1_ps(stage.max_less_zero_point);
  const __m512i zero_point = _mm512_set1_epi32(stage.zero_point);
  for (int64_t i = 0; i < m; ++i) {
    const int32_t* ai = acc + i * acc_stride;
    int8_t* yi = y + i * y_stride;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) Requantize16(ai + j, stage.bias + j, stage.scale + j, 0xFFFF, lo, hi, zero_point, yi + j);
    if (j < n) {
      const __mmask16 mask = static_cast<__mmask16>((1u << (n - j)) - 1);
      Requantize16(ai + j, stage.bias + j, stage.scale + j, mask, lo, hi, zero_point, yi + j);
    }
  }
}

// Twelve independent vpdpbusd zmm chains, enough that latency never limits
// issue. Written in asm because GCC 12 copies the accumulators between
// registers in the same loop in intrinsics.
int64_t PeakLoopAvx512Vnni(int64_t iterations) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  __m512i a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  const __m512i u = _mm512_set1_epi8(3);
  const __m512i s = _mm512_set1_epi8(-5);
  for (int64_t it = 0; it < iterations; ++it) {
    asm volatile(
        "vpdpbusd %[s], %[u], %[a0]\n\t"
        "vpdpbusd %[s], %[u], %[a1]\n\t"
        "vpdpbusd %[s], %[u], %[a2]\n\t"
        "vpdpbusd %[s], %[u], %[a3]\n\t"
        "vpdpbusd %[s], %[u], %[a4]\n\t"
        "vpdpbusd %[s], %[u], %[a5]\n\t"
        "vpdpbusd %[s], %[u], %[a6]\n\t"
        "vpdpbusd %[s], %[u], %[a7]\n\t"
        "vpdpbusd %[s], %[u], %[a8]\n\t"
        "vpdpbusd %[s], %[u], %[a9]\n\t"
        "vpdpbusd %[s], %[u], %[a10]\n\t"
        "vpdpbusd %[s], %[u], %[a11]\n\t"
        : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [a4] "+v"(a4), [a5] "+v"(a5),
          [a6] "+v"(a6), [a7] "+v"(a7), [a8] "+v"(a8), [a9] "+v"(a9), [a10] "+v"(a10), [a11] "+v"(a11)
        : [u] "v"(u), [s] "v"(s));
  }
  __m512i total = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                   _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
  total = _mm512_add_epi32(total, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
  volatile int32_t sink = _mm512_reduce_add_epi32(total);
  (void)sink;
  return iterations * 12 * 64;
}

}  // namespace

const Int8Gemm* Avx512VnniGemm() {
  static const Int8Gemm gemm{"avx512vnni", PackS8S32Nr32C4, RunAvx512Vnni, qs8_requantize_fp32__avx512,
                             PeakLoopAvx512Vnni, RunRequantizeFp32Avx512Vnni, RunSegmentsRequantizeFp32Avx512Vnni};
  return &gemm;
}

}  // namespace gemm
}  // namespace edgemia

#else

namespace edgemia {
namespace gemm {

// This build does not target x86-64 with AVX-512 VNNI, so no CPU it runs on takes this path.
const Int8Gemm* Avx512VnniGemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia

#endif
