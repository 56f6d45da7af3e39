// Compares every GEMM path this CPU can run with the scalar reference, with
// no Python involved, so that the ARM paths can be tested under qemu-user.
//
// Usage: gemm_paths_test [--expect-path NAME]
//
// Checks the exact int32 product on many shapes (every tile edge, k = 1, odd
// n, strided rows) with random and extreme inputs, and the fp32 output stage
// on ties and clamps. With --expect-path, also checks that dispatch picks
// NAME when EDGEMIA_ISA is unset, and that EDGEMIA_ISA selects and rejects
// paths. Prints one line per path and exits with 1 on any difference.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gemm/gemm.h"
#include "graph.h"

namespace {

using edgemia::gemm::Fp32Requantization;
using edgemia::gemm::Int8Gemm;
using edgemia::gemm::PackedB;

int failures = 0;

void Fail(const std::string& message) {
  std::fprintf(stderr, "FAIL: %s\n", message.c_str());
  ++failures;
}

enum class Fill { kRandom, kMin, kMax, kAlternating };

std::vector<int8_t> Values(size_t count, Fill fill, std::mt19937& rng) {
  std::vector<int8_t> v(count);
  std::uniform_int_distribution<int> byte(-128, 127);
  for (size_t i = 0; i < count; ++i) {
    switch (fill) {
      case Fill::kRandom:
        v[i] = static_cast<int8_t>(byte(rng));
        break;
      case Fill::kMin:
        v[i] = -128;
        break;
      case Fill::kMax:
        v[i] = 127;
        break;
      case Fill::kAlternating:
        v[i] = i % 2 == 0 ? -128 : 127;
        break;
    }
  }
  return v;
}

// Runs one path on A [m][k] stored with row stride a_stride and B [n][k];
// C gets a row stride of n + 3 with guard values around it, and the guards
// must survive.
std::vector<int32_t> Multiply(const Int8Gemm& path, const std::vector<int8_t>& a, int64_t a_stride, int64_t m,
                              const std::vector<int8_t>& b, int64_t n, int64_t k, bool* guards_intact) {
  PackedB packed;
  path.pack(b.data(), n, k, &packed);
  const int64_t c_stride = n + 3;
  constexpr int32_t kGuard = 0x5A5A5A5A;
  std::vector<int32_t> c(static_cast<size_t>(m * c_stride + 8), kGuard);
  path.run(a.data(), a_stride, m, packed, c.data() + 4, c_stride);
  std::vector<int32_t> result(static_cast<size_t>(m * n));
  *guards_intact = c[0] == kGuard && c[3] == kGuard && c[c.size() - 1] == kGuard;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) result[static_cast<size_t>(i * n + j)] = c[static_cast<size_t>(4 + i * c_stride + j)];
    for (int64_t j = n; j < c_stride; ++j) {
      if (c[static_cast<size_t>(4 + i * c_stride + j)] != kGuard) *guards_intact = false;
    }
  }
  return result;
}

void CheckProduct(const Int8Gemm& path, int64_t m, int64_t n, int64_t k, Fill fill_a, Fill fill_b, std::mt19937& rng) {
  const int64_t a_stride = k + (m % 3);  // some rows are read from a wider buffer
  // The bytes past the last row are there for a path that reads past it.
  const std::vector<int8_t> a = Values(static_cast<size_t>(m * a_stride + edgemia::gemm::kOverreadA), fill_a, rng);
  const std::vector<int8_t> b = Values(static_cast<size_t>(n * k), fill_b, rng);
  bool reference_guards = true, path_guards = true;
  const std::vector<int32_t> expected = Multiply(edgemia::gemm::ScalarGemm(), a, a_stride, m, b, n, k, &reference_guards);
  const std::vector<int32_t> got = Multiply(path, a, a_stride, m, b, n, k, &path_guards);
  const std::string shape = " at m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k);
  if (got != expected) Fail(std::string(path.name) + " product differs from scalar" + shape);
  if (!path_guards) Fail(std::string(path.name) + " wrote outside C" + shape);
}

