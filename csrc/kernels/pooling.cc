// MAX_POOL_2D, AVERAGE_POOL_2D and MEAN.
#include <type_traits>

#include "common.h"
#include "registry.h"

namespace edgemia {
namespace kernels {
namespace {

struct PoolGeometry {
  int64_t in_h = 0, in_w = 0, channels = 0, k_h = 0, k_w = 0, stride_h = 1, stride_w = 1;
  int64_t out_h = 0, out_w = 0, pad_top = 0, pad_left = 0;
};

PoolGeometry CheckPool(const OpChecker& check, bool same_quantization = true) {
  check.ExpectArity(1, 1, 1);
  const Tensor& in = check.Input(0);
  const Tensor& out = check.Output(0);
  check.ExpectActivation(in, "input");
  check.ExpectRank(in, 3, "input");
  check.ExpectRank(out, 3, "output");
  check.ExpectDType(out, in.dtype, "output");
  PoolGeometry g;
  g.in_h = in.shape[0];
  g.in_w = in.shape[1];
  g.channels = in.shape[2];
  g.k_h = check.PositiveOption("filter_h");
  g.k_w = check.PositiveOption("filter_w");
  g.stride_h = check.PositiveOption("stride_h");
  g.stride_w = check.PositiveOption("stride_w");
  const Window wh = check.SpatialWindow(true, g.in_h, g.k_h, g.stride_h, 1);
  const Window ww = check.SpatialWindow(false, g.in_w, g.k_w, g.stride_w, 1);
  g.out_h = wh.out;
  g.out_w = ww.out;
  g.pad_top = wh.pad_before;
  g.pad_left = ww.pad_before;
  check.ExpectShape(out, {g.out_h, g.out_w, g.channels}, "output");
  if (in.dtype == DType::kInt8) {
    check.ExpectActivationQuantization(in, "input");
    check.ExpectActivationQuantization(out, "output");
    // TFLite requires equal input and output quantization for pooling.
    if (same_quantization) check.ExpectSameQuantization(in, out);
  }
  return g;
}

// Calls body(b, oy, ox, y0, y1, x0, x1) with the window clipped to the image.
template <typename Body>
void ForEachWindow(const PoolGeometry& g, int64_t batch, Body&& body) {
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      const int64_t y0 = std::max<int64_t>(oy * g.stride_h - g.pad_top, 0);
      const int64_t y1 = std::min<int64_t>(oy * g.stride_h - g.pad_top + g.k_h, g.in_h);
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        const int64_t x0 = std::max<int64_t>(ox * g.stride_w - g.pad_left, 0);
        const int64_t x1 = std::min<int64_t>(ox * g.stride_w - g.pad_left + g.k_w, g.in_w);
        body(b, oy, ox, y0, y1, x0, x1);
      }
    }
  }
}

// Max over the taps inside the image, then the fused activation's clamp.
template <typename T>
class MaxPool final : public Kernel {
 public:
  MaxPool(const OpChecker& check, Numerics numerics) {
    g_ = CheckPool(check);
    const Activation act = check.ActivationOption();
    if constexpr (std::is_same_v<T, int8_t>) {
      const Tensor& out = check.Output(0);
      const Int8Range range = ActivationRange(act, out.scales[0], out.zero_points[0], numerics);
      lo_ = static_cast<T>(range.lo);
      hi_ = static_cast<T>(range.hi);
    } else {
      ActivationBounds(act, &lo_, &hi_);
    }
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    if constexpr (std::is_same_v<T, int8_t>) {
      RunInt8(arena, batch);
    } else {
      RunFloat(arena, batch);
    }
  }

 private:
  void RunFloat(Arena& arena, int64_t batch) const {
    const T* x = arena.at<T>(in_id_);
    T* y = arena.at<T>(out_id_);
    const PoolGeometry g = g_;
    ForEachWindow(g, batch, [&](int64_t b, int64_t oy, int64_t ox, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
      T* yp = y + ((b * g.out_h + oy) * g.out_w + ox) * g.channels;
      // Channels innermost, so that the compiler vectorizes the loops; each
      // channel still takes its taps in the same order. Locals (g too) keep
      // the stores, which may alias the members, from forcing reloads of them.
      const int64_t channels = g.channels;
      const T lo = lo_, hi = hi_;
      for (int64_t c = 0; c < channels; ++c) yp[c] = std::numeric_limits<T>::lowest();
      for (int64_t iy = y0; iy < y1; ++iy) {
        for (int64_t ix = x0; ix < x1; ++ix) {
          const T* xp = x + ((b * g.in_h + iy) * g.in_w + ix) * channels;
          for (int64_t c = 0; c < channels; ++c) yp[c] = std::max(yp[c], xp[c]);
        }
      }
      for (int64_t c = 0; c < channels; ++c) yp[c] = std::min(std::max(yp[c], lo), hi);
    });
  }

  // int8 in unsigned order: flipping the sign bit (x ^ 0x80) maps the signed
  // order onto the unsigned one, and SSE2, the x86-64 baseline, has an
  // unsigned byte max (pmaxub) but no signed one, so these loops vectorize.
  // 16 bytes in a GCC/Clang vector: SSE2 on x86-64, NEON on aarch64.
  typedef uint8_t Bytes16 __attribute__((vector_size(16)));
  static constexpr int64_t kBlock = 16;
  static constexpr Bytes16 kSignBits = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};

  // Returns the lane-wise max of acc, which contains flipped bytes, and the
  // 16 bytes at p, flipped.
  static Bytes16 MaxFlipped(Bytes16 acc, const uint8_t* p) {
    Bytes16 v;
    std::memcpy(&v, p, sizeof(v));
    v ^= kSignBits;
    return acc > v ? acc : v;
  }

  // Clamps a flipped max to [low, high], flips it back and stores it.
  static void StoreClamped(Bytes16 acc, Bytes16 low, Bytes16 high, uint8_t* y) {
    acc = acc > high ? high : acc;
    acc = acc < low ? low : acc;
    acc ^= kSignBits;
    std::memcpy(y, &acc, sizeof(acc));
  }

  // Windows that all lie inside the image, with whole blocks of channels, go
  // row by row with the taps counted at compile time for the common 2x2 and
  // 3x3 filters (kSide 2 and 3; 0: any filter).
  bool Unclipped() const {
    const PoolGeometry& g = g_;
    return g.pad_top == 0 && g.pad_left == 0 && (g.out_h - 1) * g.stride_h + g.k_h <= g.in_h &&
           (g.out_w - 1) * g.stride_w + g.k_w <= g.in_w && g.channels % kBlock == 0;
  }

  template <int kSide>
  void RunUnclippedInt8(const uint8_t* x, uint8_t* y, int64_t batch, Bytes16 low, Bytes16 high) const {
    const PoolGeometry g = g_;
    const int64_t k_h = kSide > 0 ? kSide : g.k_h;
    const int64_t k_w = kSide > 0 ? kSide : g.k_w;
    const int64_t channels = g.channels;
    const int64_t line = g.in_w * channels;
    const int64_t step = g.stride_w * channels;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t oy = 0; oy < g.out_h; ++oy) {
        const uint8_t* window = x + (b * g.in_h + oy * g.stride_h) * line;
        for (int64_t ox = 0; ox < g.out_w; ++ox, window += step, y += channels) {
          for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
            Bytes16 acc = {};  // 0 is -128 flipped
            for (int64_t ky = 0; ky < k_h; ++ky) {
              for (int64_t kx = 0; kx < k_w; ++kx) acc = MaxFlipped(acc, window + ky * line + kx * channels + c0);
            }
            StoreClamped(acc, low, high, y + c0);
          }
        }
      }
    }
  }

  void RunInt8(Arena& arena, int64_t batch) const {
    const uint8_t* x = arena.at<uint8_t>(in_id_);
    uint8_t* y = arena.at<uint8_t>(out_id_);
    const PoolGeometry g = g_;
    const auto lo = static_cast<uint8_t>(static_cast<uint8_t>(lo_) ^ 0x80u);
    const auto hi = static_cast<uint8_t>(static_cast<uint8_t>(hi_) ^ 0x80u);
    const Bytes16 low = Bytes16{} + lo, high = Bytes16{} + hi;
    if (Unclipped()) {
      if (g.k_h == 2 && g.k_w == 2) {
        RunUnclippedInt8<2>(x, y, batch, low, high);
      } else if (g.k_h == 3 && g.k_w == 3) {
        RunUnclippedInt8<3>(x, y, batch, low, high);
      } else {
        RunUnclippedInt8<0>(x, y, batch, low, high);
      }
      return;
    }
    ForEachWindow(g, batch, [&](int64_t b, int64_t oy, int64_t ox, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
      uint8_t* yp = y + ((b * g.out_h + oy) * g.out_w + ox) * g.channels;
      const int64_t channels = g.channels;
      const int64_t line = g.in_w * channels;
      const uint8_t* window = x + ((b * g.in_h + y0) * g.in_w + x0) * channels;
      // Blocks of 16 channels keep their running max in one vector register.
      // The taps are reached by pointer steps, without index arithmetic.
      int64_t c0 = 0;
      for (; c0 + kBlock <= channels; c0 += kBlock) {
        Bytes16 acc = {};  // 0 is -128 flipped
        const uint8_t* row = window + c0;
        for (int64_t iy = y0; iy < y1; ++iy, row += line) {
          const uint8_t* tap = row;
          for (int64_t ix = x0; ix < x1; ++ix, tap += channels) acc = MaxFlipped(acc, tap);
        }
        StoreClamped(acc, low, high, yp + c0);
      }
      for (int64_t c = c0; c < channels; ++c) {
        uint8_t m = 0;
        for (int64_t iy = y0; iy < y1; ++iy) {
          for (int64_t ix = x0; ix < x1; ++ix) {
            m = std::max<uint8_t>(m, x[((b * g.in_h + iy) * g.in_w + ix) * channels + c] ^ 0x80u);
          }
        }
        yp[c] = std::min(std::max(m, lo), hi) ^ 0x80u;
      }
    });
  }

  PoolGeometry g_;
  T lo_{}, hi_{};
  int in_id_ = 0, out_id_ = 0;
};

// int8 average of the taps inside the image (padding not counted), rounded
// half away from zero in integers, as TFLite's AveragePool computes it. LiteRT
// runs this builtin kernel for int8 in every op resolver.
// Windows of at most this many values divide in float. A quotient n / d with
// |n| <= 129 d that is not an integer lies at least 1 / d from one, and float
// division is off by at most 129 * 2^-24 < 1 / 65536 from it, so truncation
// gives the integer quotient.
constexpr int32_t kFloatDivisionCount = 65536;

class AvgPoolInt8 final : public Kernel {
 public:
  AvgPoolInt8(const OpChecker& check, Numerics numerics) {
    g_ = CheckPool(check);
    const Tensor& out = check.Output(0);
    // The builtin kernel computes its clamp range the TFLite way in every mode.
    range_ = ActivationRange(check.ActivationOption(), out.scales[0], out.zero_points[0], Numerics::kLitertReference);
    (void)numerics;
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  int64_t ScratchBytes(int64_t) const override { return g_.channels * static_cast<int64_t>(sizeof(int32_t)); }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    int32_t* acc = reinterpret_cast<int32_t*>(arena.scratch.data());
    // Locals, not members: the int8 stores below may alias any object, so
    // the compiler would reload every member after each of them.
    const PoolGeometry g = g_;
    const Int8Range range = range_;
    ForEachWindow(g, batch, [&](int64_t b, int64_t oy, int64_t ox, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
      const int32_t count = static_cast<int32_t>((y1 - y0) * (x1 - x0));
      const int64_t channels = g.channels;
      int8_t* yp = y + ((b * g.out_h + oy) * g.out_w + ox) * channels;
      // Channels innermost, so that the compiler vectorizes the sums.
      std::fill(acc, acc + channels, 0);
      for (int64_t iy = y0; iy < y1; ++iy) {
        for (int64_t ix = x0; ix < x1; ++ix) {
          const int8_t* xp = x + ((b * g.in_h + iy) * g.in_w + ix) * channels;
          for (int64_t c = 0; c < channels; ++c) acc[c] += xp[c];
        }
      }
      if (count > 0 && count <= kFloatDivisionCount) {
        // The same quotient through float division, which vectorizes: the
        // dividend is below 2^24 in magnitude, so it converts exactly, and the
        // rounded quotient truncates to the integer one (see kFloatDivisionCount).
        const float divisor = static_cast<float>(count);
        const int32_t half = count / 2;
        for (int64_t c = 0; c < channels; ++c) {
          const int32_t n = acc[c] > 0 ? acc[c] + half : acc[c] - half;
          const auto avg = static_cast<int32_t>(static_cast<float>(n) / divisor);
          yp[c] = static_cast<int8_t>(std::min(std::max(avg, range.lo), range.hi));
        }
      } else {
        for (int64_t c = 0; c < channels; ++c) {
          int32_t avg = 0;
          if (count > 0) avg = acc[c] > 0 ? (acc[c] + count / 2) / count : (acc[c] - count / 2) / count;
          yp[c] = static_cast<int8_t>(std::min(std::max(avg, range.lo), range.hi));
        }
      }
    });
  }

