// Float32 fully connected layers, with a vector kernel per instruction set.
// Every kernel gives the bits of the portable loop in fully_connected.cc:
// each output starts at 0 and adds w[u][k] * x[k] for k in order. Each
// product and each sum is rounded to float (no fused multiply-add). Then the
// bias is added and the activation clamps.
#pragma once

#include <cstdint>

namespace edgemia {
namespace kernels {

// Units per weight panel: the portable loop and the vector kernels keep a
// panel's units side by side, so that each output is one lane of a sum.
constexpr int64_t kFloatPanelUnits = 32;

// Returns NaN as the default quiet NaN. Which operand's NaN an x86 addition
// keeps depends on the operand order the compiler chose, so a NaN sum's sign
// could differ between kernels and tile shapes. Every kernel writes this one.
// Internal linkage: the AVX-512 file's copy must not serve the other files.
static inline float CanonicalNan(float v) {
  constexpr float kNan = __builtin_nanf("");
  return v != v ? kNan : v;
}

struct FloatFc {
  // The weights in panels of kFloatPanelUnits units: value (u, k) at
  // ((u / 32) * depth + k) * 32 + u % 32, zero for units past the last.
  const float* panels = nullptr;
  const float* bias = nullptr;     // [units]
  int64_t units = 0, depth = 0;
  float lo = 0.0f, hi = 0.0f;      // activation bounds
};

// y[r][u] for rows r < rows: x is [rows][depth], y is [rows][units].
using FloatFcKernel = void (*)(const FloatFc& fc, const float* x, int64_t rows, float* y);

// nullptr when this build does not include the AVX-512 or the AVX2 path.
FloatFcKernel FloatFcAvx512();
FloatFcKernel FloatFcAvx2();

}  // namespace kernels
}  // namespace edgemia
