// Depthwise convolution rows for the avx2 path, and for the avx512vnni path
// where its fused kernel does not apply, 16 channels at a time. vpmovsxbw
// widens the inputs. Where every tap of a window is inside the image,
// vpmaddwd multiplies two taps at once and adds their products into int32;
// elsewhere vpmullw forms the exact int16 products and vpmovsxwd widens them
// into the int32 sums.
#include "depthwise.h"

#if defined(__x86_64__) && defined(__AVX2__)

#include <immintrin.h>

namespace edgemia {
namespace kernels {
namespace {

// This file is compiled with -mavx2, so it calls no template that other
// files also instantiate (std::min, std::max): the linker could keep this
// copy for all of them.

// Stores 16 sums, or only the first `count` of them for the last block.
inline void StoreSums(int32_t* sums, __m256i low, __m256i high, int64_t count) {
  if (count >= 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums), low);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sums + 8), high);
    return;
  }
  alignas(32) int32_t block[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(block), low);
  _mm256_store_si256(reinterpret_cast<__m256i*>(block + 8), high);
  for (int64_t i = 0; i < count; ++i) sums[i] = block[i];
}

// Channels go in blocks of 16, the last block possibly partial. Its loads
// read up to 15 bytes past the channels in use: into the next pixel, or into
// the slack after the arena buffer (kArenaSlack) or after the widened filter
// (DepthwiseRow::weights). The lanes past the channels are never stored.
void AccumulateDepthwiseRowAvx2(const DepthwiseRow& r, const int8_t* x, int64_t oy, int32_t* acc) {
  const int64_t channels = r.channels;
  const int64_t x_step = r.dilation_w * channels;  // bytes between the taps of one filter row
  const __m256i zero_point = _mm256_set1_epi16(r.zero_point);
  int64_t ky_begin = r.k_h, ky_end = 0;
  for (int64_t ky = 0; ky < r.k_h; ++ky) {
    const int64_t iy = oy * r.stride_h - r.pad_top + ky * r.dilation_h;
    if (iy >= 0 && iy < r.in_h) {
      if (ky_begin > ky) ky_begin = ky;
      ky_end = ky + 1;
    }
  }
  const bool full_rows = ky_begin == 0 && ky_end == r.k_h;
  const int64_t pair_stride = (channels + 15) / 16 * 32;  // int16 weights per tap pair
  for (int64_t ox = 0; ox < r.out_w; ++ox) {
    int32_t* sums = acc + ox * channels;
    const int64_t kx_begin = r.kx_begin[ox];
    const int64_t kx_end = r.kx_end[ox];
    const int64_t ix0 = ox * r.stride_w - r.pad_left;
    if (full_rows && kx_begin == 0 && kx_end == r.k_w) {
      // Every tap inside the image: two taps at a time, their inputs
      // interleaved so that vpmaddwd forms both products and their int32 sum.
      // The pair weights of channels past the last are zero.
      const int8_t* corner = x + ((oy * r.stride_h - r.pad_top) * r.in_w + ix0) * channels;
      for (int64_t c = 0; c < channels; c += 16) {
        const int16_t* wp = r.pair_weights + c * 2;
        __m256i low = _mm256_setzero_si256();
        __m256i high = _mm256_setzero_si256();
        for (int64_t p = 0; p < r.tap_pairs; ++p, wp += pair_stride) {
          const __m256i xa = _mm256_sub_epi16(
              _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(corner + r.tap_offsets[2 * p] + c))),
              zero_point);
          const __m256i xb = _mm256_sub_epi16(
              _mm256_cvtepi8_epi16(
                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(corner + r.tap_offsets[2 * p + 1] + c))),
              zero_point);
          low = _mm256_add_epi32(low, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb),
                                                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp))));
          high = _mm256_add_epi32(high, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb),
                                                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 16))));
        }
        // low has the sums of channels 0-3 and 8-11, high those of 4-7 and 12-15.
        StoreSums(sums + c, _mm256_permute2x128_si256(low, high, 0x20), _mm256_permute2x128_si256(low, high, 0x31),
                  channels - c);
      }
      continue;
    }
    for (int64_t c = 0; c < channels; c += 16) {
      __m256i low = _mm256_setzero_si256();
      __m256i high = _mm256_setzero_si256();
      for (int64_t ky = ky_begin; ky < ky_end; ++ky) {
        const int64_t iy = oy * r.stride_h - r.pad_top + ky * r.dilation_h;
        const int8_t* xp = x + (iy * r.in_w + ix0 + kx_begin * r.dilation_w) * channels + c;
        const int16_t* wp = r.weights + (ky * r.k_w + kx_begin) * channels + c;
        for (int64_t kx = kx_begin; kx < kx_end; ++kx, xp += x_step, wp += channels) {
          const __m256i xv = _mm256_sub_epi16(
              _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xp))), zero_point);
          const __m256i product = _mm256_mullo_epi16(xv, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp)));
          low = _mm256_add_epi32(low, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(product)));
          high = _mm256_add_epi32(high, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(product, 1)));
        }
      }
      StoreSums(sums + c, low, high, channels - c);
    }
  }
}

}  // namespace

DepthwiseRowKernel DepthwiseRowAvx2() { return AccumulateDepthwiseRowAvx2; }

}  // namespace kernels
}  // namespace edgemia

#else

namespace edgemia {
namespace kernels {

// This build does not target x86-64 with AVX2, so no CPU it runs on takes this path.
DepthwiseRowKernel DepthwiseRowAvx2() { return nullptr; }

}  // namespace kernels
}  // namespace edgemia

#endif
