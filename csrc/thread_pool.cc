#include "thread_pool.h"

#include <pthread.h>

#include <chrono>

namespace edgemia {
namespace {

// How long a thread spins before it blocks. Long enough to bridge the gap
// between the layers and batches of one caller's loop, short enough not to
// hold a core that another process could use.
constexpr std::chrono::microseconds kSpin{50};

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or until kSpin has passed; returns done().
template <typename Done>
bool SpinUntil(Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (done()) return true;
    CpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

ThreadPool* shared_pool = nullptr;

}  // namespace

ThreadPool& ThreadPool::Shared() {
  static std::once_flag once;
  // After fork() the child has none of the parent's threads, so it abandons
  // the copy of the pool and starts one of its own on first use.
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, [] { shared_pool = nullptr; }); });
  static std::mutex creation;
  std::lock_guard<std::mutex> lock(creation);
  if (shared_pool == nullptr) shared_pool = new ThreadPool();
  return *shared_pool;
}

void ThreadPool::Run(int workers, const std::function<void(int)>& task) {
  if (workers <= 1) {
    task(0);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<int>(threads_.size()) < workers - 1) {
      const int index = static_cast<int>(threads_.size()) + 1;
      // The thread starts before the job below is published, so it waits
      // for the generation after the current one.
      const int64_t seen = generation_.load();
      threads_.emplace_back([this, index, seen] { WorkerLoop(index, seen); });
      threads_.back().detach();
    }
    task_ = &task;
    workers_ = workers;
    open_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  task(0);
  // When the caller's call returns, the work is shared out. A pool thread
  // that has not joined by now (because another process holds its core,
  // say) is not waited for: it skips the job when it wakes.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = false;
  }
  if (!SpinUntil([this] { return active_.load(std::memory_order_acquire) == 0; })) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_.load() == 0; });
  }
}

void ThreadPool::WorkerLoop(int index, int64_t seen) {
  for (;;) {
    SpinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; });
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return generation_.load() != seen; });
    // Join under the lock, so that the caller's closing of the job and this
    // check cannot interleave.
    seen = generation_.load();
    if (!open_ || index >= workers_) continue;
    const std::function<void(int)>* task = task_;
    active_.fetch_add(1);
    lock.unlock();
    (*task)(index);
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> done_lock(mutex_);
      done_.notify_one();
    }
  }
}

}  // namespace edgemia
