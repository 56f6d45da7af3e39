// Helpers shared by the scalar kernels: load-time checks, window geometry,
// activation bounds and the requantization formulas of each numerics mode.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../gemm/gemm.h"
#include "../graph.h"

namespace edgemia {
namespace kernels {

// Output size and leading padding of one spatial dimension.
struct Window {
  int64_t out = 0;
  int64_t pad_before = 0;
};

// ---------------------------------------------------------------------------
// Load-time checks. Every kernel constructor runs these, so Run() needs none.

class OpChecker {
 public:
  OpChecker(const OpSpec& op, const std::vector<Tensor>& tensors, const gemm::Int8Gemm& gemm)
      : op_(op), tensors_(tensors), gemm_(gemm) {}

  [[noreturn]] void Fail(const std::string& message) const {
    throw ModelError("operator " + op_.name + " (" + op_.kind + "): " + message);
  }
  // For valid models that use something the native kernel does not run.
  [[noreturn]] void Unsupported(const std::string& message) const {
    throw UnsupportedError("operator " + op_.name + " (" + op_.kind + "): " + message);
  }

  const OpSpec& op() const { return op_; }
  // The int8 GEMM path the graph runs on.
  const gemm::Int8Gemm& gemm() const { return gemm_; }

  void ExpectArity(size_t min_inputs, size_t max_inputs, size_t outputs) const;

  // Returns the id of input `i`, or -1 when the optional input is omitted.
  int InputId(size_t i) const { return i < op_.inputs.size() ? op_.inputs[i] : -1; }
  int OutputId(size_t i) const { return op_.outputs.at(i); }
  size_t InputCount() const { return op_.inputs.size(); }

  const Tensor& Input(size_t i) const {
    const int id = InputId(i);
    if (id < 0) Fail("input " + std::to_string(i) + " is missing");
    return tensors_[static_cast<size_t>(id)];
  }
  const Tensor& Output(size_t i) const { return tensors_[static_cast<size_t>(op_.outputs.at(i))]; }

  bool HasOption(const std::string& key) const { return op_.options.count(key) != 0; }
  double FloatOptionOr(const std::string& key, double fallback) const {
    auto it = op_.float_options.find(key);
    return it == op_.float_options.end() ? fallback : it->second;
  }
  int64_t Option(const std::string& key) const;
  int64_t OptionOr(const std::string& key, int64_t fallback) const;
  int64_t PositiveOption(const std::string& key, int64_t max_value = 1 << 16) const;
  Padding PaddingOption() const;
  // Output size and leading padding along height or width, for SAME, VALID
  // or EXPLICIT padding.
  // `wide_padding` accepts explicit padding as wide as the window or wider, up
  // to 1024 (ONNX allows it, and convolutions fill those taps with the zero
  // point). Pools keep it below the window, so that every window has a tap in
  // the image.
  Window SpatialWindow(bool height, int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                       bool wide_padding = false) const;
  Activation ActivationOption() const;

  void ExpectDType(const Tensor& t, DType dtype, const char* role) const;
  void ExpectConstant(const Tensor& t, const char* role) const;
  void ExpectActivation(const Tensor& t, const char* role) const;
  void ExpectRank(const Tensor& t, size_t rank, const char* role) const;
  void ExpectShape(const Tensor& t, const std::vector<int64_t>& shape, const char* role) const;
  void ExpectSameQuantization(const Tensor& a, const Tensor& b) const;

  // Per-tensor int8 quantization: one scale and a zero point in -128..127.
  void ExpectActivationQuantization(const Tensor& t, const char* role) const;
  // Symmetric int8 weights, per tensor or per channel along `channel_dim`.
  void ExpectWeightQuantization(const Tensor& t, int channel_dim) const;

  static std::string ShapeText(const std::vector<int64_t>& shape);

 private:
  const OpSpec& op_;
  const std::vector<Tensor>& tensors_;
  const gemm::Int8Gemm& gemm_;
};

// ---------------------------------------------------------------------------
// Window geometry, as TFLite computes it: SAME gives ceil(in / stride) outputs
// and puts the odd padding element at the end.

Window ComputeWindow(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, Padding padding);

// ---------------------------------------------------------------------------
// Activation bounds.

// Float bounds of a fused activation (+-infinity when unbounded).
void ActivationBounds(Activation act, float* lo, float* hi);

// Quantized bound as XNNPACK computes it when LiteRT delegates an int8 op:
// lrintf(clamp(v / scale + zero_point, -128, 127)), float32, half to even.
int32_t QuantizeBoundXnnpack(float v, float scale, int32_t zero_point);

// Quantized bound as TFLite's builtin kernels compute it:
// zero_point + std::round(v / scale), half away from zero, clamped to int8.
int32_t QuantizeBoundTflite(float v, float scale, int32_t zero_point);

struct Int8Range {
  int32_t lo = -128;
  int32_t hi = 127;
};

Int8Range ActivationRange(Activation act, float scale, int32_t zero_point, Numerics numerics);

// ONNX Runtime's 256-entry int8 tables (QlinearBuildLookupTable): dequantize
// each value q as in.scale * (q - in.zero_point), apply `transform`, and
// quantize as MLAS's QuantizeLinear does (divide by out.scale, round half to
// even, add the zero point, clamp). The uint8 form that ONNX Runtime's x86
// build runs on QDQ files gives the same table, because the +128 shift cancels
// in q - zero_point and adds back exactly at the end.
std::array<int8_t, 256> OnnxRuntimeTable(const Tensor& in, const Tensor& out, float (*transform)(float));

// ---------------------------------------------------------------------------
// Requantization.

// XNNPACK's fp32 output stage (LiteRT default path, and ONNX Runtime's MLAS):
// float(acc) * scale, clamped in float, rounded half to even, plus zero point.
using gemm::NearbyintSmall;
using gemm::RequantizeFp32;

// TFLite's fixed-point multiplier: real ~= multiplier * 2^(shift - 31), with
// the multiplier in [2^30, 2^31) and half-away-from-zero rounding of the
// mantissa.
void QuantizeMultiplier(double real, int32_t* multiplier, int* shift);

// gemmlowp's saturating rounding doubling high multiply: (a * b + 2^30) >> 31,
// rounding half away from zero.
inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min()) return std::numeric_limits<int32_t>::max();
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  // C++ integer division truncates toward zero, which gives half away from zero here.
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));
}

// gemmlowp's rounding right shift by `exponent`, half away from zero.
inline int32_t RoundingDivideByPOT(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// TFLite's MultiplyByQuantizedMultiplier in its default double-rounding build.
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  // The left shift wraps like TFLite's int32 arithmetic, without signed overflow.
  const int32_t shifted = static_cast<int32_t>(static_cast<uint32_t>(x) << left);
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(shifted, multiplier), right);
}

// The same for multipliers below one, as TFLite's ADD uses them.
inline int32_t MultiplyByQuantizedMultiplierSmallerThanOne(int32_t x, int32_t multiplier, int shift) {
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, multiplier), -shift);
}

// int32 addition that wraps around like the runtimes' accumulators, without
// the undefined behaviour of signed overflow (reachable only with extreme
// biases).
inline int32_t WrappingAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

// x86's cvtps2dq in the default rounding mode: round half to even, and
// INT32_MIN for NaN and values outside int32 (MLAS's int8 kernels rely on it).
inline int32_t ConvertToInt32X86(float v) {
  if (!(v >= -2147483648.0f && v < 2147483648.0f)) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(std::nearbyint(v));
}

// ConvertToInt32X86, then clamped to [lo, hi] (within 2^22 of zero), without
// a library call: values beyond 2^22 clamp the same either way, and only the
// ones that cvtps2dq turns into INT32_MIN need a test.
inline int32_t ConvertClampX86(float v, int32_t lo, int32_t hi) {
  const bool in_range = v >= -2147483648.0f && v < 2147483648.0f;
  constexpr float kBound = 4194304.0f;  // 2^22
  v = v > -kBound ? v : -kBound;
  v = v < kBound ? v : kBound;
  const int32_t r = in_range ? static_cast<int32_t>(NearbyintSmall(v)) : std::numeric_limits<int32_t>::min();
  return std::min(std::max(r, lo), hi);
}

// Half-away-from-zero rounding, as std::round and TfLiteRound.
inline float RoundHalfAway(float v) { return std::round(v); }

// ---------------------------------------------------------------------------
// Run-time quantization of float inputs, as ONNX Runtime's DynamicQuantizeLinear.

// Scale and zero point chosen for one record. The zero point is the uint8
// zero point minus 128, because the quantized values are stored as int8
// (uint8 value - 128) so that the int8 GEMM paths can multiply them.
struct DynamicQuantization {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

// Quantizes x[0..n) to uint8 with ONNX Runtime's formulas (onnxruntime
// core/util/qmath.h and MLAS QuantizeLinear): the range [min(x, 0), max(x, 0)]
// maps onto 0..255 with scale (max - min) / 255 and zero point
// round_half_even(clamp(0 - min / scale, 0, 255)); each value is x / scale
// clamped to [0 - zp, 255 - zp] in float, rounded half to even, plus zp.
// Writes the values minus 128 to q. NaN inputs become 0 (MLAS's maxps keeps
// the bound).
DynamicQuantization QuantizeDynamicUint8(const float* x, int64_t n, int8_t* q);

// Sum over k of (q[k] - zp) * w[c][k], from the GEMM's sum over the stored
// (q - 128) values: acc - (zp - 128) * column_sum[c], exact in int32 for
// the depths that CheckDynamicDepth accepts.
inline int32_t DynamicInputSum(int32_t acc, int32_t zero_point, int32_t column_sum) {
  return static_cast<int32_t>(static_cast<int64_t>(acc) - int64_t{zero_point} * column_sum);
}

// Fails unless sums over `depth` products of uint8 differences (|q - zp| <=
// 255) and int8 weights fit in int32.
void CheckDynamicDepth(const OpChecker& check, int64_t depth);

// Sums of each of `channels` rows of row-major int8 weights [channels][depth].
std::vector<int32_t> WeightRowSums(const int8_t* w, int64_t channels, int64_t depth);

// Per-channel float32 weight scales (one value repeated for per-tensor
// weights) of a dynamically quantized op's filter; fails unless the filter is
// int8 with zero points 0 on `channel_dim`.
std::vector<float> DynamicWeightScales(const OpChecker& check, const Tensor& filter, int channel_dim);

// ---------------------------------------------------------------------------
// Broadcasting of two record-shaped operands (numpy rules, right-aligned).

struct Broadcast {
  std::vector<int64_t> out_shape;
  std::vector<int64_t> a_strides;  // element strides into a, 0 where broadcast
  std::vector<int64_t> b_strides;
  bool same_shape = false;
  int64_t elements = 0;
  int64_t a_elements = 0;  // elements of one record of a (and b below)
  int64_t b_elements = 0;

  // Visits every output element with the matching offsets into a and b.
  template <typename Visit>
  void ForEach(Visit&& visit) const {
    if (same_shape) {
      for (int64_t i = 0; i < elements; ++i) visit(i, i, i);
      return;
    }
    const size_t rank = out_shape.size();
    std::vector<int64_t> index(rank, 0);
    int64_t a_offset = 0, b_offset = 0;
    for (int64_t i = 0; i < elements; ++i) {
      visit(i, a_offset, b_offset);
      for (size_t d = rank; d-- > 0;) {
        ++index[d];
        a_offset += a_strides[d];
        b_offset += b_strides[d];
        if (index[d] < out_shape[d]) break;
        a_offset -= a_strides[d] * out_shape[d];
        b_offset -= b_strides[d] * out_shape[d];
        index[d] = 0;
      }
    }
  }
};

// Rows of A per call of the GEMM path; scratch buffers are sized for this.
constexpr int64_t kGemmRows = 64;

// bias[c] - input_zero_point * sum_k w[c][k] for row-major weights w
// [channels][depth], so that a GEMM on raw int8 inputs gives the exact sum
// over (x - zero_point) * w. Fails if a value leaves int32.
std::vector<int32_t> FoldInputZeroPoint(const OpChecker& check, const std::vector<int32_t>& bias, const int8_t* w,
                                        int64_t channels, int64_t depth, int32_t input_zero_point);

// Computes the broadcast of `a` and `b`; fails unless the result equals `out`.
Broadcast MakeBroadcast(const OpChecker& check, const Tensor& a, const Tensor& b, const Tensor& out);

// Reads constant or per-record operands of element-wise ops: a constant
// operand is the same for every record, an activation advances per record.
template <typename T>
inline const T* RecordPointer(const Tensor& t, const T* arena_data, int64_t record,
                              int64_t record_elements) {
  return t.constant ? t.as<T>() : arena_data + record * record_elements;
}

}  // namespace kernels
}  // namespace edgemia