 private:
  PoolGeometry g_;
  Int8Range range_;
  int in_id_ = 0, out_id_ = 0;
};

class AvgPoolFloat final : public Kernel {
 public:
  explicit AvgPoolFloat(const OpChecker& check) {
    g_ = CheckPool(check);
    ActivationBounds(check.ActivationOption(), &lo_, &hi_);
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    const PoolGeometry& g = g_;
    ForEachWindow(g, batch, [&](int64_t b, int64_t oy, int64_t ox, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
      const float count = static_cast<float>((y1 - y0) * (x1 - x0));
      float* yp = y + ((b * g.out_h + oy) * g.out_w + ox) * g.channels;
      for (int64_t c = 0; c < g.channels; ++c) {
        float acc = 0.0f;
        for (int64_t iy = y0; iy < y1; ++iy) {
          for (int64_t ix = x0; ix < x1; ++ix) acc += x[((b * g.in_h + iy) * g.in_w + ix) * g.channels + c];
        }
        yp[c] = std::min(std::max(count > 0 ? acc / count : 0.0f, lo_), hi_);
      }
    });
  }

 private:
  PoolGeometry g_;
  float lo_ = 0.0f, hi_ = 0.0f;
  int in_id_ = 0, out_id_ = 0;
};

// ---------------------------------------------------------------------------
// MEAN over a set of record axes. The axes arrive in the model's coordinates,
// where 0 is the batch.

struct MeanGeometry {
  // The record viewed as [outer, reduced, inner] after moving the reduced axes
  // together is not possible in general, so keep an index map instead.
  std::vector<int64_t> out_index;  // record element -> output element
  int64_t in_elements = 0;
  int64_t out_elements = 0;
  int64_t reduced = 0;  // elements per output value
};

MeanGeometry CheckMean(const OpChecker& check) {
  check.ExpectArity(2, 2, 1);
  const Tensor& in = check.Input(0);
  const Tensor& axes = check.Input(1);
  const Tensor& out = check.Output(0);
  check.ExpectActivation(in, "input");
  check.ExpectConstant(axes, "axes");
  check.ExpectDType(axes, DType::kInt32, "axes");
  check.ExpectDType(out, in.dtype, "output");
  const int64_t rank = static_cast<int64_t>(in.shape.size());
  std::vector<bool> reduce(static_cast<size_t>(rank), false);
  const int32_t* axis = axes.as<int32_t>();
  for (int64_t i = 0; i < axes.elements(); ++i) {
    int64_t a = axis[i];
    if (a < 0) a += rank + 1;
    if (a == 0) check.Unsupported("reducing over the batch axis is not supported");
    if (a < 1 || a > rank) check.Fail("axis " + std::to_string(axis[i]) + " is out of range");
    reduce[static_cast<size_t>(a - 1)] = true;
  }
  MeanGeometry g;
  g.in_elements = in.elements();
  g.reduced = 1;
  std::vector<int64_t> kept_shape;
  for (int64_t d = 0; d < rank; ++d) {
    if (reduce[static_cast<size_t>(d)]) {
      g.reduced *= in.shape[static_cast<size_t>(d)];
    } else {
      kept_shape.push_back(in.shape[static_cast<size_t>(d)]);
    }
  }
  g.out_elements = g.in_elements / g.reduced;
  if (out.elements() != g.out_elements) {
    check.Fail("output '" + out.name + "' has " + std::to_string(out.elements()) + " values per record, expected " +
               std::to_string(g.out_elements));
  }
  g.out_index.resize(static_cast<size_t>(g.in_elements));
  std::vector<int64_t> index(static_cast<size_t>(rank), 0);
  for (int64_t e = 0; e < g.in_elements; ++e) {
    int64_t o = 0;
    for (int64_t d = 0; d < rank; ++d) {
      if (!reduce[static_cast<size_t>(d)]) o = o * in.shape[static_cast<size_t>(d)] + index[static_cast<size_t>(d)];
    }
    g.out_index[static_cast<size_t>(e)] = o;
    for (int64_t d = rank - 1; d >= 0; --d) {
      if (++index[static_cast<size_t>(d)] < in.shape[static_cast<size_t>(d)]) break;
      index[static_cast<size_t>(d)] = 0;
    }
  }
  return g;
}

