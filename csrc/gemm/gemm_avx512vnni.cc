// int8 GEMM for the avx512vnni instruction-set path.
#include "gemm.h"

namespace edgemia {
namespace gemm {

// TODO: no avx512vnni kernel yet; dispatch falls back to the fastest other path.
const Int8Gemm* Avx512VnniGemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia
