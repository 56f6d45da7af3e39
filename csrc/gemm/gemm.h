// Exact int8 matrix multiplication, one implementation per instruction set.
//
// Every implementation computes C[m][n] = sum_k A[m][k] * B[n][k] over signed
// int8 A and B with int32 accumulation, so the result is the exact integer
// sum whatever the instruction set: no intermediate is saturated. The op
// kernels add bias and zero-point terms and requantize afterwards, through
// the path's output stage.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace edgemia {
namespace gemm {

// Largest depth k for which every sum fits in int32: |a * b| <= 128 * 128 =
// 2^14, so k terms stay below 2^31 while k < 2^17. Callers check it at load
// time.
constexpr int64_t kMaxDepth = (int64_t{1} << 17) - 1;

// Bytes past the end of a row of A that a GEMM may read (the avx512vnni path
// reads k in groups of four). The arena and scratch slack cover them.
constexpr int64_t kOverreadA = 3;

// Weights B [n][k] rearranged for one implementation's inner loop.
struct PackedB {
  int64_t n = 0;
  int64_t k = 0;
  std::vector<int8_t> data;      // layout private to the implementation
  int64_t offset = 0;            // first byte of the layout in `data`; 64-byte aligned after packing
  std::vector<int32_t> column;   // per-column values the implementation needs (e.g. sums)
  int64_t second = 0;            // for a path that keeps two layouts: the second's offset from panels()

