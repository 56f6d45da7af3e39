// Run-time choice of the GEMM path from the CPU's features.
#include <cstdlib>
#include <stdexcept>

#include "../graph.h"
#include "gemm.h"

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace edgemia {
namespace gemm {
namespace {

bool CpuSupports(const std::string& name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512vnni") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#elif defined(__aarch64__)
  if (name == "neon") return true;  // Advanced SIMD is mandatory on AArch64.
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
  if (name == "neondot") return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
  return false;
#else
  (void)name;
  return false;
#endif
}

}  // namespace

std::vector<const Int8Gemm*> AvailableGemms() {
  std::vector<const Int8Gemm*> paths{&ScalarGemm()};
  for (const Int8Gemm* path : {Avx2Gemm(), Avx512VnniGemm(), NeonGemm(), NeonDotGemm()}) {
    if (path != nullptr && CpuSupports(path->name)) paths.push_back(path);
  }
  return paths;
}

const Int8Gemm& SelectGemm() {
  const std::vector<const Int8Gemm*> paths = AvailableGemms();
  const char* requested = std::getenv("EDGEMIA_ISA");
  if (requested == nullptr || *requested == '\0') return *paths.back();
  std::string names;
  for (const Int8Gemm* path : paths) {
    if (path->name == std::string(requested)) return *path;
    names += (names.empty() ? "" : ", ") + std::string(path->name);
  }
  throw ModelError("EDGEMIA_ISA='" + std::string(requested) +
                   "' is not an instruction-set path this build and CPU can run; available: " + names);
}

}  // namespace gemm
}  // namespace edgemia
