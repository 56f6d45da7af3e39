// Portable scalar int8 GEMM: the reference every faster path is tested against.
#include "gemm.h"

namespace edgemia {
namespace gemm {
namespace {

// Keeps B row-major: data holds B [n][k] as given.
void PackScalar(const int8_t* b, int64_t n, int64_t k, PackedB* out) {
  int8_t* data = PreparePackedB(out, n, k, n * k, 0);
  for (int64_t i = 0; i < n * k; ++i) data[i] = b[i];
}

void RunScalar(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride) {
  const int8_t* data = b.panels();
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* ai = a + i * a_stride;
    int32_t* ci = c + i * c_stride;
    for (int64_t j = 0; j < b.n; ++j) {
      const int8_t* bj = data + j * b.k;
      int32_t acc = 0;
      for (int64_t p = 0; p < b.k; ++p) acc += static_cast<int32_t>(ai[p]) * static_cast<int32_t>(bj[p]);
      ci[j] = acc;
    }
  }
}

void RequantizeScalar(const int32_t* acc, int64_t acc_stride, int64_t m, int64_t n, const Fp32Requantization& stage,
                      int8_t* y, int64_t y_stride) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      // The addition wraps like the vector paths instead of overflowing.
      const int32_t sum = static_cast<int32_t>(static_cast<uint32_t>(acc[i * acc_stride + j]) + static_cast<uint32_t>(stage.bias[j]));
      y[i * y_stride + j] = RequantizeFp32(sum, stage.scale[j],
                                           stage.min_less_zero_point, stage.max_less_zero_point, stage.zero_point);
    }
  }
}

}  // namespace

bool SaturationClamps(const int8_t* b, int64_t n, int64_t k, const Fp32Requantization& stage) {
  if (stage.min_less_zero_point + static_cast<float>(stage.zero_point) > -128.0f ||
      stage.max_less_zero_point + static_cast<float>(stage.zero_point) < 127.0f) {
    return false;
  }
  constexpr double kLimit = 1073741824.0;  // 2^30
  for (int64_t j = 0; j < n; ++j) {
    int64_t abs_sum = 0;
    for (int64_t q = 0; q < k; ++q) abs_sum += b[j * k + q] < 0 ? -b[j * k + q] : b[j * k + q];
    const double bias = static_cast<double>(stage.bias[j]);
    const double bound = 128.0 * static_cast<double>(abs_sum) + (bias < 0 ? -bias : bias);
    const double scale = static_cast<double>(stage.scale[j]);
    // Both comparisons fail for a NaN scale.
    if (!(bound < kLimit && bound * scale < kLimit)) return false;
  }
  return true;
}

// The scalar path has no peak loop: the compiler vectorizes the loops above
// for the build's baseline instruction set, so no scalar loop bounds them.
const Int8Gemm& ScalarGemm() {
  static const Int8Gemm gemm{"scalar", PackScalar, RunScalar, RequantizeScalar, nullptr, nullptr, nullptr};
  return gemm;
}

}  // namespace gemm
}  // namespace edgemia
