// int8 GEMM for the amx instruction-set path: AMX tiles (AMX-TILE and
// AMX-INT8) for large products, the avx512vnni path for the rest.
//
// tdpbusd multiplies a tile of 16 rows by 64 unsigned bytes with a tile of
// 16 groups of four k by 16 columns of signed bytes. It adds each group's
// four products into the int32 sums of a 16 by 16 tile, without saturating
// anything in between. As on the avx512vnni path, the activations go in as
// a + 128 (their sign bits flipped) and every sum starts from -128 * sum_k b
// of its column, so the result is the exact integer sum. The rows of A are
// copied, flipped, into a staging block whose rows are k rounded up to 64
// bytes, since a tile load reads whole rows of 64 bytes from memory.
//
// Products of fewer than 16 rows or 5 columns run on the avx512vnni kernels,
// because they would fill the tiles mostly with padding. So do products of
// depth below 128, since the tabular MLP's depth-64 layer ran slower on tiles,
// and convolutions read in place (SegmentedRows).
// The packed weights hold that path's layout first, then the tile layout.
#include "gemm.h"
#include "tiling.h"

#if defined(__x86_64__) && defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__) && \
    defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)

// GCC 12's AVX-512 headers start some intrinsics from a deliberately
// uninitialized vector, which -Wextra reports at every use.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include <cstring>

#include "flip_rows_avx512.h"
#include "fp32_stage_avx512.h"

namespace edgemia {
namespace gemm {
namespace {

constexpr int64_t kTileRows = 16;      // rows of an A or C tile
constexpr int64_t kTileColumns = 16;   // int32 columns of a C tile, and columns of a weight panel
constexpr int64_t kTileDepth = 64;     // bytes of k in a row of an A tile
constexpr int64_t kRowBlock = 128;     // rows of A staged per pass over the weights
constexpr int64_t kSumsStride = 2 * kTileColumns;  // int32 row stride of the 2 x 2 tiles of sums
// Smallest products that go through tiles; the others run on avx512vnni.
constexpr int64_t kMinRows = 16;
constexpr int64_t kMinColumns = 5;
constexpr int64_t kMinDepth = 128;

// Configuration of the tile registers. Tiles 0 to 3 hold sums (2 x 2 tiles of
// 16 x 16 int32). Tiles 4 and 5 hold A (16 rows of 64 bytes each), and 6 and
// 7 hold weights (16 groups of four k of 16 columns each).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

TileConfig FullTiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = static_cast<uint16_t>(kTileDepth);
    config.rows[t] = static_cast<uint8_t>(kTileRows);
  }
  return config;
}

// Loads the tile configuration for the calling thread and releases it when
// the scope ends, which returns the tile registers to their initial state.
class TileScope {
 public:
  TileScope() {
    const TileConfig config = FullTiles();
    asm volatile("ldtilecfg %0" ::"m"(config));
  }
  ~TileScope() { asm volatile("tilerelease" ::: "memory"); }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;
};

// The tile instructions, in asm that declares which memory they read and
// write. GCC 12's intrinsics do not: its _tile_loadconfig declares a read
// of 8 bytes of the configuration, so the compiler dropped the stores of the
// rest, and its tile loads and stores have no memory operands at all.
// Tile numbers must be constants.
#define EDGEMIA_TILE_ZERO(t) asm volatile("tilezero %%tmm" #t ::)
#define EDGEMIA_TILE_LOAD(t, base, stride) \
  asm volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(static_cast<int64_t>(stride)) : "memory")
#define EDGEMIA_TILE_STORE(t, base, stride) \
  asm volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"(static_cast<int64_t>(stride)) : "memory")
// sums += a (unsigned) . b (signed)
#define EDGEMIA_TILE_DPBUSD(sums, a, b) asm volatile("tdpbusd %%tmm" #b ", %%tmm" #a ", %%tmm" #sums ::)

int64_t WeightPanels(int64_t n) { return RoundUp((n + kTileColumns - 1) / kTileColumns, 2); }

