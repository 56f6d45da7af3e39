// CONV_2D and DEPTHWISE_CONV_2D: NHWC input, OHWI filter (1HWO for depthwise).
#include "common.h"
#include "depthwise.h"
#include "registry.h"

namespace edgemia {
namespace kernels {
namespace {

struct ConvGeometry {
  int64_t in_h = 0, in_w = 0, in_c = 0;
  int64_t out_h = 0, out_w = 0, out_c = 0;
  int64_t k_h = 0, k_w = 0;
  int64_t filter_c = 0;  // input channels per group (conv) or 1 (depthwise)
  int64_t stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int64_t pad_top = 0, pad_left = 0;
  int64_t groups = 1;
  int64_t depth_multiplier = 1;  // depthwise only
};

ConvGeometry CheckGeometry(const OpChecker& check, bool depthwise) {
  const Tensor& in = check.Input(0);
  const Tensor& filter = check.Input(1);
  const Tensor& out = check.Output(0);
  check.ExpectActivation(in, "input");
  check.ExpectConstant(filter, "filter");
  check.ExpectRank(in, 3, "input");
  check.ExpectRank(filter, 4, "filter");
  check.ExpectRank(out, 3, "output");
  ConvGeometry g;
  g.in_h = in.shape[0];
  g.in_w = in.shape[1];
  g.in_c = in.shape[2];
  g.k_h = filter.shape[1];
  g.k_w = filter.shape[2];
  g.stride_h = check.PositiveOption("stride_h");
  g.stride_w = check.PositiveOption("stride_w");
  g.dilation_h = check.PositiveOption("dilation_h");
  g.dilation_w = check.PositiveOption("dilation_w");
  if (depthwise) {
    if (filter.shape[0] != 1) check.Fail("filter '" + filter.name + "' must have shape [1, H, W, C*M]");
    g.out_c = filter.shape[3];
    if (g.out_c % g.in_c != 0) {
      check.Fail("filter has " + std::to_string(g.out_c) + " channels, not a multiple of the input's " +
                 std::to_string(g.in_c));
    }
    g.depth_multiplier = g.out_c / g.in_c;
    const int64_t declared = check.OptionOr("depth_multiplier", g.depth_multiplier);
    if (declared != g.depth_multiplier && declared != 0) {
      check.Fail("depth multiplier option " + std::to_string(declared) + " disagrees with the shapes (" +
                 std::to_string(g.depth_multiplier) + ")");
    }
    g.filter_c = 1;
  } else {
    g.out_c = filter.shape[0];
    g.filter_c = filter.shape[3];
    if (g.in_c % g.filter_c != 0) {
      check.Fail("input has " + std::to_string(g.in_c) + " channels, not a multiple of the filter's " +
                 std::to_string(g.filter_c));
    }
    g.groups = g.in_c / g.filter_c;
    if (g.out_c % g.groups != 0) {
      check.Fail(std::to_string(g.out_c) + " output channels do not split into " + std::to_string(g.groups) +
                 " groups");
    }
  }
  const Window wh = check.SpatialWindow(true, g.in_h, g.k_h, g.stride_h, g.dilation_h, true);
  const Window ww = check.SpatialWindow(false, g.in_w, g.k_w, g.stride_w, g.dilation_w, true);
  g.out_h = wh.out;
  g.out_w = ww.out;
  g.pad_top = wh.pad_before;
  g.pad_left = ww.pad_before;
  check.ExpectShape(out, {g.out_h, g.out_w, g.out_c}, "output");
  return g;
}

// Calls body(b, oy, ox, oc, first input channel, tap) for every tap of every
// output element that lies inside the image; taps in the padding add nothing,
// which equals padding with the input zero point.
template <typename Tap>
inline void ForEachTap(const ConvGeometry& g, int64_t oy, int64_t ox, Tap&& tap) {
  for (int64_t ky = 0; ky < g.k_h; ++ky) {
    const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
    if (iy < 0 || iy >= g.in_h) continue;
    for (int64_t kx = 0; kx < g.k_w; ++kx) {
      const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
      if (ix < 0 || ix >= g.in_w) continue;
      tap(ky, kx, iy, ix);
    }
  }
}

// Fills begin[ox] and end[ox] with the filter columns [begin, end) whose
// input column lies inside the image, for every output column ox. Those
// columns are contiguous; an output column with none gets [0, 0).
void ValidFilterColumns(const ConvGeometry& g, std::vector<int64_t>* begin, std::vector<int64_t>* end) {
  begin->assign(static_cast<size_t>(g.out_w), 0);
  end->assign(static_cast<size_t>(g.out_w), 0);
  for (int64_t ox = 0; ox < g.out_w; ++ox) {
    int64_t first = g.k_w, last = 0;
    for (int64_t kx = 0; kx < g.k_w; ++kx) {
      const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
      if (ix >= 0 && ix < g.in_w) {
        first = std::min(first, kx);
        last = kx + 1;
      }
    }
    if (first < last) {
      (*begin)[static_cast<size_t>(ox)] = first;
      (*end)[static_cast<size_t>(ox)] = last;
    }
  }
}

void CheckInt8Tensors(const OpChecker& check, const Tensor& in, const Tensor& filter, const Tensor& out,
                      int channel_dim) {
  check.ExpectDType(filter, DType::kInt8, "filter");
  check.ExpectDType(out, DType::kInt8, "output");
  check.ExpectActivationQuantization(in, "input");
  check.ExpectActivationQuantization(out, "output");
  check.ExpectWeightQuantization(filter, channel_dim);
}

template <typename T>
std::vector<T> BiasOrZero(const OpChecker& check, int64_t channels, DType dtype) {
  std::vector<T> bias(static_cast<size_t>(channels), T{0});
  if (check.InputId(2) >= 0) {
    const Tensor& b = check.Input(2);
    check.ExpectConstant(b, "bias");
    check.ExpectDType(b, dtype, "bias");
    check.ExpectShape(b, {channels}, "bias");
    std::memcpy(bias.data(), b.data.data(), b.data.size());
  }
  return bias;
}

// Grouped (or plain) int8 convolution: each output position's taps are
// gathered into an im2col row, padded with the input zero point, and one GEMM
// per group gives the exact int32 sums.
class ConvInt8 final : public Kernel {
 public:
  ConvInt8(const OpChecker& check, Numerics numerics) : gemm_(&check.gemm()) {
    g_ = CheckGeometry(check, false);
    const Tensor& in = check.Input(0);
    const Tensor& filter = check.Input(1);
    const Tensor& out = check.Output(0);
    CheckInt8Tensors(check, in, filter, out, 0);
    group_out_ = g_.out_c / g_.groups;
    depth_ = g_.k_h * g_.k_w * g_.filter_c;
    if (depth_ > gemm::kMaxDepth) {
      check.Fail("filter depth " + std::to_string(depth_) + " exceeds " + std::to_string(gemm::kMaxDepth) +
                 ", the largest for which int32 sums are exact");
    }
    input_zero_point_ = in.zero_points[0];
    const int8_t* w = filter.as<int8_t>();
    const std::vector<int32_t> bias = BiasOrZero<int32_t>(check, g_.out_c, DType::kInt32);
    folded_bias_ = FoldInputZeroPoint(check, bias, w, g_.out_c, depth_, input_zero_point_);
    packed_.resize(static_cast<size_t>(g_.groups));
    for (int64_t group = 0; group < g_.groups; ++group) {
      gemm_->pack(w + group * group_out_ * depth_, group_out_, depth_, &packed_[static_cast<size_t>(group)]);
    }
    // A 1x1 convolution with stride 1 reads its GEMM rows straight from the input.
    direct_ = g_.k_h == 1 && g_.k_w == 1 && g_.stride_h == 1 && g_.stride_w == 1 && g_.groups == 1;
    ValidFilterColumns(g_, &tap_begin_, &tap_end_);
    // The taps of one filter row are adjacent in the input when they are
    // adjacent pixels and the group spans all channels. Such filters read each
    // record through a copy framed with the input zero point, so that every
    // filter row is one run of bytes with no bounds checks. The frame covers
    // the padding and any window that reaches past the image.
    framed_ = g_.dilation_w == 1 && g_.groups == 1 && !direct_;
    padded_h_ = std::max(g_.pad_top + g_.in_h, (g_.out_h - 1) * g_.stride_h + (g_.k_h - 1) * g_.dilation_h + 1);
    padded_w_ = std::max(g_.pad_left + g_.in_w, (g_.out_w - 1) * g_.stride_w + g_.k_w);
    // Small filters take more rows per GEMM call, so that the call overhead
    // stays small next to the arithmetic; about 16 KiB of im2col rows.
    gemm_rows_ = std::max<int64_t>(kGemmRows, std::min<int64_t>(512, 16384 / depth_ / 16 * 16));
    const auto formula = numerics == Numerics::kLitertReference ? ChannelRequantizer::Formula::kFixedPoint
                                                                 : ChannelRequantizer::Formula::kFp32;
    requantize_ = ChannelRequantizer(check, formula, in, filter, out, g_.out_c, check.ActivationOption(), numerics);
    requantize_.AllowSaturationClamps(w, depth_, folded_bias_);
    if (framed_ && requantize_.is_fp32() && gemm_->run_segments_requantize_fp32 != nullptr) PackSegments(w);
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  int64_t ScratchBytes(int64_t) const override {
    const int64_t frame_bytes = padded_h_ * padded_w_ * g_.in_c;
    if (segmented_) {
      // Row starts, then the frames of records_per_call_ records; 16: the
      // word copies write up to 15 bytes past the last frame, and the GEMM
      // reads up to 3 past its last filter row.
      const int64_t starts = records_per_call_ * g_.out_h * g_.out_w * static_cast<int64_t>(sizeof(const int8_t*));
      return starts + records_per_call_ * frame_bytes + 16;
    }
    // 16: the word copies read and write up to 15 bytes past the frame.
    const int64_t frame = framed_ ? frame_bytes + 16 : 0;
    return gemm_rows_ * depth_ + gemm_rows_ * group_out_ * static_cast<int64_t>(sizeof(int32_t)) + frame;
  }
  int64_t MacsPerRecord() const override { return g_.out_h * g_.out_w * g_.out_c * depth_; }

  void Run(Arena& arena, int64_t batch) const override {
    if (segmented_) {
      RunSegments(arena, batch);
      return;
    }
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    int8_t* rows = reinterpret_cast<int8_t*>(arena.scratch.data());
    int32_t* acc = reinterpret_cast<int32_t*>(arena.scratch.data() + gemm_rows_ * depth_);
    int8_t* frame = rows + gemm_rows_ * depth_ + gemm_rows_ * group_out_ * static_cast<int64_t>(sizeof(int32_t));
    int64_t framed_record = -1;  // the record now in `frame`
    const ConvGeometry& g = g_;
    const int64_t positions = batch * g.out_h * g.out_w;
    for (int64_t p0 = 0; p0 < positions; p0 += gemm_rows_) {
      const int64_t m = std::min(gemm_rows_, positions - p0);
      for (int64_t group = 0; group < g.groups; ++group) {
        const int8_t* a = rows;
        int64_t a_stride = depth_;
        if (direct_) {
          a = x + p0 * g.in_c;
          a_stride = g.in_c;
        } else if (framed_) {
          // Filter rows of up to 64 bytes, the most common, copy a fixed number of words.
          switch ((g.k_w * g.in_c + 15) / 16) {
            case 1: GatherFramedRows<1>(x, p0, m, rows, frame, &framed_record); break;
            case 2: GatherFramedRows<2>(x, p0, m, rows, frame, &framed_record); break;
            case 3: GatherFramedRows<3>(x, p0, m, rows, frame, &framed_record); break;
            case 4: GatherFramedRows<4>(x, p0, m, rows, frame, &framed_record); break;
            default: GatherFramedRows<0>(x, p0, m, rows, frame, &framed_record); break;
          }
        } else {
          GatherRows(x, p0, m, group, rows);
        }
        if (requantize_.is_fp32()) {
          const int64_t first = group * group_out_;
          gemm::RunRequantizeFp32(*gemm_, a, a_stride, m, packed_[static_cast<size_t>(group)], acc,
                                  requantize_.Fp32Stage(folded_bias_.data() + first, first), y + p0 * g.out_c + first,
                                  g.out_c);
          continue;
        }
        gemm_->run(a, a_stride, m, packed_[static_cast<size_t>(group)], acc, group_out_);
        for (int64_t i = 0; i < m; ++i) {
          int8_t* yp = y + (p0 + i) * g.out_c + group * group_out_;
          const int32_t* ai = acc + i * group_out_;
          for (int64_t j = 0; j < group_out_; ++j) {
            const int64_t oc = group * group_out_ + j;
            yp[j] = requantize_(WrappingAdd(ai[j], folded_bias_[static_cast<size_t>(oc)]), oc);
          }
        }
      }
    }
  }

 private:
  // Prepares the in-place reading of framed filter rows, for paths that read
  // segmented rows (gemm::SegmentedRows). Each filter row of k_w * in_c bytes
  // becomes a segment padded to a multiple of 4 with zero weights. Those
  // weights meet the frame bytes after the row.
  void PackSegments(const int8_t* w) {
    const int64_t span = g_.k_w * g_.in_c;
    segment_ = (span + 3) / 4 * 4;
    std::vector<int8_t> padded(static_cast<size_t>(g_.out_c * g_.k_h * segment_), 0);
    for (int64_t oc = 0; oc < g_.out_c; ++oc) {
      for (int64_t ky = 0; ky < g_.k_h; ++ky) {
        std::memcpy(padded.data() + (oc * g_.k_h + ky) * segment_, w + oc * depth_ + ky * span,
                    static_cast<size_t>(span));
      }
    }
    gemm_->pack(padded.data(), g_.out_c, g_.k_h * segment_, &packed_segments_);
    records_per_call_ = std::max<int64_t>(1, gemm_rows_ / (g_.out_h * g_.out_w));
    segmented_ = true;
  }

  // Frames up to records_per_call_ records at a time and runs one GEMM over
  // all their output positions, reading each filter row in place. Every call
  // uses the same frames, so their borders of the input zero point and the
  // row starts are written once per Run. Later calls copy only the images.
  void RunSegments(Arena& arena, int64_t batch) const {
    const ConvGeometry& g = g_;
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    const int64_t positions = g.out_h * g.out_w;
    const int64_t frame_line = padded_w_ * g.in_c;
    const int64_t frame_bytes = padded_h_ * frame_line;
    const int64_t in_line = g.in_w * g.in_c;
    const int64_t image_bytes = g.in_h * in_line;
    const int8_t** starts = reinterpret_cast<const int8_t**>(arena.scratch.data());
    int8_t* frames = reinterpret_cast<int8_t*>(arena.scratch.data()) +
                     records_per_call_ * positions * static_cast<int64_t>(sizeof(const int8_t*));
    const int64_t framed = std::min(records_per_call_, batch);
    FillWords(frames, static_cast<int8_t>(input_zero_point_), framed * frame_bytes);
    const int8_t** start = starts;
    for (int64_t i = 0; i < framed; ++i) {
      for (int64_t oy = 0; oy < g.out_h; ++oy) {
        const int8_t* line = frames + i * frame_bytes + oy * g.stride_h * frame_line;
        for (int64_t ox = 0; ox < g.out_w; ++ox) *start++ = line + ox * g.stride_w * g.in_c;
      }
    }
    gemm::SegmentedRows a;
    a.rows = starts;
    a.segments = g.k_h;
    a.segment = segment_;
    a.segment_stride = g.dilation_h * frame_line;
    const gemm::Fp32Requantization stage = requantize_.Fp32Stage(folded_bias_.data(), 0);
    int8_t* image = frames + g.pad_top * frame_line + g.pad_left * g.in_c;
    for (int64_t b0 = 0; b0 < batch; b0 += records_per_call_) {
      const int64_t records = std::min(records_per_call_, batch - b0);
      for (int64_t i = 0; i < records; ++i) {
        const int8_t* src = x + (b0 + i) * image_bytes;
        int8_t* dst = image + i * frame_bytes;
        for (int64_t iy = 0; iy < g.in_h; ++iy) CopyExactly(dst + iy * frame_line, src + iy * in_line, in_line);
      }
      gemm_->run_segments_requantize_fp32(a, records * positions, packed_segments_, stage,
                                          y + b0 * positions * g.out_c, g.out_c);
    }
  }

  // Writes the im2col rows of output positions [first, first + count)
  // (batch-major) for one group, depth_ bytes apart: the taps of each
  // position in the filter's (ky, kx, channel) order, with the input zero
  // point for taps in the padding. Used for filters that are not framed_, whose
  // taps are copied one filter column at a time.
  void GatherRows(const int8_t* x, int64_t first, int64_t count, int64_t group, int8_t* rows) const {
    // Locals, not members: the int8 stores below may alias any object, so
    // the compiler would reload every member after each of them.
    const ConvGeometry g = g_;
    const int64_t depth = depth_;
    const int64_t* tap_begin = tap_begin_.data();
    const int64_t* tap_end = tap_end_.data();
    const auto zero_point = static_cast<int8_t>(input_zero_point_);
    const int64_t span = g.k_w * g.filter_c;  // bytes of one filter row
    const int64_t image_bytes = g.in_h * g.in_w * g.in_c;
    const int64_t line_bytes = g.in_w * g.in_c;

    int64_t b = first / (g.out_h * g.out_w);
    int64_t oy = (first / g.out_w) % g.out_h;
    int64_t ox = first % g.out_w;
    for (int64_t i = 0; i < count; ++i) {
      int8_t* row = rows + i * depth;
      const int8_t* xb = x + b * image_bytes + group * g.filter_c;
      const int64_t begin = tap_begin[ox];
      const int64_t end = tap_end[ox];
      const int64_t ix0 = ox * g.stride_w - g.pad_left;
      for (int64_t ky = 0; ky < g.k_h; ++ky) {
        const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
        int8_t* dst = row + ky * span;
        if (iy < 0 || iy >= g.in_h || begin == end) {
          FillWords(dst, zero_point, span);
          continue;
        }
        const int8_t* src = xb + iy * line_bytes;
        FillWords(dst, zero_point, begin * g.filter_c);
        for (int64_t kx = begin; kx < end; ++kx) {
          CopyWords(dst + kx * g.filter_c, src + (ix0 + kx * g.dilation_w) * g.in_c, g.filter_c);
        }
        FillWords(dst + end * g.filter_c, zero_point, (g.k_w - end) * g.filter_c);
      }
      if (++ox == g.out_w) {
        ox = 0;
        if (++oy == g.out_h) {
          oy = 0;
          ++b;
        }
      }
    }
  }

  // GatherRows for filters whose rows are contiguous (framed_). Each record
  // is first copied into `frame`, inside a border of the input zero point,
  // unless *framed_record shows it is there already. Each filter row of each
  // position is then one run of bytes in the frame, copied in kWords 16-byte
  // words (any number when kWords is 0).
  template <int kWords>
  void GatherFramedRows(const int8_t* x, int64_t first, int64_t count, int8_t* rows, int8_t* frame,
                        int64_t* framed_record) const {
    const ConvGeometry g = g_;
    const int64_t depth = depth_;
    const int64_t span = g.k_w * g.in_c;
    const int64_t frame_line = padded_w_ * g.in_c;
    const int64_t tap_line = g.dilation_h * frame_line;  // from one filter row to the next
    const int64_t step = g.stride_w * g.in_c;            // from one output column to the next
    int64_t b = first / (g.out_h * g.out_w);
    int64_t oy = (first / g.out_w) % g.out_h;
    int64_t ox = first % g.out_w;
    for (int64_t i = 0; i < count;) {
      if (b != *framed_record) {
        FrameRecord(x + b * g.in_h * g.in_w * g.in_c, frame);
        *framed_record = b;
      }
      // The positions left in this output row.
      const int64_t run = std::min(count - i, g.out_w - ox);
      const int8_t* src = frame + oy * g.stride_h * frame_line + ox * step;
      int8_t* row = rows + i * depth;
      for (int64_t r = 0; r < run; ++r, src += step, row += depth) {
        for (int64_t ky = 0; ky < g.k_h; ++ky) {
          if (kWords > 0) {
            for (int w = 0; w < kWords; ++w) std::memcpy(row + ky * span + 16 * w, src + ky * tap_line + 16 * w, 16);
          } else {
            CopyWords(row + ky * span, src + ky * tap_line, span);
          }
        }
      }
      i += run;
      ox += run;
      if (ox == g.out_w) {
        ox = 0;
        if (++oy == g.out_h) {
          oy = 0;
          ++b;
        }
      }
    }
  }

  // Writes one record into `frame`: padded_h_ lines of padded_w_ pixels, the
  // image at (pad_top, pad_left) and the input zero point around it. Each
  // line is written from the front in whole words, so that the next step
  // rewrites the bytes each step writes past its end. Those of the last line
  // land in the scratch past the frame.
  void FrameRecord(const int8_t* xb, int8_t* frame) const {
    const ConvGeometry& g = g_;
    const auto zero_point = static_cast<int8_t>(input_zero_point_);
    const int64_t frame_line = padded_w_ * g.in_c;
    const int64_t in_line = g.in_w * g.in_c;
    const int64_t left = g.pad_left * g.in_c;
    const int64_t right = frame_line - left - in_line;
    for (int64_t line = 0; line < padded_h_; ++line) {
      int8_t* dst = frame + line * frame_line;
      const int64_t iy = line - g.pad_top;
      if (iy < 0 || iy >= g.in_h) {
        FillWords(dst, zero_point, frame_line);
        continue;
      }
      FillWords(dst, zero_point, left);
      CopyWords(dst + left, xb + iy * in_line, in_line);
      FillWords(dst + left + in_line, zero_point, right);
    }
  }

  // memcpy and memset in whole 16-byte words, for the short runs of most
  // filters, where a library call costs more than the copy. They may read up
  // to 15 bytes past src + n, which kArenaSlack allows, and write up to 15
  // bytes past dst + n. GatherRows writes each row from the front, so the
  // next run rewrites those bytes. Past the last row they land in the GEMM's
  // accumulators, which the GEMM writes next, or in the scratch's slack.
  static void CopyWords(int8_t* dst, const int8_t* src, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) std::memcpy(dst + i, src + i, 16);
  }

