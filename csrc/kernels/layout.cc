// Ops that move values without arithmetic (RESHAPE, SQUEEZE, PAD, PADV2) and
// CONCATENATION, which rescales inputs whose quantization differs.
#include "common.h"
#include "registry.h"

namespace edgemia {
namespace kernels {
namespace {

// RESHAPE and SQUEEZE: the bytes of each record are unchanged.
class Reshape final : public Kernel {
 public:
  explicit Reshape(const OpChecker& check) {
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectActivation(in, "input");
    check.ExpectDType(out, in.dtype, "output");
    if (in.elements() != out.elements()) {
      check.Fail("input '" + in.name + "' has " + std::to_string(in.elements()) + " values per record but output '" +
                 out.name + "' has " + std::to_string(out.elements()));
    }
    check.ExpectSameQuantization(in, out);
    record_bytes_ = in.bytes();
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    std::memcpy(arena.at<uint8_t>(out_id_), arena.at<uint8_t>(in_id_), static_cast<size_t>(batch * record_bytes_));
  }

 private:
  int64_t record_bytes_ = 0;
  int in_id_ = 0, out_id_ = 0;
};

// ---------------------------------------------------------------------------
// PAD and PADV2 with a constant value: int8 pads with the output zero point
// (PAD) or the given value (PADV2).

class Pad final : public Kernel {
 public:
  Pad(const OpChecker& check, bool has_value) {
    check.ExpectArity(2, has_value ? 3 : 2, 1);
    const Tensor& in = check.Input(0);
    const Tensor& paddings = check.Input(1);
    const Tensor& out = check.Output(0);
    check.ExpectActivation(in, "input");
    check.ExpectConstant(paddings, "paddings");
    check.ExpectDType(paddings, DType::kInt32, "paddings");
    check.ExpectDType(out, in.dtype, "output");
    const size_t rank = in.shape.size();
    // The paddings cover the batch axis too, which must not be padded.
    check.ExpectShape(paddings, {static_cast<int64_t>(rank + 1), 2}, "paddings");
    const int32_t* p = paddings.as<int32_t>();
    if (p[0] != 0 || p[1] != 0) check.Unsupported("padding the batch axis is not supported");
    before_.resize(rank);
    std::vector<int64_t> expected(rank);
    for (size_t d = 0; d < rank; ++d) {
      const int32_t lo = p[2 * (d + 1)], hi = p[2 * (d + 1) + 1];
      if (lo < 0 || hi < 0) check.Unsupported("negative paddings are not supported");
      before_[d] = lo;
      expected[d] = in.shape[d] + lo + hi;
    }
    check.ExpectShape(out, expected, "output");
    in_shape_ = in.shape;
    out_shape_ = out.shape;
    element_size_ = ElementSize(in.dtype);
    pad_bytes_.assign(element_size_, 0);
    if (in.dtype == DType::kInt8) {
      check.ExpectActivationQuantization(in, "input");
      check.ExpectSameQuantization(in, out);
      int8_t value = static_cast<int8_t>(out.zero_points[0]);
      if (has_value && check.InputId(2) >= 0) {
        const Tensor& v = check.Input(2);
        check.ExpectConstant(v, "constant value");
        check.ExpectDType(v, DType::kInt8, "constant value");
        if (v.elements() != 1) check.Fail("constant value must be a scalar");
        value = v.as<int8_t>()[0];
      }
      std::memcpy(pad_bytes_.data(), &value, 1);
    } else if (in.dtype == DType::kFloat32) {
      float value = 0.0f;
      if (has_value && check.InputId(2) >= 0) {
        const Tensor& v = check.Input(2);
        check.ExpectConstant(v, "constant value");
        check.ExpectDType(v, DType::kFloat32, "constant value");
        if (v.elements() != 1) check.Fail("constant value must be a scalar");
        value = v.as<float>()[0];
      }
      std::memcpy(pad_bytes_.data(), &value, sizeof(value));
    } else {
      check.Unsupported("input must be int8 or float32");
    }
    in_elements_ = in.elements();
    out_elements_ = out.elements();
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    const uint8_t* x = arena.at<uint8_t>(in_id_);
    uint8_t* y = arena.at<uint8_t>(out_id_);
    const size_t rank = in_shape_.size();
    for (int64_t b = 0; b < batch; ++b) {
      uint8_t* yb = y + b * out_elements_ * static_cast<int64_t>(element_size_);
      for (int64_t i = 0; i < out_elements_; ++i) std::memcpy(yb + i * element_size_, pad_bytes_.data(), element_size_);
      const uint8_t* xb = x + b * in_elements_ * static_cast<int64_t>(element_size_);
      std::vector<int64_t> index(rank, 0);
      for (int64_t i = 0; i < in_elements_; ++i) {
        int64_t o = 0;
        for (size_t d = 0; d < rank; ++d) o = o * out_shape_[d] + index[d] + before_[d];
        std::memcpy(yb + o * static_cast<int64_t>(element_size_), xb + i * static_cast<int64_t>(element_size_),
                    element_size_);
        for (size_t d = rank; d-- > 0;) {
          if (++index[d] < in_shape_[d]) break;
          index[d] = 0;
        }
      }
    }
  }

