// The fp32 output stage (gemm::RequantizeFp32) on 16 int32 sums in a zmm
// register, and its lane masks, shared by the files compiled with AVX-512
// flags. Include it only from such files.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace edgemia {
namespace gemm {
namespace {

// A mask of the lowest min(n, 16) bits; n may be zero or negative.
inline __mmask16 LowBits16(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// Returns the 16 int8 outputs of sums that already include the bias. Each is
// float(sum) * scale, clamped to [lo, hi] when `clamp` is set, then rounded in
// the MXCSR mode (half to even, as std::nearbyint). The zero point is added
// and the result narrowed with saturation, which is the clamp without `clamp`
// (SaturationClamps).
__attribute__((always_inline)) inline __m128i Fp32StageBytes(__m512i sum, __m512 scale, bool clamp, __m512 lo, __m512 hi, __m512i zero_point) {
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale);
  if (clamp) f = _mm512_min_ps(_mm512_max_ps(f, lo), hi);
  return _mm512_cvtsepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(f), zero_point));
}

// Stores 16 bytes, or only the lanes of `mask`. Narrowing into a register and
// storing it is faster than vpmovsdb to memory.
__attribute__((always_inline)) inline void StoreBytes16(__m128i bytes, __mmask16 mask, int8_t* y) {
  if (mask == 0xFFFF) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y), bytes);
  } else {
    _mm_mask_storeu_epi8(y, mask, bytes);
  }
}

}  // namespace
}  // namespace gemm
}  // namespace edgemia