  // memcpy of n > 0 bytes that touches no byte outside the two ranges, as
  // at most four fixed-size copies, which may overlap.
  static void CopyExactly(int8_t* dst, const int8_t* src, int64_t n) {
    if (n >= 16) {
      for (int64_t i = 0; i + 16 <= n; i += 16) std::memcpy(dst + i, src + i, 16);
      if (n % 16 != 0) std::memcpy(dst + n - 16, src + n - 16, 16);
    } else if (n >= 8) {
      std::memcpy(dst, src, 8);
      std::memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4) {
      std::memcpy(dst, src, 4);
      std::memcpy(dst + n - 4, src + n - 4, 4);
    } else {
      for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    }
  }

  static void FillWords(int8_t* dst, int8_t value, int64_t n) {
    int8_t word[16];
    std::memset(word, value, sizeof(word));
    for (int64_t i = 0; i < n; i += 16) std::memcpy(dst + i, word, 16);
  }

  ConvGeometry g_;
  const gemm::Int8Gemm* gemm_;
  int64_t group_out_ = 0, depth_ = 0;
  int32_t input_zero_point_ = 0;
  std::vector<gemm::PackedB> packed_;
  std::vector<int32_t> folded_bias_;
  bool direct_ = false;
  bool framed_ = false;                  // gathers through a framed copy of each record
  // Reads the framed filter rows in place instead (PackSegments).
  bool segmented_ = false;
  int64_t segment_ = 0;            // bytes per filter row, padded to a multiple of 4
  int64_t records_per_call_ = 1;   // records framed for one GEMM call
  gemm::PackedB packed_segments_;  // the weights with each filter row padded to segment_
  int64_t padded_h_ = 0, padded_w_ = 0;  // size of that copy
  // Taps kx in [tap_begin_[ox], tap_end_[ox]) of output column ox are inside the image.
  std::vector<int64_t> tap_begin_, tap_end_;
  int64_t gemm_rows_ = kGemmRows;  // im2col rows per GEMM call
  ChannelRequantizer requantize_;
  int in_id_ = 0, out_id_ = 0;
};

// The vector row kernel of a GEMM path, or nullptr for the scalar path,
// which runs the portable loop.
DepthwiseRowKernel SelectDepthwiseRow(const gemm::Int8Gemm& path) {
  const std::string name = path.name;
  if (name == "avx2" || gemm::RunsAvx512Vnni(path)) return DepthwiseRowAvx2();
  if (name == "neon" || name == "neondot") return DepthwiseRowNeon();
  return nullptr;
}

// Depthwise int8 convolution: direct loops over the taps, one output row at
// a time, through the GEMM path's output stage. With depth multiplier 1 the
// vector paths compute the row's sums in their own kernel (depthwise.h);
// the loop here is the reference they match.
class DepthwiseInt8 final : public Kernel {
 public:
  DepthwiseInt8(const OpChecker& check, Numerics numerics) : gemm_(&check.gemm()) {
    g_ = CheckGeometry(check, true);
    const Tensor& in = check.Input(0);
    const Tensor& filter = check.Input(1);
    const Tensor& out = check.Output(0);
    CheckInt8Tensors(check, in, filter, out, 3);
    filter_ = filter.as<int8_t>();
    bias_ = BiasOrZero<int32_t>(check, g_.out_c, DType::kInt32);
    input_zero_point_ = in.zero_points[0];
    if (g_.depth_multiplier == 1) row_kernel_ = SelectDepthwiseRow(check.gemm());
    if (row_kernel_ != nullptr) {
      const int64_t taps = g_.k_h * g_.k_w;
      wide_filter_.assign(filter_, filter_ + taps * g_.out_c);
      // Slack for the vector kernels, whose last block of 16 channels may read past the end.
      wide_filter_.resize(wide_filter_.size() + 16, 0);
      ValidFilterColumns(g_, &kx_begin_, &kx_end_);
      row_.in_h = g_.in_h;
      row_.in_w = g_.in_w;
      row_.channels = g_.in_c;
      row_.out_w = g_.out_w;
      row_.k_h = g_.k_h;
      row_.k_w = g_.k_w;
      row_.stride_h = g_.stride_h;
      row_.stride_w = g_.stride_w;
      row_.dilation_h = g_.dilation_h;
      row_.dilation_w = g_.dilation_w;
      row_.pad_top = g_.pad_top;
      row_.pad_left = g_.pad_left;
      row_.zero_point = static_cast<int16_t>(input_zero_point_);
      row_.weights = wide_filter_.data();
      row_.kx_begin = kx_begin_.data();
      row_.kx_end = kx_end_.data();
      PairTaps();
    }
    const auto formula = numerics == Numerics::kLitertReference ? ChannelRequantizer::Formula::kFixedPoint
                                                                 : ChannelRequantizer::Formula::kFp32;
    requantize_ = ChannelRequantizer(check, formula, in, filter, out, g_.out_c, check.ActivationOption(), numerics);
    // The avx512vnni path computes rows and their fp32 output stage in one kernel.
    if (row_kernel_ != nullptr && requantize_.is_fp32() && gemm::RunsAvx512Vnni(check.gemm()) &&
        g_.k_h * g_.k_w <= kMaxFusedDepthwiseTaps) {
      fused_kernel_ = DepthwiseRowRequantizeAvx512();
    }
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  int64_t ScratchBytes(int64_t) const override { return g_.out_w * g_.out_c * static_cast<int64_t>(sizeof(int32_t)); }
  int64_t MacsPerRecord() const override { return g_.out_h * g_.out_w * g_.out_c * g_.k_h * g_.k_w; }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    int32_t* acc = reinterpret_cast<int32_t*>(arena.scratch.data());
    const ConvGeometry& g = g_;
    const int64_t row_values = g.out_w * g.out_c;
    for (int64_t b = 0; b < batch; ++b) {
      const int8_t* xb = x + b * g.in_h * g.in_w * g.in_c;
      for (int64_t oy = 0; oy < g.out_h; ++oy) {
        if (fused_kernel_ != nullptr) {
          fused_kernel_(row_, xb, oy, requantize_.Fp32Stage(bias_.data(), 0), y + (b * g.out_h + oy) * row_values);
          continue;
        }
        // The sums of one output row; the bias comes with the output stage.
        if (row_kernel_ != nullptr) {
          row_kernel_(row_, xb, oy, acc);
        } else {
          AccumulateRow(xb, oy, acc);
        }
        int8_t* yrow = y + (b * g.out_h + oy) * row_values;
        if (requantize_.is_fp32()) {
          gemm_->requantize_fp32(acc, g.out_c, g.out_w, g.out_c, requantize_.Fp32Stage(bias_.data(), 0), yrow,
                                 g.out_c);
          continue;
        }
        for (int64_t i = 0; i < row_values; ++i) {
          const int64_t oc = i % g.out_c;
          yrow[i] = requantize_(WrappingAdd(acc[i], bias_[static_cast<size_t>(oc)]), oc);
        }
      }
    }
  }