// The avx512vnni layout (see gemm_avx512vnni.cc), then panels of 16 columns:
// for each group of four k, 4 bytes per column, with k padded with zeros to a
// multiple of 64 and the panels to an even number. A tile of weights is then
// 1024 contiguous bytes of a panel. out->column[j] = -128 * sum_k b[j][k].
void PackAmx(const int8_t* b, int64_t n, int64_t k, PackedB* out) {
  const int64_t kp = RoundUp(k, kTileDepth);
  const int64_t panels = WeightPanels(n);
  int8_t* data = PackAfter(*Avx512VnniGemm(), b, n, k, panels * kTileColumns * kp, panels * kTileColumns, out);
  PackPanels(b, n, k, kp, kTileColumns, 4, kTileColumns, data);
}

bool UsesTiles(int64_t m, const PackedB& b) { return m >= kMinRows && b.n >= kMinColumns && b.k >= kMinDepth; }

// The row stride of staged A for kp bytes of k: kp, or kp + 64 when kp is an
// even number of cache lines. Rows an even number of lines apart fall into
// fewer sets of the first-level cache, and a block of them evicts itself.
int64_t StagedStride(int64_t kp) { return kp | kTileDepth; }

// Copies `rows` rows of A (k bytes each) to `staged` with their sign bits
// flipped, in rows `stride` bytes apart (CopyRowsFlipped), and fills the rest
// of the staged rows up to a multiple of 16 with 0x80. The bytes past kp are
// never read.
void StageRows(const int8_t* a, int64_t a_stride, int64_t rows, int64_t k, int64_t kp, int64_t stride,
               uint8_t* staged) {
  CopyRowsFlipped(a, a_stride, rows, k, kp, stride, staged);
  const int64_t padded = RoundUp(rows, kTileRows);
  std::memset(staged + rows * stride, 0x80, static_cast<size_t>((padded - rows) * stride));
}

// The sums of MB x NB tiles: MB * 16 staged rows (kp bytes of k, rows `stride`
// apart) times NB panels (panel_bytes apart) into `sums`, row stride kSumsStride.
// With `backward` the steps go from the last 64 bytes of k to the first.
// Consecutive calls share one operand, and when its rows and the other's do not
// both fit in the first-level cache, a call that starts where the previous one
// ended finds the shared operand's latest lines still there. The sums are exact
// in any order.
template <int MB, int NB>
void TileSums(const uint8_t* a, int64_t kp, int64_t stride, const int8_t* w, int64_t panel_bytes, bool backward,
              int32_t* sums) {
  EDGEMIA_TILE_ZERO(0);
  EDGEMIA_TILE_ZERO(1);
  EDGEMIA_TILE_ZERO(2);
  EDGEMIA_TILE_ZERO(3);
  const int8_t* w1 = w + panel_bytes;
  const uint8_t* a1 = a + kTileRows * stride;
  const int64_t first = backward ? kp - kTileDepth : 0;
  const int64_t step = backward ? -kTileDepth : kTileDepth;
  for (int64_t q = first, left = kp; left > 0; q += step, left -= kTileDepth) {
    const int64_t group = q / 4 * 4 * kTileColumns;  // the byte of a panel where k = q starts
    EDGEMIA_TILE_LOAD(4, a + q, stride);
    EDGEMIA_TILE_LOAD(6, w + group, 4 * kTileColumns);
    EDGEMIA_TILE_DPBUSD(0, 4, 6);
    if constexpr (NB == 2) {
      EDGEMIA_TILE_LOAD(7, w1 + group, 4 * kTileColumns);
      EDGEMIA_TILE_DPBUSD(1, 4, 7);
    }
    if constexpr (MB == 2) {
      EDGEMIA_TILE_LOAD(5, a1 + q, stride);
      EDGEMIA_TILE_DPBUSD(2, 5, 6);
      if constexpr (NB == 2) EDGEMIA_TILE_DPBUSD(3, 5, 7);
    }
  }
  constexpr int64_t sums_bytes = kSumsStride * sizeof(int32_t);
  EDGEMIA_TILE_STORE(0, sums, sums_bytes);
  if constexpr (NB == 2) EDGEMIA_TILE_STORE(1, sums + kTileColumns, sums_bytes);
  if constexpr (MB == 2) {
    EDGEMIA_TILE_STORE(2, sums + kTileRows * kSumsStride, sums_bytes);
    if constexpr (NB == 2) EDGEMIA_TILE_STORE(3, sums + kTileRows * kSumsStride + kTileColumns, sums_bytes);
  }
}

