// Portable scalar kernels. They are the reference that every faster path
// must match byte for byte, so they are written as plain loops that follow
// the arithmetic of the runtime named by the numerics mode.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "graph.h"

namespace edgemia {

namespace {

// ---------------------------------------------------------------------------
// Load-time checks shared by the kernels.

class OpChecker {
 public:
  OpChecker(const OpSpec& op, const std::vector<Tensor>& tensors) : op_(op), tensors_(tensors) {}

  [[noreturn]] void Fail(const std::string& what) const {
    throw ModelError("operator " + op_.name + " (" + op_.kind + "): " + what);
  }

  void ExpectArity(size_t min_inputs, size_t max_inputs, size_t outputs) const {
    if (op_.inputs.size() < min_inputs || op_.inputs.size() > max_inputs) {
      Fail("has " + std::to_string(op_.inputs.size()) + " inputs, expected " +
           std::to_string(min_inputs) +
           (max_inputs != min_inputs ? " to " + std::to_string(max_inputs) : std::string()));
    }
    if (op_.outputs.size() != outputs) {
      Fail("has " + std::to_string(op_.outputs.size()) + " outputs, expected " +
           std::to_string(outputs));
    }
  }

  // Returns the id of input `i`, or -1 when the optional input is omitted.
  int InputId(size_t i) const { return i < op_.inputs.size() ? op_.inputs[i] : -1; }

  const Tensor& Input(size_t i) const {
    const int id = InputId(i);
    if (id < 0) Fail("input " + std::to_string(i) + " is missing");
    return tensors_[static_cast<size_t>(id)];
  }
  const Tensor& Output(size_t i) const { return tensors_[static_cast<size_t>(op_.outputs.at(i))]; }

  int64_t Option(const std::string& key) const {
    auto it = op_.options.find(key);
    if (it == op_.options.end()) Fail("option '" + key + "' is missing");
    return it->second;
  }
  int64_t PositiveOption(const std::string& key, int64_t max_value = 1 << 16) const {
    const int64_t v = Option(key);
    if (v < 1 || v > max_value) Fail("option '" + key + "' is " + std::to_string(v) +
                                     ", expected 1.." + std::to_string(max_value));
    return v;
  }
  Padding PaddingOption() const {
    const int64_t v = Option("padding");
    if (v != static_cast<int64_t>(Padding::kSame) && v != static_cast<int64_t>(Padding::kValid)) {
      Fail("padding code " + std::to_string(v) + " is not SAME (0) or VALID (1)");
    }
    return static_cast<Padding>(v);
  }
  Activation ActivationOption() const {
    const int64_t v = Option("activation");
    if (v < 0 || v > 3) {
      Fail("fused activation code " + std::to_string(v) +
           " is not supported; supported are NONE, RELU, RELU_N1_TO_1 and RELU6");
    }
    return static_cast<Activation>(v);
  }

  void ExpectDType(const Tensor& t, DType dtype, const char* role) const {
    if (t.dtype != dtype) {
      Fail(std::string(role) + " '" + t.name + "' is " + DTypeName(t.dtype) + ", expected " +
           DTypeName(dtype));
    }
  }
  void ExpectConstant(const Tensor& t, const char* role) const {
    if (!t.constant) Fail(std::string(role) + " '" + t.name + "' must be a constant tensor");
  }
  void ExpectActivation(const Tensor& t, const char* role) const {
    if (t.constant) Fail(std::string(role) + " '" + t.name + "' must not be a constant tensor");
  }
  void ExpectRank(const Tensor& t, size_t rank, const char* role) const {
    if (t.shape.size() != rank) {
      Fail(std::string(role) + " '" + t.name + "' has rank " + std::to_string(t.shape.size()) +
           ", expected " + std::to_string(rank) + " (activation ranks exclude the batch)");
    }
  }
  void ExpectShape(const Tensor& t, const std::vector<int64_t>& shape, const char* role) const {
    if (t.shape != shape) Fail(std::string(role) + " '" + t.name + "' has shape " + ShapeText(t.shape) +
                               ", expected " + ShapeText(shape));
  }

