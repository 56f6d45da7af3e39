// Run-time choice of the GEMM path from the CPU's features.
#include <cstdlib>
#include <stdexcept>

#include "../graph.h"
#include "gemm.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace edgemia {
namespace gemm {
namespace {

#if defined(__x86_64__)
// Returns whether the CPU has AMX tiles with int8 products, the operating
// system saves their state, and it lets this process use them. Linux grants
// the tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM). The grant
// covers every thread of the process, and a process that uses tiles without it
// dies of SIGILL. The request is made once.
bool AmxUsable() {
  static const bool usable = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
    const bool tile = (edx >> 24 & 1u) != 0, int8 = (edx >> 25 & 1u) != 0;
    if (!tile || !int8) return false;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0 || (ecx >> 27 & 1u) == 0) return false;  // OSXSAVE
    unsigned xcr0_low = 0, xcr0_high = 0;
    asm volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    constexpr unsigned kTileConfig = 1u << 17, kTileData = 1u << 18;
    if ((xcr0_low & (kTileConfig | kTileData)) != (kTileConfig | kTileData)) return false;
#if defined(__linux__)
    constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
    constexpr long kTileDataFeature = 18;        // XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kRequestPermission, kTileDataFeature) == 0;
#else
    return false;
#endif
  }();
  return usable;
}
#endif

bool CpuSupports(const std::string& name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512vnni") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
#if defined(__x86_64__)
  if (name == "amx") return CpuSupports("avx512vnni") && AmxUsable();
#endif
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
  for (const Int8Gemm* path : {Avx2Gemm(), Avx512VnniGemm(), AmxGemm(), NeonGemm(), NeonDotGemm()}) {
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