// Destination of a block of sums: int32 sums to c, or, when stage is set, the
// fp32 output stage to y. Both already point at the block's first row and
// column.
struct BlockOutput {
  int32_t* c = nullptr;
  int64_t c_stride = 0;
  const Fp32Requantization* stage = nullptr;
  int8_t* y = nullptr;
  int64_t y_stride = 0;
};

// Writes `rows` rows and `width` columns (column0 on) of `sums`, each plus
// its column's correction (and the stage's bias).
void StoreBlock(const int32_t* sums, int64_t rows, int64_t width, const int32_t* correction, int64_t column0,
                const BlockOutput& out) {
  const int blocks = width > kTileColumns ? 2 : 1;
  __mmask16 lanes[2];
  __m512i start[2];
  __m512 scale[2];
  for (int q = 0; q < blocks; ++q) {
    lanes[q] = LowBits16(width - kTileColumns * q);
    start[q] = _mm512_maskz_loadu_epi32(lanes[q], correction + column0 + kTileColumns * q);
    if (out.stage != nullptr) {
      // int32 additions wrap, so adding the bias after the products gives the same sum.
      start[q] = _mm512_add_epi32(start[q],
                                  _mm512_maskz_loadu_epi32(lanes[q], out.stage->bias + column0 + kTileColumns * q));
      scale[q] = _mm512_maskz_loadu_ps(lanes[q], out.stage->scale + column0 + kTileColumns * q);
    }
  }
  if (out.stage == nullptr) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int q = 0; q < blocks; ++q) {
        const __m512i sum = _mm512_add_epi32(_mm512_load_si512(sums + r * kSumsStride + kTileColumns * q), start[q]);
        _mm512_mask_storeu_epi32(out.c + r * out.c_stride + kTileColumns * q, lanes[q], sum);
      }
    }
    return;
  }
  const __m512 lo = _mm512_set1_ps(out.stage->min_less_zero_point);
  const __m512 hi = _mm512_set1_ps(out.stage->max_less_zero_point);
  const __m512i zero_point = _mm512_set1_epi32(out.stage->zero_point);
  const bool clamp = !out.stage->saturation_clamps;
  for (int64_t r = 0; r < rows; ++r) {
    for (int q = 0; q < blocks; ++q) {
      const __m512i sum = _mm512_add_epi32(_mm512_load_si512(sums + r * kSumsStride + kTileColumns * q), start[q]);
      StoreBytes16(Fp32StageBytes(sum, scale[q], clamp, lo, hi, zero_point), lanes[q],
                   out.y + r * out.y_stride + kTileColumns * q);
    }
  }
}

using TileSumsKernel = void (*)(const uint8_t*, int64_t, int64_t, const int8_t*, int64_t, bool, int32_t*);

// kTileSums[MB - 1][NB - 1].
constexpr TileSumsKernel kTileSums[2][2] = {{TileSums<1, 1>, TileSums<1, 2>}, {TileSums<2, 1>, TileSums<2, 2>}};

