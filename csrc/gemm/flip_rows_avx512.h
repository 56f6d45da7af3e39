// The copy of A with flipped sign bits that the avx512vnni and amx paths read
// in their inner loops. Include it only from files compiled with AVX-512 flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace edgemia {
namespace gemm {
namespace {

// Copies `rows` rows of A (k bytes each, a_stride apart) to `out` with their
// sign bits flipped, which turns each int8 a into the unsigned byte a + 128.
// Output rows are `stride` bytes apart and get kp >= k bytes each. The bytes
// from k to kp hold 0x80 and must meet zero weights.
inline void CopyRowsFlipped(const int8_t* a, int64_t a_stride, int64_t rows, int64_t k, int64_t kp, int64_t stride,
                            void* out) {
  const __m512i sign = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t i = 0; i < rows; ++i) {
    const int8_t* row = a + i * a_stride;
    int8_t* to = static_cast<int8_t*>(out) + i * stride;
    for (int64_t q = 0; q < kp; q += 64) {
      const int64_t left = k - q;
      const int64_t room = kp - q;
      const __mmask64 bytes = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
      const __mmask64 stored = room >= 64 ? ~__mmask64{0} : (__mmask64{1} << room) - 1;
      _mm512_mask_storeu_epi8(to + q, stored, _mm512_xor_si512(_mm512_maskz_loadu_epi8(bytes, row + q), sign));
    }
  }
}

}  // namespace
}  // namespace gemm
}  // namespace edgemia
