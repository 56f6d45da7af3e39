// A process-wide pool of worker threads for Graph::Run.
//
// Starting threads on every call costs tens of microseconds, as much as a
// small model's whole batch, so the workers are started once and wait
// between calls: first spinning briefly, then blocked.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edgemia {

class ThreadPool {
 public:
  // The pool of this process. It is never destroyed, so that no exit-time
  // destructor waits on threads; a child process after fork() gets a new one.
  static ThreadPool& Shared();

  // Calls task(w) once for each w in [0, workers), on `workers` threads of
  // which the caller is one (w = 0), and returns when all calls are done.
  // Callers from several threads take turns. `task` must not throw.
  void Run(int workers, const std::function<void(int)>& task);

 private:
  ThreadPool() = default;
  // Runs worker `index` (>= 1) from the job after generation `seen` on.
  void WorkerLoop(int index, int64_t seen);

  std::mutex run_mutex_;  // held for a whole Run, so that jobs do not interleave

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> threads_;  // worker w is threads_[w - 1]
  const std::function<void(int)>* task_ = nullptr;
  int workers_ = 0;                   // of the current job, caller included
  std::atomic<int64_t> generation_{0};  // incremented for every job
  std::atomic<int> pending_{0};       // pool threads still working on the current job
};

}  // namespace edgemia
