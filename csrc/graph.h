// Graph form executed by the native kernel.
//
// The Python side parses a model file (TFLite today) into tensors and ops and
// hands them over one by one. Finalize() checks every index, shape, dtype,
// quantization parameter and buffer size once, so that Run() can execute
// plain loops without further checks.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgemia {

// A model that fails a load-time check. The binding raises it as
// edgemia._native.ModelError, a subclass of ValueError.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A well-formed model that uses an op, type or parameter the native kernel
// does not run. The binding raises it as edgemia._native.UnsupportedError, a
// subclass of ModelError, so that callers can tell it from a corrupt file.
class UnsupportedError : public ModelError {
 public:
  using ModelError::ModelError;
};

enum class DType : int { kFloat32, kInt8, kInt32 };

size_t ElementSize(DType dtype);
const char* DTypeName(DType dtype);

// Which runtime's arithmetic the int8 kernels reproduce.
enum class Numerics : int {
  // LiteRT's default interpreter, which hands most int8 ops to XNNPACK:
  // float32 requantization scale, round half to even.
  kLitert,
  // TFLite's reference kernels (the BUILTIN_REF op resolver), which TFLite
  // Micro and CMSIS-NN follow: fixed-point multipliers with gemmlowp double
  // rounding, half away from zero.
  kLitertReference,
  // ONNX Runtime's CPU provider (MLAS) on a QDQ graph after its fusions:
  // float32 scale, round half to even, like kLitert, but without LiteRT's
  // fused activations and with QuantizeLinear dividing by the scale.
  kOnnxRuntime,
};

// Fused activation codes, numbered as in the TFLite schema.
enum class Activation : int { kNone = 0, kRelu = 1, kReluN1To1 = 2, kRelu6 = 3 };

// Padding codes: SAME and VALID numbered as in the TFLite schema, EXPLICIT
// for ONNX's per-edge pads (options pad_top, pad_bottom, pad_left, pad_right).
enum class Padding : int { kSame = 0, kValid = 1, kExplicit = 2 };

struct Tensor {
  std::string name;
  DType dtype = DType::kFloat32;
  // Constant tensors: the full shape. Activations: the shape of one record,
  // without the batch dimension.
  std::vector<int64_t> shape;
  bool constant = false;
  std::vector<uint8_t> data;  // constant tensors only
  std::vector<float> scales;  // empty when not quantized
  std::vector<int32_t> zero_points;
  int quantized_dimension = 0;

  int64_t elements() const;
  int64_t bytes() const { return elements() * static_cast<int64_t>(ElementSize(dtype)); }
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data.data());
  }
};

struct OpSpec {
  std::string kind;  // TFLite builtin operator name, e.g. "CONV_2D"
  std::string name;  // used in error messages
  std::vector<int> inputs;  // -1 marks an omitted optional input
  std::vector<int> outputs;
  std::map<std::string, int64_t> options;
  std::map<std::string, double> float_options;  // e.g. softmax beta
};

namespace gemm {
struct Int8Gemm;
}

// Most records per chunk: each thread works through whole chunks with its own arena.
// 96 is a whole number of the avx512vnni GEMM's row tiles (12) and of its narrow
// kernel's (16).
constexpr int64_t kChunkRecords = 96;
// On the amx path, chunks of up to kTileChunkRecords records whose activations
// take at most kTileChunkBytes. Tiles multiply so fast that a dense layer's
// weights, read again for every chunk, limit it unless more rows share them.
constexpr int64_t kTileChunkRecords = 512;
constexpr int64_t kTileChunkBytes = int64_t{1} << 20;

// Bytes after the end of every arena buffer and of the scratch that kernels
// may read, so that a kernel can copy short runs in whole 16-byte words.
// Their contents are unspecified.
constexpr int64_t kArenaSlack = 64;

// Per-thread storage for every activation tensor of a chunk of records.
struct Arena {
  std::vector<std::vector<uint8_t>> buffers;  // indexed by tensor id
  std::vector<uint8_t> scratch;               // shared by the kernels, which run one at a time
  int64_t records = 0;                        // chunk size the buffers have room for
  template <typename T>
  T* at(int tensor) {
    return reinterpret_cast<T*>(buffers[static_cast<size_t>(tensor)].data());
  }
};

// One prepared operator. Constructors validate; Run() does not.
class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void Run(Arena& arena, int64_t batch) const = 0;
  // Bytes of Arena::scratch that Run() needs for up to `records` records.
  virtual int64_t ScratchBytes(int64_t records) const {
    (void)records;
    return 0;
  }
  // Multiply-accumulates per record, for deciding whether a batch is worth
  // splitting over threads; 0 for ops that do none.
  virtual int64_t MacsPerRecord() const { return 0; }
};

class Graph {
 public:
  int AddTensor(Tensor tensor);
  void AddOp(OpSpec op);
  void Finalize(const std::vector<int>& inputs, const std::vector<int>& outputs, Numerics numerics);

  // Runs `count` records. `input` holds count * input record bytes, and each
  // outputs[i] has room for count * output record bytes. Splits the records
  // into chunks of at most chunk_records_ over `threads` threads; each record
  // is computed the same way whatever the split, so the bytes do not depend
  // on the thread count. Safe to call from several threads at once.
  void Run(const void* input, int64_t count, const std::vector<void*>& outputs, int threads) const;

  const Tensor& tensor(int id) const { return tensors_.at(static_cast<size_t>(id)); }
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  bool finalized() const { return finalized_; }
  const char* isa() const;

 private:
  void RunChunk(const uint8_t* input, int64_t batch, const std::vector<uint8_t*>& outputs,
                Arena& arena) const;
  // An arena with room for `records` records, reused from an earlier Run
  // when one is idle; hand it back with ReturnArena.
  std::unique_ptr<Arena> TakeArena(int64_t records) const;
  void ReturnArena(std::unique_ptr<Arena> arena) const;

  std::vector<Tensor> tensors_;
  std::vector<OpSpec> ops_;
  std::vector<std::unique_ptr<Kernel>> kernels_;
  std::vector<int> inputs_;
  std::vector<int> outputs_;
  bool finalized_ = false;
  const gemm::Int8Gemm* gemm_ = nullptr;
  int64_t scratch_bytes_ = 0;
  int64_t chunk_records_ = kChunkRecords;  // maximum records per chunk
  int64_t work_per_record_ = 0;  // multiply-accumulates plus activation bytes
  // Arenas of finished runs. Allocating and zeroing them costs more than a
  // small model's whole batch, so they are kept for the next run.
  mutable std::mutex arenas_mutex_;
  mutable std::vector<std::unique_ptr<Arena>> idle_arenas_;
};

// Builds the kernel for one op; defined in kernels/registry.cc.
std::unique_ptr<Kernel> MakeKernel(const OpSpec& op, const std::vector<Tensor>& tensors,
                                   Numerics numerics, const gemm::Int8Gemm& gemm);

// Names of the op kinds the native kernel runs.
std::vector<std::string> SupportedOps();

}  // namespace edgemia