class MeanInt8 final : public Kernel {
 public:
  MeanInt8(const OpChecker& check, Numerics numerics) : numerics_(numerics) {
    g_ = CheckMean(check);
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectActivationQuantization(in, "input");
    check.ExpectActivationQuantization(out, "output");
    const float in_scale = in.scales[0], out_scale = out.scales[0];
    input_zero_point_ = in.zero_points[0];
    output_zero_point_ = out.zero_points[0];
    // XNNPACK's mean: the int32 sum of raw values, scaled by
    // (input_scale / output_scale) * (1 / n) and shifted by a float zero point
    // that absorbs n * input_zero_point.
    scale_ = (in_scale / out_scale) * (1.0f / static_cast<float>(g_.reduced));
    shifted_zero_point_ = static_cast<float>(output_zero_point_) -
                          static_cast<float>(static_cast<int32_t>(g_.reduced) * input_zero_point_) * scale_;
    // TFLite's reference QuantizedMeanOrSum: a fixed-point multiplier for
    // input_scale / output_scale, divided by n in integers before use.
    int32_t multiplier = 0;
    int shift = 0;
    QuantizeMultiplier(static_cast<double>(in_scale) / static_cast<double>(out_scale), &multiplier, &shift);
    const uint64_t n = static_cast<uint64_t>(g_.reduced);
    int divisor_shift = 63 - __builtin_clzll(n);
    divisor_shift = std::min(divisor_shift, 32);
    divisor_shift = std::min(divisor_shift, 31 + shift);
    reference_multiplier_ = static_cast<int32_t>((static_cast<int64_t>(multiplier) << divisor_shift) /
                                                 static_cast<int64_t>(n));
    reference_shift_ = shift - divisor_shift;
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    std::vector<int32_t> sums(static_cast<size_t>(g_.out_elements));
    for (int64_t b = 0; b < batch; ++b) {
      std::fill(sums.begin(), sums.end(), 0);
      const int8_t* xb = x + b * g_.in_elements;
      for (int64_t e = 0; e < g_.in_elements; ++e) sums[static_cast<size_t>(g_.out_index[static_cast<size_t>(e)])] += xb[e];
      int8_t* yb = y + b * g_.out_elements;
      for (int64_t o = 0; o < g_.out_elements; ++o) {
        const int32_t sum = sums[static_cast<size_t>(o)];
        if (numerics_ == Numerics::kLitertReference) {
          const int32_t shifted = sum - input_zero_point_ * static_cast<int32_t>(g_.reduced);
          const int32_t v =
              MultiplyByQuantizedMultiplier(shifted, reference_multiplier_, reference_shift_) + output_zero_point_;
          yb[o] = static_cast<int8_t>(std::min(std::max(v, -128), 127));
        } else {
          const float r = std::nearbyint(static_cast<float>(sum) * scale_ + shifted_zero_point_);
          yb[o] = static_cast<int8_t>(std::min(std::max(r, -128.0f), 127.0f));
        }
      }
    }
  }

