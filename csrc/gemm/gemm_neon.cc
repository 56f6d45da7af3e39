// int8 GEMM for the neon instruction-set path: AArch64 Advanced SIMD
// without the dot-product extension (Cortex-A53, A57, A72, A73).
//
// smull multiplies eight pairs of int8 into eight int16 products, and sadalp
// adds neighbouring products into int32 lanes. One product is at most
// 128 * 128 = 2^14 in magnitude, which int16 holds; two are not always
// (-128 * -128 + -128 * -128 = 2^15), so no int16 ever holds a sum: every
// sum is formed in int32. (smlal, which would add a second product in int16,
// is not used.)
#include "gemm.h"
#include "tiling.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include <arm_neon.h>

#include <cstring>

namespace edgemia {
namespace gemm {
namespace {

constexpr int64_t kMr = 4;              // rows of A per microkernel call
constexpr int64_t kNr = 4;              // columns per weight panel
constexpr int64_t kKc = 16;             // k per step: one q register of int8
constexpr int64_t kRowBlock = 32 * kMr;  // rows of A packed at a time

// Panel p holds columns [4p, 4p + 4). For each step of 16 k it stores 16
// bytes of column 0, then of columns 1, 2 and 3. Padding holds zeros.
void PackS8S32Nr4C16(const int8_t* b, int64_t n, int64_t k, PackedB* out) {
  const int64_t kp = RoundUp(k, kKc);
  const int64_t panels = (n + kNr - 1) / kNr;
  int8_t* data = PreparePackedB(out, n, k, panels * kNr * kp, 0);
  PackPanels(b, n, k, kp, kNr, kKc, kNr, data);
}

// C[MR rows][4 columns] = A . B for one panel, of which the first `width`
// columns are stored. Rows of `a` are kp bytes apart, `steps` = kp / 16.
// Accumulator (r, j) holds four partial sums of row r and column j.
template <int MR>
void s8s32_gemm_MRx4c16__neon_mull(const int8_t* a, int64_t kp, const int8_t* w, int64_t steps, int32_t* c,
                                   int64_t c_stride, int64_t width) {
  int32x4_t acc[MR][kNr];
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < kNr; ++j) acc[r][j] = vdupq_n_s32(0);
  }
  for (int64_t s = 0; s < steps; ++s) {
    int8x16_t b[kNr];
    for (int j = 0; j < kNr; ++j) b[j] = vld1q_s8(w + j * kKc);
    w += kNr * kKc;
    for (int r = 0; r < MR; ++r) {
      const int8x16_t va = vld1q_s8(a + r * kp + s * kKc);
      for (int j = 0; j < kNr; ++j) {
        acc[r][j] = vpadalq_s16(acc[r][j], vmull_s8(vget_low_s8(va), vget_low_s8(b[j])));
        acc[r][j] = vpadalq_s16(acc[r][j], vmull_high_s8(va, b[j]));
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    // Pairwise additions leave the four columns' totals in one register.
    const int32x4_t sums =
        vpaddq_s32(vpaddq_s32(acc[r][0], acc[r][1]), vpaddq_s32(acc[r][2], acc[r][3]));
    int32_t* cr = c + r * c_stride;
    if (width == kNr) {
      vst1q_s32(cr, sums);
    } else {
      int32_t tile[kNr];
      vst1q_s32(tile, sums);
      CopyTileColumns(tile, kNr, 1, width, cr, c_stride);
    }
  }
}

using Microkernel = void (*)(const int8_t*, int64_t, const int8_t*, int64_t, int32_t*, int64_t, int64_t);

// kMicrokernels[MR - 1].
constexpr Microkernel kMicrokernels[kMr] = {
    s8s32_gemm_MRx4c16__neon_mull<1>,
    s8s32_gemm_MRx4c16__neon_mull<2>,
    s8s32_gemm_MRx4c16__neon_mull<3>,
    s8s32_gemm_MRx4c16__neon_mull<4>,
};

void RunNeon(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride) {
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

// Four outputs of the fp32 stage.
inline int32x4_t Requantize4(int32x4_t acc, int32x4_t bias, float32x4_t scale, float32x4_t lo, float32x4_t hi,
                             int32x4_t zero_point) {
  float32x4_t f = vmulq_f32(vcvtq_f32_s32(vaddq_s32(acc, bias)), scale);
  f = vminq_f32(vmaxq_f32(f, lo), hi);
  // frinti rounds in the FPCR mode, as std::nearbyint does; the result is
  // integral, so the truncating conversion is exact.
  return vaddq_s32(vcvtq_s32_f32(vrndiq_f32(f)), zero_point);
}

void qs8_requantize_fp32__neon(const int32_t* acc, int64_t acc_stride, int64_t m, int64_t n,
                               const Fp32Requantization& stage, int8_t* y, int64_t y_stride) {
  const float32x4_t lo = vdupq_n_f32(stage.min_less_zero_point);
  const float32x4_t hi = vdupq_n_f32(stage.max_less_zero_point);
  const int32x4_t zero_point = vdupq_n_s32(stage.zero_point);
  ForEachColumnBlock<8>(acc, acc_stride, m, n, stage, y, y_stride,
                        [&](const int32_t* a, const int32_t* bias, const float* scale, int8_t* out) {
                          const int32x4_t q0 = Requantize4(vld1q_s32(a), vld1q_s32(bias), vld1q_f32(scale), lo, hi,
                                                           zero_point);
                          const int32x4_t q1 = Requantize4(vld1q_s32(a + 4), vld1q_s32(bias + 4),
                                                           vld1q_f32(scale + 4), lo, hi, zero_point);
                          // The values are already in -128..127, so the saturating narrows are exact.
                          vst1_s8(out, vqmovn_s16(vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1))));
                        });
}

// The instructions of the microkernel above: eight smull or smull2 (eight
// multiply-accumulates each) feeding eight independent sadalp chains. Written
// in asm so that the compiler can neither hoist the products out of the loop
// nor merge the chains.
int64_t PeakLoopNeon(int64_t iterations) {
  int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const int8x16_t u = vdupq_n_s8(3);
  const int8x16_t s = vdupq_n_s8(-5);
  int16x8_t t0, t1, t2, t3;
  for (int64_t it = 0; it < iterations; ++it) {
    asm volatile(
        "smull %[t0].8h, %[u].8b, %[s].8b\n\t"
        "smull2 %[t1].8h, %[u].16b, %[s].16b\n\t"
        "smull %[t2].8h, %[u].8b, %[s].8b\n\t"
        "smull2 %[t3].8h, %[u].16b, %[s].16b\n\t"
        "sadalp %[a0].4s, %[t0].8h\n\t"
        "sadalp %[a1].4s, %[t1].8h\n\t"
        "sadalp %[a2].4s, %[t2].8h\n\t"
        "sadalp %[a3].4s, %[t3].8h\n\t"
        "smull %[t0].8h, %[u].8b, %[s].8b\n\t"
        "smull2 %[t1].8h, %[u].16b, %[s].16b\n\t"
        "smull %[t2].8h, %[u].8b, %[s].8b\n\t"
        "smull2 %[t3].8h, %[u].16b, %[s].16b\n\t"
        "sadalp %[a4].4s, %[t0].8h\n\t"
        "sadalp %[a5].4s, %[t1].8h\n\t"
        "sadalp %[a6].4s, %[t2].8h\n\t"
        "sadalp %[a7].4s, %[t3].8h\n\t"
        : [a0] "+w"(a0), [a1] "+w"(a1), [a2] "+w"(a2), [a3] "+w"(a3), [a4] "+w"(a4), [a5] "+w"(a5),
          [a6] "+w"(a6), [a7] "+w"(a7), [t0] "=&w"(t0), [t1] "=&w"(t1), [t2] "=&w"(t2), [t3] "=&w"(t3)
        : [u] "w"(u), [s] "w"(s));
  }
  const int32x4_t total = vaddq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)),
                                    vaddq_s32(vaddq_s32(a4, a5), vaddq_s32(a6, a7)));
  volatile int32_t sink = vgetq_lane_s32(total, 0);
  (void)sink;
  return iterations * 8 * 8;
}

}  // namespace

const Int8Gemm* NeonGemm() {
  static const Int8Gemm gemm{"neon", PackS8S32Nr4C16, RunNeon, qs8_requantize_fp32__neon, PeakLoopNeon,
                             nullptr, nullptr};
  return &gemm;
}

}  // namespace gemm
}  // namespace edgemia

#else

namespace edgemia {
namespace gemm {

// This build does not target AArch64, so no CPU it runs on takes this path.
const Int8Gemm* NeonGemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia

#endif
