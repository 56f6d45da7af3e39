// int8 GEMM for the neondot instruction-set path.
#include "gemm.h"

namespace edgemia {
namespace gemm {

// TODO: no neondot kernel yet; dispatch falls back to the fastest other path.
const Int8Gemm* NeonDotGemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia
