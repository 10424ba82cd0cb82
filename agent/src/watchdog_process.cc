#include "watchdog_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/single_threaded.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "log.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/log_text.h"
#include "unwinder.h"
#include "watchdog/loop_context.h"

extern char** environ;

#ifndef SW_WATCHDOG_RELDIR
#define SW_WATCHDOG_RELDIR "../libexec/stallwatch"
#endif

namespace stallwatch::internal {

namespace {

void CopyField(char* dst, size_t size, const std::string& src) {
  std::snprintf(dst, size, "%s", src.c_str());
}

// The directory of the module the agent runs from (the library, the preload shim).
std::string ModuleDir() {
  const std::string path = agent::internal::Unwinder::OwnModulePath();
  if (path.empty()) {
    return std::string();
  }
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// stallwatch-watchdog beside the library (build tree), in the installed libexec directory, or
// one level up (the preload shim's build directory).
std::string FindExecutable() {
  const std::string dir = ModuleDir();
  if (dir.empty()) {
    return std::string();
  }
  for (const std::string& candidate :
       {dir + "/stallwatch-watchdog", dir + "/" SW_WATCHDOG_RELDIR "/stallwatch-watchdog",
        dir + "/../stallwatch-watchdog"}) {
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return std::string();
}

// The host's environment for the watchdog process, without the preload shim in LD_PRELOAD (the
// process has its own copy of the agent and creates no event_base).
std::vector<std::string> WatchdogEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string v = *e;
    if (v.rfind("LD_PRELOAD=", 0) == 0) {
      std::string kept;
      size_t pos = 11;
      while (pos <= v.size()) {
        const size_t end = v.find_first_of(": ", pos);
        const std::string item = v.substr(pos, end == std::string::npos ? end : end - pos);
        if (!item.empty() && item.find("stallwatch_preload") == std::string::npos) {
          kept += (kept.empty() ? "" : ":") + item;
        }
        if (end == std::string::npos) {
          break;
        }
        pos = end + 1;
      }
      if (kept.empty()) {
        continue;
      }
      v = "LD_PRELOAD=" + kept;
    }
    env.push_back(std::move(v));
  }
  return env;
}

struct SpawnArgs {
  const char* path;
  char* const* argv;
  char* const* envp;
  int region_fd;
};

// Runs in the clone(CLONE_VM | CLONE_VFORK) child, on the host's memory while the host waits:
// nothing but the fd flag, execve and _exit (all signals are blocked).
__attribute__((no_sanitize_address)) int SpawnChild(void* arg) {
  auto* a = static_cast<SpawnArgs*>(arg);
  // The child's own copy of the fd table: the region's fd survives execve there only.
  ::syscall(SYS_fcntl, a->region_fd, F_SETFD, 0);
  ::syscall(SYS_execve, a->path, a->argv, a->envp);
  ::syscall(SYS_exit, 127);
  return 127;
}

}  // namespace

bool WatchdogProcess::Wanted(const Options& options, std::string* why) {
#if defined(__SANITIZE_THREAD__)
  // TSan models one process; the shared mapping's cross-process writes would be reported.
  *why = "";
  return false;
#endif
  const WatchdogMode mode = options.watchdog.value_or(WatchdogMode::kAuto);
  if (mode == WatchdogMode::kThread) {
    return false;
  }
  if (options.on_stall || options.on_delay) {
    *why = "hooks run on an agent thread";
    return false;
  }
  if (mode == WatchdogMode::kAuto && __libc_single_threaded == 0) {
    return false;
  }
  if (::prctl(PR_GET_DUMPABLE) != 1) {
    *why = "the process is not dumpable (another process may not read its /proc files)";
    return false;
  }
  return true;
}

std::unique_ptr<WatchdogProcess> WatchdogProcess::Start(const Options& options,
                                                        const std::string& service,
                                                        int sample_signal,
                                                        agent::internal::SamplingStatus host_status,
                                                        std::string* why) {
  const std::string exe = FindExecutable();
  if (exe.empty()) {
    *why = "stallwatch-watchdog not found beside the agent library";
    return nullptr;
  }
  const std::string endpoint = options.endpoint.empty() ? kDefaultEndpoint : options.endpoint;
  if (endpoint.size() >= sizeof(RegionHeader::endpoint) ||
      options.token_file.size() >= sizeof(RegionHeader::token_file)) {
    *why = "endpoint or token file path too long for the watchdog process";
    return nullptr;
  }
  std::unique_ptr<WatchdogProcess> wp(new WatchdogProcess());
  const int fd = ::memfd_create("stallwatch-watchdog", MFD_CLOEXEC);
  if (fd < 0) {
    *why = std::string("memfd_create: ") + std::strerror(errno);
    return nullptr;
  }
  wp->region_size_ = sizeof(Region);
  void* mem = MAP_FAILED;
  if (::ftruncate(fd, static_cast<off_t>(wp->region_size_)) == 0) {
    mem = ::mmap(nullptr, wp->region_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (mem == MAP_FAILED) {
    *why = std::string("shared mapping: ") + std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  // The file reads as zeros: every slot is kFree. Only the header is constructed here, so the
  // slots' pages stay untouched until a loop uses them.
  wp->region_ = static_cast<Region*>(mem);
  RegionHeader* h = new (&wp->region_->header) RegionHeader();
  h->magic = kRegionMagic;
  h->version = kRegionVersion;
  h->host_pid = ::getpid();
  CopyField(h->service, sizeof(h->service), service);
  CopyField(h->endpoint, sizeof(h->endpoint), endpoint);
  CopyField(h->token_file, sizeof(h->token_file), options.token_file);
  CopyField(h->own_module, sizeof(h->own_module), agent::internal::Unwinder::OwnModulePath());
  h->sampling = static_cast<int>(options.sampling.value_or(SamplingMode::kOn));
  h->sample_signal = sample_signal;
  h->queue_capacity = options.queue_capacity;
  wp->sample_signal_ = sample_signal;
  wp->host_status_ = std::move(host_status);

  const std::string pid_text = std::to_string(h->host_pid);
  const std::string fd_text = std::to_string(fd);
  std::vector<std::string> args = {exe, "--host-pid", pid_text, "--region-fd", fd_text};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  std::vector<std::string> env = WatchdogEnvironment();
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);
  SpawnArgs sa{exe.c_str(), argv.data(), envp.data(), fd};
  constexpr size_t kStack = size_t{64} * 1024;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (stack == MAP_FAILED) {
    *why = std::string("mmap: ") + std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  // No exit signal: the host gets no SIGCHLD, and wait()/waitpid(-1) without __WALL never
  // return it; CLONE_VFORK: the host continues once execve has replaced the child's memory.
  const pid_t pid =
      ::clone(&SpawnChild, static_cast<char*>(stack) + kStack, CLONE_VM | CLONE_VFORK, &sa);
  const int spawn_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::munmap(stack, kStack);
  ::close(fd);
  if (pid < 0) {
    *why = std::string("clone: ") + std::strerror(spawn_errno);
    return nullptr;
  }
  wp->pid_ = pid;
  // Where Yama restricts ptrace to descendants, the watchdog (our child) may still read our
  // threads' /proc files and stacks. Without Yama the call fails harmlessly.
  ::prctl(PR_SET_PTRACER, static_cast<unsigned long>(pid), 0, 0, 0);
  if (!wp->WaitFor(h->watchdog_state, RegionHeader::kRunning, 5'000'000'000)) {
    const std::string status = ReadText(h->sampling_status);
    *why = "stallwatch-watchdog did not start" + (status.empty() ? "" : ": " + status);
    return nullptr;  // the destructor stops and reaps it
  }
  return wp;
}

bool WatchdogProcess::WaitFor(const std::atomic<int>& v, int want, int64_t timeout_ns) {
  const int64_t deadline = MonotonicNanos() + timeout_ns;
  RegionHeader& h = region_->header;
  for (;;) {
    const uint32_t seen = h.to_host.load(std::memory_order_acquire);
    if (v.load(std::memory_order_acquire) == want) {
      return true;
    }
    if (pid_ > 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG | __WALL) == pid_) {
        pid_ = -1;  // it died (or could not exec): reaped here
        return v.load(std::memory_order_acquire) == want;
      }
    } else {
      return false;
    }
    const int64_t left = deadline - MonotonicNanos();
    if (left <= 0) {
      return false;
    }
    FutexWait(&h.to_host, seen, std::min<int64_t>(left, 10'000'000));
  }
}

WatchdogProcess::~WatchdogProcess() {
  if (region_ == nullptr) {
    return;
  }
  RegionHeader& h = region_->header;
  if (pid_ > 0) {
    h.watchdog_state.store(RegionHeader::kStopRequested, std::memory_order_release);
    Bump(&h.to_watchdog);
    if (!WaitFor(h.watchdog_state, RegionHeader::kExited, 3'000'000'000) && pid_ > 0) {
      ::kill(pid_, SIGKILL);
    }
    if (pid_ > 0) {
      int status = 0;
      while (::waitpid(pid_, &status, __WALL) < 0 && errno == EINTR) {
      }
    }
  }
  ::munmap(region_, region_size_);
}

int WatchdogProcess::AllocateSlot() {
  std::lock_guard<std::mutex> lock(mu_);
  for (int i = 0; i < kMaxProcessLoops; ++i) {
    if (reserved_[i]) {
      continue;
    }
    RegionSlot& s = region_->slots[i];
    if (s.state.load(std::memory_order_acquire) != RegionSlot::kFree) {
      continue;
    }
    reserved_[i] = true;
    new (&s.loop) agent::internal::LoopState();
    PublishText(&s.snapshot, "");
    return i;
  }
  return -1;
}

void WatchdogProcess::Activate(int slot, const std::string& name, const Options& o, int probe_fd,
                               bool bind_epfd) {
  RegionSlot& s = region_->slots[slot];
  CopyField(s.name, sizeof(s.name), name);
  // `o` is resolved (Agent::Attach): every optional is set.
  s.threshold_ns =
      std::chrono::nanoseconds(o.stall_threshold.value_or(kDefaultStallThreshold)).count();
  s.report_interval_ns =
      std::chrono::nanoseconds(o.report_interval.value_or(kDefaultReportInterval)).count();
  s.max_stack_reports_per_minute =
      o.max_stack_reports_per_minute.value_or(kDefaultMaxStackReportsPerMinute);
  s.name_from_thread = o.loop_name_from_thread;
  s.probe_fd = probe_fd;
  s.bind_epfd = bind_epfd;
  s.generation = s.generation + 1;
  s.loop.sample_signo.store(sample_signal_, std::memory_order_relaxed);
  s.state.store(RegionSlot::kAttaching, std::memory_order_release);
  Bump(&region_->header.to_watchdog);
}

void WatchdogProcess::Detach(int slot) {
  RegionSlot& s = region_->slots[slot];
  s.state.store(RegionSlot::kDetaching, std::memory_order_release);
  Bump(&region_->header.to_watchdog);
  if (pid_ > 0 && !WaitFor(s.state, RegionSlot::kReleased, 2'000'000'000)) {
    agent::internal::LogWarn("watchdog process did not release loop {} within 2 s",
                             EscapeForLog(std::string(s.name, strnlen(s.name, sizeof(s.name)))));
  }
}

void WatchdogProcess::ReleaseSlot(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  region_->slots[slot].state.store(RegionSlot::kFree, std::memory_order_release);
  reserved_[slot] = false;
  Bump(&region_->header.to_watchdog);
}

void WatchdogProcess::Add(const std::shared_ptr<LoopContext>& ctx) {
  Activate(ctx->slot, ctx->snapshot.Name(), ctx->options, ctx->probe.timer_fd(),
           ctx->state.epfd.load() < 0 && ctx->epfd_binding == EpfdBinding::kSearch);
}

void WatchdogProcess::Remove(LoopContext* ctx) { Detach(ctx->slot); }

std::string WatchdogProcess::sampling_status() const {
  if (!host_status_.ok()) {
    return SamplingStatusText(host_status_);
  }
  std::string remote = ReadText(region_->header.sampling_status);
  return remote.empty() ? SamplingStatusText(host_status_) : remote;
}

void WatchdogProcess::PullSnapshot(LoopContext& c) const {
  if (c.slot < 0) {
    return;
  }
  internal::PullSnapshot(region_->slots[c.slot].snapshot, &c.snapshot);
}

void WatchdogProcess::PrivatizeInChild() {
  // Copy what is in use (untouched slots would be faulted in as shared pages), then put private
  // memory with the same contents at the same address.
  std::vector<std::pair<size_t, std::vector<char>>> keep;
  auto save = [&](const void* p, size_t n) {
    const char* b = static_cast<const char*>(p);
    keep.emplace_back(static_cast<size_t>(b - reinterpret_cast<const char*>(region_)),
                      std::vector<char>(b, b + n));
  };
  save(&region_->header, sizeof(RegionHeader));
  for (int i = 0; i < kMaxProcessLoops; ++i) {
    if (reserved_[i]) {
      save(&region_->slots[i], sizeof(RegionSlot));
    }
  }
  void* p = ::mmap(region_, region_size_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) {
    return;
  }
  for (const auto& [off, bytes] : keep) {
    std::memcpy(reinterpret_cast<char*>(region_) + off, bytes.data(), bytes.size());
  }
  pid_ = -1;  // not this process's child
}

}  // namespace stallwatch::internal
