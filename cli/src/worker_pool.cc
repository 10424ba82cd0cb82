#include "worker_pool.h"

#include <time.h>

#include <cerrno>

namespace stallwatch::cli::internal {

WorkerPool::WorkerPool(int n, const Waker* waker) : waker_(waker) {
  for (int i = 0; i < n; ++i) {
    threads_.emplace_back([this] { Work(); });
  }
}

WorkerPool::~WorkerPool() { Stop(); }

void WorkerPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
}

void WorkerPool::Submit(Pending* p) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(p);
  }
  cv_.notify_one();
}

std::vector<Pending*> WorkerPool::TakeDone() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Pending*> out(done_.begin(), done_.end());
  done_.clear();
  return out;
}

std::vector<Pending*> WorkerPool::TakeQueued() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Pending*> out(jobs_.begin(), jobs_.end());
  jobs_.clear();
  return out;
}

// Called on a pool thread.
void WorkerPool::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
    if (stop_) {
      return;
    }
    Pending* p = jobs_.front();
    jobs_.pop_front();
    const int ms = p->ms;
    lock.unlock();
    SleepOnWorker(ms);
    lock.lock();
    done_.push_back(p);
    waker_->Notify();
  }
}

__attribute__((noinline)) void WorkerPool::SleepOnWorker(int ms) {
  const timespec ts{ms / 1000, (ms % 1000) * 1'000'000L};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr) == EINTR) {
  }
  KeepFrame();
}

}  // namespace stallwatch::cli::internal
