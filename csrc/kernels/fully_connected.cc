// FULLY_CONNECTED: each record is read as rows of the filter's depth.
#include "common.h"
#include "fc_float.h"
#include "registry.h"

namespace edgemia {
namespace kernels {
namespace {

struct FcGeometry {
  int64_t rows = 0, depth = 0, units = 0;
};

FcGeometry CheckGeometry(const OpChecker& check) {
  const Tensor& in = check.Input(0);
  const Tensor& filter = check.Input(1);
  const Tensor& out = check.Output(0);
  check.ExpectActivation(in, "input");
  check.ExpectConstant(filter, "filter");
  check.ExpectRank(filter, 2, "filter");
  if (check.OptionOr("weights_format", 0) != 0) {
    check.Unsupported("shuffled weight formats are not supported; export with the default weights format");
  }
  FcGeometry g;
  g.units = filter.shape[0];
  g.depth = filter.shape[1];
  if (in.elements() % g.depth != 0) {
    check.Fail("input '" + in.name + "' has " + std::to_string(in.elements()) +
               " values per record, not a multiple of the filter depth " + std::to_string(g.depth));
  }
  g.rows = in.elements() / g.depth;
  if (out.elements() != g.rows * g.units) {
    check.Fail("output '" + out.name + "' has " + std::to_string(out.elements()) + " values per record, expected " +
               std::to_string(g.rows * g.units));
  }
  return g;
}

template <typename T>
std::vector<T> BiasOrZero(const OpChecker& check, int64_t units, DType dtype) {
  std::vector<T> bias(static_cast<size_t>(units), T{0});
  if (check.InputId(2) >= 0) {
    const Tensor& b = check.Input(2);
    check.ExpectConstant(b, "bias");
    check.ExpectDType(b, dtype, "bias");
    check.ExpectShape(b, {units}, "bias");
    std::memcpy(bias.data(), b.data.data(), b.data.size());
  }
  return bias;
}

class FullyConnectedInt8 final : public Kernel {
 public:
  FullyConnectedInt8(const OpChecker& check, Numerics numerics) : gemm_(&check.gemm()) {
    g_ = CheckGeometry(check);
    const Tensor& in = check.Input(0);
    const Tensor& filter = check.Input(1);
    const Tensor& out = check.Output(0);
    check.ExpectDType(filter, DType::kInt8, "filter");
    check.ExpectDType(out, DType::kInt8, "output");
    check.ExpectActivationQuantization(in, "input");
    check.ExpectActivationQuantization(out, "output");
    check.ExpectWeightQuantization(filter, 0);
    if (g_.depth > gemm::kMaxDepth) {
      check.Fail("filter depth " + std::to_string(g_.depth) + " exceeds " + std::to_string(gemm::kMaxDepth) +
                 ", the largest for which int32 sums are exact");
    }
    const int8_t* w = filter.as<int8_t>();
    gemm_->pack(w, g_.units, g_.depth, &packed_);
    const std::vector<int32_t> bias = BiasOrZero<int32_t>(check, g_.units, DType::kInt32);
    folded_bias_ = FoldInputZeroPoint(check, bias, w, g_.units, g_.depth, in.zero_points[0]);
    // TFLite's reference fully connected requantizes in double precision
    // with std::round; XNNPACK uses its float32 stage.
    const auto formula = numerics == Numerics::kLitertReference ? ChannelRequantizer::Formula::kDouble
                                                                 : ChannelRequantizer::Formula::kFp32;
    requantize_ = ChannelRequantizer(check, formula, in, filter, out, g_.units, check.ActivationOption(), numerics);
    requantize_.AllowSaturationClamps(w, g_.depth, folded_bias_);
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  int64_t ScratchBytes(int64_t) const override { return kGemmRows * g_.units * static_cast<int64_t>(sizeof(int32_t)); }
  int64_t MacsPerRecord() const override { return g_.rows * g_.units * g_.depth; }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    int32_t* acc = reinterpret_cast<int32_t*>(arena.scratch.data());
    const int64_t rows = batch * g_.rows;
    if (requantize_.is_fp32() && gemm_->run_requantize_fp32 != nullptr) {
      // A path that applies the output stage in registers needs no int32
      // scratch, so all rows go in one call and share each read of the weights.
      gemm_->run_requantize_fp32(x, g_.depth, rows, packed_, requantize_.Fp32Stage(folded_bias_.data(), 0), y,
                                 g_.units);
      return;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += kGemmRows) {
      const int64_t m = std::min(kGemmRows, rows - r0);
      if (requantize_.is_fp32()) {
        gemm::RunRequantizeFp32(*gemm_, x + r0 * g_.depth, g_.depth, m, packed_, acc,
                                requantize_.Fp32Stage(folded_bias_.data(), 0), y + r0 * g_.units, g_.units);
        continue;
      }
      gemm_->run(x + r0 * g_.depth, g_.depth, m, packed_, acc, g_.units);
      for (int64_t i = 0; i < m; ++i) {
        const int32_t* ai = acc + i * g_.units;
        int8_t* yi = y + (r0 + i) * g_.units;
        for (int64_t u = 0; u < g_.units; ++u) yi[u] = requantize_(WrappingAdd(ai[u], folded_bias_[static_cast<size_t>(u)]), u);
      }
    }
  }

