#pragma once
// The /offload worker pool of the bundled server: a fixed pool of threads that sleep for each
// job; finished jobs come back to the loop through a mutex-protected queue and the loop's
// eventfd waker.
//
// Threading: Submit() and TakeDone() are called on the loop thread; Stop(), TakeQueued() and
// the destructor by the pool's owner once the loop no longer submits. The pool's own threads
// take and finish jobs. Lifetime: Stop() (or the destructor) joins the threads; `waker`
// outlives the pool.

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "http_support.h"

namespace stallwatch::cli::internal {

class WorkerPool {
 public:
  WorkerPool(int n, const Waker* waker);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  // Joins the threads once each finished its current job; queued jobs stay queued.
  void Stop();
  // Called on the loop thread.
  void Submit(Pending* p);
  // Called on the loop thread: the jobs finished since the last call.
  std::vector<Pending*> TakeDone();
  // Jobs never started (at shutdown). Called after Stop().
  std::vector<Pending*> TakeQueued();

 private:
  void Work();
  static void SleepOnWorker(int ms);

  const Waker* waker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending*> jobs_;
  std::deque<Pending*> done_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace stallwatch::cli::internal