 private:
  // Fills the tap pairs of DepthwiseRow: offsets, and weights in the order
  // that vpunpcklwd and vpunpckhwd give two taps' 16 inputs. Within each
  // 128-bit lane that order is channels 0-3 and 8-11 of the block, then 4-7
  // and 12-15, each as the pair's first and second tap.
  void PairTaps() {
    const ConvGeometry& g = g_;
    const int64_t taps = g.k_h * g.k_w;
    const int64_t pairs = (taps + 1) / 2;
    const int64_t blocks = (g.in_c + 15) / 16;  // the last block padded with zero weights
    tap_offsets_.resize(static_cast<size_t>(2 * pairs));
    for (int64_t t = 0; t < 2 * pairs; ++t) {
      const int64_t tap = std::min(t, taps - 1);
      const int64_t ky = tap / g.k_w, kx = tap % g.k_w;
      tap_offsets_[static_cast<size_t>(t)] = (ky * g.dilation_h * g.in_w + kx * g.dilation_w) * g.in_c;
    }
    pair_weights_.assign(static_cast<size_t>(pairs * blocks * 32), 0);
    for (int64_t p = 0; p < pairs; ++p) {
      for (int64_t b = 0; b < blocks; ++b) {
        int16_t* out = pair_weights_.data() + (p * blocks + b) * 32;
        for (int64_t i = 0; i < 16; ++i) {
          const int64_t half = i / 8;        // 0: vpunpcklwd, 1: vpunpckhwd
          const int64_t lane = (i % 8) / 4;  // 128-bit lane, channels 0-7 or 8-15 of the block
          const int64_t c = b * 16 + lane * 8 + half * 4 + i % 4;
          for (int64_t k = 0; k < 2; ++k) {
            const int64_t tap = 2 * p + k;
            const bool used = tap < taps && c < g.in_c;
            out[half * 16 + (i % 8) * 2 + k] = used ? wide_filter_[static_cast<size_t>(tap * g.in_c + c)] : 0;
          }
        }
      }
    }
    ordered_pair_weights_.assign(static_cast<size_t>(pairs * blocks * 32), 0);
    for (int64_t p = 0; p < pairs; ++p) {
      for (int64_t b = 0; b < blocks; ++b) {
        int16_t* out = ordered_pair_weights_.data() + (p * blocks + b) * 32;
        for (int64_t i = 0; i < 16; ++i) {
          const int64_t c = b * 16 + i;
          for (int64_t k = 0; k < 2; ++k) {
            const int64_t tap = 2 * p + k;
            const bool used = tap < taps && c < g.in_c;
            out[2 * i + k] = used ? wide_filter_[static_cast<size_t>(tap * g.in_c + c)] : 0;
          }
        }
      }
    }
    zero_point_pixel_.assign(static_cast<size_t>(g.in_c + 16), static_cast<int8_t>(input_zero_point_));
    row_.tap_pairs = pairs;
    row_.tap_offsets = tap_offsets_.data();
    row_.pair_weights = pair_weights_.data();
    row_.ordered_pair_weights = ordered_pair_weights_.data();
    row_.zero_point_pixel = zero_point_pixel_.data();
  }