 private:
  FcGeometry g_;
  const gemm::Int8Gemm* gemm_;
  gemm::PackedB packed_;
  std::vector<int32_t> folded_bias_;
  ChannelRequantizer requantize_;
  int in_id_ = 0, out_id_ = 0;
};

class FullyConnectedFloat final : public Kernel {
 public:
  explicit FullyConnectedFloat(const OpChecker& check) {
    g_ = CheckGeometry(check);
    check.ExpectDType(check.Input(1), DType::kFloat32, "filter");
    check.ExpectDType(check.Output(0), DType::kFloat32, "output");
    bias_ = BiasOrZero<float>(check, g_.units, DType::kFloat32);
    const float* w = check.Input(1).as<float>();
    const int64_t panels = (g_.units + kFloatPanelUnits - 1) / kFloatPanelUnits;
    panels_.assign(static_cast<size_t>(panels * kFloatPanelUnits * g_.depth), 0.0f);
    for (int64_t u = 0; u < g_.units; ++u) {
      for (int64_t k = 0; k < g_.depth; ++k) {
        const int64_t at = (u / kFloatPanelUnits * g_.depth + k) * kFloatPanelUnits + u % kFloatPanelUnits;
        panels_[static_cast<size_t>(at)] = w[u * g_.depth + k];
      }
    }
    fc_.panels = panels_.data();
    fc_.bias = bias_.data();
    fc_.units = g_.units;
    fc_.depth = g_.depth;
    ActivationBounds(check.ActivationOption(), &fc_.lo, &fc_.hi);
    const std::string path = check.gemm().name;
    if (gemm::RunsAvx512Vnni(check.gemm())) kernel_ = FloatFcAvx512();
    if (path == "avx2") kernel_ = FloatFcAvx2();
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  int64_t MacsPerRecord() const override { return g_.rows * g_.units * g_.depth; }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    const int64_t rows = batch * g_.rows;
    if (kernel_ != nullptr) {
      kernel_(fc_, x, rows, y);
      return;
    }
    int64_t r = 0;
    for (; r + kPortableRows <= rows; r += kPortableRows) RunRows<kPortableRows>(x + r * g_.depth, y + r * g_.units);
    for (; r < rows; ++r) RunRows<1>(x + r * g_.depth, y + r * g_.units);
  }

 private:
  // Rows that share each load of the weights in the portable loop. Their sums
  // and a row of weights fit in the 16 vector registers of x86-64 or the 32
  // of AArch64.
#if defined(__aarch64__)
  static constexpr int kPortableRows = 4;
#else
  static constexpr int kPortableRows = 2;
#endif
  // Units summed side by side, half a panel.
  static constexpr int64_t kPortableUnits = 16;

  // 4 floats in a GCC/Clang vector: SSE2 on x86-64, NEON on AArch64. Its
  // operators act lane by lane, so they reassociate nothing.
  typedef float Floats4 __attribute__((vector_size(16)));
  static constexpr int kVectors = kPortableUnits / 4;

  // R rows, kPortableUnits units at a time: the units' sums side by side in
  // vectors, each adding its products in the order of k, so every build,
  // path and thread count gives the same bits.
  template <int R>
  void RunRows(const float* x, float* y) const {
    const int64_t depth = g_.depth;
    const float lo = fc_.lo, hi = fc_.hi;
    for (int64_t u0 = 0; u0 < g_.units; u0 += kPortableUnits) {
      const float* w = panels_.data() + u0 / kFloatPanelUnits * kFloatPanelUnits * depth + u0 % kFloatPanelUnits;
      Floats4 acc[R][kVectors] = {};
      for (int64_t k = 0; k < depth; ++k, w += kFloatPanelUnits) {
        Floats4 wv[kVectors];
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v) std::memcpy(&wv[v], w + 4 * v, sizeof(Floats4));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const float xk = x[r * depth + k];
#pragma GCC unroll 4
          for (int v = 0; v < kVectors; ++v) acc[r][v] += wv[v] * xk;
        }
      }
      const int64_t width = std::min(kPortableUnits, g_.units - u0);
      for (int r = 0; r < R; ++r) {
        float sums[kPortableUnits];
        std::memcpy(sums, acc[r], sizeof(sums));
        for (int64_t j = 0; j < width; ++j) {
          const float v = sums[j] + bias_[static_cast<size_t>(u0 + j)];
          y[r * g_.units + u0 + j] = CanonicalNan(std::min(std::max(v, lo), hi));
        }
      }
    }
  }

