// Peak int8 multiply-accumulate rate of a GEMM path, from its register-only loop.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "gemm.h"

namespace edgemia {
namespace gemm {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs peak_loop(iterations) on `threads` threads that start together and
// returns the MACs per second of the whole group.
double TimeThreads(const Int8Gemm& path, int threads, int64_t iterations) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int64_t> macs{0};
  auto work = [&] {
    ready.fetch_add(1);
    while (!go.load()) {
    }
    macs.fetch_add(path.peak_loop(iterations));
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  while (ready.load() < threads - 1) {
  }
  const Clock::time_point start = Clock::now();
  go.store(true);
  ready.fetch_add(1);
  macs.fetch_add(path.peak_loop(iterations));
  for (std::thread& t : pool) t.join();
  return static_cast<double>(macs.load()) / SecondsSince(start);
}

}  // namespace

double MeasurePeakGmacs(const Int8Gemm& path, int threads, double seconds) {
  if (path.peak_loop == nullptr) {
    throw std::invalid_argument(std::string("the ") + path.name + " path has no peak loop");
  }
  if (threads < 1) throw std::invalid_argument("threads must be at least 1");
  // Calibrate on one thread: double the iterations until one call takes a
  // tenth of the requested time, then scale to the full duration.
  int64_t iterations = 1024;
  for (;;) {
    const Clock::time_point start = Clock::now();
    path.peak_loop(iterations);
    const double elapsed = SecondsSince(start);
    if (elapsed > seconds / 10) {
      iterations = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iterations) * seconds / elapsed));
      break;
    }
    iterations *= 2;
  }
  // Other processes share the CPU, so the best of three runs is the estimate
  // closest to what the hardware can do.
  double best = 0.0;
  for (int repeat = 0; repeat < 3; ++repeat) best = std::max(best, TimeThreads(path, threads, iterations));
  return best / 1e9;
}

}  // namespace gemm
}  // namespace edgemia
