// Unary ops: RELU, RELU6, RELU_N1_TO_1, LOGISTIC, TANH, SOFTMAX, QUANTIZE and
// DEQUANTIZE.
#include <array>
#include <functional>
#include <limits>

#include "common.h"
#include "registry.h"

namespace edgemia {
namespace kernels {
namespace {

struct UnaryIds {
  int in_id = 0, out_id = 0;
  int64_t elements = 0;
};

UnaryIds CheckUnary(const OpChecker& check) {
  check.ExpectArity(1, 1, 1);
  const Tensor& in = check.Input(0);
  const Tensor& out = check.Output(0);
  check.ExpectActivation(in, "input");
  if (in.elements() != out.elements()) {
    check.Fail("input has " + std::to_string(in.elements()) + " values per record but output has " +
               std::to_string(out.elements()));
  }
  return UnaryIds{check.op().inputs[0], check.op().outputs[0], in.elements()};
}

// int8 -> int8 through a 256-entry table, as TFLite's LUT-based kernels do.
class LookupInt8 final : public Kernel {
 public:
  LookupInt8(const UnaryIds& ids, const std::array<int8_t, 256>& table) : ids_(ids), table_(table) {}

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(ids_.in_id);
    int8_t* y = arena.at<int8_t>(ids_.out_id);
    const int64_t n = batch * ids_.elements;
    for (int64_t i = 0; i < n; ++i) y[i] = table_[static_cast<uint8_t>(x[i])];
  }

 private:
  UnaryIds ids_;
  std::array<int8_t, 256> table_;
};

// TFLite's LUTPopulateInt8: dequantize, apply f in float32, multiply by the
// inverse output scale and round half away from zero.
std::array<int8_t, 256> PopulateTable(const Tensor& in, const Tensor& out, const std::function<float(float)>& f) {
  std::array<int8_t, 256> table{};
  const float inverse_scale = 1.0f / out.scales[0];
  for (int32_t q = -128; q <= 127; ++q) {
    const float dequantized = in.scales[0] * static_cast<float>(q - in.zero_points[0]);
    const float rescaled = RoundHalfAway(f(dequantized) * inverse_scale);
    const float quantized = std::min(std::max(rescaled + static_cast<float>(out.zero_points[0]), -128.0f), 127.0f);
    table[static_cast<uint8_t>(static_cast<int8_t>(q))] = static_cast<int8_t>(quantized);
  }
  return table;
}

// The logistic kernel of ONNX Runtime's x86-64 build (MLAS
// LogisticKernelFma3.S): Eigen's rational approximation on [-18, 18] with
// fused multiply-adds in this order, then p / q + 0.5 clamped below at 0.
float LogisticMlasFma3(float x) {
  x = -18.0f > x ? -18.0f : x;  // vmaxps keeps x when it is NaN
  x = 18.0f < x ? 18.0f : x;
  const float x2 = x * x;
  float p = std::fma(x2, 4.37031012579801e-11f, 1.15627324459942e-07f);
  p = std::fma(x2, p, 6.08574864600143e-05f);
  p = std::fma(x2, p, 8.51377133304701e-03f);
  p = std::fma(x2, p, 2.48287947061529e-01f);
  float q = std::fma(x2, 6.10247389755681e-13f, 5.76102136993427e-09f);
  q = std::fma(x2, q, 6.29106785017040e-06f);
  q = std::fma(x2, q, 1.70198817374094e-03f);
  q = std::fma(x2, q, 1.16817656904453e-01f);
  q = std::fma(x2, q, 9.93151921023180e-01f);
  p = x * p;
  const float y = p / q + 0.5f;
  return 0.0f > y ? 0.0f : y;
}

class UnaryFloat final : public Kernel {
 public:
  UnaryFloat(const UnaryIds& ids, std::function<float(float)> f) : ids_(ids), f_(std::move(f)) {}

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(ids_.in_id);
    float* y = arena.at<float>(ids_.out_id);
    const int64_t n = batch * ids_.elements;
    for (int64_t i = 0; i < n; ++i) y[i] = f_(x[i]);
  }

 private:
  UnaryIds ids_;
  std::function<float(float)> f_;
};

// The tanh kernel of ONNX Runtime's x86-64 build (MLAS TanhKernelFma3.S,
// constants from tanh.cpp): Eigen's rational approximation on [-9, 9] with
// fused multiply-adds in this order, as in onnxruntime 1.32's float Tanh on
// CPUs with FMA3.
float TanhMlasFma3(float x) {
  x = -9.0f > x ? -9.0f : x;
  x = 9.0f < x ? 9.0f : x;
  const float x2 = x * x;
  float p = std::fma(x2, -2.76076847742355e-16f, 2.00018790482477e-13f);
  p = std::fma(p, x2, -8.60467152213735e-11f);
  p = std::fma(p, x2, 5.12229709037114e-08f);
  p = std::fma(p, x2, 1.48572235717979e-05f);
  p = std::fma(p, x2, 6.37261928875436e-04f);
  p = std::fma(p, x2, 4.89352455891786e-03f);
  p = p * x;
  float q = std::fma(x2, 1.19825839466702e-06f, 1.18534705686654e-04f);
  q = std::fma(q, x2, 2.26843463243900e-03f);
  q = std::fma(q, x2, 4.89352518554385e-03f);
  return p / q;
}

// A float clamp, in a loop the compiler vectorizes (UnaryFloat calls a
// std::function per element).
class ClampFloat final : public Kernel {
 public:
  ClampFloat(const UnaryIds& ids, float lo, float hi) : ids_(ids), lo_(lo), hi_(hi) {}

  void Run(Arena& arena, int64_t batch) const override {
    const float* __restrict x = arena.at<float>(ids_.in_id);
    float* __restrict y = arena.at<float>(ids_.out_id);
    const int64_t n = batch * ids_.elements;
    const float lo = lo_, hi = hi_;
    for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], lo), hi);
  }

 private:
  UnaryIds ids_;
  float lo_, hi_;
};

float Sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }
float Tanh(float v) { return std::tanh(v); }

Factory MakeTranscendental(float (*f)(float)) {
  return [f](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    const UnaryIds ids = CheckUnary(check);
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectDType(out, in.dtype, "output");
    if (in.dtype == DType::kInt8) {
      check.ExpectActivationQuantization(in, "input");
      check.ExpectActivationQuantization(out, "output");
      if (numerics == Numerics::kOnnxRuntime) {
        // ONNX Runtime's QLinearSigmoid, a table of LogisticMlasFma3; and Tanh,
        // which it runs in float between DequantizeLinear and QuantizeLinear.
        // Both are the dequantized input through MLAS's function, quantized.
        return std::make_unique<LookupInt8>(
            ids, OnnxRuntimeTable(in, out, f == Sigmoid ? LogisticMlasFma3 : TanhMlasFma3));
      }
      return std::make_unique<LookupInt8>(ids, PopulateTable(in, out, f));
    }
    if (in.dtype == DType::kFloat32) {
      // In onnxruntime numerics the float ops are MLAS's, bit for bit.
      if (numerics == Numerics::kOnnxRuntime) {
        return std::make_unique<UnaryFloat>(ids, f == Sigmoid ? LogisticMlasFma3 : TanhMlasFma3);
      }
      return std::make_unique<UnaryFloat>(ids, f);
    }
    check.Unsupported("input must be int8 or float32");
  };
}

// Standalone RELU-family ops: a clamp. In int8 the converter gives input and
// output the same quantization, so the clamp applies to the quantized bounds.
Factory MakeClamp(Activation act) {
  return [act](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    const UnaryIds ids = CheckUnary(check);
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectDType(out, in.dtype, "output");
    if (in.dtype == DType::kInt8) {
      check.ExpectActivationQuantization(in, "input");
      check.ExpectActivationQuantization(out, "output");
      std::array<int8_t, 256> table{};
      if (in.scales[0] != out.scales[0] || in.zero_points[0] != out.zero_points[0]) {
        // The converter leaves such a clamp after a dilated convolution. LiteRT
        // runs TFLite's builtin ReluX then: rescale with a fixed-point
        // multiplier of float(in_scale / out_scale), then clamp to the bounds
        // rounded half away from zero.
        int32_t multiplier = 0;
        int shift = 0;
        QuantizeMultiplier(static_cast<double>(in.scales[0] / out.scales[0]), &multiplier, &shift);
        float lo = 0.0f, hi = 0.0f;
        ActivationBounds(act, &lo, &hi);
        const int32_t zero_point = out.zero_points[0];
        const int32_t q_lo = std::max(-128, zero_point + static_cast<int32_t>(std::round(lo / out.scales[0])));
        const int32_t q_hi =
            std::isinf(hi) ? 127 : std::min(127, zero_point + static_cast<int32_t>(std::round(hi / out.scales[0])));
        for (int32_t q = -128; q <= 127; ++q) {
          const int32_t v = zero_point + MultiplyByQuantizedMultiplier(q - in.zero_points[0], multiplier, shift);
          table[static_cast<uint8_t>(static_cast<int8_t>(q))] = static_cast<int8_t>(std::min(std::max(v, q_lo), q_hi));
        }
        return std::make_unique<LookupInt8>(ids, table);
      }
      const Int8Range range = ActivationRange(act, out.scales[0], out.zero_points[0], numerics);
      for (int32_t q = -128; q <= 127; ++q) {
        table[static_cast<uint8_t>(static_cast<int8_t>(q))] = static_cast<int8_t>(std::min(std::max(q, range.lo), range.hi));
      }
      return std::make_unique<LookupInt8>(ids, table);
    }
    if (in.dtype == DType::kFloat32) {
      float lo = 0.0f, hi = 0.0f;
      ActivationBounds(act, &lo, &hi);
      return std::make_unique<ClampFloat>(ids, lo, hi);
    }
    check.Unsupported("input must be int8 or float32");
  };
}

// ---------------------------------------------------------------------------
// SOFTMAX over the last axis.

// Checks the quantization that TFLite's int8 softmax requires: per-tensor
// input and output, and an output scale of 1/256 with zero point -128.
void ExpectSoftmaxInt8Quantization(const OpChecker& check) {
  const Tensor& in = check.Input(0);
  const Tensor& out = check.Output(0);
  check.ExpectActivationQuantization(in, "input");
  check.ExpectActivationQuantization(out, "output");
  if (out.zero_points[0] != -128 || std::fabs(out.scales[0] - 1.0f / 256.0f) > 1e-6f) {
    check.Fail("int8 output must have scale 1/256 and zero point -128, as TFLite requires");
  }
}

// Calls row(xr, yr, max_value) for each row of `depth` int8 values of the
// op's input and output in a batch, with the row's maximum.
template <typename Row>
void ForEachSoftmaxRow(Arena& arena, int64_t batch, const UnaryIds& ids, int64_t depth, Row&& row) {
  const int8_t* x = arena.at<int8_t>(ids.in_id);
  int8_t* y = arena.at<int8_t>(ids.out_id);
  const int64_t rows = batch * (ids.elements / depth);
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* xr = x + r * depth;
    int8_t* yr = y + r * depth;
    int32_t max_value = -128;
    for (int64_t j = 0; j < depth; ++j) max_value = std::max<int32_t>(max_value, xr[j]);
    row(xr, yr, max_value);
  }
}

class SoftmaxInt8 final : public Kernel {
 public:
  SoftmaxInt8(const OpChecker& check, const UnaryIds& ids, int64_t depth, float beta) : ids_(ids), depth_(depth) {
    ExpectSoftmaxInt8Quantization(check);
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    // TFLite's optimized int8 softmax (the default on x86): a float table of
    // exp(-input_scale * beta * d) for the distance d = max - q.
    const float scale = -in.scales[0] * beta;
    for (int32_t d = 0; d <= 255; ++d) table_[static_cast<size_t>(d)] = std::exp(scale * static_cast<float>(d));
    output_scale_ = out.scales[0];
    zero_point_ = out.zero_points[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int64_t depth = depth_;
    ForEachSoftmaxRow(arena, batch, ids_, depth, [&](const int8_t* xr, int8_t* yr, int32_t max_value) {
      float sum = 0.0f;
      for (int64_t j = 0; j < depth; ++j) sum += table_[static_cast<size_t>(max_value - xr[j])];
      const float inverse = 1.0f / (sum * output_scale_);
      for (int64_t j = 0; j < depth; ++j) {
        const float rescaled = table_[static_cast<size_t>(max_value - xr[j])] * inverse;
        const int32_t q = static_cast<int32_t>(RoundHalfAway(rescaled)) + zero_point_;
        yr[j] = static_cast<int8_t>(std::min(std::max(q, -128), 127));
      }
    });
  }

 private:
  UnaryIds ids_;
  int64_t depth_;
  std::array<float, 256> table_{};
  float output_scale_ = 0.0f;
  int32_t zero_point_ = 0;
};

// TFLite's reference int8 softmax (BUILTIN_REF), in gemmlowp's fixed-point
// arithmetic. A value "Qm" below is an int32 with m integer bits and 31 - m
// fractional bits; Q0 holds [-1, 1).
namespace fixed {

int32_t Add(int32_t a, int32_t b) { return WrappingAdd(a, b); }
int32_t Sub(int32_t a, int32_t b) { return WrappingAdd(a, static_cast<int32_t>(0u - static_cast<uint32_t>(b))); }

// Multiplying Qa by Qb gives Q(a + b).
int32_t Mul(int32_t a, int32_t b) { return SaturatingRoundingDoublingHighMul(a, b); }

// Multiplies by 2^exponent: a saturating left shift or a rounding right shift.
int32_t MulPow2(int32_t x, int exponent) {
  if (exponent < 0) return RoundingDivideByPOT(x, -exponent);
  if (exponent == 0) return x;
  const int32_t limit = static_cast<int32_t>((int64_t{1} << (31 - exponent)) - 1);
  if (x > limit) return std::numeric_limits<int32_t>::max();
  if (x < -limit) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(static_cast<uint32_t>(x) << exponent);
}

// (a + b) / 2 with the sum's half rounded away from zero.
int32_t HalfSum(int32_t a, int32_t b) {
  const int64_t sum = static_cast<int64_t>(a) + b;
  return static_cast<int32_t>((sum + (sum >= 0 ? 1 : -1)) / 2);
}

constexpr int32_t kOneQ0 = std::numeric_limits<int32_t>::max();  // 1 is not representable in Q0

// A real constant in Q(integer_bits), rounded to nearest.
int32_t Constant(double value, int integer_bits) {
  return static_cast<int32_t>(std::lround(value * std::ldexp(1.0, 31 - integer_bits)));
}

struct ExpConstants {
  int32_t exp_minus_eighth = Constant(std::exp(-0.125), 0);
  int32_t one_third = Constant(1.0 / 3.0, 0);
  // exp(-2^k) for k = -2 .. 4, applied for each set bit of the input's integer part.
  std::array<int32_t, 7> exp_minus_pow2{};
  int32_t newton_start = Constant(48.0 / 17.0, 2);
  int32_t newton_slope = Constant(-32.0 / 17.0, 2);
  ExpConstants() {
    for (int k = -2; k <= 4; ++k) exp_minus_pow2[static_cast<size_t>(k + 2)] = Constant(std::exp(-std::ldexp(1.0, k)), 0);
  }
};

const ExpConstants& Constants() {
  static const ExpConstants constants;
  return constants;
}

// exp(a) for a in [-1/4, 0), both Q0: a fourth-order Taylor series around -1/8.
int32_t ExpOnQuarterInterval(int32_t a) {
  const ExpConstants& c = Constants();
  const int32_t x = Add(a, int32_t{1} << 28);  // x = a + 1/8
  const int32_t x2 = Mul(x, x);
  const int32_t x3 = Mul(x2, x);
  const int32_t x4 = Mul(x2, x2);
  const int32_t x4_over_4 = MulPow2(x4, -2);
  const int32_t poly = MulPow2(Add(Mul(Add(x4_over_4, x3), c.one_third), x2), -1);
  return Add(c.exp_minus_eighth, Mul(c.exp_minus_eighth, Add(x, poly)));
}

// exp(a) for a <= 0 in Q5, returned in Q0. The input splits into a multiple
// of 1/4 and a remainder in [-1/4, 0); each set bit of the multiple scales
// the result by a tabulated exp(-2^k).
int32_t ExpOnNegativeValuesQ5(int32_t a) {
  constexpr int kFractionalBits = 26;
  const int32_t quarter = int32_t{1} << (kFractionalBits - 2);
  const int32_t remainder_in_interval = Sub(a & (quarter - 1), quarter);
  int32_t result = ExpOnQuarterInterval(MulPow2(remainder_in_interval, 5));
  const int32_t multiple = Sub(remainder_in_interval, a);
  const ExpConstants& c = Constants();
  for (int k = -2; k <= 4; ++k) {
    if (multiple & (int32_t{1} << (kFractionalBits + k))) result = Mul(result, c.exp_minus_pow2[static_cast<size_t>(k + 2)]);
  }
  return a == 0 ? kOneQ0 : result;
}

// 1 / (1 + x) for x in [0, 1) in Q0: three Newton-Raphson steps on the
// half denominator in Q2, starting from the minimax line 48/17 - 32/17 d.
int32_t OneOverOnePlusX(int32_t x) {
  const ExpConstants& c = Constants();
  const int32_t half_denominator = HalfSum(x, kOneQ0);
  int32_t estimate = Add(c.newton_start, Mul(half_denominator, c.newton_slope));
  constexpr int32_t kOneQ2 = int32_t{1} << 29;
  for (int i = 0; i < 3; ++i) {
    const int32_t error = Sub(kOneQ2, Mul(half_denominator, estimate));
    estimate = Add(estimate, MulPow2(Mul(estimate, error), 2));
  }
  // The estimate approximates 1 / half_denominator in Q2; halving it is a
  // change of format to Q1, then a rescale to Q0.
  return MulPow2(estimate, 1);
}

}  // namespace fixed

class SoftmaxInt8Reference final : public Kernel {
 public:
  SoftmaxInt8Reference(const OpChecker& check, const UnaryIds& ids, int64_t depth, float beta) : ids_(ids), depth_(depth) {
    ExpectSoftmaxInt8Quantization(check);
    if (depth >= 512) {
      // The sum of exps has 12 integer bits, and the output shift 9 + 31 - 8 passes 31 at a sum of 512.
      check.Unsupported("int8 softmax over " + std::to_string(depth) +
                        " classes: TFLite's reference kernel aborts when a row's exponentials sum to 512 or more, "
                        "which 512 or more classes allow; use litert numerics");
    }
    const Tensor& in = check.Input(0);
    // Differences max - q are scaled to Q5 by beta * input_scale, with the
    // multiplier capped at the largest int32.
    constexpr int kDiffIntegerBits = 5;
    const double real = std::min(static_cast<double>(beta) * static_cast<double>(in.scales[0]) *
                                     std::ldexp(1.0, 31 - kDiffIntegerBits),
                                 std::ldexp(1.0, 31) - 1.0);
    if (!(real > 1.0)) {
      check.Unsupported("input scale times beta is below 2^-26; TFLite's reference kernel rejects it");
    }
    QuantizeMultiplier(real, &multiplier_, &left_shift_);
    if (left_shift_ > 30) {
      check.Unsupported("input scale times beta is " + std::to_string(beta * in.scales[0]) +
                        "; at 16 or more the reference kernel's fixed-point scaling overflows; use litert numerics");
    }
    // Differences below -32 in Q5 contribute nothing and are skipped.
    const double radius = std::floor(31.0 * std::ldexp(1.0, 31 - kDiffIntegerBits) / std::ldexp(1.0, left_shift_));
    diff_min_ = -static_cast<int32_t>(radius);
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int64_t depth = depth_;
    ForEachSoftmaxRow(arena, batch, ids_, depth, [&](const int8_t* xr, int8_t* yr, int32_t max_value) {
      int32_t sum_q12 = 0;
      for (int64_t j = 0; j < depth; ++j) {
        const int32_t diff = xr[j] - max_value;
        if (diff >= diff_min_) sum_q12 = fixed::Add(sum_q12, fixed::MulPow2(Exp(diff), -12));
      }
      // Normalise the sum to [1, 2) as 1 + x, x in Q0, and take its reciprocal.
      const int leading_zeros = __builtin_clz(static_cast<uint32_t>(sum_q12));
      const int bits_over_unit = 12 - leading_zeros;
      const int32_t x_q0 = static_cast<int32_t>((static_cast<uint32_t>(sum_q12) << leading_zeros) - (uint32_t{1} << 31));
      const int32_t reciprocal = fixed::OneOverOnePlusX(x_q0);
      for (int64_t j = 0; j < depth; ++j) {
        const int32_t diff = xr[j] - max_value;
        if (diff < diff_min_) {
          yr[j] = -128;
          continue;
        }
        const int32_t p = RoundingDivideByPOT(fixed::Mul(reciprocal, Exp(diff)), bits_over_unit + 31 - 8);
        yr[j] = static_cast<int8_t>(std::min(std::max(p - 128, -128), 127));
      }
    });
  }