  FcGeometry g_;
  std::vector<float> bias_;
  std::vector<float> panels_;  // fc_.panels
  FloatFc fc_;
  FloatFcKernel kernel_ = nullptr;  // the path's vector kernel, or nullptr for RunRows
  int in_id_ = 0, out_id_ = 0;
};

// DYNAMIC_FULLY_CONNECTED: ONNX Runtime's DynamicQuantizeLinear ->
// MatMulInteger -> Cast -> Mul (-> Add bias) chain, which ONNX Runtime fuses
// into DynamicQuantizeMatMul. Each record's float32 input is quantized to
// uint8 with its own scale and zero point, the sums are exact in int32, and
// the output is float(sum) * (input_scale * weight_scale[u]) rounded to
// float32, plus the float32 bias in a second rounding when there is one
// (MLAS's scale-bias output stage multiplies and adds separately).
class DynamicFullyConnected final : public Kernel {
 public:
  explicit DynamicFullyConnected(const OpChecker& check) : gemm_(&check.gemm()) {
    g_ = CheckGeometry(check);
    const Tensor& filter = check.Input(1);
    check.ExpectDType(check.Input(0), DType::kFloat32, "input");
    check.ExpectDType(check.Output(0), DType::kFloat32, "output");
    weight_scales_ = DynamicWeightScales(check, filter, 0);
    CheckDynamicDepth(check, g_.depth);
    const int8_t* w = filter.as<int8_t>();
    row_sums_ = WeightRowSums(w, g_.units, g_.depth);
    gemm_->pack(w, g_.units, g_.depth, &packed_);
    has_bias_ = check.InputId(2) >= 0;
    bias_ = BiasOrZero<float>(check, g_.units, DType::kFloat32);
    record_elements_ = g_.rows * g_.depth;
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  // int32 sums, the quantization of each record, then the quantized records.
  int64_t ScratchBytes(int64_t records) const override {
    return kGemmRows * g_.units * static_cast<int64_t>(sizeof(int32_t)) +
           records * static_cast<int64_t>(sizeof(DynamicQuantization)) + records * record_elements_;
  }
  int64_t MacsPerRecord() const override { return g_.rows * g_.units * g_.depth; }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    int32_t* acc = reinterpret_cast<int32_t*>(arena.scratch.data());
    auto* params = reinterpret_cast<DynamicQuantization*>(acc + kGemmRows * g_.units);
    int8_t* quantized = reinterpret_cast<int8_t*>(params + batch);
    for (int64_t b = 0; b < batch; ++b) {
      params[b] = QuantizeDynamicUint8(x + b * record_elements_, record_elements_,
                                       quantized + b * record_elements_);
    }
    const int64_t rows = batch * g_.rows;
    for (int64_t r0 = 0; r0 < rows; r0 += kGemmRows) {
      const int64_t m = std::min(kGemmRows, rows - r0);
      gemm_->run(quantized + r0 * g_.depth, g_.depth, m, packed_, acc, g_.units);
      for (int64_t i = 0; i < m; ++i) {
        const DynamicQuantization& q = params[(r0 + i) / g_.rows];
        float* yi = y + (r0 + i) * g_.units;
        for (int64_t u = 0; u < g_.units; ++u) {
          const size_t c = static_cast<size_t>(u);
          const int32_t sum = DynamicInputSum(acc[i * g_.units + u], q.zero_point, row_sums_[c]);
          float v = static_cast<float>(sum) * (q.scale * weight_scales_[c]);
          if (has_bias_) v = v + bias_[c];
          yi[u] = v;
        }
      }
    }
  }

 private:
  FcGeometry g_;
  const gemm::Int8Gemm* gemm_;
  gemm::PackedB packed_;
  std::vector<float> weight_scales_;
  std::vector<int32_t> row_sums_;
  bool has_bias_ = false;
  std::vector<float> bias_;
  int64_t record_elements_ = 0;
  int in_id_ = 0, out_id_ = 0;
};

}  // namespace

void RegisterFullyConnected(Registry& registry) {
  registry["FULLY_CONNECTED"] = [](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    check.ExpectArity(2, 3, 1);
    switch (check.Input(0).dtype) {
      case DType::kInt8:
        return std::make_unique<FullyConnectedInt8>(check, numerics);
      case DType::kFloat32:
        return std::make_unique<FullyConnectedFloat>(check);
      default:
        check.Unsupported(std::string("input dtype ") + DTypeName(check.Input(0).dtype) + " is not supported");
    }
  };
  registry["DYNAMIC_FULLY_CONNECTED"] = [](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    check.ExpectArity(2, 3, 1);
    if (numerics != Numerics::kOnnxRuntime) {
      check.Unsupported("dynamic quantization is reproduced in the onnxruntime numerics mode only");
    }
    return std::make_unique<DynamicFullyConnected>(check);
  };
}

}  // namespace kernels
}  // namespace edgemia