 private:
  std::vector<int64_t> in_shape_, out_shape_, before_;
  size_t element_size_ = 1;
  std::vector<uint8_t> pad_bytes_;
  int64_t in_elements_ = 0, out_elements_ = 0;
  int in_id_ = 0, out_id_ = 0;
};

// ---------------------------------------------------------------------------
// CONCATENATION along one record axis.

class Concatenation final : public Kernel {
 public:
  Concatenation(const OpChecker& check, Numerics numerics) {
    if (check.InputCount() < 1 || check.op().outputs.size() != 1) check.Fail("needs inputs and one output");
    const Tensor& out = check.Output(0);
    const size_t rank = out.shape.size();
    int64_t axis = check.Option("axis");
    if (axis < 0) axis += static_cast<int64_t>(rank) + 1;
    if (axis == 0) check.Unsupported("concatenation along the batch axis is not supported");
    if (axis < 1 || axis > static_cast<int64_t>(rank)) check.Fail("axis " + std::to_string(axis) + " is out of range");
    const size_t a = static_cast<size_t>(axis - 1);
    outer_ = 1;
    for (size_t d = 0; d < a; ++d) outer_ *= out.shape[d];
    int64_t inner = 1;
    for (size_t d = a + 1; d < rank; ++d) inner *= out.shape[d];
    int64_t total_axis = 0;
    for (size_t i = 0; i < check.InputCount(); ++i) {
      const Tensor& in = check.Input(i);
      check.ExpectActivation(in, "input");
      check.ExpectDType(in, out.dtype, "input");
      check.ExpectRank(in, rank, "input");
      for (size_t d = 0; d < rank; ++d) {
        if (d != a && in.shape[d] != out.shape[d]) {
          check.Fail("input '" + in.name + "' has shape " + OpChecker::ShapeText(in.shape) +
                     ", which does not match the output " + OpChecker::ShapeText(out.shape) + " off the axis");
        }
      }
      total_axis += in.shape[a];
      Part part;
      part.id = check.op().inputs[i];
      part.elements = in.elements();
      part.block = in.shape[a] * inner;
      if (out.dtype == DType::kInt8) {
        check.ExpectActivationQuantization(in, "input");
        check.ExpectActivationQuantization(out, "output");
        if (in.scales[0] == out.scales[0] && in.zero_points[0] == out.zero_points[0]) {
          // Same quantization: the bytes are copied.
        } else if (numerics == Numerics::kOnnxRuntime) {
          // ONNX Runtime's QLinearConcat maps each value through a table.
          part.lookup = true;
          part.table = OnnxRuntimeTable(in, out, [](float v) { return v; });
        } else {
          // TFLite's ConcatenationWithScaling, which LiteRT runs for inputs
          // whose quantization differs from the output's.
          part.rescale = true;
          part.scale = in.scales[0] * (1.0f / out.scales[0]);
          part.bias = -static_cast<float>(in.zero_points[0]) * part.scale;
          part.zero_point = out.zero_points[0];
        }
      } else if (out.dtype != DType::kFloat32) {
        check.Unsupported("inputs must be int8 or float32");
      }
      parts_.push_back(part);
    }
    if (total_axis != out.shape[a]) {
      check.Fail("inputs add up to " + std::to_string(total_axis) + " along the axis, but the output has " +
                 std::to_string(out.shape[a]));
    }
    element_size_ = ElementSize(out.dtype);
    out_elements_ = out.elements();
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    uint8_t* y = arena.at<uint8_t>(out_id_);
    const int64_t es = static_cast<int64_t>(element_size_);
    for (int64_t b = 0; b < batch; ++b) {
      uint8_t* yp = y + b * out_elements_ * es;
      for (int64_t o = 0; o < outer_; ++o) {
        for (const Part& part : parts_) {
          const uint8_t* xp = arena.at<uint8_t>(part.id) + (b * part.elements + o * part.block) * es;
          if (part.lookup) {
            const int8_t* xq = reinterpret_cast<const int8_t*>(xp);
            int8_t* yq = reinterpret_cast<int8_t*>(yp);
            for (int64_t j = 0; j < part.block; ++j) yq[j] = part.table[static_cast<uint8_t>(xq[j])];
          } else if (!part.rescale) {
            std::memcpy(yp, xp, static_cast<size_t>(part.block * es));
          } else {
            const int8_t* xq = reinterpret_cast<const int8_t*>(xp);
            int8_t* yq = reinterpret_cast<int8_t*>(yp);
            for (int64_t j = 0; j < part.block; ++j) {
              const float r = RoundHalfAway(static_cast<float>(xq[j]) * part.scale + part.bias);
              const int32_t v = static_cast<int32_t>(std::min(std::max(r, -512.0f), 512.0f)) + part.zero_point;
              yq[j] = static_cast<int8_t>(std::min(std::max(v, -128), 127));
            }
          }
          yp += part.block * es;
        }
      }
    }
  }

 private:
  struct Part {
    int id = 0;
    int64_t elements = 0;  // per record
    int64_t block = 0;     // contiguous elements per outer index
    bool rescale = false;
    float scale = 1.0f, bias = 0.0f;
    int32_t zero_point = 0;
    bool lookup = false;
    std::array<int8_t, 256> table{};
  };
  std::vector<Part> parts_;
  int64_t outer_ = 1;
  size_t element_size_ = 1;
  int64_t out_elements_ = 0;
  int out_id_ = 0;
};

// ---------------------------------------------------------------------------
// TRANSPOSE of the record axes; options perm0, perm1, ... give, for each
// output axis, the input axis it reads (record coordinates, batch excluded).

class Transpose final : public Kernel {
 public:
  explicit Transpose(const OpChecker& check) {
    check.ExpectArity(1, 1, 1);
    const Tensor& in = check.Input(0);
    const Tensor& out = check.Output(0);
    check.ExpectActivation(in, "input");
    check.ExpectDType(out, in.dtype, "output");
    check.ExpectSameQuantization(in, out);
    const size_t rank = in.shape.size();
    std::vector<bool> seen(rank, false);
    std::vector<int64_t> expected(rank);
    perm_.resize(rank);
    for (size_t d = 0; d < rank; ++d) {
      const int64_t p = check.Option("perm" + std::to_string(d));
      if (p < 0 || p >= static_cast<int64_t>(rank) || seen[static_cast<size_t>(p)]) {
        check.Fail("perm" + std::to_string(d) + " = " + std::to_string(p) + " is not a permutation of the record axes");
      }
      seen[static_cast<size_t>(p)] = true;
      perm_[d] = p;
      expected[d] = in.shape[static_cast<size_t>(p)];
    }
    check.ExpectShape(out, expected, "output");
    // Input strides, in elements, read in output-axis order.
    std::vector<int64_t> in_strides(rank, 1);
    for (size_t d = rank; d-- > 1;) in_strides[d - 1] = in_strides[d] * in.shape[d];
    strides_.resize(rank);
    for (size_t d = 0; d < rank; ++d) strides_[d] = in_strides[static_cast<size_t>(perm_[d])];
    out_shape_ = out.shape;
    elements_ = in.elements();
    element_size_ = ElementSize(in.dtype);
    if (element_size_ != 1 && element_size_ != 4) check.Fail("has elements of " + std::to_string(element_size_) + " bytes");
    // Output axes that are consecutive input axes move together. When they
    // form two groups, as between NCHW and NHWC, the record is a matrix
    // [rows_][columns_] whose transpose is the output.
    std::vector<int64_t> group_first, group_size;
    for (size_t d = 0; d < rank; ++d) {
      if (d == 0 || perm_[d] != perm_[d - 1] + 1) {
        group_first.push_back(perm_[d]);
        group_size.push_back(1);
      }
      group_size.back() *= out.shape[d];
    }
    if (group_first.size() == 2) {
      matrix_ = true;
      rows_ = group_size[1];  // the second output group starts at input axis 0
      columns_ = group_size[0];
    }
    in_id_ = check.op().inputs[0];
    out_id_ = check.op().outputs[0];
  }

  void Run(Arena& arena, int64_t batch) const override {
    if (element_size_ == 1) {
      RunTyped<uint8_t>(arena, batch);
    } else {
      RunTyped<uint32_t>(arena, batch);
    }
  }

 private:
  // Copies the elements in output order, the last output axis in an inner
  // loop of its own: a strided gather with no index arithmetic per element.
  template <typename T>
  void RunTyped(Arena& arena, int64_t batch) const {
    const T* x = arena.at<T>(in_id_);
    T* y = arena.at<T>(out_id_);
    if (matrix_) {
      // Tiles of 16 x 16, so that both the reads and the writes stay within
      // a few cache lines whatever the matrix size.
      constexpr int64_t kTile = 16;
      const int64_t rows = rows_, columns = columns_;
      for (int64_t b = 0; b < batch; ++b) {
        const T* xb = x + b * elements_;
        T* yb = y + b * elements_;
        for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
          const int64_t r1 = std::min(rows, r0 + kTile);
          for (int64_t c0 = 0; c0 < columns; c0 += kTile) {
            const int64_t c1 = std::min(columns, c0 + kTile);
            for (int64_t c = c0; c < c1; ++c) {
              for (int64_t r = r0; r < r1; ++r) yb[c * rows + r] = xb[r * columns + c];
            }
          }
        }
      }
      return;
    }
    const size_t rank = out_shape_.size();
    // A record of rank 0 is one element.
    const size_t outer_axes = rank > 0 ? rank - 1 : 0;
    const int64_t inner = rank > 0 ? out_shape_[rank - 1] : 1;
    const int64_t inner_stride = rank > 0 ? strides_[rank - 1] : 1;
    std::vector<int64_t> index(rank, 0);
    for (int64_t b = 0; b < batch; ++b) {
      const T* xb = x + b * elements_;
      T* yb = y + b * elements_;
      std::fill(index.begin(), index.end(), 0);
      int64_t offset = 0;
      for (int64_t i = 0; i < elements_; i += inner) {
        for (int64_t j = 0; j < inner; ++j) yb[i + j] = xb[offset + j * inner_stride];
        // Step the outer output axes, last first.
        for (size_t d = outer_axes; d-- > 0;) {
          ++index[d];
          offset += strides_[d];
          if (index[d] < out_shape_[d]) break;
          offset -= strides_[d] * out_shape_[d];
          index[d] = 0;
        }
      }
    }
  }

  std::vector<int64_t> perm_, strides_, out_shape_;
  bool matrix_ = false;  // the record transposes as a matrix [rows_][columns_]
  int64_t rows_ = 0, columns_ = 0;
  int64_t elements_ = 0;
  size_t element_size_ = 1;
  int in_id_ = 0, out_id_ = 0;
};

}  // namespace

void RegisterLayout(Registry& registry) {
  registry["TRANSPOSE"] = [](const OpChecker& check, Numerics) -> std::unique_ptr<Kernel> {
    return std::make_unique<Transpose>(check);
  };
  const Factory reshape = [](const OpChecker& check, Numerics) -> std::unique_ptr<Kernel> {
    check.ExpectArity(1, 2, 1);
    return std::make_unique<Reshape>(check);
  };
  registry["RESHAPE"] = reshape;
  registry["SQUEEZE"] = reshape;
  registry["PAD"] = [](const OpChecker& check, Numerics) -> std::unique_ptr<Kernel> {
    return std::make_unique<Pad>(check, false);
  };
  registry["PADV2"] = [](const OpChecker& check, Numerics) -> std::unique_ptr<Kernel> {
    return std::make_unique<Pad>(check, true);
  };
  registry["CONCATENATION"] = [](const OpChecker& check, Numerics numerics) -> std::unique_ptr<Kernel> {
    return std::make_unique<Concatenation>(check, numerics);
  };
}

}  // namespace kernels
}  // namespace edgemia
