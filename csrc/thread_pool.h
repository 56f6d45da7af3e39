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

  // Calls task(w) for w = 0 on the caller and for w in [1, workers) on pool
  // threads that are free to start while the caller runs its own call; a
  // pool thread that wakes after that skips the job. `task` must therefore
  // share its work out dynamically (for example from an atomic counter) and
  // must not throw. Returns when every started call is done. Callers from
  // several threads take turns.
  void Run(int workers, const std::function<void(int)>& task);

 private:
  ThreadPool() = default;
  // Runs worker `index` (>= 1) from the job after generation `seen` on.
  void WorkerLoop(int index, int64_t seen);

  std::mutex run_mutex_;  // held for a whole Run, so that jobs do not interleave

  std::mutex mutex_;  // guards the job fields below and the thread list
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> threads_;  // worker w is threads_[w - 1]
  const std::function<void(int)>* task_ = nullptr;
  int workers_ = 0;    // of the current job, caller included
  bool open_ = false;  // whether pool threads may still join the current job
  std::atomic<int64_t> generation_{0};  // incremented for every job
  std::atomic<int> active_{0};          // pool threads inside the current job's task
};

}  // namespace edgemia
