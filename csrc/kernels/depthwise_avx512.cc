// Depthwise convolution rows for the avx512vnni path, with the fp32 output
// stage applied in registers. Each step takes two taps of 16 channels.
// vpunpcklbw and vpunpckhbw interleave their input bytes channel by channel,
// and vpmovsxbw widens the 32 bytes to int16, less the input zero point.
// vpdpwssd then adds both products of each channel into its int32 lane.
// Every product w * (x - zero_point) and the pair's sum are exact, so the
// sums equal the portable loop's. Taps outside the image read a pixel of
// the input zero point, which adds nothing.
#include "depthwise.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)

#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include "../gemm/fp32_stage_avx512.h"

namespace edgemia {
namespace kernels {
namespace {

// This file is compiled with AVX-512 flags, so it calls no template that
// other files also instantiate (std::min, std::max): the linker could keep
// this copy for all of them.

// Fills taps[t] with the input of tap t of output pixel (oy, ox), or with the
// zero-point pixel for taps outside the image. An odd last tap is repeated,
// where its pair weights are zero.
inline void WindowTaps(const DepthwiseRow& r, const int8_t* x, int64_t oy, int64_t ox, const int8_t** taps) {
  int64_t t = 0;
  for (int64_t ky = 0; ky < r.k_h; ++ky) {
    const int64_t iy = oy * r.stride_h - r.pad_top + ky * r.dilation_h;
    const bool row_inside = iy >= 0 && iy < r.in_h;
    for (int64_t kx = 0; kx < r.k_w; ++kx) {
      const int64_t ix = ox * r.stride_w - r.pad_left + kx * r.dilation_w;
      taps[t++] = row_inside && ix >= 0 && ix < r.in_w ? x + (iy * r.in_w + ix) * r.channels : r.zero_point_pixel;
    }
  }
  if (t < 2 * r.tap_pairs) taps[t] = taps[t - 1];
}

// Adds the products of one tap pair of 16 channels, at a and b, to sum.
inline __m512i AddPair(__m512i sum, const int8_t* a, const int8_t* b, const int16_t* weights, __m512i zero_point) {
  const __m128i va = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
  const __m128i vb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
  const __m256i ab =
      _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi8(va, vb)), _mm_unpackhi_epi8(va, vb), 1);
  const __m512i xv = _mm512_sub_epi16(_mm512_cvtepi8_epi16(ab), zero_point);
  return _mm512_dpwssd_epi32(sum, xv, _mm512_loadu_si512(weights));
}

// The sums of 16 channels over kPairs tap pairs (any number when kPairs is
// 0): pair p reads tap(2p) and tap(2p + 1), with weights from
// wp + p * pair_stride. Two sums take turns, so that consecutive vpdpwssd do
// not wait for each other.
template <int kPairs, typename Tap>
inline __m512i PairSums(Tap&& tap, int64_t pairs, const int16_t* wp, int64_t pair_stride, __m512i zero_point) {
  if (kPairs > 0) pairs = kPairs;
  // Named sums, not an array indexed by p % 2, which GCC 12 keeps on the
  // stack when the number of pairs is known only at run time.
  __m512i even = _mm512_setzero_si512();
  __m512i odd = _mm512_setzero_si512();
  int64_t p = 0;
#pragma GCC unroll 4
  for (; p + 2 <= pairs; p += 2) {
    even = AddPair(even, tap(2 * p), tap(2 * p + 1), wp + p * pair_stride, zero_point);
    odd = AddPair(odd, tap(2 * p + 2), tap(2 * p + 3), wp + (p + 1) * pair_stride, zero_point);
  }
  if (p < pairs) even = AddPair(even, tap(2 * p), tap(2 * p + 1), wp + p * pair_stride, zero_point);
  return _mm512_add_epi32(even, odd);
}

// The sums of two adjacent output columns of a layer with exactly 16
// channels and horizontal stride 1, whose inputs for one tap are 32
// contiguous bytes: one load per tap serves both columns. vpunpcklbw and
// vpunpckhbw then give channels 0-7 and 8-15 of both columns, one column per
// 128-bit lane, so each step needs half the shuffles and widenings of
// AddPair per column. Returns the sums of the first column in *first and of
// the second in *second, channels in order.
template <int kPairs, typename Tap>
inline void PairSumsTwoColumns(Tap&& tap, int64_t pairs, const int16_t* wp, int64_t pair_stride, __m512i zero_point,
                               __m512i* first, __m512i* second) {
  if (kPairs > 0) pairs = kPairs;
  __m512i low = _mm512_setzero_si512();   // channels 0-7 of the first column, then of the second
  __m512i high = _mm512_setzero_si512();  // channels 8-15 likewise
#pragma GCC unroll 8
  for (int64_t p = 0; p < pairs; ++p) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tap(2 * p)));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tap(2 * p + 1)));
    const __m512i x_low = _mm512_sub_epi16(_mm512_cvtepi8_epi16(_mm256_unpacklo_epi8(a, b)), zero_point);
    const __m512i x_high = _mm512_sub_epi16(_mm512_cvtepi8_epi16(_mm256_unpackhi_epi8(a, b)), zero_point);
    // The pair's weights of channels 0-7, and of 8-15, for both columns.
    const int16_t* w = wp + p * pair_stride;
    const __m512i w_low = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
    const __m512i w_high = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16)));
    low = _mm512_dpwssd_epi32(low, x_low, w_low);
    high = _mm512_dpwssd_epi32(high, x_high, w_high);
  }
  // The low 256 bits of each hold the first column.
  *first = _mm512_shuffle_i64x2(low, high, 0x44);
  *second = _mm512_shuffle_i64x2(low, high, 0xEE);
}

