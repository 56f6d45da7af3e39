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
