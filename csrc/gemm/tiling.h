// Loop structure, weight packing and partial-panel stores shared by the vector GEMM
// paths. Rows of A go in blocks that the path packs. Within a block the
// weight panels are outermost, so that a panel stays in cache for all its
// row tiles, and the row tiles have equal heights. The output stage goes
// over columns in fixed-width blocks.
#pragma once

#include <cstdint>
#include <cstring>

#include "gemm.h"

namespace edgemia {
namespace gemm {
// Internal linkage: every instruction-set file compiles its own copy with
// its own flags, and no copy can stand in for another at link time.
namespace {

constexpr int64_t RoundUp(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// For each block of at most `row_block` rows of A, calls pack(first_row,
// rows), then tile(first_row, offset, tile_rows, panel, width) for every
// panel of `nr` columns (`width` of them real) and every row tile, which
// starts `offset` rows into the block. A block splits into tiles of at most
// `mr` rows whose heights differ by at most one, so that no tile is much
// shorter and slower than the rest. For example, 64 rows in tiles of up to
// 12 become 11, 11, 11, 11, 10, 10.
template <typename Pack, typename Tile>
void ForEachTile(int64_t m, int64_t n, int64_t mr, int64_t nr, int64_t row_block, Pack&& pack, Tile&& tile) {
  const int64_t panels = (n + nr - 1) / nr;
  for (int64_t m0 = 0; m0 < m; m0 += row_block) {
    const int64_t rows = m - m0 < row_block ? m - m0 : row_block;
    pack(m0, rows);
    const int64_t tiles = (rows + mr - 1) / mr;
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t width = n - p * nr < nr ? n - p * nr : nr;
      for (int64_t t = 0, offset = 0; t < tiles; ++t) {
        const int64_t tile_rows = rows / tiles + (t < rows % tiles ? 1 : 0);
        tile(m0, offset, tile_rows, p, width);
        offset += tile_rows;
      }
    }
  }
}

// Rearranges row-major B [n][k] into panels of `nr` columns and kp (k
// padded) values per column, for a microkernel that reads `group`
// consecutive k of each column at a time. Value (j, q) of a panel goes to
// (q / group) * width * group + j * group + q % group. The width is nr, or
// `narrow` for a last panel with at most `narrow` columns, so pass nr when
// every panel is full width. T is the stored type: int8, or int16 for a path
// that multiplies 16-bit values. The caller zeroes `data`, so the padding of
// k and of the columns is zero.
template <typename T>
void PackPanels(const int8_t* b, int64_t n, int64_t k, int64_t kp, int64_t nr, int64_t group, int64_t narrow,
                T* data) {
  const int64_t panels = (n + nr - 1) / nr;
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t columns = n - p * nr < nr ? n - p * nr : nr;
    const int64_t width = columns > narrow ? nr : narrow;
    T* panel = data + p * nr * kp;
    for (int64_t j = 0; j < columns; ++j) {
      const int8_t* bj = b + (p * nr + j) * k;
      for (int64_t q = 0; q < k; ++q) panel[(q / group) * width * group + j * group + q % group] = bj[q];
    }
  }
}

// Copies the first `width` columns of `rows` rows of a microkernel's local
// tile (row stride tile_stride) to C. A partial panel stores its
// accumulators into such a tile, because a store past column n could leave
// C, and masked stores straight from the accumulators make GCC 12 spill them.
inline void CopyTileColumns(const int32_t* tile, int64_t tile_stride, int64_t rows, int64_t width, int32_t* c,
                            int64_t c_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(c + r * c_stride, tile + r * tile_stride, static_cast<size_t>(width) * sizeof(int32_t));
  }
}

// Copies `rows` rows of A (k bytes each, a_stride apart) to a contiguous
// block with rows of kp bytes, padded with zeros.
inline void PackRowsPadded(const int8_t* a, int64_t a_stride, int64_t rows, int64_t k, int64_t kp, int8_t* packed) {
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(packed + i * kp, a + i * a_stride, static_cast<size_t>(k));
    std::memset(packed + i * kp + k, 0, static_cast<size_t>(kp - k));
  }
}

// Calls block(acc, bias, scale, y) for each `kWidth` columns of each row of
// an output-stage call, which must requantize kWidth values. The last
// columns of a row go through zero-padded copies, since reading or writing
// past n could leave the buffers.
template <int kWidth, typename Block>
void ForEachColumnBlock(const int32_t* acc, int64_t acc_stride, int64_t m, int64_t n,
                        const Fp32Requantization& stage, int8_t* y, int64_t y_stride, Block&& block) {
  const int64_t full = n / kWidth * kWidth;
  for (int64_t i = 0; i < m; ++i) {
    const int32_t* ai = acc + i * acc_stride;
    int8_t* yi = y + i * y_stride;
    for (int64_t j = 0; j < full; j += kWidth) block(ai + j, stage.bias + j, stage.scale + j, yi + j);
    if (full < n) {
      const auto rest = static_cast<size_t>(n - full);
      alignas(64) int32_t acc_tail[kWidth] = {};
      alignas(64) int32_t bias_tail[kWidth] = {};
      alignas(64) float scale_tail[kWidth] = {};
      int8_t y_tail[kWidth];
      std::memcpy(acc_tail, ai + full, rest * sizeof(int32_t));
      std::memcpy(bias_tail, stage.bias + full, rest * sizeof(int32_t));
      std::memcpy(scale_tail, stage.scale + full, rest * sizeof(float));
      block(acc_tail, bias_tail, scale_tail, y_tail);
      std::memcpy(yi + full, y_tail, rest);
    }
  }
}

}  // namespace
}  // namespace gemm
}  // namespace edgemia