 private:
  int32_t Exp(int32_t diff) const {
    const int32_t shifted = static_cast<int32_t>(static_cast<uint32_t>(diff) << left_shift_);
    return fixed::ExpOnNegativeValuesQ5(SaturatingRoundingDoublingHighMul(shifted, multiplier_));
  }

  UnaryIds ids_;
  int64_t depth_;
  int32_t multiplier_ = 0;
  int left_shift_ = 0;
  int32_t diff_min_ = 0;
};

// ONNX Runtime's QLinearSoftmax (contrib op) over the last axis. A float
// table contains exp((i - 255 + shift) * input_scale) at the index
// i = 255 - (max - q), where the shift scales the largest entry up to about
// FLT_MAX / 2^5 / depth. Each row sums its entries in order (float) and maps
// each entry t to nearbyint(t * floor(1 / output_scale) / sum) plus the zero
// point, clamped to int8. The quotient is taken in double, which matches ONNX
// Runtime 1.32 in the tests, products beyond the float range included (a
// float quotient would give infinity there). The uint8 form that ONNX
// Runtime's x86-64 build runs for QDQ files gives the same bytes, shifted by 128.
class SoftmaxInt8Ort final : public Kernel {
 public:
  SoftmaxInt8Ort(const OpChecker& check, const UnaryIds& ids, int64_t depth) : ids_(ids), depth_(depth) {
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectActivationQuantization(in, "input");
    check.ExpectActivationQuantization(out, "output");
    const float largest = std::numeric_limits<float>::max() / static_cast<float>(depth);
    const double shift = std::max(0.0, std::log(static_cast<double>(largest)) - 5.0) / static_cast<double>(in.scales[0]);
    for (int32_t i = 0; i < 256; ++i) {
      const double v = std::exp((static_cast<double>(i) - 255.0 + shift) * static_cast<double>(in.scales[0]));
      table_[static_cast<size_t>(i)] = static_cast<float>(v);
    }
    output_multiplier_ = std::floor(1.0f / out.scales[0]);
    zero_point_ = out.zero_points[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int64_t depth = depth_;
    ForEachSoftmaxRow(arena, batch, ids_, depth, [&](const int8_t* xr, int8_t* yr, int32_t max_value) {
      // The row maximum contributes the table's last entry, so the sum is positive and finite.
      float sum = 0.0f;
      for (int64_t j = 0; j < depth; ++j) sum += table_[static_cast<size_t>(255 - max_value + xr[j])];
      for (int64_t j = 0; j < depth; ++j) {
        const double t = table_[static_cast<size_t>(255 - max_value + xr[j])];
        const double v = std::nearbyint(t * output_multiplier_ / static_cast<double>(sum)) + zero_point_;
        yr[j] = static_cast<int8_t>(std::min(std::max(v, -128.0), 127.0));
      }
    });
  }

 private:
  UnaryIds ids_;
  int64_t depth_;
  std::array<float, 256> table_{};
  double output_multiplier_ = 256.0;
  double zero_point_ = 0.0;
};

class SoftmaxFloat final : public Kernel {
 public:
  SoftmaxFloat(const UnaryIds& ids, int64_t depth, float beta) : ids_(ids), depth_(depth), beta_(beta) {}

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(ids_.in_id);
    float* y = arena.at<float>(ids_.out_id);
    const int64_t rows = batch * (ids_.elements / depth_);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * depth_;
      float* yr = y + r * depth_;
      float max_value = xr[0];
      for (int64_t j = 1; j < depth_; ++j) max_value = std::max(max_value, xr[j]);
      float sum = 0.0f;
      for (int64_t j = 0; j < depth_; ++j) {
        yr[j] = std::exp((xr[j] - max_value) * beta_);
        sum += yr[j];
      }
      for (int64_t j = 0; j < depth_; ++j) yr[j] /= sum;
    }
  }

