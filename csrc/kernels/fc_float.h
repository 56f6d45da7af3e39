// Float32 fully connected layers, with a vector kernel per instruction set.
// Every kernel gives the bits of the portable loop in fully_connected.cc:
// each output is one dot product in a fixed order (16 interleaved partial
// sums over k, then a pairwise reduction of the 16), plus the bias, clamped.
#pragma once

#include <cstdint>

namespace edgemia {
namespace kernels {

// The partial sums of one dot product, and so its order of additions.
constexpr int64_t kFloatDotLanes = 16;

// NaN as the default quiet NaN. Which operand's NaN an x86 addition keeps
// depends on the operand order the compiler chose, so a NaN sum's sign could
// differ between kernels and tile shapes; every kernel writes this one.
// Internal linkage: the AVX-512 file's copy must not serve the other files.
static inline float CanonicalNan(float v) {
  constexpr float kNan = __builtin_nanf("");
  return v != v ? kNan : v;
}

struct FloatFc {
  const float* weights = nullptr;  // [units][depth]
  const float* bias = nullptr;     // [units]
  int64_t units = 0, depth = 0;
  float lo = 0.0f, hi = 0.0f;      // activation bounds
};

// y[r][u] for rows r < rows: x is [rows][depth], y is [rows][units].
using FloatFcKernel = void (*)(const FloatFc& fc, const float* x, int64_t rows, float* y);

// nullptr when this build does not include the AVX-512 path.
FloatFcKernel FloatFcAvx512();

}  // namespace kernels
}  // namespace edgemia
