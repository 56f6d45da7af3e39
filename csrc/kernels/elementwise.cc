// ADD and MUL with numpy broadcasting between two operands, either of which
// may be a constant.
#include "common.h"
#include "registry.h"

namespace edgemia {
namespace kernels {
namespace {

enum class BinaryKind { kAdd, kMul };

struct BinaryOperands {
  Broadcast bc;
  int a_id = 0, b_id = 0, out_id = 0;
  const Tensor* a = nullptr;
  const Tensor* b = nullptr;
};

BinaryOperands CheckBinary(const OpChecker& check) {
  check.ExpectArity(2, 2, 1);
  BinaryOperands ops;
  ops.a = &check.Input(0);
  ops.b = &check.Input(1);
  const Tensor& out = check.Output(0);
  if (ops.a->constant && ops.b->constant) check.Fail("both operands are constants; fold them before export");
  check.ExpectDType(*ops.b, ops.a->dtype, "second operand");
  check.ExpectDType(out, ops.a->dtype, "output");
  ops.bc = MakeBroadcast(check, *ops.a, *ops.b, out);
  ops.a_id = check.op().inputs[0];
  ops.b_id = check.op().inputs[1];
  ops.out_id = check.op().outputs[0];
  return ops;
}

// The int8 arithmetic of one element, per numerics mode.
struct Int8BinaryParams {
  BinaryKind kind = BinaryKind::kAdd;
  Numerics numerics = Numerics::kLitert;
  int32_t a_zero_point = 0, b_zero_point = 0, out_zero_point = 0;
  Int8Range range;
  // XNNPACK ADD: single rounding with about 21-bit multipliers.
  int32_t xnn_bias = 0, xnn_a_multiplier = 0, xnn_b_multiplier = 0;
  int xnn_shift = 0;
  // XNNPACK MUL: float32 scale.
  float mul_scale = 0.0f;
  // TFLite reference ADD and MUL: fixed-point multipliers, double rounding.
  int32_t ref_a_multiplier = 0, ref_b_multiplier = 0, ref_out_multiplier = 0;
  int ref_a_shift = 0, ref_b_shift = 0, ref_out_shift = 0;
  // ONNX Runtime's QLinearAdd (MLAS's AVX2 kernel): float32 scale ratios and
  // a fixed part that holds the zero points.
  float ort_a_ratio = 0.0f, ort_b_ratio = 0.0f, ort_fixed = 0.0f;
  // ONNX Runtime's QLinearMul (MLAS's SSE2 kernel): one float32 ratio
  // a_scale * b_scale / out_scale and the output zero point as a float.
  float ort_mul_ratio = 0.0f, ort_mul_zero_point = 0.0f;
  // 128 when ONNX Runtime runs the op on uint8 values (value + 128), 0 for int8.
  int32_t ort_offset = 0;

  inline int8_t operator()(int8_t qa, int8_t qb) const {
    int32_t v = 0;
    if (numerics == Numerics::kOnnxRuntime) {
      if (kind == BinaryKind::kAdd) {
        // Two fused multiply-adds, b first, then cvtps2dq and saturating packs.
        float f = std::fma(static_cast<float>(qb + ort_offset), ort_b_ratio, ort_fixed);
        f = std::fma(static_cast<float>(qa + ort_offset), ort_a_ratio, f);
        v = ConvertToInt32X86(f);
      } else {
        // The exact int32 product of the zero-point-free operands (the +128
        // of the uint8 form cancels), then a separate multiply and add in
        // float32, cvtps2dq and saturating packs.
        const int32_t product = (static_cast<int32_t>(qa) - a_zero_point) * (static_cast<int32_t>(qb) - b_zero_point);
        const float scaled = static_cast<float>(product) * ort_mul_ratio;
        v = ConvertToInt32X86(scaled + ort_mul_zero_point);
      }
      return static_cast<int8_t>(std::min(std::max(v, ort_offset - 128), ort_offset + 127) - ort_offset);
    }
    if (numerics == Numerics::kLitertReference) {
      const int32_t a = static_cast<int32_t>(qa) - a_zero_point;
      const int32_t b = static_cast<int32_t>(qb) - b_zero_point;
      if (kind == BinaryKind::kAdd) {
        constexpr int kLeftShift = 20;
        const int32_t sa = MultiplyByQuantizedMultiplierSmallerThanOne(a * (1 << kLeftShift), ref_a_multiplier, ref_a_shift);
        const int32_t sb = MultiplyByQuantizedMultiplierSmallerThanOne(b * (1 << kLeftShift), ref_b_multiplier, ref_b_shift);
        v = MultiplyByQuantizedMultiplierSmallerThanOne(sa + sb, ref_out_multiplier, ref_out_shift) + out_zero_point;
      } else {
        v = MultiplyByQuantizedMultiplier(a * b, ref_out_multiplier, ref_out_shift) + out_zero_point;
      }
      return static_cast<int8_t>(std::min(std::max(v, range.lo), range.hi));
    }
    if (kind == BinaryKind::kAdd) {
      const int32_t acc = xnn_bias + static_cast<int32_t>(qa) * xnn_a_multiplier + static_cast<int32_t>(qb) * xnn_b_multiplier;
      v = (acc >> xnn_shift) + out_zero_point;  // arithmetic shift: the bias holds the rounding term
      return static_cast<int8_t>(std::min(std::max(v, range.lo), range.hi));
    }
    const int32_t acc = (static_cast<int32_t>(qa) - a_zero_point) * (static_cast<int32_t>(qb) - b_zero_point);
    return RequantizeFp32(acc, mul_scale, static_cast<float>(range.lo - out_zero_point),
                          static_cast<float>(range.hi - out_zero_point), out_zero_point);
  }
};

// The position of an int8 ADD's or MUL's scales against the range that
// LiteRT's XNNPACK delegate takes: operand to output scale ratios in
// [2^-10, 2^8) for ADD, a requantization scale in [2^-16, 2^8) for MUL.
enum class XnnpackRange { kInside, kBelow, kAbove };

XnnpackRange CheckXnnpackRange(BinaryKind kind, float sa, float sb, float so) {
  float low = 0.0f, high = 0.0f;
  if (kind == BinaryKind::kAdd) {
    low = std::min(sa / so, sb / so) * 0x1.0p+10f;
    high = std::max(sa / so, sb / so);
  } else {
    low = sa * sb / so * 0x1.0p+16f;
    high = sa * sb / so;
  }
  if (!(high < 0x1.0p+8f)) return XnnpackRange::kAbove;  // NaN lands here too
  if (!(low >= 1.0f)) return XnnpackRange::kBelow;
  return XnnpackRange::kInside;
}

Int8BinaryParams MakeInt8Params(const OpChecker& check, BinaryKind kind, Numerics numerics, const Tensor& a,
                                const Tensor& b, const Tensor& out, const Broadcast& broadcast) {
  check.ExpectActivationQuantization(a, "first operand");
  check.ExpectActivationQuantization(b, "second operand");
  check.ExpectActivationQuantization(out, "output");
  Int8BinaryParams p;
  p.kind = kind;
  p.numerics = numerics;
  p.a_zero_point = a.zero_points[0];
  p.b_zero_point = b.zero_points[0];
  p.out_zero_point = out.zero_points[0];
  if (numerics == Numerics::kOnnxRuntime) {
    // MLAS broadcasts a single value through other arithmetic; only the element-wise form is reproduced.
    if (!broadcast.same_shape || a.constant || b.constant) {
      check.Unsupported(std::string("int8 ") + (kind == BinaryKind::kAdd ? "ADD" : "MUL") +
                        " in onnxruntime numerics needs two activations of the same shape");
    }
    if (check.ActivationOption() != Activation::kNone) check.Unsupported("a fused activation is not supported");
    const int64_t domain = check.OptionOr("uint8_domain", 0);
    if (domain != 0 && domain != 1) check.Fail("option 'uint8_domain' is " + std::to_string(domain) + ", expected 0 or 1");
    p.ort_offset = domain != 0 ? 128 : 0;
    if (kind == BinaryKind::kMul) {
      p.ort_mul_ratio = a.scales[0] * b.scales[0] / out.scales[0];
      p.ort_mul_zero_point = static_cast<float>(p.out_zero_point + p.ort_offset);
      return p;
    }
    p.ort_a_ratio = a.scales[0] / out.scales[0];
    p.ort_b_ratio = b.scales[0] / out.scales[0];
    const float zero_point_terms = p.ort_a_ratio * static_cast<float>(p.a_zero_point + p.ort_offset) +
                                   p.ort_b_ratio * static_cast<float>(p.b_zero_point + p.ort_offset);
    p.ort_fixed = static_cast<float>(p.out_zero_point + p.ort_offset) - zero_point_terms;
    return p;
  }
  const float sa = a.scales[0], sb = b.scales[0], so = out.scales[0];
  if (numerics == Numerics::kLitert) {
    // LiteRT's XNNPACK delegate leaves a node outside its range to TFLite's
    // optimized builtin kernel. Below the range that kernel computes as the
    // reference kernel does. Above it, LiteRT 2.3's kernel returns the
    // opposite end of the int8 range for saturated results, which this
    // kernel does not reproduce.
    const XnnpackRange range = CheckXnnpackRange(kind, sa, sb, so);
    if (range == XnnpackRange::kAbove) {
      check.Unsupported(kind == BinaryKind::kAdd
                            ? "int8 ADD operand to output scale ratios " + std::to_string(sa / so) + " and " +
                                  std::to_string(sb / so) + " reach 2^8, where LiteRT runs TFLite's builtin kernel, "
                                  "whose saturated results litert numerics does not reproduce; use "
                                  "--numerics litert-reference to compare with TFLite's reference kernels"
                            : "int8 MUL requantization scale " + std::to_string(sa * sb / so) +
                                  " reaches 2^8, where LiteRT runs TFLite's builtin kernel, whose saturated results "
                                  "litert numerics does not reproduce; use --numerics litert-reference to compare "
                                  "with TFLite's reference kernels");
    }
    if (range == XnnpackRange::kBelow) {
      numerics = Numerics::kLitertReference;
      p.numerics = numerics;
    }
  }
  p.range = ActivationRange(check.ActivationOption(), out.scales[0], p.out_zero_point, numerics);
  if (numerics == Numerics::kLitertReference) {
    if (kind == BinaryKind::kAdd) {
      const double twice_max = 2.0 * static_cast<double>(std::max(sa, sb));
      QuantizeMultiplier(static_cast<double>(sa) / twice_max, &p.ref_a_multiplier, &p.ref_a_shift);
      QuantizeMultiplier(static_cast<double>(sb) / twice_max, &p.ref_b_multiplier, &p.ref_b_shift);
      QuantizeMultiplier(twice_max / (static_cast<double>(1 << 20) * static_cast<double>(so)), &p.ref_out_multiplier,
                         &p.ref_out_shift);
      if (p.ref_a_shift > 0 || p.ref_b_shift > 0 || p.ref_out_shift > 0) {
        check.Unsupported("operand scales give an ADD multiplier of one or more, which TFLite does not accept");
      }
    } else {
      QuantizeMultiplier(static_cast<double>(sa) * static_cast<double>(sb) / static_cast<double>(so),
                         &p.ref_out_multiplier, &p.ref_out_shift);
    }
    return p;
  }
  if (kind == BinaryKind::kAdd) {
    const float a_ratio = sa / so, b_ratio = sb / so;
    const float max_ratio = std::max(a_ratio, b_ratio);
    int exponent = 0;
    std::frexp(max_ratio, &exponent);  // max_ratio = m * 2^exponent with m in [0.5, 1)
    p.xnn_shift = 20 - (exponent - 1);
    p.xnn_a_multiplier = static_cast<int32_t>(std::nearbyint(std::ldexp(a_ratio, p.xnn_shift)));
    p.xnn_b_multiplier = static_cast<int32_t>(std::nearbyint(std::ldexp(b_ratio, p.xnn_shift)));
    p.xnn_bias = (int32_t{1} << (p.xnn_shift - 1)) - p.xnn_a_multiplier * p.a_zero_point -
                 p.xnn_b_multiplier * p.b_zero_point;
  } else {
    p.mul_scale = sa * sb / so;
  }
  return p;
}

class BinaryInt8 final : public Kernel {
 public:
  BinaryInt8(const OpChecker& check, BinaryKind kind, Numerics numerics) : ops_(CheckBinary(check)) {
    params_ = MakeInt8Params(check, kind, numerics, *ops_.a, *ops_.b, check.Output(0), ops_.bc);
  }