 private:
  UnaryIds ids_;
  int64_t depth_;
  float beta_;
};

std::unique_ptr<Kernel> MakeSoftmax(const OpChecker& check, Numerics numerics) {
  const UnaryIds ids = CheckUnary(check);
  const Tensor& in = check.Input(0);
  check.ExpectDType(check.Output(0), in.dtype, "output");
  if (in.shape.empty()) check.Fail("input has no class axis");
  const int64_t depth = in.shape.back();
  const float beta = static_cast<float>(check.FloatOptionOr("beta", 1.0));
  if (!(beta > 0.0f) || !std::isfinite(beta)) check.Fail("beta " + std::to_string(beta) + " must be positive");
  if (in.dtype == DType::kInt8) {
    if (numerics == Numerics::kOnnxRuntime) {
      if (beta != 1.0f) check.Unsupported("int8 softmax in onnxruntime numerics has no beta");
      return std::make_unique<SoftmaxInt8Ort>(check, ids, depth);
    }
    if (numerics == Numerics::kLitertReference) return std::make_unique<SoftmaxInt8Reference>(check, ids, depth, beta);
    return std::make_unique<SoftmaxInt8>(check, ids, depth, beta);
  }
  if (in.dtype == DType::kFloat32) return std::make_unique<SoftmaxFloat>(ids, depth, beta);
  check.Unsupported("input must be int8 or float32");
}

