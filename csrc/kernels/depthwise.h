// Vector kernels for one output row of an int8 depthwise convolution with
// depth multiplier 1, one file per instruction set. They compute the same
// int32 sums as the portable loop in conv.cc, which is the reference: each
// product w * (x - zero_point) is exact in int16 (|w| <= 128 and
// |x - zero_point| <= 255), and the sums are formed in int32.
#pragma once

#include <cstdint>

#include "../gemm/gemm.h"

namespace edgemia {
namespace kernels {

// Geometry of one depthwise convolution and the per-column tap ranges that
// conv.cc computes at load time. Taps in the padding add nothing.
struct DepthwiseRow {
  int64_t in_h = 0, in_w = 0, channels = 0;
  int64_t out_w = 0;
  int64_t k_h = 0, k_w = 0;
  int64_t stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_left = 0;
  int16_t zero_point = 0;      // input zero point
  // [k_h * k_w][channels], the filter widened to int16, then 16 zeros of slack.
  const int16_t* weights = nullptr;
  // Filter columns kx in [kx_begin[ox], kx_end[ox]) of output column ox are inside the image.
  const int64_t* kx_begin = nullptr;
  const int64_t* kx_end = nullptr;
  // For windows whose taps all lie inside the image: the taps in pairs, an odd
  // last tap paired with itself under zero weights. tap_offsets[2p] and
  // tap_offsets[2p + 1] are the byte offsets of pair p's taps from the
  // window's first tap. pair_weights holds, for each pair and each block of
  // 16 channels (the last one padded with zero weights), 32 int16 weights in
  // the order of x86's vpunpcklwd and vpunpckhwd of the two taps' inputs
  // (DepthwiseInt8::PairTaps in conv.cc).
  int64_t tap_pairs = 0;
  const int64_t* tap_offsets = nullptr;
  const int16_t* pair_weights = nullptr;
  // The same pair weights with each channel's two weights side by side, channels
  // in order: for each pair and block of 16 channels, w[first tap][c] and
  // w[second tap][c] for c = 0..15, as vpdpwssd multiplies two interleaved taps.
  const int16_t* ordered_pair_weights = nullptr;
  // A pixel of the input zero point (channels + 16 bytes), read for taps
  // outside the image.
  const int8_t* zero_point_pixel = nullptr;
};

// Most taps (k_h * k_w) of a filter that the fused kernels below take.
constexpr int64_t kMaxFusedDepthwiseTaps = 64;

// Writes acc[ox * channels + c] = sum over the taps inside the image of
// w[ky][kx][c] * (x[iy][ix][c] - zero_point) for output row `oy` of the
// record `x` (NHWC, one image).
using DepthwiseRowKernel = void (*)(const DepthwiseRow& row, const int8_t* x, int64_t oy, int32_t* acc);

// Writes y[ox * channels + c], the fp32 output stage of those sums plus
// stage.bias[c] with stage.scale[c], for output row `oy` of the record `x`.
// For filters of at most kMaxFusedDepthwiseTaps taps.
using DepthwiseRowRequantizeKernel = void (*)(const DepthwiseRow& row, const int8_t* x, int64_t oy,
                                              const gemm::Fp32Requantization& stage, int8_t* y);

// Each returns nullptr when this build does not include that path.
DepthwiseRowKernel DepthwiseRowAvx2();
DepthwiseRowKernel DepthwiseRowNeon();
DepthwiseRowRequantizeKernel DepthwiseRowRequantizeAvx512();

}  // namespace kernels
}  // namespace edgemia
