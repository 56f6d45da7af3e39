// Python bindings of the native kernel: edgemia._native.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gemm/gemm.h"
#include "graph.h"

namespace py = pybind11;

namespace edgemia {
namespace {

DType ParseDType(const std::string& name) {
  if (name == "float32") return DType::kFloat32;
  if (name == "int8") return DType::kInt8;
  if (name == "int32") return DType::kInt32;
  throw UnsupportedError("tensor dtype '" + name + "' is not supported; supported are float32, int8 and int32");
}

Numerics ParseNumerics(const std::string& name) {
  if (name == "litert") return Numerics::kLitert;
  if (name == "litert-reference") return Numerics::kLitertReference;
  if (name == "onnxruntime") return Numerics::kOnnxRuntime;
  throw ModelError("numerics mode '" + name +
                   "' is not supported; supported are 'litert', 'litert-reference' and 'onnxruntime'");
}

py::dtype NumpyDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return py::dtype::of<float>();
    case DType::kInt8:
      return py::dtype::of<int8_t>();
    case DType::kInt32:
      return py::dtype::of<int32_t>();
  }
  throw std::logic_error("unknown dtype");
}

int AddTensor(Graph& graph, const std::string& name, const std::string& dtype,
              const std::vector<int64_t>& shape, py::object data, const std::vector<float>& scales,
              const std::vector<int32_t>& zero_points, int quantized_dimension) {
  Tensor t;
  t.name = name;
  t.dtype = ParseDType(dtype);
  t.shape = shape;
  if (!data.is_none()) {
    const std::string bytes = py::bytes(data);
    t.constant = true;
    t.data.assign(bytes.begin(), bytes.end());
  }
  t.scales = scales;
  t.zero_points = zero_points;
  t.quantized_dimension = quantized_dimension;
  return graph.AddTensor(std::move(t));
}

// The instruction-set path named `isa`, if this build and CPU can run it.
const gemm::Int8Gemm* FindPath(const std::string& isa) {
  std::string names;
  for (const gemm::Int8Gemm* path : gemm::AvailableGemms()) {
    if (path->name == isa) return path;
    names += (names.empty() ? "" : ", ") + std::string(path->name);
  }
  throw py::value_error("instruction-set path '" + isa + "' is not available here; available: " + names);
}

py::list Run(const Graph& graph, const py::array& input, int threads) {
  if (!graph.finalized()) throw ModelError("the graph is not finalized");
  const Tensor& in = graph.tensor(graph.inputs()[0]);
  if (!input.dtype().is(NumpyDType(in.dtype))) {
    throw py::value_error("input has dtype " + std::string(py::str(input.dtype())) +
                          ", the model expects " + DTypeName(in.dtype));
  }
  if (!(input.flags() & py::array::c_style)) {
    throw py::value_error("input must be a C-contiguous array");
  }
  const auto rank = static_cast<size_t>(input.ndim());
  bool shape_ok = rank == in.shape.size() + 1;
  for (size_t i = 0; shape_ok && i < in.shape.size(); ++i) {
    shape_ok = input.shape(static_cast<py::ssize_t>(i + 1)) == in.shape[i];
  }
  if (!shape_ok) {
    std::string expected = "[n";
    for (int64_t d : in.shape) expected += ", " + std::to_string(d);
    throw py::value_error("input has the wrong shape; the model expects " + expected + "]");
  }
  const int64_t count = input.shape(0);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  py::list results;
  std::vector<void*> out_ptrs;
  for (int id : graph.outputs()) {
    const Tensor& t = graph.tensor(id);
    std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(count)};
    for (int64_t d : t.shape) shape.push_back(static_cast<py::ssize_t>(d));
    py::array out(NumpyDType(t.dtype), shape);
    out_ptrs.push_back(out.mutable_data());
    results.append(out);
  }
  const void* in_ptr = input.data();
  {
    py::gil_scoped_release release;
    graph.Run(in_ptr, count, out_ptrs, threads);
  }
  return results;
}

// The fp32 output stage with per-column bias and scale arrays of the test bindings.
gemm::Fp32Requantization TestStage(const py::array_t<int32_t, py::array::c_style>& bias,
                                   const py::array_t<float, py::array::c_style>& scale, float min_less_zero_point,
                                   float max_less_zero_point, int32_t zero_point) {
  gemm::Fp32Requantization stage;
  stage.bias = bias.data();
  stage.scale = scale.data();
  stage.min_less_zero_point = min_less_zero_point;
  stage.max_less_zero_point = max_less_zero_point;
  stage.zero_point = zero_point;
  return stage;
}

}  // namespace
}  // namespace edgemia

PYBIND11_MODULE(_native, m) {
  using edgemia::FindPath;
  using edgemia::Graph;
  m.doc() = "edgemia's native batch-inference kernel";
  const auto model_error = py::register_exception<edgemia::ModelError>(m, "ModelError", PyExc_ValueError);
  // Registered after ModelError, so that its translator is tried first.
  py::register_exception<edgemia::UnsupportedError>(m, "UnsupportedError", model_error.ptr());
  m.def("supported_ops", &edgemia::SupportedOps, "Names of the op kinds the native kernel runs.");
  m.def(
      "gemm_s8",
      [](const std::string& isa, py::array_t<int8_t> a, py::array_t<int8_t, py::array::c_style> b) {
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1)) {
          throw py::value_error("a must be [m, k] and b [n, k] with the same k");
        }
        if (a.shape(1) < 1 || a.shape(1) > edgemia::gemm::kMaxDepth) {
          throw py::value_error("k is " + std::to_string(a.shape(1)) + "; it must be in 1.." +
                                std::to_string(edgemia::gemm::kMaxDepth));
        }
        if ((a.shape(1) > 1 && a.strides(1) != 1) || (a.shape(0) > 1 && a.strides(0) < a.shape(1))) {
          throw py::value_error("the rows of a must be contiguous and must not overlap");
        }
        const edgemia::gemm::Int8Gemm* path = FindPath(isa);
        const int64_t m = a.shape(0), n = b.shape(0), k = a.shape(1);
        edgemia::gemm::PackedB packed;
        if (n > 0) path->pack(b.data(), n, k, &packed);
        py::array_t<int32_t> c({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(n)});
        if (m > 0 && n > 0) {
          // The rows keep their stride, in a copy with the bytes a GEMM may read past the last one.
          const int64_t stride = a.strides(0);
          std::vector<int8_t> rows(static_cast<size_t>((m - 1) * stride + k + edgemia::gemm::kOverreadA));
          std::memcpy(rows.data(), a.data(), static_cast<size_t>((m - 1) * stride + k));
          path->run(rows.data(), stride, m, packed, c.mutable_data(), n);
        }
        return c;
      },
      py::arg("isa"), py::arg("a"), py::arg("b"),
      "Exact int32 product a @ b.T of int8 matrices on one instruction-set path (for tests). The rows of a "
      "may be a strided view.");
  m.def(
      "requantize_fp32",
      [](const std::string& isa, py::array_t<int32_t, py::array::c_style> acc,
         py::array_t<int32_t, py::array::c_style> bias, py::array_t<float, py::array::c_style> scale,
         float min_less_zero_point, float max_less_zero_point, int32_t zero_point) {
        if (acc.ndim() != 2 || bias.ndim() != 1 || scale.ndim() != 1 || bias.shape(0) != acc.shape(1) ||
            scale.shape(0) != acc.shape(1)) {
          throw py::value_error("acc must be [m, n], and bias and scale [n]");
        }
        const edgemia::gemm::Int8Gemm* path = FindPath(isa);
        const int64_t m = acc.shape(0), n = acc.shape(1);
        const auto stage = edgemia::TestStage(bias, scale, min_less_zero_point, max_less_zero_point, zero_point);
        py::array_t<int8_t> y({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(n)});
        if (m > 0 && n > 0) path->requantize_fp32(acc.data(), n, m, n, stage, y.mutable_data(), n);
        return y;
      },
      py::arg("isa"), py::arg("acc"), py::arg("bias"), py::arg("scale"), py::arg("min_less_zero_point"),
      py::arg("max_less_zero_point"), py::arg("zero_point"),
      "The fp32 output stage of one instruction-set path on int32 sums [m, n] (for tests).");
  m.def(
      "gemm_requantize_fp32",
      [](const std::string& isa, py::array_t<int8_t> a, py::array_t<int8_t, py::array::c_style> b,
         py::array_t<int32_t, py::array::c_style> bias, py::array_t<float, py::array::c_style> scale,
         float min_less_zero_point, float max_less_zero_point, int32_t zero_point, int64_t y_stride) {
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1) || bias.ndim() != 1 || scale.ndim() != 1 ||
            bias.shape(0) != b.shape(0) || scale.shape(0) != b.shape(0)) {
          throw py::value_error("a must be [m, k], b [n, k] with the same k, and bias and scale [n]");
        }
        if (a.shape(1) < 1 || a.shape(1) > edgemia::gemm::kMaxDepth || b.shape(0) < 1) {
          throw py::value_error("k must be in 1.." + std::to_string(edgemia::gemm::kMaxDepth) + " and n at least 1");
        }
        if ((a.shape(1) > 1 && a.strides(1) != 1) || (a.shape(0) > 1 && a.strides(0) < a.shape(1))) {
          throw py::value_error("the rows of a must be contiguous and must not overlap");
        }
        const edgemia::gemm::Int8Gemm* path = FindPath(isa);
        const int64_t m = a.shape(0), n = b.shape(0), k = a.shape(1);
        if (y_stride == 0) y_stride = n;
        if (y_stride < n) throw py::value_error("y_stride must be at least n");
        edgemia::gemm::PackedB packed;
        path->pack(b.data(), n, k, &packed);
        auto stage = edgemia::TestStage(bias, scale, min_less_zero_point, max_less_zero_point, zero_point);
        // As the op kernels set it.
        stage.saturation_clamps = edgemia::gemm::SaturationClamps(b.data(), n, k, stage);
        std::vector<int32_t> acc(static_cast<size_t>(m * n));
        // The rows keep their stride, in a copy with the bytes a GEMM may read past the last one.
        const int64_t a_stride = m > 1 ? a.strides(0) : k;
        std::vector<int8_t> rows(static_cast<size_t>(m > 0 ? (m - 1) * a_stride + k + edgemia::gemm::kOverreadA : 0));
        if (m > 0) std::memcpy(rows.data(), a.data(), static_cast<size_t>((m - 1) * a_stride + k));
        // Bytes of y between rows keep the value 0x55, so a test detects stray writes.
        py::array_t<int8_t> y({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(y_stride)});
        std::memset(y.mutable_data(), 0x55, static_cast<size_t>(m * y_stride));
        if (m > 0) {
          edgemia::gemm::RunRequantizeFp32(*path, rows.data(), a_stride, m, packed, acc.data(), stage, y.mutable_data(),
                                           y_stride);
        }
        return y;
      },
      py::arg("isa"), py::arg("a"), py::arg("b"), py::arg("bias"), py::arg("scale"), py::arg("min_less_zero_point"),
      py::arg("max_less_zero_point"), py::arg("zero_point"), py::arg("y_stride") = 0,
      "The fp32 output stage of a @ b.T on one instruction-set path, fused into the GEMM where the path "
      "has a fused form (for tests). The rows of a may be a strided view. With y_stride above n, y is "
      "[m, y_stride] and its bytes past column n keep the value 0x55.");
  m.def(
      "gemm_segments_requantize_fp32",
      [](const std::string& isa, py::array_t<int8_t, py::array::c_style> image,
         py::array_t<int64_t, py::array::c_style> row_starts, int64_t segments, int64_t segment, int64_t segment_stride,
         py::array_t<int8_t, py::array::c_style> b, py::array_t<int32_t, py::array::c_style> bias,
         py::array_t<float, py::array::c_style> scale, float min_less_zero_point, float max_less_zero_point,
         int32_t zero_point) {
        if (image.ndim() != 1 || row_starts.ndim() != 1 || b.ndim() != 2 || bias.ndim() != 1 || scale.ndim() != 1 ||
            bias.shape(0) != b.shape(0) || scale.shape(0) != b.shape(0) || b.shape(0) < 1) {
          throw py::value_error("image and row_starts must be 1-D, b [n, k], and bias and scale [n]");
        }
        if (segments < 1 || segment < 4 || segment % 4 != 0 || segment_stride < 0 || b.shape(1) != segments * segment) {
          throw py::value_error("segments must be positive, segment a positive multiple of 4, and k = segments * segment");
        }
        const int64_t m = row_starts.shape(0), n = b.shape(0), k = b.shape(1);
        const int64_t last = (segments - 1) * segment_stride + segment;  // bytes from a row start to its end
        std::vector<const int8_t*> rows(static_cast<size_t>(m));
        for (int64_t i = 0; i < m; ++i) {
          const int64_t start = row_starts.at(i);
          if (start < 0 || start + last > image.shape(0)) throw py::value_error("a row leaves the image");
          rows[static_cast<size_t>(i)] = image.data() + start;
        }
        const edgemia::gemm::Int8Gemm* path = FindPath(isa);
        if (path->run_segments_requantize_fp32 == nullptr) {
          throw py::value_error("the " + isa + " path reads no segmented rows");
        }
        edgemia::gemm::PackedB packed;
        path->pack(b.data(), n, k, &packed);
        auto stage = edgemia::TestStage(bias, scale, min_less_zero_point, max_less_zero_point, zero_point);
        stage.saturation_clamps = edgemia::gemm::SaturationClamps(b.data(), n, k, stage);
        edgemia::gemm::SegmentedRows a;
        a.rows = rows.data();
        a.segments = segments;
        a.segment = segment;
        a.segment_stride = segment_stride;
        py::array_t<int8_t> y({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(n)});
        if (m > 0) path->run_segments_requantize_fp32(a, m, packed, stage, y.mutable_data(), n);
        return y;
      },
      py::arg("isa"), py::arg("image"), py::arg("row_starts"), py::arg("segments"), py::arg("segment"),
      py::arg("segment_stride"), py::arg("b"), py::arg("bias"), py::arg("scale"), py::arg("min_less_zero_point"),
      py::arg("max_less_zero_point"), py::arg("zero_point"),
      "The fp32 output stage of A @ b.T, where row i of A is `segments` runs of `segment` bytes of image, "
      "the first at row_starts[i] and the others segment_stride bytes apart, read in place (for tests).");
  m.def(
      "saturation_clamps",
      [](py::array_t<int8_t, py::array::c_style> b, py::array_t<int32_t, py::array::c_style> bias,
         py::array_t<float, py::array::c_style> scale, float min_less_zero_point, float max_less_zero_point,
         int32_t zero_point) {
        if (b.ndim() != 2 || bias.ndim() != 1 || scale.ndim() != 1 || bias.shape(0) != b.shape(0) ||
            scale.shape(0) != b.shape(0)) {
          throw py::value_error("b must be [n, k], and bias and scale [n]");
        }
        const auto stage = edgemia::TestStage(bias, scale, min_less_zero_point, max_less_zero_point, zero_point);
        return edgemia::gemm::SaturationClamps(b.data(), b.shape(0), b.shape(1), stage);
      },
      py::arg("b"), py::arg("bias"), py::arg("scale"), py::arg("min_less_zero_point"), py::arg("max_less_zero_point"),
      py::arg("zero_point"),
      "Whether the fp32 output stage of a GEMM with weights b [n, k] may clamp by saturating to int8 (for tests).");
  m.def(
      "int8_peak_gmacs",
      [](const std::string& isa, int threads) {
        const edgemia::gemm::Int8Gemm* path = FindPath(isa);
        if (path->peak_loop == nullptr) {
          throw py::value_error("instruction-set path '" + isa + "' has no peak loop; the scalar path is "
                                "vectorized by the compiler, so no scalar loop bounds it");
        }
        if (threads < 1) throw py::value_error("threads must be at least 1, got " + std::to_string(threads));
        py::gil_scoped_release release;
        return edgemia::gemm::MeasurePeakGmacs(*path, threads, 0.2);
      },
      py::arg("isa"), py::arg("threads") = 1,
      "Peak int8 multiply-accumulates per second, in billions, of one instruction-set path on `threads` "
      "threads: the best of three runs of about 0.2 s of a register-only loop of the path's widest "
      "multiply-accumulate instruction.");
  m.def(
      "available_isas",
      [] {
        std::vector<std::string> names;
        for (const auto* path : edgemia::gemm::AvailableGemms()) names.push_back(path->name);
        return names;
      },
      "Instruction-set paths this build and CPU can run, fastest last.");

  py::class_<Graph>(m, "Graph")
      .def(py::init<>())
      .def("add_tensor", &edgemia::AddTensor, py::arg("name"), py::arg("dtype"), py::arg("shape"),
           py::arg("data") = py::none(), py::arg("scales") = std::vector<float>{},
           py::arg("zero_points") = std::vector<int32_t>{}, py::arg("quantized_dimension") = 0,
           "Add a tensor and return its id. Activation shapes exclude the batch dimension; "
           "constant tensors pass their bytes as `data`.")
      .def(
          "add_op",
          [](Graph& g, const std::string& kind, const std::string& name, const std::vector<int>& inputs,
             const std::vector<int>& outputs, const std::map<std::string, int64_t>& options,
             const std::map<std::string, double>& float_options) {
            g.AddOp(edgemia::OpSpec{kind, name, inputs, outputs, options, float_options});
          },
          py::arg("kind"), py::arg("name"), py::arg("inputs"), py::arg("outputs"),
          py::arg("options") = std::map<std::string, int64_t>{},
          py::arg("float_options") = std::map<std::string, double>{},
          "Append an op; ops must be added in execution order.")
      .def(
          "finalize",
          [](Graph& g, const std::vector<int>& inputs, const std::vector<int>& outputs,
             const std::string& numerics) { g.Finalize(inputs, outputs, edgemia::ParseNumerics(numerics)); },
          py::arg("inputs"), py::arg("outputs"), py::arg("numerics") = "litert",
          "Validate the whole graph and prepare its kernels.")
      .def("run", &edgemia::Run, py::arg("input"), py::arg("threads") = 0,
           "Run a batch [n, ...] and return the outputs as a list of arrays. threads <= 0 uses "
           "every core.")
      .def_property_readonly("isa", &Graph::isa, "Instruction-set path the kernels run on.");
}
