// Unary ops: RELU, RELU6, RELU_N1_TO_1, LOGISTIC, TANH, SOFTMAX, QUANTIZE and
// DEQUANTIZE.
#include <array>
#include <functional>

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

float Sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }
float Tanh(float v) { return std::tanh(v); }

Factory MakeTranscendental(float (*f)(float)) {
  return [f](const OpChecker& check, Numerics) -> std::unique_ptr<Kernel> {
    const UnaryIds ids = CheckUnary(check);
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectDType(out, in.dtype, "output");
    if (in.dtype == DType::kInt8) {
      check.ExpectActivationQuantization(in, "input");
      check.ExpectActivationQuantization(out, "output");
      return std::make_unique<LookupInt8>(ids, PopulateTable(in, out, f));
    }
    if (in.dtype == DType::kFloat32) return std::make_unique<UnaryFloat>(ids, f);
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
      check.ExpectSameQuantization(in, out);
      const Int8Range range = ActivationRange(act, out.scales[0], out.zero_points[0], numerics);
      std::array<int8_t, 256> table{};
      for (int32_t q = -128; q <= 127; ++q) {
        table[static_cast<uint8_t>(static_cast<int8_t>(q))] = static_cast<int8_t>(std::min(std::max(q, range.lo), range.hi));
      }
      return std::make_unique<LookupInt8>(ids, table);
    }
    if (in.dtype == DType::kFloat32) {
      float lo = 0.0f, hi = 0.0f;
      ActivationBounds(act, &lo, &hi);
      return std::make_unique<UnaryFloat>(ids, [lo, hi](float v) { return std::min(std::max(v, lo), hi); });
    }
    check.Unsupported("input must be int8 or float32");
  };
}

// ---------------------------------------------------------------------------
// SOFTMAX over the last axis.

class SoftmaxInt8 final : public Kernel {
 public:
  SoftmaxInt8(const OpChecker& check, const UnaryIds& ids, int64_t depth, float beta) : ids_(ids), depth_(depth) {
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectActivationQuantization(in, "input");
    check.ExpectActivationQuantization(out, "output");
    if (out.zero_points[0] != -128 || std::fabs(out.scales[0] - 1.0f / 256.0f) > 1e-6f) {
      check.Fail("int8 output must have scale 1/256 and zero point -128, as TFLite requires");
    }
    // TFLite's optimized int8 softmax (the default on x86): a float table of
    // exp(-input_scale * beta * d) for the distance d = max - q.
    const float scale = -in.scales[0] * beta;
    for (int32_t d = 0; d <= 255; ++d) table_[static_cast<size_t>(d)] = std::exp(scale * static_cast<float>(d));
    output_scale_ = out.scales[0];
    zero_point_ = out.zero_points[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(ids_.in_id);
    int8_t* y = arena.at<int8_t>(ids_.out_id);
    const int64_t rows = batch * (ids_.elements / depth_);
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* xr = x + r * depth_;
      int8_t* yr = y + r * depth_;
      int32_t max_value = -128;
      for (int64_t j = 0; j < depth_; ++j) max_value = std::max<int32_t>(max_value, xr[j]);
      float sum = 0.0f;
      for (int64_t j = 0; j < depth_; ++j) sum += table_[static_cast<size_t>(max_value - xr[j])];
      const float inverse = 1.0f / (sum * output_scale_);
      for (int64_t j = 0; j < depth_; ++j) {
        const float rescaled = table_[static_cast<size_t>(max_value - xr[j])] * inverse;
        const int32_t q = static_cast<int32_t>(RoundHalfAway(rescaled)) + zero_point_;
        yr[j] = static_cast<int8_t>(std::min(std::max(q, -128), 127));
      }
    }
  }

 private:
  UnaryIds ids_;
  int64_t depth_;
  std::array<float, 256> table_{};
  float output_scale_ = 0.0f;
  int32_t zero_point_ = 0;
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
    if (numerics == Numerics::kLitertReference) {
      // TODO: TFLite's reference int8 softmax runs gemmlowp fixed-point
      // exp and reciprocal; until that is reproduced, refuse rather than
      // return bytes that differ from it in rare cases.
      check.Unsupported("int8 SOFTMAX is not available in litert-reference numerics yet; use litert numerics");
    }
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
    const float* x = arena.at<float>(ids_.in_id);
    int8_t* y = arena.at<int8_t>(ids_.out_id);
    const int64_t n = batch * ids_.elements;
    const float lo = static_cast<float>(-128 - zero_point_), hi = static_cast<float>(127 - zero_point_);
    for (int64_t i = 0; i < n; ++i) {
      if (numerics_ == Numerics::kLitertReference) {
        // TFLite reference: round(x / scale) half away from zero, then clamp.
        const float q = std::min(std::max(RoundHalfAway(x[i] / scale_), -512.0f), 512.0f);
        y[i] = static_cast<int8_t>(std::min(std::max(static_cast<int32_t>(q) + zero_point_, -128), 127));
      } else if (numerics_ == Numerics::kOnnxRuntime) {
        // MLAS QuantizeLinear: divide by the scale, round half to even, add
        // the zero point and clamp, all in float.
        const float q = std::nearbyint(x[i] / scale_) + static_cast<float>(zero_point_);
        y[i] = static_cast<int8_t>(std::min(std::max(q, -128.0f), 127.0f));
      } else {
        // XNNPACK's f32 -> qs8 conversion: multiply by the inverse scale,
        // clamp, round half to even.
        const float v = std::min(std::max(x[i] * inverse_scale_, lo), hi);
        y[i] = static_cast<int8_t>(static_cast<int32_t>(std::nearbyint(v)) + zero_point_);
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
    const int8_t* x = arena.at<int8_t>(ids_.in_id);
    float* y = arena.at<float>(ids_.out_id);
    const int64_t n = batch * ids_.elements;
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<int32_t>(x[i]) - zero_point_) * scale_;
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