  // The reference: the sums of output row oy of record xb, channels
  // innermost so that the compiler vectorizes them.
  void AccumulateRow(const int8_t* xb, int64_t oy, int32_t* acc) const {
    // Locals, not members: the stores below may alias any object, so the
    // compiler would reload every member after each of them.
    const ConvGeometry g = g_;
    const int8_t* filter = filter_;
    const int32_t zero_point = input_zero_point_;
    std::fill(acc, acc + g.out_w * g.out_c, 0);
    for (int64_t ox = 0; ox < g.out_w; ++ox) {
      int32_t* sums = acc + ox * g.out_c;
      ForEachTap(g, oy, ox, [&](int64_t ky, int64_t kx, int64_t iy, int64_t ix) {
        const int8_t* xp = xb + (iy * g.in_w + ix) * g.in_c;
        const int8_t* wp = filter + (ky * g.k_w + kx) * g.out_c;
        if (g.depth_multiplier == 1) {
          // |w * (x - zero_point)| <= 128 * 255, so the product fits int16.
          for (int64_t c = 0; c < g.out_c; ++c) {
            sums[c] += static_cast<int16_t>(static_cast<int16_t>(wp[c]) * static_cast<int16_t>(xp[c] - zero_point));
          }
          return;
        }
        for (int64_t ic = 0; ic < g.in_c; ++ic) {
          const int32_t xv = xp[ic] - zero_point;
          for (int64_t m = 0; m < g.depth_multiplier; ++m) {
            const int64_t oc = ic * g.depth_multiplier + m;
            sums[oc] += wp[oc] * xv;
          }
        }
      });
    }
  }