 private:
  Numerics numerics_;
  MeanGeometry g_;
  int32_t input_zero_point_ = 0, output_zero_point_ = 0;
  float scale_ = 0.0f, shifted_zero_point_ = 0.0f;
  int32_t reference_multiplier_ = 0;
  int reference_shift_ = 0;
  int in_id_ = 0, out_id_ = 0;
};

class MeanFloat final : public Kernel {
 public:
  explicit MeanFloat(const OpChecker& check) {
    g_ = CheckMean(check);
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    std::vector<float> sums(static_cast<size_t>(g_.out_elements));
    for (int64_t b = 0; b < batch; ++b) {
      std::fill(sums.begin(), sums.end(), 0.0f);
      const float* xb = x + b * g_.in_elements;
      for (int64_t e = 0; e < g_.in_elements; ++e) sums[static_cast<size_t>(g_.out_index[static_cast<size_t>(e)])] += xb[e];
      for (int64_t o = 0; o < g_.out_elements; ++o) {
        y[b * g_.out_elements + o] = sums[static_cast<size_t>(o)] / static_cast<float>(g_.reduced);
      }
    }
  }

 private:
  MeanGeometry g_;
  int in_id_ = 0, out_id_ = 0;
};
// int8 average pooling as ONNX Runtime's QLinearAveragePool computes it. A
// window that spans the whole unpadded image takes MLAS's global average pool:
// the exact int32 sum minus input_zero_point * count, times input_scale /
// (output_scale * count) through the fp32 output stage. Any other window
// dequantizes each value to input_scale * (x - zero_point), sums in float32
// row by row, divides by the number of taps inside the image and quantizes y / output_scale +
// zero_point, rounded half to even. With option uint8_domain = 1 the zero
// points and values are those of the uint8 tensors (value + 128) that ONNX
// Runtime's x86-64 build converts int8 QDQ activations to, which changes the
// float rounding of the last step.
class AvgPoolInt8OnnxRuntime final : public Kernel {
 public:
  explicit AvgPoolInt8OnnxRuntime(const OpChecker& check) {
    g_ = CheckPool(check, false);
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    if (check.ActivationOption() != Activation::kNone) check.Unsupported("a fused activation is not supported");
    in_scale_ = in.scales[0];
    in_zero_point_ = in.zero_points[0];
    out_scale_ = out.scales[0];
    out_zero_point_ = out.zero_points[0];
    bool unpadded = true;
    if (check.PaddingOption() == Padding::kExplicit) {
      for (const char* key : {"pad_top", "pad_bottom", "pad_left", "pad_right"}) unpadded &= check.Option(key) == 0;
    } else {
      unpadded = g_.pad_top == 0 && g_.pad_left == 0;
    }
    const int64_t domain = check.OptionOr("uint8_domain", 0);
    if (domain != 0 && domain != 1) check.Fail("option 'uint8_domain' is " + std::to_string(domain) + ", expected 0 or 1");
    offset_ = domain != 0 ? 128 : 0;
    global_ = unpadded && g_.k_h == g_.in_h && g_.k_w == g_.in_w;
    if (global_) {
      const int64_t count = g_.k_h * g_.k_w;
      global_scale_ = in_scale_ / (out_scale_ * static_cast<float>(count));
      // ONNX Runtime raises an error for these parameters instead of computing an output.
      if (count >= 0x1000000 || !(global_scale_ >= 0x1.0p-32f && global_scale_ < 256.0f)) {
        check.Unsupported("input to output scale ratio " + std::to_string(global_scale_) +
                          " over the window is outside [2^-32, 256), which ONNX Runtime rejects");
      }
    }
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    // Locals, not members: the int8 stores below may alias any object.
    const PoolGeometry g = g_;
    const float in_scale = in_scale_, out_scale = out_scale_, global_scale = global_scale_;
    const int32_t in_zero_point = in_zero_point_, out_zero_point = out_zero_point_, offset = offset_;
    const float lo = static_cast<float>(-128 - out_zero_point), hi = static_cast<float>(127 - out_zero_point);
    const float shifted_zero_point = static_cast<float>(out_zero_point + offset);
    // Per-channel sums with channels innermost, so that the compiler
    // vectorizes across channels. Each float sum adds the taps row by row.
    std::vector<int32_t> int_sums(static_cast<size_t>(g.channels));
    std::vector<float> sums(static_cast<size_t>(g.channels));
    int32_t* int_sum = int_sums.data();
    float* sum = sums.data();
    ForEachWindow(g, batch, [&](int64_t b, int64_t oy, int64_t ox, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
      const int64_t channels = g.channels;
      int8_t* yp = y + ((b * g.out_h + oy) * g.out_w + ox) * channels;
      const int64_t taps = (y1 - y0) * (x1 - x0);
      if (global_) {
        std::fill(int_sum, int_sum + channels, -in_zero_point * static_cast<int32_t>(taps));
        for (int64_t iy = y0; iy < y1; ++iy) {
          for (int64_t ix = x0; ix < x1; ++ix) {
            const int8_t* xp = x + ((b * g.in_h + iy) * g.in_w + ix) * channels;
            for (int64_t c = 0; c < channels; ++c) int_sum[c] += xp[c];
          }
        }
        for (int64_t c = 0; c < channels; ++c) yp[c] = RequantizeFp32(int_sum[c], global_scale, lo, hi, out_zero_point);
        return;
      }
      std::fill(sum, sum + channels, 0.0f);
      for (int64_t iy = y0; iy < y1; ++iy) {
        for (int64_t ix = x0; ix < x1; ++ix) {
          const int8_t* xp = x + ((b * g.in_h + iy) * g.in_w + ix) * channels;
          for (int64_t c = 0; c < channels; ++c) sum[c] += in_scale * static_cast<float>(xp[c] - in_zero_point);
        }
      }
      const float count = static_cast<float>(taps);
      for (int64_t c = 0; c < channels; ++c) {
        const float v = sum[c] / count / out_scale + shifted_zero_point;
        yp[c] = static_cast<int8_t>(ConvertClampX86(v, offset - 128, offset + 127) - offset);
      }
    });
  }

