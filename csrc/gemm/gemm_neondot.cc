// int8 GEMM for the neondot instruction-set path: AArch64 with the ARMv8.2
// dot-product extension (Cortex-A55, A76 and later, Neoverse).
//
// sdot multiplies four pairs of int8 and adds them into an int32 lane, with
// no narrower intermediate, so every sum is exact.
#include "gemm.h"
#include "tiling.h"

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)

#include <arm_neon.h>

#include <cstring>

namespace edgemia {
namespace gemm {
namespace {

constexpr int64_t kMr = 4;              // rows of A per microkernel call
constexpr int64_t kNr = 16;             // columns per weight panel: four q registers of int32
constexpr int64_t kKc = 16;             // k per step: one q register of int8 per row
constexpr int64_t kRowBlock = 32 * kMr;  // rows of A packed at a time

// Panel p holds columns [16p, 16p + 16). For each group of four k it stores
// 4 bytes per column, columns in order, so that each q register holds four
// columns. Padding holds zeros; k is padded to a multiple of 16.
void PackS8S32Nr16C4(const int8_t* b, int64_t n, int64_t k, PackedB* out) {
  const int64_t kp = RoundUp(k, kKc);
  const int64_t panels = (n + kNr - 1) / kNr;
  int8_t* data = PreparePackedB(out, n, k, panels * kNr * kp, 0);
  PackPanels(b, n, k, kp, kNr, 4, kNr, data);
}

// Group G of four k: every row's lane G of its 16 bytes against four q
// registers of weights. The lane must be a constant, hence the template.
template <int MR, int G>
inline void DotGroup(int32x4_t (&acc)[MR][4], const int8x16_t (&va)[MR], const int8_t* w) {
  int8x16_t b[4];
  for (int q = 0; q < 4; ++q) b[q] = vld1q_s8(w + G * kNr * 4 + q * 16);
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < 4; ++q) acc[r][q] = vdotq_laneq_s32(acc[r][q], b[q], va[r], G);
  }
}

// C[MR rows][16 columns] = A . B for one panel, of which the first `width`
// columns are stored. Rows of `a` are kp bytes apart, `steps` = kp / 16.
template <int MR>
void s8s32_gemm_MRx16c4__neondot(const int8_t* a, int64_t kp, const int8_t* w, int64_t steps, int32_t* c,
                                 int64_t c_stride, int64_t width) {
  int32x4_t acc[MR][4];
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < 4; ++q) acc[r][q] = vdupq_n_s32(0);
  }
  for (int64_t s = 0; s < steps; ++s) {
    int8x16_t va[MR];
    for (int r = 0; r < MR; ++r) va[r] = vld1q_s8(a + r * kp + s * kKc);
    DotGroup<MR, 0>(acc, va, w);
    DotGroup<MR, 1>(acc, va, w);
    DotGroup<MR, 2>(acc, va, w);
    DotGroup<MR, 3>(acc, va, w);
    w += kNr * kKc;
  }
  for (int r = 0; r < MR; ++r) {
    int32_t* cr = c + r * c_stride;
    if (width == kNr) {
      for (int q = 0; q < 4; ++q) vst1q_s32(cr + 4 * q, acc[r][q]);
    } else {
      int32_t tile[kNr];
      for (int q = 0; q < 4; ++q) vst1q_s32(tile + 4 * q, acc[r][q]);
      CopyTileColumns(tile, kNr, 1, width, cr, c_stride);
    }
  }
}

using Microkernel = void (*)(const int8_t*, int64_t, const int8_t*, int64_t, int32_t*, int64_t, int64_t);

// kMicrokernels[MR - 1].
constexpr Microkernel kMicrokernels[kMr] = {
    s8s32_gemm_MRx16c4__neondot<1>,
    s8s32_gemm_MRx16c4__neondot<2>,
    s8s32_gemm_MRx16c4__neondot<3>,
    s8s32_gemm_MRx16c4__neondot<4>,
};

void RunNeonDot(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride) {
  const int64_t kp = RoundUp(b.k, kKc);
  int8_t* packed = ThreadScratch((m < kRowBlock ? m : kRowBlock) * kp);
  ForEachTile(
      m, b.n, kMr, kNr, kRowBlock,
      [&](int64_t first, int64_t rows) { PackRowsPadded(a + first * a_stride, a_stride, rows, b.k, kp, packed); },
      [&](int64_t first, int64_t offset, int64_t rows, int64_t panel, int64_t width) {
        kMicrokernels[rows - 1](packed + offset * kp, kp, b.panels() + panel * kNr * kp, kp / kKc,
                                c + (first + offset) * c_stride + panel * kNr, c_stride, width);
      });
}

// Twelve independent sdot chains, 16 multiply-accumulates per sdot. Written
// in asm so that the compiler cannot merge the chains.
int64_t PeakLoopNeonDot(int64_t iterations) {
  int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  int32x4_t a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  const int8x16_t u = vdupq_n_s8(3);
  const int8x16_t s = vdupq_n_s8(-5);
  for (int64_t it = 0; it < iterations; ++it) {
    asm volatile(
        "sdot %[a0].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a1].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a2].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a3].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a4].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a5].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a6].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a7].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a8].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a9].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a10].4s, %[u].16b, %[s].16b\n\t"
        "sdot %[a11].4s, %[u].16b, %[s].16b\n\t"
        : [a0] "+w"(a0), [a1] "+w"(a1), [a2] "+w"(a2), [a3] "+w"(a3), [a4] "+w"(a4), [a5] "+w"(a5),
          [a6] "+w"(a6), [a7] "+w"(a7), [a8] "+w"(a8), [a9] "+w"(a9), [a10] "+w"(a10), [a11] "+w"(a11)
        : [u] "w"(u), [s] "w"(s));
  }
  const int32x4_t total =
      vaddq_s32(vaddq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)), vaddq_s32(vaddq_s32(a4, a5), a6)),
                vaddq_s32(vaddq_s32(vaddq_s32(a7, a8), vaddq_s32(a9, a10)), a11));
  volatile int32_t sink = vgetq_lane_s32(total, 0);
  (void)sink;
  return iterations * 12 * 16;
}

}  // namespace

const Int8Gemm* NeonDotGemm() {
  // The output stage needs no dot product: it is the neon path's.
  static const Int8Gemm gemm{"neondot", PackS8S32Nr16C4, RunNeonDot, NeonGemm()->requantize_fp32,
                             PeakLoopNeonDot, nullptr, nullptr};
  return &gemm;
}

}  // namespace gemm
}  // namespace edgemia

#else

namespace edgemia {
namespace gemm {

// This build does not target AArch64 with the dot-product extension, so no
// CPU it runs on takes this path.
const Int8Gemm* NeonDotGemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia

#endif