  ConvGeometry g_;
  const gemm::Int8Gemm* gemm_;
  const int8_t* filter_ = nullptr;
  std::vector<int32_t> bias_;
  int32_t input_zero_point_ = 0;
  ChannelRequantizer requantize_;
  int in_id_ = 0, out_id_ = 0;
  // The vector path's row kernel and its operands; nullptr runs the loop above.
  DepthwiseRowKernel row_kernel_ = nullptr;
  // Rows with their output stage, where the path has a kernel for them.
  DepthwiseRowRequantizeKernel fused_kernel_ = nullptr;
  DepthwiseRow row_;
  std::vector<int16_t> wide_filter_;
  std::vector<int64_t> kx_begin_, kx_end_;
  std::vector<int64_t> tap_offsets_;
  std::vector<int16_t> pair_weights_;
  std::vector<int16_t> ordered_pair_weights_;
  std::vector<int8_t> zero_point_pixel_;
};

class ConvFloat final : public Kernel {
 public:
  ConvFloat(const OpChecker& check, bool depthwise) : depthwise_(depthwise) {
    g_ = CheckGeometry(check, depthwise);
    check.ExpectDType(check.Input(1), DType::kFloat32, "filter");
    check.ExpectDType(check.Output(0), DType::kFloat32, "output");
    filter_ = check.Input(1).as<float>();
    bias_ = BiasOrZero<float>(check, g_.out_c, DType::kFloat32);
    ActivationBounds(check.ActivationOption(), &lo_, &hi_);
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  int64_t MacsPerRecord() const override {
    return g_.out_h * g_.out_w * g_.out_c * g_.k_h * g_.k_w * (depthwise_ ? 1 : g_.filter_c);
  }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    const ConvGeometry& g = g_;
    const int64_t group_out = g.out_c / g.groups;
    for (int64_t b = 0; b < batch; ++b) {
      const float* xb = x + b * g.in_h * g.in_w * g.in_c;
      for (int64_t oy = 0; oy < g.out_h; ++oy) {
        for (int64_t ox = 0; ox < g.out_w; ++ox) {
          float* yp = y + ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
          for (int64_t oc = 0; oc < g.out_c; ++oc) {
            float acc = bias_[static_cast<size_t>(oc)];
            if (depthwise_) {
              const int64_t ic = oc / g.depth_multiplier;
              ForEachTap(g, oy, ox, [&](int64_t ky, int64_t kx, int64_t iy, int64_t ix) {
                acc += filter_[(ky * g.k_w + kx) * g.out_c + oc] * xb[(iy * g.in_w + ix) * g.in_c + ic];
              });
            } else {
              const int64_t ic0 = (oc / group_out) * g.filter_c;
              ForEachTap(g, oy, ox, [&](int64_t ky, int64_t kx, int64_t iy, int64_t ix) {
                const float* xp = xb + (iy * g.in_w + ix) * g.in_c + ic0;
                const float* wp = filter_ + ((oc * g.k_h + ky) * g.k_w + kx) * g.filter_c;
                for (int64_t ic = 0; ic < g.filter_c; ++ic) acc += wp[ic] * xp[ic];
              });
            }
            yp[oc] = std::min(std::max(acc, lo_), hi_);
          }
        }
      }
    }
  }

