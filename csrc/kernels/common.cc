#include "common.h"

namespace edgemia {
namespace kernels {

void OpChecker::ExpectArity(size_t min_inputs, size_t max_inputs, size_t outputs) const {
  if (op_.inputs.size() < min_inputs || op_.inputs.size() > max_inputs) {
    Fail("has " + std::to_string(op_.inputs.size()) + " inputs, expected " + std::to_string(min_inputs) +
         (max_inputs != min_inputs ? " to " + std::to_string(max_inputs) : std::string()));
  }
  if (op_.outputs.size() != outputs) {
    Fail("has " + std::to_string(op_.outputs.size()) + " outputs, expected " + std::to_string(outputs));
  }
}

int64_t OpChecker::Option(const std::string& key) const {
  auto it = op_.options.find(key);
  if (it == op_.options.end()) Fail("option '" + key + "' is missing");
  return it->second;
}

int64_t OpChecker::OptionOr(const std::string& key, int64_t fallback) const {
  auto it = op_.options.find(key);
  return it == op_.options.end() ? fallback : it->second;
}

int64_t OpChecker::PositiveOption(const std::string& key, int64_t max_value) const {
  const int64_t v = Option(key);
  if (v < 1 || v > max_value) {
    Fail("option '" + key + "' is " + std::to_string(v) + ", expected 1.." + std::to_string(max_value));
  }
  return v;
}

Padding OpChecker::PaddingOption() const {
  const int64_t v = Option("padding");
  if (v < 0 || v > 2) Fail("padding code " + std::to_string(v) + " is not SAME (0), VALID (1) or EXPLICIT (2)");
  return static_cast<Padding>(v);
}

Activation OpChecker::ActivationOption() const {
  const int64_t v = OptionOr("activation", 0);
  if (v < 0 || v > 3) {
    Unsupported("fused activation code " + std::to_string(v) +
         " is not supported; supported are NONE, RELU, RELU_N1_TO_1 and RELU6");
  }
  return static_cast<Activation>(v);
}

void OpChecker::ExpectDType(const Tensor& t, DType dtype, const char* role) const {
  if (t.dtype != dtype) {
    Fail(std::string(role) + " '" + t.name + "' is " + DTypeName(t.dtype) + ", expected " + DTypeName(dtype));
  }
}

void OpChecker::ExpectConstant(const Tensor& t, const char* role) const {
  if (!t.constant) Fail(std::string(role) + " '" + t.name + "' must be a constant tensor");
}

void OpChecker::ExpectActivation(const Tensor& t, const char* role) const {
  if (t.constant) Fail(std::string(role) + " '" + t.name + "' must not be a constant tensor");
}

void OpChecker::ExpectRank(const Tensor& t, size_t rank, const char* role) const {
  if (t.shape.size() != rank) {
    Fail(std::string(role) + " '" + t.name + "' has rank " + std::to_string(t.shape.size()) + ", expected " +
         std::to_string(rank) + " (activation ranks exclude the batch)");
  }
}

void OpChecker::ExpectShape(const Tensor& t, const std::vector<int64_t>& shape, const char* role) const {
  if (t.shape != shape) {
    Fail(std::string(role) + " '" + t.name + "' has shape " + ShapeText(t.shape) + ", expected " +
         ShapeText(shape));
  }
}

void OpChecker::ExpectSameQuantization(const Tensor& a, const Tensor& b) const {
  if (a.scales != b.scales || a.zero_points != b.zero_points) {
    Fail("'" + a.name + "' and '" + b.name + "' have different quantization, which this op needs equal");
  }
}

void OpChecker::ExpectActivationQuantization(const Tensor& t, const char* role) const {
  if (t.scales.size() != 1) {
    Fail(std::string(role) + " '" + t.name + "' needs one quantization scale, has " +
         std::to_string(t.scales.size()));
  }
  if (t.zero_points[0] < -128 || t.zero_points[0] > 127) {
    Fail(std::string(role) + " '" + t.name + "' has zero point " + std::to_string(t.zero_points[0]) +
         " outside -128..127");
  }
}

void OpChecker::ExpectWeightQuantization(const Tensor& t, int channel_dim) const {
  const int64_t channels = t.shape[static_cast<size_t>(channel_dim)];
  if (t.scales.empty()) Fail("filter '" + t.name + "' is int8 but has no quantization scale");
  if (t.scales.size() > 1 &&
      (t.quantized_dimension != channel_dim || static_cast<int64_t>(t.scales.size()) != channels)) {
    Fail("filter '" + t.name + "' has " + std::to_string(t.scales.size()) + " scales on dimension " +
         std::to_string(t.quantized_dimension) + ", expected 1 or " + std::to_string(channels) +
         " on dimension " + std::to_string(channel_dim));
  }
  for (int32_t zp : t.zero_points) {
    if (zp != 0) {
      Fail("filter '" + t.name + "' has zero point " + std::to_string(zp) +
           "; int8 weights must be symmetric (zero point 0)");
    }
  }
}

std::string OpChecker::ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Window OpChecker::SpatialWindow(bool height, int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                                bool wide_padding) const {
  const Padding padding = PaddingOption();
  if (padding != Padding::kExplicit) return ComputeWindow(in, kernel, stride, dilation, padding);
  const int64_t before = Option(height ? "pad_top" : "pad_left");
  const int64_t after = Option(height ? "pad_bottom" : "pad_right");
  const int64_t effective = (kernel - 1) * dilation + 1;
  // Real models pad by a few pixels; the bound keeps a damaged file from asking
  // for a huge padded copy of each record.
  constexpr int64_t kWidestPadding = 1024;
  const int64_t widest = wide_padding ? std::max(kWidestPadding, effective - 1) : effective - 1;
  if (before < 0 || after < 0 || before > widest || after > widest) {
    Fail("explicit padding " + std::to_string(before) + ", " + std::to_string(after) +
         " must lie in 0.." + std::to_string(widest));
  }
  Window w;
  w.pad_before = before;
  const int64_t padded = in + before + after;
  w.out = padded >= effective ? (padded - effective) / stride + 1 : 0;
  return w;
}

Window ComputeWindow(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, Padding padding) {
  const int64_t effective = (kernel - 1) * dilation + 1;
  Window w;
  if (padding == Padding::kSame) {
    w.out = (in + stride - 1) / stride;
    const int64_t total = std::max<int64_t>((w.out - 1) * stride + effective - in, 0);
    w.pad_before = total / 2;
  } else {
    w.out = in >= effective ? (in - effective + stride) / stride : 0;
    w.pad_before = 0;
  }
  return w;
}

void ActivationBounds(Activation act, float* lo, float* hi) {
  const float inf = std::numeric_limits<float>::infinity();
  switch (act) {
    case Activation::kNone:
      *lo = -inf;
      *hi = inf;
      break;
    case Activation::kRelu:
      *lo = 0.0f;
      *hi = inf;
      break;
    case Activation::kReluN1To1:
      *lo = -1.0f;
      *hi = 1.0f;
      break;
    case Activation::kRelu6:
      *lo = 0.0f;
      *hi = 6.0f;
      break;
  }
}

int32_t QuantizeBoundXnnpack(float v, float scale, int32_t zero_point) {
  const float q = std::min(std::max(v / scale + static_cast<float>(zero_point), -128.0f), 127.0f);
  return static_cast<int32_t>(std::nearbyint(q));
}

int32_t QuantizeBoundTflite(float v, float scale, int32_t zero_point) {
  if (std::isinf(v)) return v < 0 ? -128 : 127;
  const float q = RoundHalfAway(v / scale);
  // Clamp in float first: the quotient of a tiny scale can exceed int32.
  const float clamped = std::min(std::max(q, -512.0f), 512.0f);
  return std::min(std::max(zero_point + static_cast<int32_t>(clamped), -128), 127);
}

Int8Range ActivationRange(Activation act, float scale, int32_t zero_point, Numerics numerics) {
  float lo = 0.0f, hi = 0.0f;
  ActivationBounds(act, &lo, &hi);
  Int8Range range;
  if (numerics == Numerics::kOnnxRuntime) {
    // QLinear ops have no fused activation: a Relu is folded into the output's
    // quantization range by the quantizer.
    if (act != Activation::kNone) return range;
  }
  if (numerics == Numerics::kLitertReference) {
    range.lo = act == Activation::kNone ? -128 : QuantizeBoundTflite(lo, scale, zero_point);
    range.hi = std::isinf(hi) ? 127 : QuantizeBoundTflite(hi, scale, zero_point);
  } else {
    range.lo = QuantizeBoundXnnpack(lo, scale, zero_point);
    range.hi = QuantizeBoundXnnpack(hi, scale, zero_point);
  }
  return range;
}

std::array<int8_t, 256> OnnxRuntimeTable(const Tensor& in, const Tensor& out, float (*transform)(float)) {
  std::array<int8_t, 256> table{};
  for (int32_t q = -128; q <= 127; ++q) {
    const float dequantized = in.scales[0] * static_cast<float>(q - in.zero_points[0]);
    const float rounded = std::nearbyint(transform(dequantized) / out.scales[0]);
    const float quantized = std::min(std::max(rounded + static_cast<float>(out.zero_points[0]), -128.0f), 127.0f);
    table[static_cast<uint8_t>(static_cast<int8_t>(q))] = static_cast<int8_t>(quantized);
  }
  return table;
}

void QuantizeMultiplier(double real, int32_t* multiplier, int* shift) {
  if (real == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  const double q = std::frexp(real, shift);
  int64_t q_fixed = static_cast<int64_t>(std::round(q * static_cast<double>(int64_t{1} << 31)));
  if (q_fixed == (int64_t{1} << 31)) {
    q_fixed /= 2;
    ++*shift;
  }
  if (*shift < -31) {
    *shift = 0;
    q_fixed = 0;
  }
  *multiplier = static_cast<int32_t>(q_fixed);
}

std::vector<int32_t> FoldInputZeroPoint(const OpChecker& check, const std::vector<int32_t>& bias, const int8_t* w,
                                        int64_t channels, int64_t depth, int32_t input_zero_point) {
  // 2^31 / (128 * 128): deeper sums of int8 products could leave int32.
  constexpr int64_t kMaxExactDepth = 131071;
  if (depth > kMaxExactDepth) {
    check.Unsupported("depth " + std::to_string(depth) + " exceeds " + std::to_string(kMaxExactDepth) +
                      ", beyond which int8 sums can leave int32");
  }
  std::vector<int32_t> folded(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) {
    int64_t sum = 0;
    for (int64_t k = 0; k < depth; ++k) sum += w[c * depth + k];
    const int64_t value = static_cast<int64_t>(bias[static_cast<size_t>(c)]) - int64_t{input_zero_point} * sum;
    if (value < std::numeric_limits<int32_t>::min() || value > std::numeric_limits<int32_t>::max()) {
      check.Fail("channel " + std::to_string(c) + " has a bias and weight sum outside int32");
    }
    folded[static_cast<size_t>(c)] = static_cast<int32_t>(value);
  }
  return folded;
}

DynamicQuantization QuantizeDynamicUint8(const float* x, int64_t n, int8_t* q) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  DynamicQuantization p;
  p.scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
  const float initial_zero_point = 0.0f - lo / p.scale;
  // The same argument order as ONNX Runtime, so that a NaN takes the same bound.
  const float clamped = std::max(0.0f, std::min(255.0f, initial_zero_point));
  const auto zero_point = static_cast<int32_t>(std::nearbyint(clamped));
  const float min_less_zero_point = static_cast<float>(0 - zero_point);
  const float max_less_zero_point = static_cast<float>(255 - zero_point);
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] / p.scale;
    v = v > min_less_zero_point ? v : min_less_zero_point;  // a NaN takes the lower bound, like maxps
    v = v < max_less_zero_point ? v : max_less_zero_point;
    q[i] = static_cast<int8_t>(static_cast<int32_t>(std::nearbyint(v)) + zero_point - 128);
  }
  p.zero_point = zero_point - 128;
  return p;
}