// ---------------------------------------------------------------------------
// QUANTIZE (float32 -> int8) and DEQUANTIZE (int8 -> float32).

class QuantizeFloatToInt8 final : public Kernel {
 public:
  QuantizeFloatToInt8(const UnaryIds& ids, const Tensor& out, Numerics numerics)
      : ids_(ids), numerics_(numerics), scale_(out.scales[0]), zero_point_(out.zero_points[0]) {
    inverse_scale_ = 1.0f / scale_;
  }

  void Run(Arena& arena, int64_t batch) const override {
    // Locals and restrict pointers: otherwise each store to y might change the
    // members, and the loops would reload them and not vectorize.
    const float* __restrict x = arena.at<float>(ids_.in_id);
    int8_t* __restrict y = arena.at<int8_t>(ids_.out_id);
    const int64_t n = batch * ids_.elements;
    const float scale = scale_, inverse_scale = inverse_scale_;
    const int32_t zero_point = zero_point_;
    const float lo = static_cast<float>(-128 - zero_point), hi = static_cast<float>(127 - zero_point);
    // One loop per mode, free of branches and calls, so that each vectorizes.
    if (numerics_ == Numerics::kLitertReference) {
      // TFLite reference: round(x / scale) half away from zero, then clamp.
      // The reference converts to int32 unclamped, undefined in C++ for values
      // out of range; here they clamp, and NaN becomes the lowest value.
      for (int64_t i = 0; i < n; ++i) {
        float q = RoundHalfAway(x[i] / scale);
        q = q > -512.0f ? q : -512.0f;
        q = q < 512.0f ? q : 512.0f;
        y[i] = static_cast<int8_t>(std::min(std::max(static_cast<int32_t>(q) + zero_point, -128), 127));
      }
    } else if (numerics_ == Numerics::kOnnxRuntime) {
      // MLAS QuantizeLinear: divide by the scale, clamp with maxps and minps
      // (maxps returns its second operand for NaN, so NaN becomes the lowest
      // value), round half to even and add the zero point.
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i] / scale;
        v = v > lo ? v : lo;
        v = v < hi ? v : hi;
        y[i] = static_cast<int8_t>(static_cast<int32_t>(NearbyintSmall(v)) + zero_point);
      }
    } else {
      // XNNPACK's f32 -> qs8 conversion: multiply by the inverse scale, clamp,
      // round half to even. XNNPACK clamps the top with minps first, which
      // returns its second operand for NaN, so NaN becomes the highest value.
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i] * inverse_scale;
        v = v < hi ? v : hi;
        v = v > lo ? v : lo;
        y[i] = static_cast<int8_t>(static_cast<int32_t>(NearbyintSmall(v)) + zero_point);
      }
    }
  }

 private:
  UnaryIds ids_;
  Numerics numerics_;
  float scale_, inverse_scale_ = 0.0f;
  int32_t zero_point_;
};

class DequantizeInt8 final : public Kernel {
 public:
  DequantizeInt8(const UnaryIds& ids, const Tensor& in) : ids_(ids), scale_(in.scales[0]), zero_point_(in.zero_points[0]) {}

  void Run(Arena& arena, int64_t batch) const override {
    // Locals, as in QuantizeFloatToInt8, so that the loop vectorizes.
    const int8_t* __restrict x = arena.at<int8_t>(ids_.in_id);
    float* __restrict y = arena.at<float>(ids_.out_id);
    const int64_t n = batch * ids_.elements;
    const float scale = scale_;
    const int32_t zero_point = zero_point_;
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<int32_t>(x[i]) - zero_point) * scale;
  }

 private:
  UnaryIds ids_;
  float scale_;
  int32_t zero_point_;
};

std::unique_ptr<Kernel> MakeQuantize(const OpChecker& check, Numerics numerics) {
  const UnaryIds ids = CheckUnary(check);
  const Tensor& in = check.Input(0);
  const Tensor& out = check.Output(0);
  if (in.dtype == DType::kFloat32 && out.dtype == DType::kInt8) {
    check.ExpectActivationQuantization(out, "output");
    return std::make_unique<QuantizeFloatToInt8>(ids, out, numerics);
  }
  check.Unsupported(std::string("quantizing ") + DTypeName(in.dtype) + " to " + DTypeName(out.dtype) +
             " is not supported; supported is float32 to int8");
}

std::unique_ptr<Kernel> MakeDequantize(const OpChecker& check, Numerics) {
  const UnaryIds ids = CheckUnary(check);
  const Tensor& in = check.Input(0);
  const Tensor& out = check.Output(0);
  if (in.dtype == DType::kInt8 && out.dtype == DType::kFloat32) {
    check.ExpectActivationQuantization(in, "input");
    return std::make_unique<DequantizeInt8>(ids, in);
  }
  check.Unsupported(std::string("dequantizing ") + DTypeName(in.dtype) + " to " + DTypeName(out.dtype) +
             " is not supported; supported is int8 to float32");
}

}  // namespace

void RegisterActivations(Registry& registry) {
  registry["RELU"] = MakeClamp(Activation::kRelu);
  registry["RELU6"] = MakeClamp(Activation::kRelu6);
  registry["RELU_N1_TO_1"] = MakeClamp(Activation::kReluN1To1);
  registry["LOGISTIC"] = MakeTranscendental(Sigmoid);
  registry["TANH"] = MakeTranscendental(Tanh);
  registry["SOFTMAX"] = MakeSoftmax;
  registry["QUANTIZE"] = MakeQuantize;
  registry["DEQUANTIZE"] = MakeDequantize;
}

}  // namespace kernels
}  // namespace edgemia