// The fp32 output stage of 16 sums plus their bias, stored to the lanes of `lanes`.
inline void StoreStage(__m512i sum, __m512i bias, __m512 scale, bool clamp, __m512 lo, __m512 hi,
                       __m512i zero_point, __mmask16 lanes, int8_t* out) {
  gemm::StoreBytes16(gemm::Fp32StageBytes(_mm512_add_epi32(sum, bias), scale, clamp, lo, hi, zero_point), lanes, out);
}

// Channels go in blocks of 16, the outer loop, so that a block's output
// stage constants stay in registers over the row. The last block may be
// partial. Its loads read up to 15 bytes past the channels in use, into the
// next pixel, the slack after the arena buffer (kArenaSlack), or the slack
// of the zero-point pixel and of the weights. The lanes past the channels
// are never stored. Output columns whose windows lie inside the image go
// two at a time, for more independent work per step.
template <int kPairs>
void DepthwiseRowRequantizeAvx512Vnni(const DepthwiseRow& r, const int8_t* x, int64_t oy,
                                      const gemm::Fp32Requantization& stage, int8_t* y) {
  const int64_t channels = r.channels;
  const int64_t pairs = kPairs > 0 ? kPairs : r.tap_pairs;
  const int64_t pair_stride = (channels + 15) / 16 * 32;  // int16 weights per tap pair
  const int64_t step = r.stride_w * channels;              // input bytes from one column to the next
  const __m512i zero_point = _mm512_set1_epi16(r.zero_point);
  const __m512 lo = _mm512_set1_ps(stage.min_less_zero_point);
  const __m512 hi = _mm512_set1_ps(stage.max_less_zero_point);
  const __m512i output_zero_point = _mm512_set1_epi32(stage.zero_point);
  const bool clamp = !stage.saturation_clamps;
  const int64_t iy0 = oy * r.stride_h - r.pad_top;
  const bool full_rows = iy0 >= 0 && iy0 + (r.k_h - 1) * r.dilation_h < r.in_h;
  const int8_t* taps[2 * kMaxFusedDepthwiseTaps];
  // Two columns' inputs of one tap are 32 contiguous bytes (PairSumsTwoColumns).
  const bool adjacent_columns = channels == 16 && r.stride_w == 1;
  for (int64_t c = 0; c < channels; c += 16) {
    const __mmask16 lanes = gemm::LowBits16(channels - c);
    const __m512i bias = _mm512_maskz_loadu_epi32(lanes, stage.bias + c);
    const __m512 scale = _mm512_maskz_loadu_ps(lanes, stage.scale + c);
    const int16_t* wp = r.ordered_pair_weights + c * 2;
    for (int64_t ox = 0; ox < r.out_w;) {
      const int64_t ix0 = ox * r.stride_w - r.pad_left;
      const int8_t* corner = x + (iy0 * r.in_w + ix0) * channels + c;
      const bool inside = full_rows && r.kx_begin[ox] == 0 && r.kx_end[ox] == r.k_w;
      const auto window = [&](int64_t t) { return corner + r.tap_offsets[t]; };
      if (inside && ox + 1 < r.out_w && r.kx_begin[ox + 1] == 0 && r.kx_end[ox + 1] == r.k_w) {
        __m512i first, second;
        if (adjacent_columns) {
          PairSumsTwoColumns<kPairs>(window, pairs, wp, pair_stride, zero_point, &first, &second);
        } else {
          const auto next = [&](int64_t t) { return corner + step + r.tap_offsets[t]; };
          first = PairSums<kPairs>(window, pairs, wp, pair_stride, zero_point);
          second = PairSums<kPairs>(next, pairs, wp, pair_stride, zero_point);
        }
        StoreStage(first, bias, scale, clamp, lo, hi, output_zero_point, lanes, y + ox * channels + c);
        StoreStage(second, bias, scale, clamp, lo, hi, output_zero_point, lanes, y + (ox + 1) * channels + c);
        ox += 2;
        continue;
      }
      __m512i sum;
      if (inside) {
        sum = PairSums<kPairs>(window, pairs, wp, pair_stride, zero_point);
      } else {
        WindowTaps(r, x, oy, ox, taps);
        sum = PairSums<kPairs>([&](int64_t t) { return taps[t] + c; }, pairs, wp, pair_stride, zero_point);
      }
      StoreStage(sum, bias, scale, clamp, lo, hi, output_zero_point, lanes, y + ox * channels + c);
      ++ox;
    }
  }
}

void DepthwiseRowRequantize(const DepthwiseRow& r, const int8_t* x, int64_t oy, const gemm::Fp32Requantization& stage,
                            int8_t* y) {
  // 3x3 filters, the most common, have their five pairs unrolled.
  if (r.tap_pairs == 5) {
    DepthwiseRowRequantizeAvx512Vnni<5>(r, x, oy, stage, y);
  } else {
    DepthwiseRowRequantizeAvx512Vnni<0>(r, x, oy, stage, y);
  }
}

}  // namespace

DepthwiseRowRequantizeKernel DepthwiseRowRequantizeAvx512() { return DepthwiseRowRequantize; }

}  // namespace kernels
}  // namespace edgemia

#else

namespace edgemia {
namespace kernels {

// This build does not target x86-64 with AVX-512 VNNI, so no CPU it runs on takes this path.
DepthwiseRowRequantizeKernel DepthwiseRowRequantizeAvx512() { return nullptr; }

}  // namespace kernels
}  // namespace edgemia

#endif
