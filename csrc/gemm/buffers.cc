// Storage shared by the GEMM paths: packed weights and per-thread scratch.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "gemm.h"

namespace edgemia {
namespace gemm {
namespace {

constexpr int64_t kAlignment = 64;

// Grows by doubling and never shrinks, so a thread reuses one allocation.
class ScratchBuffer {
 public:
  ~ScratchBuffer() { std::free(data_); }

  int8_t* Reserve(int64_t bytes) {
    if (bytes > capacity_) {
      int64_t capacity = capacity_ > 0 ? capacity_ : 4096;
      while (capacity < bytes) capacity *= 2;
      void* data = std::aligned_alloc(kAlignment, static_cast<size_t>(capacity));
      if (data == nullptr) throw std::bad_alloc();
      std::free(data_);
      data_ = static_cast<int8_t*>(data);
      capacity_ = capacity;
    }
    return data_;
  }

 private:
  int8_t* data_ = nullptr;
  int64_t capacity_ = 0;
};

thread_local ScratchBuffer scratch;

}  // namespace

int8_t* PreparePackedB(PackedB* out, int64_t n, int64_t k, int64_t bytes, int64_t columns) {
  out->n = n;
  out->k = k;
  out->data.assign(static_cast<size_t>(bytes + kAlignment - 1), 0);
  const auto address = reinterpret_cast<uintptr_t>(out->data.data());
  out->offset = static_cast<int64_t>((kAlignment - address % kAlignment) % kAlignment);
  out->column.assign(static_cast<size_t>(columns), 0);
  return out->data.data() + out->offset;
}

int8_t* PackAfter(const Int8Gemm& first, const int8_t* b, int64_t n, int64_t k, int64_t second_bytes,
                  int64_t columns, PackedB* out) {
  PackedB base;
  first.pack(b, n, k, &base);
  const auto base_bytes = static_cast<int64_t>(base.data.size()) - base.offset;
  const int64_t second = (base_bytes + kAlignment - 1) / kAlignment * kAlignment;
  const auto base_columns = static_cast<int64_t>(base.column.size());
  int8_t* data = PreparePackedB(out, n, k, second + second_bytes, std::max(columns, base_columns));
  std::memcpy(data, base.panels(), static_cast<size_t>(base_bytes));
  std::copy(base.column.begin(), base.column.end(), out->column.begin());
  out->second = second;
  return data + second;
}

int8_t* ThreadScratch(int64_t bytes) { return scratch.Reserve(bytes); }

}  // namespace gemm
}  // namespace edgemia