 private:
  bool depthwise_ = false;
  ConvGeometry g_;
  const float* filter_ = nullptr;
  std::vector<float> bias_;
  float lo_ = 0.0f, hi_ = 0.0f;
  int in_id_ = 0, out_id_ = 0;
};

std::unique_ptr<Kernel> MakeConv(const OpChecker& check, Numerics numerics, bool depthwise) {
  check.ExpectArity(2, 3, 1);
  switch (check.Input(0).dtype) {
    case DType::kInt8:
      if (depthwise) return std::make_unique<DepthwiseInt8>(check, numerics);
      return std::make_unique<ConvInt8>(check, numerics);
    case DType::kFloat32:
      return std::make_unique<ConvFloat>(check, depthwise);
    default:
      check.Unsupported(std::string("input dtype ") + DTypeName(check.Input(0).dtype) + " is not supported");
  }
}

// DYNAMIC_CONV_2D: ONNX Runtime's DynamicQuantizeLinear -> ConvInteger ->
// Cast -> Mul (-> Add bias) chain as one op. Each record's float32 input is
// quantized to uint8 with its own scale and zero point, the integer sums are
// exact in int32, and the output is float(sum) * (input_scale *
// weight_scale[c]), plus the float32 bias when there is one, each step
// rounded to float32 as ONNX Runtime's separate Cast, Mul and Add do.
// Padding taps hold the input zero point, so they add nothing, as in ONNX
// Runtime's ConvInteger.
class DynamicConv final : public Kernel {
 public:
  explicit DynamicConv(const OpChecker& check) : gemm_(&check.gemm()) {
    g_ = CheckGeometry(check, false);
    const Tensor& filter = check.Input(1);
    check.ExpectDType(check.Input(0), DType::kFloat32, "input");
    check.ExpectDType(check.Output(0), DType::kFloat32, "output");
    weight_scales_ = DynamicWeightScales(check, filter, 0);
    group_out_ = g_.out_c / g_.groups;
    depth_ = g_.k_h * g_.k_w * g_.filter_c;
    CheckDynamicDepth(check, depth_);
    const int8_t* w = filter.as<int8_t>();
    row_sums_ = WeightRowSums(w, g_.out_c, depth_);
    has_bias_ = check.InputId(2) >= 0;
    bias_ = BiasOrZero<float>(check, g_.out_c, DType::kFloat32);
    packed_.resize(static_cast<size_t>(g_.groups));
    for (int64_t group = 0; group < g_.groups; ++group) {
      gemm_->pack(w + group * group_out_ * depth_, group_out_, depth_, &packed_[static_cast<size_t>(group)]);
    }
    record_elements_ = g_.in_h * g_.in_w * g_.in_c;
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  // int32 sums, then im2col rows, then the quantized record.
  int64_t ScratchBytes(int64_t) const override {
    return kGemmRows * group_out_ * static_cast<int64_t>(sizeof(int32_t)) + kGemmRows * depth_ + record_elements_;
  }
  int64_t MacsPerRecord() const override { return g_.out_h * g_.out_w * g_.out_c * depth_; }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    int32_t* acc = reinterpret_cast<int32_t*>(arena.scratch.data());
    int8_t* rows = reinterpret_cast<int8_t*>(acc + kGemmRows * group_out_);
    int8_t* record = rows + kGemmRows * depth_;
    const ConvGeometry& g = g_;
    const int64_t positions = g.out_h * g.out_w;
    std::vector<float> multiplier(static_cast<size_t>(g.out_c));
    for (int64_t b = 0; b < batch; ++b) {
      const DynamicQuantization q = QuantizeDynamicUint8(x + b * record_elements_, record_elements_, record);
      for (int64_t c = 0; c < g.out_c; ++c) {
        multiplier[static_cast<size_t>(c)] = q.scale * weight_scales_[static_cast<size_t>(c)];
      }
      float* yb = y + b * positions * g.out_c;
      for (int64_t p0 = 0; p0 < positions; p0 += kGemmRows) {
        const int64_t m = std::min(kGemmRows, positions - p0);
        for (int64_t group = 0; group < g.groups; ++group) {
          GatherRows(record, static_cast<int8_t>(q.zero_point), p0, m, group, rows);
          gemm_->run(rows, depth_, m, packed_[static_cast<size_t>(group)], acc, group_out_);
          for (int64_t i = 0; i < m; ++i) {
            float* yp = yb + (p0 + i) * g.out_c + group * group_out_;
            for (int64_t j = 0; j < group_out_; ++j) {
              const size_t c = static_cast<size_t>(group * group_out_ + j);
              const int32_t sum = DynamicInputSum(acc[i * group_out_ + j], q.zero_point, row_sums_[c]);
              float v = static_cast<float>(sum) * multiplier[c];
              if (has_bias_) v = v + bias_[c];
              yp[j] = v;
            }
          }
        }
      }
    }
  }

