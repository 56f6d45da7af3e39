// int8 GEMM for the neon instruction-set path.
#include "gemm.h"

namespace edgemia {
namespace gemm {

// TODO: no neon kernel yet; dispatch falls back to the fastest other path.
const Int8Gemm* NeonGemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia
