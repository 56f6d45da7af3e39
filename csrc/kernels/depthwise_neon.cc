// Depthwise convolution rows for the neon and neondot paths, 16 channels at
// a time: the inputs are widened to int16 with the zero point subtracted,
// and smlal adds each int16 x int16 product to an int32 sum.
#include "depthwise.h"

#if defined(__aarch64__) && defined(__ARM_NEON)

#include <arm_neon.h>

namespace edgemia {
namespace kernels {
namespace {

void AccumulateDepthwiseRowNeon(const DepthwiseRow& r, const int8_t* x, int64_t oy, int32_t* acc) {
  const int64_t channels = r.channels;
  const int64_t full = channels / 16 * 16;
  const int64_t x_step = r.dilation_w * channels;  // bytes between the taps of one filter row
  const int16x8_t zero_point = vdupq_n_s16(r.zero_point);
  int64_t ky_begin = r.k_h, ky_end = 0;
  for (int64_t ky = 0; ky < r.k_h; ++ky) {
    const int64_t iy = oy * r.stride_h - r.pad_top + ky * r.dilation_h;
    if (iy >= 0 && iy < r.in_h) {
      if (ky_begin > ky) ky_begin = ky;
      ky_end = ky + 1;
    }
  }
  for (int64_t ox = 0; ox < r.out_w; ++ox) {
    int32_t* sums = acc + ox * channels;
    const int64_t kx_begin = r.kx_begin[ox];
    const int64_t kx_end = r.kx_end[ox];
    const int64_t ix0 = ox * r.stride_w - r.pad_left;
    for (int64_t c = 0; c < full; c += 16) {
      int32x4_t s0 = vdupq_n_s32(0), s1 = s0, s2 = s0, s3 = s0;
      for (int64_t ky = ky_begin; ky < ky_end; ++ky) {
        const int64_t iy = oy * r.stride_h - r.pad_top + ky * r.dilation_h;
        const int8_t* xp = x + (iy * r.in_w + ix0 + kx_begin * r.dilation_w) * channels + c;
        const int16_t* wp = r.weights + (ky * r.k_w + kx_begin) * channels + c;
        for (int64_t kx = kx_begin; kx < kx_end; ++kx, xp += x_step, wp += channels) {
          const int8x16_t xv = vld1q_s8(xp);
          const int16x8_t x0 = vsubq_s16(vmovl_s8(vget_low_s8(xv)), zero_point);
          const int16x8_t x1 = vsubq_s16(vmovl_high_s8(xv), zero_point);
          const int16x8_t w0 = vld1q_s16(wp);
          const int16x8_t w1 = vld1q_s16(wp + 8);
          s0 = vmlal_s16(s0, vget_low_s16(x0), vget_low_s16(w0));
          s1 = vmlal_high_s16(s1, x0, w0);
          s2 = vmlal_s16(s2, vget_low_s16(x1), vget_low_s16(w1));
          s3 = vmlal_high_s16(s3, x1, w1);
        }
      }
      vst1q_s32(sums + c, s0);
      vst1q_s32(sums + c + 4, s1);
      vst1q_s32(sums + c + 8, s2);
      vst1q_s32(sums + c + 12, s3);
    }
    for (int64_t c = full; c < channels; ++c) {
      int32_t sum = 0;
      for (int64_t ky = ky_begin; ky < ky_end; ++ky) {
        const int64_t iy = oy * r.stride_h - r.pad_top + ky * r.dilation_h;
        for (int64_t kx = kx_begin; kx < kx_end; ++kx) {
          const int32_t xv = x[(iy * r.in_w + ix0 + kx * r.dilation_w) * channels + c] - r.zero_point;
          sum += r.weights[(ky * r.k_w + kx) * channels + c] * xv;
        }
      }
      sums[c] = sum;
    }
  }
}

}  // namespace

DepthwiseRowKernel DepthwiseRowNeon() { return AccumulateDepthwiseRowNeon; }

}  // namespace kernels
}  // namespace edgemia

#else

namespace edgemia {
namespace kernels {

// This build does not target AArch64, so no CPU it runs on takes this path.
DepthwiseRowKernel DepthwiseRowNeon() { return nullptr; }

}  // namespace kernels
}  // namespace edgemia

#endif
