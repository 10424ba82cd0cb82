// Signal-handler code of the agent. Everything reachable from Handler() is async-signal safe:
// no allocation, no locks, no logging; it writes only into a preallocated RawSample.
#include "platform/signal_sampler.h"

#include <errno.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#include "platform/proc.h"
#include "stallwatch/common/clock.h"
#include "wait_hook.h"

namespace stallwatch::agent::platform {
namespace {

using internal::RawSample;

std::atomic<RawSample*> g_request{nullptr};
std::atomic<int> g_in_handler{0};

// Async-signal safe.
void CopyRegisters(const ucontext_t* uc, RawSample* s) {
#if defined(__x86_64__)
  const greg_t* g = uc->uc_mcontext.gregs;
  // DWARF register numbers of x86_64.
  s->regs[0] = static_cast<uint64_t>(g[REG_RAX]);
  s->regs[1] = static_cast<uint64_t>(g[REG_RDX]);
  s->regs[2] = static_cast<uint64_t>(g[REG_RCX]);
  s->regs[3] = static_cast<uint64_t>(g[REG_RBX]);
  s->regs[4] = static_cast<uint64_t>(g[REG_RSI]);
  s->regs[5] = static_cast<uint64_t>(g[REG_RDI]);
  s->regs[6] = static_cast<uint64_t>(g[REG_RBP]);
  s->regs[7] = static_cast<uint64_t>(g[REG_RSP]);
  s->regs[8] = static_cast<uint64_t>(g[REG_R8]);
  s->regs[9] = static_cast<uint64_t>(g[REG_R9]);
  s->regs[10] = static_cast<uint64_t>(g[REG_R10]);
  s->regs[11] = static_cast<uint64_t>(g[REG_R11]);
  s->regs[12] = static_cast<uint64_t>(g[REG_R12]);
  s->regs[13] = static_cast<uint64_t>(g[REG_R13]);
  s->regs[14] = static_cast<uint64_t>(g[REG_R14]);
  s->regs[15] = static_cast<uint64_t>(g[REG_R15]);
  s->regs[16] = static_cast<uint64_t>(g[REG_RIP]);
#else
  (void)uc;
  (void)s;
#endif
}

// Async-signal safe. Copies [sp, sp + kStackCopyBytes) page by page; stops at the first page
// that is not mapped.
size_t CopyStack(uint64_t sp, unsigned char* dst) {
  constexpr uint64_t kPage = 4096;
  constexpr int kMaxIov = static_cast<int>(internal::kStackCopyBytes / kPage) + 1;
  iovec local[kMaxIov], remote[kMaxIov];
  int n = 0;
  uint64_t addr = sp;
  size_t off = 0;
  while (off < internal::kStackCopyBytes && n < kMaxIov) {
    uint64_t chunk = kPage - (addr % kPage);
    if (chunk > internal::kStackCopyBytes - off) chunk = internal::kStackCopyBytes - off;
    local[n].iov_base = dst + off;
    local[n].iov_len = chunk;
    remote[n].iov_base = reinterpret_cast<void*>(addr);
    remote[n].iov_len = chunk;
    ++n;
    addr += chunk;
    off += chunk;
  }
  const ssize_t got = ::process_vm_readv(::getpid(), local, n, remote, n, 0);
  return got > 0 ? static_cast<size_t>(got) : 0;
}

// Async-signal safe.
void Handler(int /*signo*/, siginfo_t* /*info*/, void* ucontext) {
  const int saved_errno = errno;
  g_in_handler.fetch_add(1, std::memory_order_seq_cst);
  const auto self = static_cast<pid_t>(::syscall(SYS_gettid));
  RawSample* s = g_request.load(std::memory_order_seq_cst);
  // Requested by a watchdog process: the request is in the loop's (shared) state.
  if (s == nullptr) s = internal::FindRequestedSample(self);
  if (s != nullptr && s->tid == self) {
    int expected = RawSample::kRequested;
    if (s->state.compare_exchange_strong(expected, RawSample::kWriting)) {
      const auto* uc = static_cast<const ucontext_t*>(ucontext);
      CopyRegisters(uc, s);
      s->stack_base = s->regs[7];
      s->stack_len = CopyStack(s->regs[7], s->stack);
      s->state.store(s->stack_len > 0 ? RawSample::kReady : RawSample::kFailed,
                     std::memory_order_release);
    }
  }
  g_in_handler.fetch_sub(1, std::memory_order_seq_cst);
  errno = saved_errno;
}

bool IsOurs(const struct sigaction& sa) {
  return (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == &Handler;
}

Status HandlerTakenError(int signo) {
  return FailedPreconditionError("the host installed its own handler for signal " +
                                 std::to_string(signo) +
                                 " after the agent; set STALLWATCH_SIGNAL to a free signal");
}

// A thread that blocks the signal would get it later, or hand it to the host's sigwait().
Status CheckNotBlocked(pid_t tid, int signo) {
  char path[64];
  std::snprintf(path, sizeof(path), "%s/task/%d/status", ProcRoot(), static_cast<int>(tid));
  std::string status;
  if (!ReadSmallFile(path, &status)) return UnavailableError("thread status unreadable");
  const auto blocked = StatusBlocksSignal(status, signo);
  if (!blocked.has_value()) return UnavailableError("thread signal mask unreadable");
  if (*blocked) {
    return FailedPreconditionError("signal " + std::to_string(signo) +
                                   " is blocked in the loop thread; set STALLWATCH_SIGNAL to "
                                   "a signal it does not block");
  }
  return OkStatus();
}

// Waits until the handler filled `sample` (kReady/kFailed) or, past `timeout`, withdraws the
// request unless the handler is writing right now (it finishes in microseconds). Returns the
// final state.
int AwaitHandler(RawSample* sample, std::chrono::nanoseconds timeout) {
  const int64_t deadline = MonotonicNanos() + timeout.count();
  for (;;) {
    const int state = sample->state.load(std::memory_order_acquire);
    if (state == RawSample::kReady || state == RawSample::kFailed) return state;
    if (MonotonicNanos() > deadline) {
      int expected = RawSample::kRequested;
      if (sample->state.compare_exchange_strong(expected, RawSample::kIdle)) {
        return RawSample::kRequested;
      }
    }
    timespec ts{0, 50'000};
    nanosleep(&ts, nullptr);
  }
}

// What AwaitHandler's final state means for the caller; the slot is idle again unless ready.
Status SampleResult(RawSample* sample, int state) {
  if (state == RawSample::kReady) return OkStatus();
  sample->state.store(RawSample::kIdle);
  if (state == RawSample::kFailed) return InternalError("stack copy failed (process_vm_readv)");
  return Status(StatusCode::kDeadlineExceeded,
                "the loop thread did not run the sampling handler in time (signal blocked?)");
}

}  // namespace

int DefaultSampleSignal() { return SIGRTMIN + 3; }

bool SamplingHandlerInstalled(int signo) {
  struct sigaction cur {};
  return sigaction(signo, nullptr, &cur) == 0 && IsOurs(cur);
}

Status CaptureRemote(pid_t pid, pid_t tid, int signo, const std::atomic<bool>& handler_lost,
                     RawSample* sample, std::chrono::nanoseconds timeout) {
  if (signo <= 0) return UnavailableError("no sampling signal in the host");
  if (handler_lost.load(std::memory_order_acquire)) return HandlerTakenError(signo);
  if (Status st = CheckNotBlocked(tid, signo); !st.ok()) return st;
  sample->tid = tid;
  sample->stack_len = 0;
  sample->state.store(RawSample::kRequested, std::memory_order_seq_cst);
  if (::syscall(SYS_tgkill, pid, tid, signo) != 0) {
    sample->state.store(RawSample::kIdle);
    return UnavailableError(std::string("tgkill: ") + std::strerror(errno));
  }
  return SampleResult(sample, AwaitHandler(sample, timeout));
}

Status SignalSampler::Install(int signo) {
#if !defined(__x86_64__)
  return UnavailableError("stack sampling is implemented for x86_64 only");
#endif
  if (installed_) return OkStatus();
  if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP) {
    return InvalidArgumentError("bad sampling signal " + std::to_string(signo));
  }
  struct sigaction old {};
  if (sigaction(signo, nullptr, &old) != 0) {
    return UnavailableError(std::string("sigaction: ") + std::strerror(errno));
  }
  // Ours, inherited across fork() from a runtime the child abandoned: take it over.
  const bool ours = IsOurs(old);
  const bool has_handler =
      !ours &&
      ((old.sa_flags & SA_SIGINFO) ? old.sa_sigaction != nullptr
                                   : (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN));
  if (ours) {
    old.sa_flags = 0;
    old.sa_handler = SIG_DFL;
  }
  if (has_handler) {
    return FailedPreconditionError("signal " + std::to_string(signo) +
                                   " already has a handler in this process; set "
                                   "STALLWATCH_SIGNAL to a free signal number");
  }
  struct sigaction sa {};
  sa.sa_sigaction = &Handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  previous_ = new struct sigaction(old);
  if (sigaction(signo, &sa, nullptr) != 0) {
    delete previous_;
    previous_ = nullptr;
    return UnavailableError(std::string("sigaction: ") + std::strerror(errno));
  }
  signo_ = signo;
  installed_ = true;
  taken_over_ = false;
  return OkStatus();
}

void SignalSampler::Uninstall() {
  if (!installed_) return;
  struct sigaction cur {};
  if (sigaction(signo_, nullptr, &cur) == 0 && !IsOurs(cur)) {
    // The host installed its own handler since: it stays. Ours runs no more.
    while (g_in_handler.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
    delete previous_;
    previous_ = nullptr;
    installed_ = false;
    return;
  }
  // Setting SIG_IGN discards a signal still pending for a thread that blocks it, so restoring
  // SIG_DFL afterwards cannot terminate the host later.
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(signo_, &ign, nullptr);
  while (g_in_handler.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  sigaction(signo_, previous_, nullptr);
  delete previous_;
  previous_ = nullptr;
  installed_ = false;
}

Status SignalSampler::Capture(pid_t tid, RawSample* sample, std::chrono::nanoseconds timeout) {
  if (!installed_) return UnavailableError("sampling signal not installed");
  if (taken_over_) {
    return FailedPreconditionError("the host installed its own handler for signal " +
                                   std::to_string(signo_));
  }
  struct sigaction cur {};
  if (sigaction(signo_, nullptr, &cur) != 0 || !IsOurs(cur)) {
    // Signalling now would run the host's handler: never again.
    taken_over_ = true;
    return HandlerTakenError(signo_);
  }
  if (Status st = CheckNotBlocked(tid, signo_); !st.ok()) return st;
  sample->tid = tid;
  sample->stack_len = 0;
  sample->state.store(RawSample::kRequested, std::memory_order_release);
  g_request.store(sample, std::memory_order_seq_cst);
  if (::syscall(SYS_tgkill, ::getpid(), tid, signo_) != 0) {
    g_request.store(nullptr, std::memory_order_seq_cst);
    sample->state.store(RawSample::kIdle);
    return UnavailableError(std::string("tgkill: ") + std::strerror(errno));
  }
  const int state = AwaitHandler(sample, timeout);
  g_request.store(nullptr, std::memory_order_seq_cst);
  while (g_in_handler.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  return SampleResult(sample, state);
}

}  // namespace stallwatch::agent::platform