void CheckOutputStage(const Int8Gemm& path, std::mt19937& rng) {
  for (const int64_t n : {1, 3, 7, 8, 9, 15, 16, 17, 33, 64}) {
    const int64_t m = 5;
    std::vector<int32_t> acc(static_cast<size_t>(m * n));
    std::vector<int32_t> bias(static_cast<size_t>(n));
    std::vector<float> scale(static_cast<size_t>(n));
    std::uniform_int_distribution<int32_t> sums(-50000, 50000);
    std::uniform_real_distribution<float> scales(0.0005f, 0.01f);
    for (auto& v : acc) v = sums(rng);
    for (auto& v : bias) v = sums(rng) / 10;
    for (auto& v : scale) v = scales(rng);
    // Column 0 lands on x.5 exactly, which probes the tie rule.
    scale[0] = 0.5f;
    for (int64_t i = 0; i < m; ++i) acc[static_cast<size_t>(i * n)] = static_cast<int32_t>(2 * i + 1) - bias[0];
    for (const int32_t zero_point : {-128, 0, 5}) {
      Fp32Requantization stage;
      stage.bias = bias.data();
      stage.scale = scale.data();
      stage.zero_point = zero_point;
      stage.min_less_zero_point = static_cast<float>(zero_point == -128 ? 0 : -128 - zero_point);
      stage.max_less_zero_point = static_cast<float>(127 - zero_point);
      std::vector<int8_t> expected(static_cast<size_t>(m * n)), got(static_cast<size_t>(m * n));
      edgemia::gemm::ScalarGemm().requantize_fp32(acc.data(), n, m, n, stage, expected.data(), n);
      path.requantize_fp32(acc.data(), n, m, n, stage, got.data(), n);
      if (got != expected) {
        Fail(std::string(path.name) + " output stage differs from scalar at n=" + std::to_string(n) +
             " zero point " + std::to_string(zero_point));
      }
    }
  }
}

void CheckPath(const Int8Gemm& path) {
  std::mt19937 rng(12345);
  const int64_t ms[] = {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 25, 97, 130};
  const int64_t ns[] = {1, 2, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 65};
  const int64_t ks[] = {1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 32, 33, 64, 65, 100, 257};
  int shapes = 0;
  for (const int64_t m : ms) {
    for (const int64_t n : ns) {
      for (const int64_t k : ks) {
        CheckProduct(path, m, n, k, Fill::kRandom, Fill::kRandom, rng);
        ++shapes;
      }
    }
  }
  // Extremes: -128 * -128 pairs overflow a 16-bit pair sum, and 127 * -128
  // overflows u8 x s8 pair sums.
  const Fill fills[] = {Fill::kMin, Fill::kMax, Fill::kAlternating, Fill::kRandom};
  for (const Fill fa : fills) {
    for (const Fill fb : fills) {
      for (const int64_t k : {1, 3, 16, 515, 4099}) {
        CheckProduct(path, 13, 33, k, fa, fb, rng);
        ++shapes;
      }
    }
  }
  // The largest depth the contract allows, with every product at +2^14.
  CheckProduct(path, 2, 3, edgemia::gemm::kMaxDepth, Fill::kMin, Fill::kMin, rng);
  CheckProduct(path, 784, 1024 / 8, 784, Fill::kRandom, Fill::kRandom, rng);
  shapes += 2;
  CheckOutputStage(path, rng);
  std::printf("%s: %d shapes and the output stage checked against scalar\n", path.name, shapes);
}

void CheckDispatch(const std::string& expected) {
  unsetenv("EDGEMIA_ISA");
  const std::string picked = edgemia::gemm::SelectGemm().name;
  if (picked != expected) Fail("dispatch picked " + picked + ", expected " + expected);
  setenv("EDGEMIA_ISA", "scalar", 1);
  if (std::string(edgemia::gemm::SelectGemm().name) != "scalar") Fail("EDGEMIA_ISA=scalar was not honoured");
  setenv("EDGEMIA_ISA", "sse9", 1);
  try {
    edgemia::gemm::SelectGemm();
    Fail("EDGEMIA_ISA=sse9 was accepted");
  } catch (const edgemia::ModelError&) {
  }
  unsetenv("EDGEMIA_ISA");
  std::printf("dispatch picks %s\n", picked.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string expected;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--expect-path") == 0 && i + 1 < argc) {
      expected = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--expect-path NAME]\n", argv[0]);
      return 2;
    }
  }
  std::string built;
  for (const Int8Gemm* path : {edgemia::gemm::Avx2Gemm(), edgemia::gemm::Avx512VnniGemm(), edgemia::gemm::AmxGemm(),
                               edgemia::gemm::NeonGemm(), edgemia::gemm::NeonDotGemm()}) {
    if (path != nullptr) built += std::string(built.empty() ? "" : ", ") + path->name;
  }
  std::printf("paths built: scalar%s%s\n", built.empty() ? "" : ", ", built.c_str());
  for (const Int8Gemm* path : edgemia::gemm::AvailableGemms()) {
    if (path != &edgemia::gemm::ScalarGemm()) CheckPath(*path);
  }
  if (!expected.empty()) CheckDispatch(expected);
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