namespace edgemia {
namespace kernels {

// Fails with UnsupportedError for parameters that LiteRT's XNNPACK delegate
// does not accept (subnormal scales, a bias without quantization parameters
// or with a non-zero zero point).
void CheckXnnpackAccepts(const OpChecker& check, const Tensor& input, const Tensor& filter, const Tensor& output);

// Per-channel int8 output stage of conv, depthwise conv and fully connected,
// in the formula of the numerics mode.
class ChannelRequantizer {
 public:
  enum class Formula {
    kFp32,        // XNNPACK: float32 scale, half to even
    kFixedPoint,  // TFLite reference conv: gemmlowp double rounding
    kDouble,      // TFLite reference fully connected: double scale, std::round
  };

  ChannelRequantizer() = default;
  ChannelRequantizer(const OpChecker& check, Formula formula, const Tensor& input, const Tensor& filter,
                     const Tensor& output, int64_t channels, Activation activation, Numerics numerics);

  bool is_fp32() const { return formula_ == Formula::kFp32; }

  // The kFp32 formula for channels [first, first + n) of a GEMM block, with
  // bias[j] added to column j's sum.
  gemm::Fp32Requantization Fp32Stage(const int32_t* bias, int64_t first) const {
    gemm::Fp32Requantization stage;
    stage.bias = bias;
    stage.scale = fp32_scale_.data() + first;
    stage.min_less_zero_point = min_less_zero_point_;
    stage.max_less_zero_point = max_less_zero_point_;
    stage.zero_point = zero_point_;
    stage.saturation_clamps = saturation_clamps_;
    return stage;
  }

  // Lets the GEMM paths clamp by saturation (gemm::SaturationClamps) for
  // GEMMs with weights w [channels][depth] and the given bias added to the sums.
  void AllowSaturationClamps(const int8_t* w, int64_t depth, const std::vector<int32_t>& bias) {
    saturation_clamps_ = false;
    if (is_fp32()) {
      saturation_clamps_ = gemm::SaturationClamps(w, static_cast<int64_t>(fp32_scale_.size()), depth, Fp32Stage(bias.data(), 0));
    }
  }

  inline int8_t operator()(int32_t acc, int64_t channel) const {
    const size_t c = static_cast<size_t>(channel);
    switch (formula_) {
      case Formula::kFp32:
        return RequantizeFp32(acc, fp32_scale_[c], min_less_zero_point_, max_less_zero_point_, zero_point_);
      case Formula::kFixedPoint: {
        const int32_t v = MultiplyByQuantizedMultiplier(acc, multiplier_[c], shift_[c]) + zero_point_;
        return static_cast<int8_t>(std::min(std::max(v, range_.lo), range_.hi));
      }
      case Formula::kDouble: {
        const double r = std::round(static_cast<double>(acc) * double_scale_[c]);
        const double clamped = std::min(std::max(r, -1024.0), 1024.0);
        const int32_t v = static_cast<int32_t>(clamped) + zero_point_;
        return static_cast<int8_t>(std::min(std::max(v, range_.lo), range_.hi));
      }
    }
    return 0;
  }

 private:
  Formula formula_ = Formula::kFp32;
  std::vector<float> fp32_scale_;
  std::vector<int32_t> multiplier_;
  std::vector<int> shift_;
  std::vector<double> double_scale_;
  float min_less_zero_point_ = -128.0f;
  float max_less_zero_point_ = 127.0f;
  int32_t zero_point_ = 0;
  bool saturation_clamps_ = false;
  Int8Range range_;
};

}  // namespace kernels
}  // namespace edgemia