void CheckDynamicDepth(const OpChecker& check, int64_t depth) {
  // 2^31 / (255 * 128): deeper sums of uint8 differences times int8 weights could leave int32.
  constexpr int64_t kMaxExactDepth = 65793;
  if (depth > kMaxExactDepth) {
    check.Unsupported("depth " + std::to_string(depth) + " exceeds " + std::to_string(kMaxExactDepth) +
                      ", beyond which the integer sums can leave int32");
  }
}

std::vector<int32_t> WeightRowSums(const int8_t* w, int64_t channels, int64_t depth) {
  std::vector<int32_t> sums(static_cast<size_t>(channels), 0);
  for (int64_t c = 0; c < channels; ++c) {
    int32_t sum = 0;
    for (int64_t k = 0; k < depth; ++k) sum += w[c * depth + k];
    sums[static_cast<size_t>(c)] = sum;
  }
  return sums;
}

std::vector<float> DynamicWeightScales(const OpChecker& check, const Tensor& filter, int channel_dim) {
  check.ExpectDType(filter, DType::kInt8, "filter");
  check.ExpectWeightQuantization(filter, channel_dim);
  const int64_t channels = filter.shape[static_cast<size_t>(channel_dim)];
  if (filter.scales.size() == 1) return std::vector<float>(static_cast<size_t>(channels), filter.scales[0]);
  return filter.scales;
}

Broadcast MakeBroadcast(const OpChecker& check, const Tensor& a, const Tensor& b, const Tensor& out) {
  // A constant operand carries the batch dimension in its shape; drop leading
  // ones beyond the record rank so that it lines up with the activations.
  auto record_shape = [&](const Tensor& t) {
    std::vector<int64_t> shape = t.shape;
    while (t.constant && shape.size() > out.shape.size() && shape.front() == 1) shape.erase(shape.begin());
    return shape;
  };
  const std::vector<int64_t> sa = record_shape(a), sb = record_shape(b);
  const size_t rank = std::max(sa.size(), sb.size());
  Broadcast bc;
  bc.out_shape.assign(rank, 1);
  std::vector<int64_t> da(rank, 1), db(rank, 1);
  for (size_t i = 0; i < sa.size(); ++i) da[rank - sa.size() + i] = sa[i];
  for (size_t i = 0; i < sb.size(); ++i) db[rank - sb.size() + i] = sb[i];
  for (size_t d = 0; d < rank; ++d) {
    if (da[d] != db[d] && da[d] != 1 && db[d] != 1) {
      check.Fail("operands of shapes " + OpChecker::ShapeText(sa) + " and " + OpChecker::ShapeText(sb) +
                 " do not broadcast");
    }
    bc.out_shape[d] = std::max(da[d], db[d]);
  }
  if (bc.out_shape != out.shape) {
    check.Fail("operands broadcast to " + OpChecker::ShapeText(bc.out_shape) + " but the output '" + out.name +
               "' has shape " + OpChecker::ShapeText(out.shape));
  }
  bc.a_strides.assign(rank, 0);
  bc.b_strides.assign(rank, 0);
  int64_t stride_a = 1, stride_b = 1;
  for (size_t d = rank; d-- > 0;) {
    bc.a_strides[d] = da[d] == 1 ? 0 : stride_a;
    bc.b_strides[d] = db[d] == 1 ? 0 : stride_b;
    stride_a *= da[d];
    stride_b *= db[d];
  }
  bc.a_elements = stride_a;
  bc.b_elements = stride_b;
  bc.elements = out.elements();
  bc.same_shape = da == db;
  return bc;
}

}  // namespace kernels
}  // namespace edgemia

namespace edgemia {
namespace kernels {

void CheckXnnpackAccepts(const OpChecker& check, const Tensor& input, const Tensor& filter, const Tensor& output) {
  // LiteRT's XNNPACK delegate refuses these, and LiteRT then runs the op on
  // its builtin kernels, whose arithmetic the litert mode does not follow.
  const char* fallback = "; LiteRT's default path then uses kernels whose arithmetic this numerics mode does not "
                         "reproduce (try litert-reference)";
  for (const Tensor* t : {&input, &filter, &output}) {
    for (float s : t->scales) {
      if (!std::isnormal(s)) check.Unsupported("'" + t->name + "' has a subnormal quantization scale" + fallback);
    }
  }
  if (check.InputId(2) >= 0) {
    const Tensor& bias = check.Input(2);
    if (bias.scales.empty()) check.Unsupported("bias '" + bias.name + "' has no quantization parameters" + fallback);
    for (size_t c = 0; c < bias.scales.size(); ++c) {
      if (!std::isnormal(bias.scales[c]) || bias.zero_points[c] != 0) {
        check.Unsupported("bias '" + bias.name + "' has scale " + std::to_string(bias.scales[c]) + " and zero point " +
                          std::to_string(bias.zero_points[c]) + " in channel " + std::to_string(c) + fallback);
      }
    }
  }
}

ChannelRequantizer::ChannelRequantizer(const OpChecker& check, Formula formula, const Tensor& input,
                                       const Tensor& filter, const Tensor& output, int64_t channels,
                                       Activation activation, Numerics numerics)
    : formula_(formula), zero_point_(output.zero_points[0]) {
  if (numerics == Numerics::kLitert) CheckXnnpackAccepts(check, input, filter, output);
  range_ = ActivationRange(activation, output.scales[0], zero_point_, numerics);
  if (range_.lo >= range_.hi) check.Fail("the fused activation leaves an empty int8 output range");
  min_less_zero_point_ = static_cast<float>(range_.lo - zero_point_);
  max_less_zero_point_ = static_cast<float>(range_.hi - zero_point_);
  const size_t n = static_cast<size_t>(channels);
  fp32_scale_.resize(n);
  multiplier_.resize(n);
  shift_.resize(n);
  double_scale_.resize(n);
  for (size_t c = 0; c < n; ++c) {
    const float w_scale = filter.scales.size() == 1 ? filter.scales[0] : filter.scales[c];
    // XNNPACK's operator set-up: (input_scale * kernel_scale) / output_scale in float32.
    fp32_scale_[c] = input.scales[0] * w_scale / output.scales[0];
    if (formula == Formula::kFp32 && !(fp32_scale_[c] < 256.0f)) {
      check.Unsupported("requantization scale " + std::to_string(fp32_scale_[c]) + " of channel " + std::to_string(c) +
                 " is 256 or more, which LiteRT's int8 path does not accept");
    }
    // TFLite's PopulateConvolutionQuantizationParams: double product and quotient.
    double_scale_[c] = static_cast<double>(input.scales[0]) * static_cast<double>(w_scale) /
                       static_cast<double>(output.scales[0]);
    QuantizeMultiplier(double_scale_[c], &multiplier_[c], &shift_[c]);
  }
}

}  // namespace kernels
}  // namespace edgemia
