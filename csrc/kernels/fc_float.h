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

// Returns NaN as the default quiet NaN. Which operand's NaN an x86 addition
// keeps depends on the operand order the compiler chose, so a NaN sum's sign
// could differ between kernels and tile shapes. Every kernel writes this one.
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
  // The weights in blocks of 16 units by 16 k, or nullptr: value (u, k) at
  // ((u / 16 * k_blocks + k / 16) * 16 + k % 16) * 16 + u % 16, with k_blocks =
  // depth / 16 rounded up and zeros where u or k is out of range. A kernel
  // given them may keep 16 units in the lanes of a register (UseColumns).
  const float* columns = nullptr;
};

// Returns whether a layer is small enough that a row at a time against weights in
// cache beats tiles of rows: with a short depth, reducing each dot
// product's 16 partial sums would cost more than the products.
static inline bool UseColumns(int64_t units, int64_t depth) {
  return depth < 128 && units * depth * static_cast<int64_t>(sizeof(float)) <= (int64_t{1} << 19);
}

// y[r][u] for rows r < rows: x is [rows][depth], y is [rows][units].
using FloatFcKernel = void (*)(const FloatFc& fc, const float* x, int64_t rows, float* y);

// nullptr when this build does not include the AVX-512 path.
FloatFcKernel FloatFcAvx512();

}  // namespace kernels
}  // namespace edgemia