  // Per-tensor int8 activation quantization: one scale and a zero point in int8 range.
  void ExpectActivationQuantization(const Tensor& t, const char* role) const {
    if (t.scales.size() != 1) {
      Fail(std::string(role) + " '" + t.name + "' needs one quantization scale, has " +
           std::to_string(t.scales.size()));
    }
    if (t.zero_points[0] < -128 || t.zero_points[0] > 127) {
      Fail(std::string(role) + " '" + t.name + "' has zero point " +
           std::to_string(t.zero_points[0]) + " outside -128..127");
    }
  }

  // Symmetric int8 weights, per tensor or per output channel along `channel_dim`.
  void ExpectWeightQuantization(const Tensor& t, int channel_dim) const {
    const int64_t channels = t.shape[static_cast<size_t>(channel_dim)];
    if (t.scales.empty()) Fail("filter '" + t.name + "' is int8 but has no quantization scale");
    if (t.scales.size() > 1 &&
        (t.quantized_dimension != channel_dim || static_cast<int64_t>(t.scales.size()) != channels)) {
      Fail("filter '" + t.name + "' has " + std::to_string(t.scales.size()) +
           " scales on dimension " + std::to_string(t.quantized_dimension) + ", expected 1 or " +
           std::to_string(channels) + " on dimension " + std::to_string(channel_dim));
    }
    for (int32_t zp : t.zero_points) {
      if (zp != 0) {
        Fail("filter '" + t.name + "' has zero point " + std::to_string(zp) +
             "; int8 weights must be symmetric (zero point 0)");
      }
    }
  }

  static std::string ShapeText(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }

 private:
  const OpSpec& op_;
  const std::vector<Tensor>& tensors_;
};

// Output size and leading padding of one spatial dimension, as TFLite computes
// them: SAME gives ceil(in / stride) outputs and puts the odd pad at the end.
struct Window {
  int64_t out = 0;
  int64_t pad_before = 0;
};

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

// Float bounds of a fused activation.
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

// Quantizes one activation bound the way XNNPACK does when LiteRT delegates an
// int8 op to it: lrintf(clamp(v / scale + zero_point, -128, 127)), so in
// float32 and half to even.
int32_t QuantizeBoundXnnpack(float v, float scale, int32_t zero_point) {
  const float q = std::min(std::max(v / scale + static_cast<float>(zero_point), -128.0f), 127.0f);
  return static_cast<int32_t>(std::nearbyint(q));
}

// int8 output stage of LiteRT's delegated conv and fully connected ops
// (XNNPACK's fp32 requantization): scale the int32 sum by a float32
// multiplier, clamp in float, round half to even, add the zero point.
struct Fp32Requantizer {
  std::vector<float> scale;  // per output channel
  float min_less_zero_point = -128.0f;
  float max_less_zero_point = 127.0f;
  int32_t zero_point = 0;