 private:
  // Writes the im2col rows of output positions [first, first + count) of one
  // record and group, in the filter's (ky, kx, channel) order.
  void GatherRows(const int8_t* record, int8_t zero_point, int64_t first, int64_t count, int64_t group,
                  int8_t* rows) const {
    const ConvGeometry& g = g_;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t oy = (first + i) / g.out_w;
      const int64_t ox = (first + i) % g.out_w;
      int8_t* row = rows + i * depth_;
      for (int64_t ky = 0; ky < g.k_h; ++ky) {
        const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
        for (int64_t kx = 0; kx < g.k_w; ++kx) {
          const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
          int8_t* dst = row + (ky * g.k_w + kx) * g.filter_c;
          if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) {
            std::memset(dst, zero_point, static_cast<size_t>(g.filter_c));
          } else {
            std::memcpy(dst, record + (iy * g.in_w + ix) * g.in_c + group * g.filter_c,
                        static_cast<size_t>(g.filter_c));
          }
        }
      }
    }
  }

  ConvGeometry g_;
  const gemm::Int8Gemm* gemm_;
  int64_t group_out_ = 0, depth_ = 0, record_elements_ = 0;
  std::vector<float> weight_scales_;
  std::vector<int32_t> row_sums_;
  bool has_bias_ = false;
  std::vector<float> bias_;
  std::vector<gemm::PackedB> packed_;
  int in_id_ = 0, out_id_ = 0;
};

}  // namespace

void RegisterConv(Registry& registry) {
  registry["CONV_2D"] = [](const OpChecker& check, Numerics numerics) { return MakeConv(check, numerics, false); };
  registry["DEPTHWISE_CONV_2D"] = [](const OpChecker& check, Numerics numerics) {
    return MakeConv(check, numerics, true);
  };
  registry["DYNAMIC_CONV_2D"] = [](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    check.ExpectArity(2, 3, 1);
    if (numerics != Numerics::kOnnxRuntime) {
      check.Unsupported("dynamic quantization is reproduced in the onnxruntime numerics mode only");
    }
    return std::make_unique<DynamicConv>(check);
  };
}

}  // namespace kernels
}  // namespace edgemia
