// Portable scalar int8 GEMM: the reference every faster path is tested against.
#include "gemm.h"

namespace edgemia {
namespace gemm {
namespace {

void PackScalar(const int8_t* b, int64_t n, int64_t k, PackedB* out) {
  out->n = n;
  out->k = k;
  out->data.assign(b, b + n * k);
  out->column.clear();
}

void RunScalar(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride) {
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* ai = a + i * a_stride;
    int32_t* ci = c + i * c_stride;
    for (int64_t j = 0; j < b.n; ++j) {
      const int8_t* bj = b.data.data() + j * b.k;
      int32_t acc = 0;
      for (int64_t p = 0; p < b.k; ++p) acc += static_cast<int32_t>(ai[p]) * static_cast<int32_t>(bj[p]);
      ci[j] = acc;
    }
  }
}

}  // namespace

const Int8Gemm& ScalarGemm() {
  static const Int8Gemm gemm{"scalar", PackScalar, RunScalar};
  return gemm;
}

}  // namespace gemm
}  // namespace edgemia
