#include "watchdog/target_threads.h"

#include <sys/uio.h>

#include <string>

#include "platform/signal_sampler.h"
#include "stallwatch/common/clock.h"
#include "wait_hook.h"

namespace stallwatch::agent::internal {

namespace {

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

// The watchdog is a thread of the process it watches.
class OwnThreads final : public TargetThreads {
 public:
  explicit OwnThreads(platform::SignalSampler* sampler)
      : TargetThreads(platform::TargetPid()), sampler_(sampler) {}

  bool remote() const override { return false; }

  int64_t LoopCpu(const LoopState& s, ThreadFiles* /*files*/) const override {
    if (!s.cpu_clock_ok.load(std::memory_order_acquire)) {
      return -1;
    }
    return CpuClockNanos(s.cpu_clock);
  }

  bool Stopped(pid_t /*tid*/) const override { return false; }

  bool FindAndBindEpollFd(LoopState* s, int probe_fd) const override {
    const int epfd =
        platform::FindEpollFdContaining(probe_fd, s->tid.load(std::memory_order_acquire));
    if (epfd < 0) {
      return false;
    }
    BindEpollFd(s, epfd);
    return true;
  }

  bool CanSignal(const LoopState& /*s*/) const override { return sampler_->available(); }
  std::string LostSignalNote(const LoopState& /*s*/) const override { return std::string(); }
  Status Capture(pid_t tid, LoopState* s, std::chrono::nanoseconds timeout) override {
    return sampler_->Capture(tid, &s->sample, timeout);
  }
  bool SignalGone(const LoopState& /*s*/) const override { return !sampler_->available(); }

 private:
  platform::SignalSampler* sampler_;
};

// stallwatch-watchdog: the threads are the host's, read through /proc/PID and signalled with
// the host's handler.
class HostThreads final : public TargetThreads {
 public:
  HostThreads(pid_t pid, int sample_signal) : TargetThreads(pid), signal_(sample_signal) {}

  bool remote() const override { return true; }

  int64_t LoopCpu(const LoopState& s, ThreadFiles* files) const override {
    // Another process's thread CPU clock cannot be read; its schedstat can (updated at each
    // scheduler tick and switch: a few ms behind for a thread that is running). Kept open and
    // re-read with pread, as the watchdog's own.
    const pid_t tid = s.tid.load(std::memory_order_acquire);
    if (tid == 0) {
      return -1;
    }
    if (files->tid != tid) {
      files->schedstat = std::make_unique<platform::ProcFile>(
          std::string(platform::ProcRoot()) + "/task/" + std::to_string(tid) + "/schedstat");
      files->tid = tid;
    }
    auto ss = platform::ReadSchedstat(*files->schedstat);
    return ss ? static_cast<int64_t>(ss->exec_ns) : -1;
  }

  bool Stopped(pid_t tid) const override {
    auto ts = platform::ReadThreadStat(tid);
    return ts && (ts->state == 'T' || ts->state == 't');
  }

  bool FindAndBindEpollFd(LoopState* s, int probe_fd) const override {
    const int epfd =
        platform::FindEpollFdContaining(probe_fd, s->tid.load(std::memory_order_acquire));
    if (epfd < 0) {
      return false;
    }
    s->pending_epfd.store(epfd, std::memory_order_relaxed);  // the probe binds it in the host
    return true;
  }

  bool CanSignal(const LoopState& s) const override {
    return signal_ > 0 && !s.handler_lost.load(std::memory_order_acquire);
  }
  std::string LostSignalNote(const LoopState& s) const override {
    if (signal_ <= 0 || !s.handler_lost.load(std::memory_order_acquire)) {
      return std::string();
    }
    return "running-thread stacks unavailable: the host installed its own handler for signal " +
           std::to_string(signal_) + " after the agent; set STALLWATCH_SIGNAL to a free signal";
  }
  Status Capture(pid_t tid, LoopState* s, std::chrono::nanoseconds timeout) override {
    return platform::CaptureRemote(pid(), tid, signal_, s->handler_lost, &s->sample, timeout);
  }
  bool SignalGone(const LoopState& s) const override { return s.handler_lost.load(); }

 private:
  int signal_;
};

}  // namespace

std::unique_ptr<TargetThreads> TargetThreads::Own(platform::SignalSampler* sampler) {
  return std::make_unique<OwnThreads>(sampler);
}

std::unique_ptr<TargetThreads> TargetThreads::Remote(pid_t pid, int sample_signal) {
  platform::SetTargetProcess(pid);
  return std::make_unique<HostThreads>(pid, sample_signal);
}

int64_t TargetThreads::RunDelay(pid_t tid) const {
  auto ss = platform::ReadThreadSchedstat(tid);
  return ss ? static_cast<int64_t>(ss->run_delay_ns) : -1;
}

int64_t TargetThreads::StealPerCpu() const { return platform::ReadStealPerCpuNs(); }

std::optional<platform::SyscallInfo> TargetThreads::Syscall(pid_t tid) const {
  return platform::ReadThreadSyscall(tid);
}

std::string TargetThreads::DescribeFd(pid_t tid, int fd) const {
  return platform::DescribeFd(tid, fd);
}

int TargetThreads::FirstPollFd(uint64_t array_addr) const {
  struct {
    int fd;
    short events, revents;
  } pfd{};
  iovec local{&pfd, sizeof(pfd)};
  // An address in the watched process, read with process_vm_readv, never dereferenced here.
  iovec remote{reinterpret_cast<void*>(array_addr),  // NOLINT(performance-no-int-to-ptr)
               sizeof(pfd)};
  if (::process_vm_readv(pid_, &local, 1, &remote, 1, 0) != sizeof(pfd)) {
    return -1;
  }
  return pfd.fd;
}

std::string TargetThreads::ThreadName(pid_t tid) const {
  if (tid == pid_) {
    return "main";
  }
  std::string comm, process;
  const std::string root = platform::ProcRoot();
  const std::string path = root + "/task/" + std::to_string(tid) + "/comm";
  if (platform::ReadSmallFile(path.c_str(), &comm) &&
      platform::ReadSmallFile((root + "/comm").c_str(), &process) && comm != process) {
    return Trimmed(std::move(comm));
  }
  return std::string();
}

}  // namespace stallwatch::agent::internal