  const int8_t* panels() const { return data.data() + offset; }
};

// The fp32 output stage of XNNPACK's int8 GEMMs (LiteRT's default path, and
// ONNX Runtime's MLAS): y[i][j] = clamp(float(acc[i][j] + bias[j]) * scale[j])
// rounded half to even, plus the output zero point.
struct Fp32Requantization {
  const int32_t* bias = nullptr;   // [n], added to the int32 sum before scaling
  const float* scale = nullptr;    // [n], input_scale * weight_scale / output_scale in float32
  float min_less_zero_point = -128.0f;  // output range minus the zero point, both in -255..255
  float max_less_zero_point = 127.0f;
  int32_t zero_point = 0;
  // Set by the caller when SaturationClamps holds for the weights and this
  // stage: a path may then skip the float clamps and let its saturating
  // narrowing to int8 clamp instead.
  bool saturation_clamps = false;
};

// std::nearbyint for |v| <= 2^22, without the library call that x86-64's
// baseline, which lacks roundss, makes. After adding 1.5 * 2^23 no fraction
// bits are left, so the addition rounds v in the current rounding mode (half
// to even unless a caller changed it) and the subtraction is exact. Loops that
// call it vectorize.
inline float NearbyintSmall(float v) {
  constexpr float kShift = 12582912.0f;
  return (v + kShift) - kShift;
}

// One element of the fp32 output stage; f is within 255 of zero when rounded.
inline int8_t RequantizeFp32(int32_t acc, float scale, float min_less_zero_point, float max_less_zero_point,
                             int32_t zero_point) {
  float f = static_cast<float>(acc) * scale;
  f = f < min_less_zero_point ? min_less_zero_point : f;
  f = f > max_less_zero_point ? max_less_zero_point : f;
  return static_cast<int8_t>(static_cast<int32_t>(NearbyintSmall(f)) + zero_point);
}

// A matrix A whose row i is `segments` runs of `segment` bytes (a multiple
// of 4) from rows[i] on, the runs segment_stride bytes apart. These are the
// filter rows of a convolution's windows, read in place from a framed image.
// Its depth k is segments * segment.
struct SegmentedRows {
  const int8_t* const* rows = nullptr;
  int64_t segments = 1;
  int64_t segment = 4;
  int64_t segment_stride = 0;
};

struct Int8Gemm {
  const char* name;  // instruction-set path, e.g. "scalar", "avx2"
  // Rearranges row-major B [n][k] into `out`; n >= 1 and 1 <= k <= kMaxDepth.
  void (*pack)(const int8_t* b, int64_t n, int64_t k, PackedB* out);
  // C[i][j] = sum_k A[i][k] * B[j][k] for i < m, j < n. A is row-major with
  // row stride a_stride (bytes); C is row-major with row stride c_stride
  // (elements). May read up to kOverreadA bytes past the k bytes of a row,
  // which must be readable; their values do not change C.
  void (*run)(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride);
  // y[i][j] = RequantizeFp32(acc[i][j] + stage.bias[j], stage.scale[j], ...)
  // for i < m, j < n, with row strides in elements.
  void (*requantize_fp32)(const int32_t* acc, int64_t acc_stride, int64_t m, int64_t n,
                          const Fp32Requantization& stage, int8_t* y, int64_t y_stride);
  // Runs `iterations` rounds of the microkernel's multiply-accumulate
  // instructions on registers only, and returns the number of int8
  // multiply-accumulates done (for peak measurements). nullptr for scalar.
  int64_t (*peak_loop)(int64_t iterations);
  // run and requantize_fp32 in one pass, with the output stage applied to the
  // sums in registers: y[i][j] for i < m, j < b.n. nullptr where the path has
  // none; RunRequantizeFp32 then runs the two steps.
  void (*run_requantize_fp32)(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b,
                              const Fp32Requantization& stage, int8_t* y, int64_t y_stride);
  // run_requantize_fp32 on segmented rows (b.k = a.segments * a.segment), read
  // in place; m rows. nullptr where the path has none: callers then copy the
  // rows into a plain matrix.
  void (*run_segments_requantize_fp32)(const SegmentedRows& a, int64_t m, const PackedB& b,
                                       const Fp32Requantization& stage, int8_t* y, int64_t y_stride);
};

// Computes y = the fp32 output stage of A . B (`b.n` columns), through `acc` (m x b.n
// int32 values of scratch) unless the path fuses the two steps.
inline void RunRequantizeFp32(const Int8Gemm& gemm, const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b,
                              int32_t* acc, const Fp32Requantization& stage, int8_t* y, int64_t y_stride) {
  if (gemm.run_requantize_fp32 != nullptr) {
    gemm.run_requantize_fp32(a, a_stride, m, b, stage, y, y_stride);
    return;
  }
  gemm.run(a, a_stride, m, b, acc, b.n);
  gemm.requantize_fp32(acc, b.n, m, b.n, stage, y, y_stride);
}

// Returns whether saturating round(f) + zero_point to int8 equals
// RequantizeFp32 for every int8 A times row-major B [n][k]. That holds when the
// stage clamps to all of int8 and |f| < 2^30, so that no int32 step overflows,
// because rounding is monotone and the clamp bounds are integers. |sum + bias|
// is bounded by 128 * sum_k |b[j][k]| + |bias[j]|.
bool SaturationClamps(const int8_t* b, int64_t n, int64_t k, const Fp32Requantization& stage);

// The portable reference; every other path must return identical results.
const Int8Gemm& ScalarGemm();

// Paths compiled into this build, whether or not this CPU can run them.
// Each returns nullptr when the build does not include it.
const Int8Gemm* Avx2Gemm();
const Int8Gemm* Avx512VnniGemm();
const Int8Gemm* AmxGemm();
const Int8Gemm* NeonGemm();
const Int8Gemm* NeonDotGemm();

// Returns whether a path runs AVX-512 VNNI code: avx512vnni does, and so does
// amx, which runs the avx512vnni kernels wherever it does not use tiles.
inline bool RunsAvx512Vnni(const Int8Gemm& path) {
  return std::string(path.name) == "avx512vnni" || std::string(path.name) == "amx";
}

// Paths this build includes and this CPU supports, fastest last.
std::vector<const Int8Gemm*> AvailableGemms();

// The path to use: the EDGEMIA_ISA environment variable when set (an error
// if that path is unknown or unavailable here), else the fastest available.
const Int8Gemm& SelectGemm();

// ---------------------------------------------------------------------------
// Storage helpers for the instruction-set files. They live in portable code
// so that the files compiled with wider instruction sets instantiate no
// std::vector member: the linker keeps one copy of such a template for the
// whole library, and it must not be one that a plainer CPU cannot execute.

// Sizes out->data for `bytes` of layout starting at a 64-byte boundary and
// out->column for `columns` values (zeroed), sets n, k and offset, and
// returns the start of the layout.
int8_t* PreparePackedB(PackedB* out, int64_t n, int64_t k, int64_t bytes, int64_t columns);

// Packs B with `first` into *out, followed by `second_bytes` of zeros from a
// 64-byte boundary, for a path that keeps first's layout and one of its own.
// Sets out->second to the offset of those bytes from out->panels(), gives
// out->column at least `columns` values, the first ones first's, and returns
// the start of the second layout.
int8_t* PackAfter(const Int8Gemm& first, const int8_t* b, int64_t n, int64_t k, int64_t second_bytes,
                  int64_t columns, PackedB* out);

// A 64-byte aligned buffer of at least `bytes` owned by the calling thread,
// valid until that thread's next call.
int8_t* ThreadScratch(int64_t bytes);

// Average int8 multiply-accumulates per second, in billions, that `threads`
// threads reach in path.peak_loop over about `seconds` of wall time.
double MeasurePeakGmacs(const Int8Gemm& path, int threads, double seconds);

}  // namespace gemm
}  // namespace edgemia
