// Exact int8 matrix multiplication, one implementation per instruction set.
//
// Every implementation computes C[m][n] = sum_k A[m][k] * B[n][k] over signed
// int8 A and B with int32 accumulation, so the result is the exact integer
// sum whatever the instruction set: no intermediate is saturated. The op
// kernels add bias and zero-point terms and requantize afterwards.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgemia {
namespace gemm {

// Weights B [n][k] rearranged for one implementation's inner loop.
struct PackedB {
  int64_t n = 0;
  int64_t k = 0;
  std::vector<int8_t> data;      // layout private to the implementation
  std::vector<int32_t> column;   // per-column values the implementation needs (e.g. sums)
};

struct Int8Gemm {
  const char* name;  // instruction-set path, e.g. "scalar", "avx2"
  // Rearranges row-major B [n][k] into `out`.
  void (*pack)(const int8_t* b, int64_t n, int64_t k, PackedB* out);
  // C[i][j] = sum_k A[i][k] * B[j][k] for i < m, j < n. A is row-major with
  // row stride a_stride (bytes); C is row-major with row stride c_stride
  // (elements).
  void (*run)(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride);
};

// The portable reference; every other path must return identical results.
const Int8Gemm& ScalarGemm();

// Paths compiled into this build, whether or not this CPU can run them.
// Each returns nullptr when the build does not include it.
const Int8Gemm* Avx2Gemm();
const Int8Gemm* Avx512VnniGemm();
const Int8Gemm* NeonGemm();
const Int8Gemm* NeonDotGemm();

// Paths this build includes and this CPU supports, fastest last.
std::vector<const Int8Gemm*> AvailableGemms();

// The path to use: the EDGEMIA_ISA environment variable when set (an error
// if that path is unknown or unavailable here), else the fastest available.
const Int8Gemm& SelectGemm();

}  // namespace gemm
}  // namespace edgemia