  inline int8_t operator()(int32_t acc, int64_t channel) const {
    float f = static_cast<float>(acc) * scale[static_cast<size_t>(channel)];
    f = std::max(f, min_less_zero_point);
    f = std::min(f, max_less_zero_point);
    return static_cast<int8_t>(static_cast<int32_t>(std::nearbyint(f)) + zero_point);
  }
};

Fp32Requantizer MakeRequantizer(const OpChecker& check, const Tensor& input, const Tensor& filter,
                                const Tensor& output, int64_t channels, Activation act) {
  Fp32Requantizer r;
  r.zero_point = output.zero_points[0];
  r.scale.resize(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) {
    const float w_scale = filter.scales.size() == 1 ? filter.scales[0] : filter.scales[static_cast<size_t>(c)];
    // Same float32 expression and order as XNNPACK's operator set-up.
    const float s = input.scales[0] * w_scale / output.scales[0];
    if (!(s < 256.0f)) {
      check.Fail("requantization scale " + std::to_string(s) + " of channel " + std::to_string(c) +
                 " is 256 or more, which LiteRT's int8 path does not accept");
    }
    r.scale[static_cast<size_t>(c)] = s;
  }
  float lo = 0.0f, hi = 0.0f;
  ActivationBounds(act, &lo, &hi);
  const int32_t q_lo = QuantizeBoundXnnpack(lo, output.scales[0], r.zero_point);
  const int32_t q_hi = QuantizeBoundXnnpack(hi, output.scales[0], r.zero_point);
  if (q_lo >= q_hi) check.Fail("the fused activation leaves an empty int8 output range");
  r.min_less_zero_point = static_cast<float>(q_lo - r.zero_point);
  r.max_less_zero_point = static_cast<float>(q_hi - r.zero_point);
  return r;
}

// ---------------------------------------------------------------------------
// CONV_2D: NHWC input, OHWI filter, optional bias, grouped when the filter
// has fewer input channels than the input.

struct ConvGeometry {
  int64_t in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, filter_c, stride_h, stride_w,
      dilation_h, dilation_w, pad_top, pad_left, groups;
};

ConvGeometry CheckConv(const OpChecker& check, const Tensor& in, const Tensor& filter,
                       const Tensor& out) {
  check.ExpectActivation(in, "input");
  check.ExpectConstant(filter, "filter");
  check.ExpectRank(in, 3, "input");
  check.ExpectRank(filter, 4, "filter");
  check.ExpectRank(out, 3, "output");
  ConvGeometry g{};
  g.in_h = in.shape[0];
  g.in_w = in.shape[1];
  g.in_c = in.shape[2];
  g.out_c = filter.shape[0];
  g.k_h = filter.shape[1];
  g.k_w = filter.shape[2];
  g.filter_c = filter.shape[3];
  g.stride_h = check.PositiveOption("stride_h");
  g.stride_w = check.PositiveOption("stride_w");
  g.dilation_h = check.PositiveOption("dilation_h");
  g.dilation_w = check.PositiveOption("dilation_w");
  if (g.in_c % g.filter_c != 0) {
    check.Fail("input has " + std::to_string(g.in_c) + " channels, not a multiple of the filter's " +
               std::to_string(g.filter_c));
  }
  g.groups = g.in_c / g.filter_c;
  if (g.out_c % g.groups != 0) {
    check.Fail(std::to_string(g.out_c) + " output channels do not split into " +
               std::to_string(g.groups) + " groups");
  }
  const Padding padding = check.PaddingOption();
  const Window wh = ComputeWindow(g.in_h, g.k_h, g.stride_h, g.dilation_h, padding);
  const Window ww = ComputeWindow(g.in_w, g.k_w, g.stride_w, g.dilation_w, padding);
  g.out_h = wh.out;
  g.out_w = ww.out;
  g.pad_top = wh.pad_before;
  g.pad_left = ww.pad_before;
  check.ExpectShape(out, {g.out_h, g.out_w, g.out_c}, "output");
  return g;
}

template <typename Accumulate>
void ForEachConvOutput(const ConvGeometry& g, int64_t batch, Accumulate&& body) {
  const int64_t group_out = g.out_c / g.groups;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        for (int64_t oc = 0; oc < g.out_c; ++oc) {
          body(b, oy, ox, oc, (oc / group_out) * g.filter_c);
        }
      }
    }
  }
}

class ConvInt8 final : public Kernel {
 public:
  ConvInt8(const OpChecker& check, const OpSpec& op) {
    const Tensor& in = check.Input(0);
    const Tensor& filter = check.Input(1);
    const Tensor& out = check.Output(0);
    g_ = CheckConv(check, in, filter, out);
    check.ExpectDType(filter, DType::kInt8, "filter");
    check.ExpectDType(out, DType::kInt8, "output");
    check.ExpectActivationQuantization(in, "input");
    check.ExpectActivationQuantization(out, "output");
    check.ExpectWeightQuantization(filter, 0);
    filter_ = filter.as<int8_t>();
    bias_.assign(static_cast<size_t>(g_.out_c), 0);
    if (check.InputId(2) >= 0) {
      const Tensor& bias = check.Input(2);
      check.ExpectConstant(bias, "bias");
      check.ExpectDType(bias, DType::kInt32, "bias");
      check.ExpectShape(bias, {g_.out_c}, "bias");
      std::memcpy(bias_.data(), bias.data.data(), bias.data.size());
    }
    input_zero_point_ = in.zero_points[0];
    requantize_ = MakeRequantizer(check, in, filter, out, g_.out_c, check.ActivationOption());
    in_id_ = op.inputs[0];
    out_id_ = op.outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    const ConvGeometry& g = g_;
    ForEachConvOutput(g, batch, [&](int64_t b, int64_t oy, int64_t ox, int64_t oc, int64_t ic0) {
      int32_t acc = bias_[static_cast<size_t>(oc)];
      for (int64_t ky = 0; ky < g.k_h; ++ky) {
        const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
        if (iy < 0 || iy >= g.in_h) continue;  // taps outside the image add nothing
        for (int64_t kx = 0; kx < g.k_w; ++kx) {
          const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
          if (ix < 0 || ix >= g.in_w) continue;
          const int8_t* xp = x + ((b * g.in_h + iy) * g.in_w + ix) * g.in_c + ic0;
          const int8_t* wp = filter_ + ((oc * g.k_h + ky) * g.k_w + kx) * g.filter_c;
          for (int64_t ic = 0; ic < g.filter_c; ++ic) {
            acc += static_cast<int32_t>(wp[ic]) * (static_cast<int32_t>(xp[ic]) - input_zero_point_);
          }
        }
      }
      y[((b * g.out_h + oy) * g.out_w + ox) * g.out_c + oc] = requantize_(acc, oc);
    });
  }

 private:
  ConvGeometry g_{};
  const int8_t* filter_ = nullptr;
  std::vector<int32_t> bias_;
  int32_t input_zero_point_ = 0;
  Fp32Requantizer requantize_;
  int in_id_ = 0, out_id_ = 0;
};

class ConvFloat final : public Kernel {
 public:
  ConvFloat(const OpChecker& check, const OpSpec& op) {
    const Tensor& in = check.Input(0);
    const Tensor& filter = check.Input(1);
    const Tensor& out = check.Output(0);
    g_ = CheckConv(check, in, filter, out);
    check.ExpectDType(filter, DType::kFloat32, "filter");
    check.ExpectDType(out, DType::kFloat32, "output");
    filter_ = filter.as<float>();
    bias_.assign(static_cast<size_t>(g_.out_c), 0.0f);
    if (check.InputId(2) >= 0) {
      const Tensor& bias = check.Input(2);
      check.ExpectConstant(bias, "bias");
      check.ExpectDType(bias, DType::kFloat32, "bias");
      check.ExpectShape(bias, {g_.out_c}, "bias");
      std::memcpy(bias_.data(), bias.data.data(), bias.data.size());
    }
    ActivationBounds(check.ActivationOption(), &lo_, &hi_);
    in_id_ = op.inputs[0];
    out_id_ = op.outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    const ConvGeometry& g = g_;
    ForEachConvOutput(g, batch, [&](int64_t b, int64_t oy, int64_t ox, int64_t oc, int64_t ic0) {
      float acc = bias_[static_cast<size_t>(oc)];
      for (int64_t ky = 0; ky < g.k_h; ++ky) {
        const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
        if (iy < 0 || iy >= g.in_h) continue;
        for (int64_t kx = 0; kx < g.k_w; ++kx) {
          const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
          if (ix < 0 || ix >= g.in_w) continue;
          const float* xp = x + ((b * g.in_h + iy) * g.in_w + ix) * g.in_c + ic0;
          const float* wp = filter_ + ((oc * g.k_h + ky) * g.k_w + kx) * g.filter_c;
          for (int64_t ic = 0; ic < g.filter_c; ++ic) acc += wp[ic] * xp[ic];
        }
      }
      y[((b * g.out_h + oy) * g.out_w + ox) * g.out_c + oc] = std::min(std::max(acc, lo_), hi_);
    });
  }

 private:
  ConvGeometry g_{};
  const float* filter_ = nullptr;
  std::vector<float> bias_;
  float lo_ = 0.0f, hi_ = 0.0f;
  int in_id_ = 0, out_id_ = 0;
};

// ---------------------------------------------------------------------------
// FULLY_CONNECTED: the input record is read as rows of the filter's depth.

struct FcGeometry {
  int64_t rows = 0, depth = 0, units = 0;
};

FcGeometry CheckFullyConnected(const OpChecker& check, const Tensor& in, const Tensor& filter,
                               const Tensor& out) {
  check.ExpectActivation(in, "input");
  check.ExpectConstant(filter, "filter");
  check.ExpectRank(filter, 2, "filter");
  FcGeometry g;
  g.units = filter.shape[0];
  g.depth = filter.shape[1];
  if (in.elements() % g.depth != 0) {
    check.Fail("input '" + in.name + "' has " + std::to_string(in.elements()) +
               " values per record, not a multiple of the filter depth " + std::to_string(g.depth));
  }
  g.rows = in.elements() / g.depth;
  if (out.elements() != g.rows * g.units) {
    check.Fail("output '" + out.name + "' has " + std::to_string(out.elements()) +
               " values per record, expected " + std::to_string(g.rows * g.units));
  }
  return g;
}

class FullyConnectedInt8 final : public Kernel {
 public:
  FullyConnectedInt8(const OpChecker& check, const OpSpec& op) {
    const Tensor& in = check.Input(0);
    const Tensor& filter = check.Input(1);
    const Tensor& out = check.Output(0);
    g_ = CheckFullyConnected(check, in, filter, out);
    check.ExpectDType(filter, DType::kInt8, "filter");
    check.ExpectDType(out, DType::kInt8, "output");
    check.ExpectActivationQuantization(in, "input");
    check.ExpectActivationQuantization(out, "output");
    check.ExpectWeightQuantization(filter, 0);
    filter_ = filter.as<int8_t>();
    bias_.assign(static_cast<size_t>(g_.units), 0);
    if (check.InputId(2) >= 0) {
      const Tensor& bias = check.Input(2);
      check.ExpectConstant(bias, "bias");
      check.ExpectDType(bias, DType::kInt32, "bias");
      check.ExpectShape(bias, {g_.units}, "bias");
      std::memcpy(bias_.data(), bias.data.data(), bias.data.size());
    }
    input_zero_point_ = in.zero_points[0];
    requantize_ = MakeRequantizer(check, in, filter, out, g_.units, check.ActivationOption());
    in_id_ = op.inputs[0];
    out_id_ = op.outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const int8_t* x = arena.at<int8_t>(in_id_);
    int8_t* y = arena.at<int8_t>(out_id_);
    const int64_t rows = batch * g_.rows;
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* xr = x + r * g_.depth;
      for (int64_t u = 0; u < g_.units; ++u) {
        const int8_t* wr = filter_ + u * g_.depth;
        int32_t acc = bias_[static_cast<size_t>(u)];
        for (int64_t k = 0; k < g_.depth; ++k) {
          acc += static_cast<int32_t>(wr[k]) * (static_cast<int32_t>(xr[k]) - input_zero_point_);
        }
        y[r * g_.units + u] = requantize_(acc, u);
      }
    }
  }

 private:
  FcGeometry g_;
  const int8_t* filter_ = nullptr;
  std::vector<int32_t> bias_;
  int32_t input_zero_point_ = 0;
  Fp32Requantizer requantize_;
  int in_id_ = 0, out_id_ = 0;
};

class FullyConnectedFloat final : public Kernel {
 public:
  FullyConnectedFloat(const OpChecker& check, const OpSpec& op) {
    const Tensor& in = check.Input(0);
    const Tensor& filter = check.Input(1);
    const Tensor& out = check.Output(0);
    g_ = CheckFullyConnected(check, in, filter, out);
    check.ExpectDType(filter, DType::kFloat32, "filter");
    check.ExpectDType(out, DType::kFloat32, "output");
    filter_ = filter.as<float>();
    bias_.assign(static_cast<size_t>(g_.units), 0.0f);
    if (check.InputId(2) >= 0) {
      const Tensor& bias = check.Input(2);
      check.ExpectConstant(bias, "bias");
      check.ExpectDType(bias, DType::kFloat32, "bias");
      check.ExpectShape(bias, {g_.units}, "bias");
      std::memcpy(bias_.data(), bias.data.data(), bias.data.size());
    }
    ActivationBounds(check.ActivationOption(), &lo_, &hi_);
    in_id_ = op.inputs[0];
    out_id_ = op.outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const float* x = arena.at<float>(in_id_);
    float* y = arena.at<float>(out_id_);
    const int64_t rows = batch * g_.rows;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * g_.depth;
      for (int64_t u = 0; u < g_.units; ++u) {
        const float* wr = filter_ + u * g_.depth;
        float acc = bias_[static_cast<size_t>(u)];
        for (int64_t k = 0; k < g_.depth; ++k) acc += wr[k] * xr[k];
        y[r * g_.units + u] = std::min(std::max(acc, lo_), hi_);
      }
    }
  }

 private:
  FcGeometry g_;
  const float* filter_ = nullptr;
  std::vector<float> bias_;
  float lo_ = 0.0f, hi_ = 0.0f;
  int in_id_ = 0, out_id_ = 0;
};

// ---------------------------------------------------------------------------
// MAX_POOL_2D: the maximum over the taps inside the image, then the fused
// activation's clamp. Exact in every runtime.

template <typename T>
class MaxPool final : public Kernel {
 public:
  MaxPool(const OpChecker& check, const OpSpec& op) {
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectActivation(in, "input");
    check.ExpectRank(in, 3, "input");
    check.ExpectRank(out, 3, "output");
    check.ExpectDType(out, in.dtype, "output");
    in_h_ = in.shape[0];
    in_w_ = in.shape[1];
    channels_ = in.shape[2];
    k_h_ = check.PositiveOption("filter_h");
    k_w_ = check.PositiveOption("filter_w");
    stride_h_ = check.PositiveOption("stride_h");
    stride_w_ = check.PositiveOption("stride_w");
    const Padding padding = check.PaddingOption();
    const Window wh = ComputeWindow(in_h_, k_h_, stride_h_, 1, padding);
    const Window ww = ComputeWindow(in_w_, k_w_, stride_w_, 1, padding);
    out_h_ = wh.out;
    out_w_ = ww.out;
    pad_top_ = wh.pad_before;
    pad_left_ = ww.pad_before;
    check.ExpectShape(out, {out_h_, out_w_, channels_}, "output");
    float lo = 0.0f, hi = 0.0f;
    ActivationBounds(check.ActivationOption(), &lo, &hi);
    if constexpr (std::is_same_v<T, int8_t>) {
      check.ExpectActivationQuantization(in, "input");
      check.ExpectActivationQuantization(out, "output");
      if (in.scales[0] != out.scales[0] || in.zero_points[0] != out.zero_points[0]) {
        check.Fail("input and output quantization differ; MAX_POOL_2D needs them equal");
      }
      lo_ = static_cast<T>(QuantizeBoundXnnpack(lo, out.scales[0], out.zero_points[0]));
      hi_ = static_cast<T>(QuantizeBoundXnnpack(hi, out.scales[0], out.zero_points[0]));
    } else {
      lo_ = lo;
      hi_ = hi;
    }
    in_id_ = op.inputs[0];
    out_id_ = op.outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const T* x = arena.at<T>(in_id_);
    T* y = arena.at<T>(out_id_);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t oy = 0; oy < out_h_; ++oy) {
        const int64_t y0 = std::max<int64_t>(oy * stride_h_ - pad_top_, 0);
        const int64_t y1 = std::min<int64_t>(oy * stride_h_ - pad_top_ + k_h_, in_h_);
        for (int64_t ox = 0; ox < out_w_; ++ox) {
          const int64_t x0 = std::max<int64_t>(ox * stride_w_ - pad_left_, 0);
          const int64_t x1 = std::min<int64_t>(ox * stride_w_ - pad_left_ + k_w_, in_w_);
          for (int64_t c = 0; c < channels_; ++c) {
            T m = std::numeric_limits<T>::lowest();
            for (int64_t iy = y0; iy < y1; ++iy) {
              for (int64_t ix = x0; ix < x1; ++ix) {
                m = std::max(m, x[((b * in_h_ + iy) * in_w_ + ix) * channels_ + c]);
              }
            }
            y[((b * out_h_ + oy) * out_w_ + ox) * channels_ + c] = std::min(std::max(m, lo_), hi_);
          }
        }
      }
    }
  }

 private:
  int64_t in_h_ = 0, in_w_ = 0, channels_ = 0, k_h_ = 0, k_w_ = 0, stride_h_ = 0, stride_w_ = 0;
  int64_t out_h_ = 0, out_w_ = 0, pad_top_ = 0, pad_left_ = 0;
  T lo_{}, hi_{};
  int in_id_ = 0, out_id_ = 0;
};

// ---------------------------------------------------------------------------
// RESHAPE: the bytes of each record are unchanged.

class Reshape final : public Kernel {
 public:
  Reshape(const OpChecker& check, const OpSpec& op) {
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectActivation(in, "input");
    check.ExpectDType(out, in.dtype, "output");
    if (in.elements() != out.elements()) {
      check.Fail("input '" + in.name + "' has " + std::to_string(in.elements()) +
                 " values per record but output '" + out.name + "' has " +
                 std::to_string(out.elements()));
    }
    if (in.scales != out.scales || in.zero_points != out.zero_points) {
      check.Fail("input and output quantization differ; RESHAPE needs them equal");
    }
    record_bytes_ = in.bytes();
    in_id_ = op.inputs[0];
    out_id_ = op.outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    std::memcpy(arena.at<uint8_t>(out_id_), arena.at<uint8_t>(in_id_),
                static_cast<size_t>(batch * record_bytes_));
  }

 private:
  int64_t record_bytes_ = 0;
  int in_id_ = 0, out_id_ = 0;
};

}  // namespace

std::unique_ptr<Kernel> MakeKernel(const OpSpec& op, const std::vector<Tensor>& tensors,
                                   Numerics numerics) {
  (void)numerics;  // every kernel here follows kLitert, the only mode so far
  const OpChecker check(op, tensors);
  const std::string& kind = op.kind;
  if (kind == "CONV_2D") {
    check.ExpectArity(2, 3, 1);
    const DType dtype = check.Input(0).dtype;
    if (dtype == DType::kInt8) return std::make_unique<ConvInt8>(check, op);
    if (dtype == DType::kFloat32) return std::make_unique<ConvFloat>(check, op);
  } else if (kind == "FULLY_CONNECTED") {
    check.ExpectArity(2, 3, 1);
    const DType dtype = check.Input(0).dtype;
    if (dtype == DType::kInt8) return std::make_unique<FullyConnectedInt8>(check, op);
    if (dtype == DType::kFloat32) return std::make_unique<FullyConnectedFloat>(check, op);
  } else if (kind == "MAX_POOL_2D") {
    check.ExpectArity(1, 1, 1);
    const DType dtype = check.Input(0).dtype;
    if (dtype == DType::kInt8) return std::make_unique<MaxPool<int8_t>>(check, op);
    if (dtype == DType::kFloat32) return std::make_unique<MaxPool<float>>(check, op);
  } else if (kind == "RESHAPE") {
    check.ExpectArity(1, 2, 1);
    return std::make_unique<Reshape>(check, op);
  } else {
    check.Fail("operator is not supported by the native kernel; supported are CONV_2D, "
               "FULLY_CONNECTED, MAX_POOL_2D and RESHAPE");
  }
  check.Fail(std::string("input dtype ") + DTypeName(check.Input(0).dtype) +
             " is not supported; supported are int8 and float32");
}

}  // namespace edgemia