// Runs A . B on tiles. For each block of up to kRowBlock rows, it stages the
// rows, then goes over pairs of weight panels, and within a pair over blocks
// of 32 rows, which read the pair's weights one after another.
void RunTiles(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, const BlockOutput& out) {
  const int64_t kp = RoundUp(b.k, kTileDepth);
  const int64_t panel_bytes = kTileColumns * kp;
  const int8_t* weights = b.panels() + b.second;
  const int64_t block_rows = m < kRowBlock ? m : kRowBlock;
  const int64_t stride = StagedStride(kp);
  auto* staged = reinterpret_cast<uint8_t*>(ThreadScratch(RoundUp(block_rows, kTileRows) * stride));
  alignas(64) int32_t sums[2 * kTileRows * kSumsStride];
  const TileScope tiles;
  bool backward = false;
  for (int64_t m0 = 0; m0 < m; m0 += kRowBlock) {
    const int64_t rows = m - m0 < kRowBlock ? m - m0 : kRowBlock;
    StageRows(a + m0 * a_stride, a_stride, rows, b.k, kp, stride, staged);
    for (int64_t j0 = 0; j0 < b.n; j0 += 2 * kTileColumns) {
      const int64_t width = b.n - j0 < 2 * kTileColumns ? b.n - j0 : 2 * kTileColumns;
      const int8_t* w = weights + j0 / kTileColumns * panel_bytes;
      for (int64_t r0 = 0; r0 < rows; r0 += 2 * kTileRows) {
        const int64_t tile_rows = rows - r0 < 2 * kTileRows ? rows - r0 : 2 * kTileRows;
        const int row_tiles = tile_rows > kTileRows ? 2 : 1;
        const int panels = width > kTileColumns ? 2 : 1;
        kTileSums[row_tiles - 1][panels - 1](staged + r0 * stride, kp, stride, w, panel_bytes, backward, sums);
        backward = !backward;
        BlockOutput block = out;
        if (out.stage == nullptr) {
          block.c = out.c + (m0 + r0) * out.c_stride + j0;
        } else {
          block.y = out.y + (m0 + r0) * out.y_stride + j0;
        }
        StoreBlock(sums, tile_rows, width, b.column.data(), j0, block);
      }
    }
  }
}

void RunAmx(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b, int32_t* c, int64_t c_stride) {
  if (!UsesTiles(m, b)) {
    Avx512VnniGemm()->run(a, a_stride, m, b, c, c_stride);
    return;
  }
  BlockOutput out;
  out.c = c;
  out.c_stride = c_stride;
  RunTiles(a, a_stride, m, b, out);
}

void RunRequantizeFp32Amx(const int8_t* a, int64_t a_stride, int64_t m, const PackedB& b,
                          const Fp32Requantization& stage, int8_t* y, int64_t y_stride) {
  if (!UsesTiles(m, b)) {
    Avx512VnniGemm()->run_requantize_fp32(a, a_stride, m, b, stage, y, y_stride);
    return;
  }
  BlockOutput out;
  out.stage = &stage;
  out.y = y;
  out.y_stride = y_stride;
  RunTiles(a, a_stride, m, b, out);
}

// Four independent tdpbusd chains on full tiles, whose inputs stay in tile
// registers.
int64_t PeakLoopAmx(int64_t iterations) {
  const TileScope tiles;
  EDGEMIA_TILE_ZERO(0);
  EDGEMIA_TILE_ZERO(1);
  EDGEMIA_TILE_ZERO(2);
  EDGEMIA_TILE_ZERO(3);
  EDGEMIA_TILE_ZERO(4);
  EDGEMIA_TILE_ZERO(5);
  EDGEMIA_TILE_ZERO(6);
  EDGEMIA_TILE_ZERO(7);
  for (int64_t it = 0; it < iterations; ++it) {
    EDGEMIA_TILE_DPBUSD(0, 4, 6);
    EDGEMIA_TILE_DPBUSD(1, 4, 7);
    EDGEMIA_TILE_DPBUSD(2, 5, 6);
    EDGEMIA_TILE_DPBUSD(3, 5, 7);
  }
  return iterations * 4 * kTileRows * kTileColumns * kTileDepth;
}

}  // namespace

const Int8Gemm* AmxGemm() {
  const Int8Gemm* vnni = Avx512VnniGemm();
  static const Int8Gemm gemm{"amx",
                             PackAmx,
                             RunAmx,
                             vnni->requantize_fp32,
                             PeakLoopAmx,
                             RunRequantizeFp32Amx,
                             vnni->run_segments_requantize_fp32};
  return &gemm;
}

}  // namespace gemm
}  // namespace edgemia

#else

namespace edgemia {
namespace gemm {

// This build does not target x86-64 with AMX and AVX-512 VNNI, so no CPU it runs on takes this path.
const Int8Gemm* AmxGemm() { return nullptr; }

}  // namespace gemm
}  // namespace edgemia

#endif