  void Run(Arena& arena, int64_t batch) const override {
    int8_t* y = arena.at<int8_t>(ops_.out_id);
    for (int64_t r = 0; r < batch; ++r) {
      const int8_t* a = RecordPointer(*ops_.a, ops_.a->constant ? nullptr : arena.at<int8_t>(ops_.a_id), r,
                                      ops_.bc.a_elements);
      const int8_t* b = RecordPointer(*ops_.b, ops_.b->constant ? nullptr : arena.at<int8_t>(ops_.b_id), r,
                                      ops_.bc.b_elements);
      int8_t* yr = y + r * ops_.bc.elements;
      ops_.bc.ForEach([&](int64_t i, int64_t ia, int64_t ib) { yr[i] = params_(a[ia], b[ib]); });
    }
  }

 private:
  BinaryOperands ops_;
  Int8BinaryParams params_;
};

class BinaryFloat final : public Kernel {
 public:
  BinaryFloat(const OpChecker& check, BinaryKind kind) : kind_(kind), ops_(CheckBinary(check)) {
    ActivationBounds(check.ActivationOption(), &lo_, &hi_);
  }

  void Run(Arena& arena, int64_t batch) const override {
    float* y = arena.at<float>(ops_.out_id);
    for (int64_t r = 0; r < batch; ++r) {
      const float* a = RecordPointer(*ops_.a, ops_.a->constant ? nullptr : arena.at<float>(ops_.a_id), r,
                                     ops_.bc.a_elements);
      const float* b = RecordPointer(*ops_.b, ops_.b->constant ? nullptr : arena.at<float>(ops_.b_id), r,
                                     ops_.bc.b_elements);
      float* yr = y + r * ops_.bc.elements;
      ops_.bc.ForEach([&](int64_t i, int64_t ia, int64_t ib) {
        const float v = kind_ == BinaryKind::kAdd ? a[ia] + b[ib] : a[ia] * b[ib];
        yr[i] = std::min(std::max(v, lo_), hi_);
      });
    }
  }

 private:
  BinaryKind kind_;
  BinaryOperands ops_;
  float lo_ = 0.0f, hi_ = 0.0f;
};

Factory MakeFactory(BinaryKind kind) {
  return [kind](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    check.ExpectArity(2, 2, 1);
    switch (check.Input(0).dtype) {
      case DType::kInt8:
        return std::make_unique<BinaryInt8>(check, kind, numerics);
      case DType::kFloat32:
        return std::make_unique<BinaryFloat>(check, kind);
      default:
        check.Unsupported(std::string("operand dtype ") + DTypeName(check.Input(0).dtype) + " is not supported");
    }
  };
}

}  // namespace

void RegisterElementwise(Registry& registry) {
  registry["ADD"] = MakeFactory(BinaryKind::kAdd);
  registry["MUL"] = MakeFactory(BinaryKind::kMul);
}

}  // namespace kernels
}  // namespace edgemia
