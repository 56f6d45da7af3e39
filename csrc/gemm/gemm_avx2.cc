// int8 GEMM for the avx2 instruction-set path.
#include "gemm.h"

namespace edgemia {
namespace gemm {

// TODO: no avx2 kernel yet; dispatch falls back to the fastest other path.
const Int8Gemm* Avx2Gemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia
