#include "graph.h"

#include "gemm/gemm.h"
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <functional>
#include <thread>

namespace edgemia {

namespace {

// Largest activation record accepted, so that a corrupt shape cannot make the
// arena allocation fail or wrap around.
constexpr int64_t kMaxRecordBytes = int64_t{1} << 24;

// Largest total of all activations of one record.
constexpr int64_t kMaxArenaRecordBytes = int64_t{1} << 26;

std::string TensorLabel(const Tensor& t, int id) {
  return "tensor " + std::to_string(id) + " '" + t.name + "'";
}

}  // namespace

size_t ElementSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kInt8:
      return 1;
    case DType::kInt32:
      return 4;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kInt8:
      return "int8";
    case DType::kInt32:
      return "int32";
  }
  return "unknown";
}

int64_t Tensor::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int Graph::AddTensor(Tensor tensor) {
  if (finalized_) throw ModelError("graph is already finalized");
  const int id = static_cast<int>(tensors_.size());
  const std::string label = TensorLabel(tensor, id);
  if (tensor.shape.size() > 6) {
    throw ModelError(label + " has rank " + std::to_string(tensor.shape.size()) +
                     "; at most 6 dimensions are supported");
  }

  // Checked multiplication: a corrupt shape must not overflow the element count.
  int64_t elements = 1;
  for (int64_t d : tensor.shape) {
    if (d < 1 || d > std::numeric_limits<int32_t>::max()) {
      throw ModelError(label + " has invalid dimension " + std::to_string(d));
    }
    if (elements > std::numeric_limits<int64_t>::max() / 8 / d) {
      throw ModelError(label + " is too large: its shape overflows a 64-bit element count");
    }
    elements *= d;
  }

  const int64_t bytes = elements * static_cast<int64_t>(ElementSize(tensor.dtype));
  if (tensor.constant) {
    if (static_cast<int64_t>(tensor.data.size()) != bytes) {
      throw ModelError(label + " contains " + std::to_string(tensor.data.size()) +
                       " bytes of data, but its shape and dtype need " + std::to_string(bytes));
    }
  } else {
    if (!tensor.data.empty()) throw ModelError(label + " is an activation but carries constant data");
    if (bytes > kMaxRecordBytes) {
      throw ModelError(label + " needs " + std::to_string(bytes) +
                       " bytes per record, more than the supported " +
                       std::to_string(kMaxRecordBytes));
    }
  }

  if (tensor.scales.size() != tensor.zero_points.size()) {
    throw ModelError(label + " has " + std::to_string(tensor.scales.size()) + " scales but " +
                     std::to_string(tensor.zero_points.size()) + " zero points");
  }
  for (float s : tensor.scales) {
    if (!(s > 0.0f) || !(s < std::numeric_limits<float>::infinity())) {
      throw ModelError(label + " has invalid quantization scale " + std::to_string(s) +
                       "; scales must be positive and finite");
    }
  }
  if (!tensor.scales.empty()) {
    const int rank = static_cast<int>(tensor.shape.size());
    if (tensor.quantized_dimension < 0 ||
        (tensor.scales.size() > 1 && tensor.quantized_dimension >= rank)) {
      throw ModelError(label + " has quantized dimension " +
                       std::to_string(tensor.quantized_dimension) + " outside its rank " +
                       std::to_string(rank));
    }
    if (tensor.scales.size() > 1 &&
        static_cast<int64_t>(tensor.scales.size()) !=
            tensor.shape[static_cast<size_t>(tensor.quantized_dimension)]) {
      throw ModelError(label + " has " + std::to_string(tensor.scales.size()) +
                       " per-channel scales but dimension " +
                       std::to_string(tensor.quantized_dimension) + " has size " +
                       std::to_string(tensor.shape[static_cast<size_t>(tensor.quantized_dimension)]));
    }
  }
  tensors_.push_back(std::move(tensor));
  return id;
}

void Graph::AddOp(OpSpec op) {
  if (finalized_) throw ModelError("graph is already finalized");
  for (int id : op.inputs) {
    if (id < -1 || id >= static_cast<int>(tensors_.size())) {
      throw ModelError("operator " + op.name + " (" + op.kind + ") refers to tensor " +
                       std::to_string(id) + ", but the graph has " +
                       std::to_string(tensors_.size()) + " tensors");
    }
  }
  for (int id : op.outputs) {
    if (id < 0 || id >= static_cast<int>(tensors_.size())) {
      throw ModelError("operator " + op.name + " (" + op.kind + ") writes tensor " +
                       std::to_string(id) + ", but the graph has " +
                       std::to_string(tensors_.size()) + " tensors");
    }
  }
  ops_.push_back(std::move(op));
}

void Graph::Finalize(const std::vector<int>& inputs, const std::vector<int>& outputs,
                     Numerics numerics) {
  if (finalized_) throw ModelError("graph is already finalized");
  if (inputs.size() != 1 || outputs.empty()) {
    throw UnsupportedError("the graph has " + std::to_string(inputs.size()) + " inputs and " +
                     std::to_string(outputs.size()) +
                     " outputs; exactly one input and at least one output are supported");
  }
  const int n = static_cast<int>(tensors_.size());
  std::vector<bool> available(static_cast<size_t>(n), false);
  for (int id = 0; id < n; ++id) available[static_cast<size_t>(id)] = tensors_[static_cast<size_t>(id)].constant;
  for (int id : inputs) {
    if (id < 0 || id >= n || tensors_[static_cast<size_t>(id)].constant) {
      throw ModelError("graph input " + std::to_string(id) + " is not an activation tensor");
    }
    available[static_cast<size_t>(id)] = true;
  }
  // The ops must come in execution order, and each activation is written once.
  for (const OpSpec& op : ops_) {
    for (int id : op.inputs) {
      if (id >= 0 && !available[static_cast<size_t>(id)]) {
        throw ModelError("operator " + op.name + " (" + op.kind + ") reads " +
                         TensorLabel(tensors_[static_cast<size_t>(id)], id) +
                         " before any op writes it");
      }
    }
    for (int id : op.outputs) {
      const Tensor& t = tensors_[static_cast<size_t>(id)];
      if (t.constant || available[static_cast<size_t>(id)]) {
        throw ModelError("operator " + op.name + " (" + op.kind + ") writes " + TensorLabel(t, id) +
                         ", which is a constant, a graph input or written by an earlier op");
      }
      available[static_cast<size_t>(id)] = true;
    }
  }
  for (int id : outputs) {
    if (id < 0 || id >= n || !available[static_cast<size_t>(id)] ||
        tensors_[static_cast<size_t>(id)].constant) {
      throw ModelError("graph output " + std::to_string(id) + " is not written by any op");
    }
  }
  int64_t arena_record_bytes = 0;
  for (const Tensor& t : tensors_) {
    if (!t.constant) arena_record_bytes += t.bytes();
  }
  if (arena_record_bytes > kMaxArenaRecordBytes) {
    throw ModelError("the activations of one record need " + std::to_string(arena_record_bytes) +
                     " bytes, more than the supported " + std::to_string(kMaxArenaRecordBytes));
  }
  gemm_ = &gemm::SelectGemm();
  chunk_records_ = kChunkRecords;
  if (std::string(gemm_->name) == "amx") {
    const int64_t fit = kTileChunkBytes / std::max<int64_t>(1, arena_record_bytes) / 16 * 16;
    chunk_records_ = std::clamp(fit, kChunkRecords, kTileChunkRecords);
  }
  kernels_.clear();
  scratch_bytes_ = 0;
  for (const OpSpec& op : ops_) {
    kernels_.push_back(MakeKernel(op, tensors_, numerics, *gemm_));
    scratch_bytes_ = std::max(scratch_bytes_, kernels_.back()->ScratchBytes(chunk_records_));
    work_per_record_ += kernels_.back()->MacsPerRecord();
  }
  work_per_record_ += arena_record_bytes;
  inputs_ = inputs;
  outputs_ = outputs;
  finalized_ = true;
}

const char* Graph::isa() const { return gemm_ != nullptr ? gemm_->name : gemm::SelectGemm().name; }

void Graph::RunChunk(const uint8_t* input, int64_t batch, const std::vector<uint8_t*>& outputs,
                     Arena& arena) const {
  const Tensor& in = tensors_[static_cast<size_t>(inputs_[0])];
  std::memcpy(arena.buffers[static_cast<size_t>(inputs_[0])].data(), input,
              static_cast<size_t>(batch * in.bytes()));
  for (const auto& kernel : kernels_) kernel->Run(arena, batch);
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const Tensor& out = tensors_[static_cast<size_t>(outputs_[i])];
    std::memcpy(outputs[i], arena.buffers[static_cast<size_t>(outputs_[i])].data(),
                static_cast<size_t>(batch * out.bytes()));
  }
}

std::unique_ptr<Arena> Graph::TakeArena(int64_t records) const {
  std::unique_ptr<Arena> arena;
  {
    std::lock_guard<std::mutex> lock(arenas_mutex_);
    if (!idle_arenas_.empty()) {
      arena = std::move(idle_arenas_.back());
      idle_arenas_.pop_back();
    }
  }
  if (arena == nullptr) arena = std::make_unique<Arena>();
  if (arena->records < records) {
    arena->scratch.resize(static_cast<size_t>(scratch_bytes_ + kArenaSlack));
    arena->buffers.resize(tensors_.size());
    for (size_t id = 0; id < tensors_.size(); ++id) {
      if (!tensors_[id].constant) {
        arena->buffers[id].resize(static_cast<size_t>(records * tensors_[id].bytes() + kArenaSlack));
      }
    }
    arena->records = records;
  }
  return arena;
}

void Graph::ReturnArena(std::unique_ptr<Arena> arena) const {
  std::lock_guard<std::mutex> lock(arenas_mutex_);
  idle_arenas_.push_back(std::move(arena));
}

namespace {

// Records per chunk for `count` records on `threads` threads, at most
// max_records. One thread takes chunks of max_records. More threads take the
// chunk size that gives the busiest thread the fewest records, the larger size
// on a tie. The sizes tried are the multiples of 16 up to max_records, and
// count / threads rounded up. For example, 1,024 records on two threads with a
// maximum of 96 go in 16 chunks of 64, where chunks of 96 would give one thread 576.
int64_t ChunkRecords(int64_t count, int threads, int64_t max_records) {
  if (threads <= 1) return std::min(count, max_records);
  int64_t best = 0;
  int64_t best_load = 0;
  const auto consider = [&](int64_t chunk) {
    const int64_t chunks = (count + chunk - 1) / chunk;
    const int64_t load = std::min(count, (chunks + threads - 1) / threads * chunk);
    if (best == 0 || load < best_load || (load == best_load && chunk > best)) {
      best = chunk;
      best_load = load;
    }
  };
  for (int64_t chunk = 16; chunk <= max_records; chunk += 16) consider(chunk);
  const int64_t share = (count + threads - 1) / threads;
  if (share < max_records) consider(share);
  return best;
}

}  // namespace

void Graph::Run(const void* input, int64_t count, const std::vector<void*>& outputs,
                int threads) const {
  if (!finalized_) throw std::logic_error("Graph::Run called before Finalize");
  if (outputs.size() != outputs_.size()) throw std::logic_error("wrong number of output buffers");
  if (count <= 0) return;
  // A thread gets work only if it has about a million multiply-accumulates
  // to do (a few microseconds): below that, waking it costs more than it
  // saves, and far more when other processes hold the cores.
  constexpr int64_t kMinWorkPerThread = int64_t{1} << 20;
  const int64_t useful = std::max<int64_t>(1, count * work_per_record_ / kMinWorkPerThread);
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, useful)));
  const int64_t chunk = ChunkRecords(count, threads, chunk_records_);
  const int64_t chunks = (count + chunk - 1) / chunk;
  const int workers = static_cast<int>(std::min<int64_t>(threads, chunks));
  const auto* in_bytes = static_cast<const uint8_t*>(input);
  const int64_t in_record = tensors_[static_cast<size_t>(inputs_[0])].bytes();

  // Arenas are taken here, before any thread starts, so that an allocation
  // failure raises in the caller instead of inside a worker.
  std::vector<std::unique_ptr<Arena>> arenas;
  for (int w = 0; w < workers; ++w) arenas.push_back(TakeArena(chunk));

  std::atomic<int64_t> next_chunk{0};
  const std::function<void(int)> worker = [&](int w) {
    Arena& arena = *arenas[static_cast<size_t>(w)];
    std::vector<uint8_t*> out_ptrs(outputs_.size());
    for (int64_t c = next_chunk++; c < chunks; c = next_chunk++) {
      const int64_t first = c * chunk;
      const int64_t batch = std::min(chunk, count - first);
      for (size_t i = 0; i < outputs_.size(); ++i) {
        const int64_t out_record = tensors_[static_cast<size_t>(outputs_[i])].bytes();
        out_ptrs[i] = static_cast<uint8_t*>(outputs[i]) + first * out_record;
      }
      RunChunk(in_bytes + first * in_record, batch, out_ptrs, arena);
    }
  };
  if (workers == 1) {
    worker(0);
  } else {
    ThreadPool::Shared().Run(workers, worker);
  }
  for (auto& arena : arenas) ReturnArena(std::move(arena));
}

}  // namespace edgemia