 private:
  PoolGeometry g_;
  float in_scale_ = 1.0f, out_scale_ = 1.0f, global_scale_ = 1.0f;
  int32_t in_zero_point_ = 0, out_zero_point_ = 0;
  int32_t offset_ = 0;  // 128 when ONNX Runtime runs the op on uint8 values (value + 128)
  bool global_ = false;
  int in_id_ = 0, out_id_ = 0;
};

}  // namespace

void RegisterPooling(Registry& registry) {
  registry["MAX_POOL_2D"] = [](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    if (check.InputCount() >= 1 && check.Input(0).dtype == DType::kInt8) {
      return std::make_unique<MaxPool<int8_t>>(check, numerics);
    }
    if (check.InputCount() >= 1 && check.Input(0).dtype == DType::kFloat32) {
      return std::make_unique<MaxPool<float>>(check, numerics);
    }
    check.Unsupported("input must be int8 or float32");
  };
  registry["AVERAGE_POOL_2D"] = [](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    if (check.InputCount() >= 1 && check.Input(0).dtype == DType::kInt8 && numerics == Numerics::kOnnxRuntime) {
      return std::make_unique<AvgPoolInt8OnnxRuntime>(check);
    }
    if (check.InputCount() >= 1 && check.Input(0).dtype == DType::kInt8) {
      return std::make_unique<AvgPoolInt8>(check, numerics);
    }
    if (check.InputCount() >= 1 && check.Input(0).dtype == DType::kFloat32) {
      return std::make_unique<AvgPoolFloat>(check);
    }
    check.Unsupported("input must be int8 or float32");
  };
  registry["MEAN"] = [](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    if (check.InputCount() >= 1 && check.Input(0).dtype == DType::kInt8) {
      return std::make_unique<MeanInt8>(check, numerics);
    }
    if (check.InputCount() >= 1 && check.Input(0).dtype == DType::kFloat32) {
      return std::make_unique<MeanFloat>(check);
    }
    check.Unsupported("input must be int8 or float32");
  };
}

}  // namespace kernels
}  // namespace edgemia
