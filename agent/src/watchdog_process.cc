#include "watchdog_process.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "log.h"
#include "options.h"
#include "platform/proc.h"
#include "runtime.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/finding_json.h"
#include "unwinder.h"

extern char** environ;

#ifndef SW_WATCHDOG_RELDIR
#define SW_WATCHDOG_RELDIR "../libexec/stallwatch"
#endif

namespace stallwatch::internal {

using agent::internal::Log;
namespace platform = agent::platform;

namespace {
// A fence between the sequence number and the bytes of a SharedText. TSan does not support
// fences (and the watchdog process is not used under TSan): an RMW stands in there.
inline void Fence(std::memory_order order) {
#if defined(__SANITIZE_THREAD__)
  static std::atomic<int> dummy{0};
  dummy.fetch_add(0, order);
#else
  std::atomic_thread_fence(order);
#endif
}
}  // namespace

void PublishText(SharedText* t, const std::string& text) {
  const size_t n = std::min(text.size(), kSnapshotBytes);
  const uint64_t s = t->seq.load(std::memory_order_relaxed);
  t->seq.store(s + 1, std::memory_order_relaxed);
  Fence(std::memory_order_release);
  std::memcpy(t->bytes, text.data(), n);
  t->len.store(static_cast<uint32_t>(n), std::memory_order_relaxed);
  t->seq.store(s + 2, std::memory_order_release);
}

std::string ReadText(const SharedText& t) {
  std::string out;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const uint64_t s1 = t.seq.load(std::memory_order_acquire);
    if (s1 & 1) {
      sched_yield();
      continue;
    }
    const uint32_t n = std::min<uint32_t>(t.len.load(std::memory_order_relaxed), kSnapshotBytes);
    out.assign(t.bytes, n);
    Fence(std::memory_order_acquire);
    if (t.seq.load(std::memory_order_relaxed) == s1) return out;
  }
  return std::string();
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t seen, int64_t timeout_ns) {
  timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000),
              static_cast<long>(timeout_ns % 1'000'000'000)};
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

namespace {

void Bump(std::atomic<uint32_t>* word) {
  word->fetch_add(1, std::memory_order_release);
  FutexWakeAll(word);
}

void CopyField(char* dst, size_t size, const std::string& src) {
  std::snprintf(dst, size, "%s", src.c_str());
}

// The directory of the module the agent runs from (the library, the preload shim).
std::string ModuleDir() {
  const std::string path = agent::internal::Unwinder::OwnModulePath();
  if (path.empty()) return std::string();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// stallwatch-watchdog beside the library (build tree), in the installed libexec directory, or
// one level up (the preload shim's build directory).
std::string FindExecutable() {
  const std::string dir = ModuleDir();
  if (dir.empty()) return std::string();
  for (const std::string& candidate :
       {dir + "/stallwatch-watchdog", dir + "/" SW_WATCHDOG_RELDIR "/stallwatch-watchdog",
        dir + "/../stallwatch-watchdog"}) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
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
        if (end == std::string::npos) break;
        pos = end + 1;
      }
      if (kept.empty()) continue;
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
  if (mode == WatchdogMode::kThread) return false;
  if (options.on_stall || options.on_delay) {
    *why = "hooks run on an agent thread";
    return false;
  }
  if (mode == WatchdogMode::kAuto && __libc_single_threaded == 0) return false;
  if (::prctl(PR_GET_DUMPABLE) != 1) {
    *why = "the process is not dumpable (another process may not read its /proc files)";
    return false;
  }
  return true;
}

std::unique_ptr<WatchdogProcess> WatchdogProcess::Start(const Options& options,
                                                        const std::string& service,
                                                        int sample_signal, std::string* why) {
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

  const std::string pid_text = std::to_string(h->host_pid);
  const std::string fd_text = std::to_string(fd);
  std::vector<std::string> args = {exe, "--host-pid", pid_text, "--region-fd", fd_text};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = WatchdogEnvironment();
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  SpawnArgs sa{exe.c_str(), argv.data(), envp.data(), fd};
  constexpr size_t kStack = 64 * 1024;
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
    if (v.load(std::memory_order_acquire) == want) return true;
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
    if (left <= 0) return false;
    FutexWait(&h.to_host, seen, std::min<int64_t>(left, 10'000'000));
  }
}

WatchdogProcess::~WatchdogProcess() {
  if (region_ == nullptr) return;
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
    if (reserved_[i]) continue;
    RegionSlot& s = region_->slots[i];
    if (s.state.load(std::memory_order_acquire) != RegionSlot::kFree) continue;
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
    try {
      Log().warn("watchdog process did not release loop {} within 2 s", s.name);
    } catch (...) {
    }
  }
}

void WatchdogProcess::ReleaseSlot(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  region_->slots[slot].state.store(RegionSlot::kFree, std::memory_order_release);
  reserved_[slot] = false;
  Bump(&region_->header.to_watchdog);
}

std::string WatchdogProcess::sampling_status() const {
  return ReadText(region_->header.sampling_status);
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
    if (reserved_[i]) save(&region_->slots[i], sizeof(RegionSlot));
  }
  void* p = ::mmap(region_, region_size_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) return;
  for (const auto& [off, bytes] : keep) {
    std::memcpy(reinterpret_cast<char*>(region_) + off, bytes.data(), bytes.size());
  }
  pid_ = -1;  // not this process's child
}

// ---- Snapshots (runtime side) ----

void Runtime::PublishSnapshot(LoopContext& c) {
  if (c.served == nullptr) return;
  nlohmann::json j;
  std::deque<StallFinding> recent;
  {
    std::lock_guard<std::mutex> lock(c.snap_mu);
    j["name"] = c.name;
    if (c.ongoing) j["ongoing"] = ToJson(*c.ongoing);
    if (c.last_window) j["last_window"] = ToJson(*c.last_window);
    recent = c.recent;
  }
  std::string text;
  for (;;) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& f : recent) arr.push_back(ToJson(f));
    j["recent"] = std::move(arr);
    text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() <= kSnapshotBytes || recent.empty()) break;
    recent.pop_front();  // the oldest closed stalls go first
  }
  if (text.size() > kSnapshotBytes) return;
  PublishText(&c.served->snapshot, text);
}

void Runtime::PullSnapshot(LoopContext& c) const {
  if (!watchdog_process_ || c.slot < 0) return;
  const std::string text = watchdog_process_->Snapshot(c.slot);
  if (text.empty()) return;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  std::deque<StallFinding> recent;
  if (auto it = j.find("recent"); it != j.end() && it->is_array()) {
    for (const auto& e : *it) {
      if (auto f = StallFromJson(e); f.ok()) recent.push_back(std::move(*f));
    }
  }
  std::optional<StallFinding> ongoing;
  if (auto it = j.find("ongoing"); it != j.end()) {
    if (auto f = StallFromJson(*it); f.ok()) ongoing = std::move(*f);
  }
  std::optional<DelayFinding> window;
  if (auto it = j.find("last_window"); it != j.end()) {
    if (auto d = DelayFromJson(*it); d.ok()) window = std::move(*d);
  }
  std::lock_guard<std::mutex> lock(c.snap_mu);
  if (auto it = j.find("name"); it != j.end() && it->is_string()) {
    c.name = it->get<std::string>();
  }
  c.recent = std::move(recent);
  c.ongoing = std::move(ongoing);
  c.last_window = std::move(window);
}

// ---- stallwatch-watchdog ----

namespace {

// Whether the host still maps the shared region (it does until it exits or calls execve).
bool HostMapsRegion(pid_t pid) {
  std::string maps;
  const std::string path = "/proc/" + std::to_string(pid) + "/maps";
  if (!platform::ReadSmallFileLarge(path.c_str(), &maps)) return false;
  return maps.find("/memfd:stallwatch-watchdog") != std::string::npos;
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "stallwatch-watchdog: %s\n"
               "This program is started by the stallwatch agent inside a single-threaded program "
               "(STALLWATCH_WATCHDOG=auto|process) and is not meant to be run by hand.\n"
               "usage: stallwatch-watchdog --host-pid PID --region-fd FD\n",
               why);
  return 2;
}

}  // namespace

int WatchdogProcessMain(int argc, char** argv) {
  long host_pid = -1, region_fd = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      Usage("the watchdog process of the stallwatch agent");
      return 0;
    }
    if (i + 1 >= argc) return Usage(("missing value after " + a).c_str());
    char* end = nullptr;
    const long v = std::strtol(argv[++i], &end, 10);
    if (*end != '\0' || v < 0) return Usage(("bad number after " + a).c_str());
    if (a == "--host-pid") {
      host_pid = v;
    } else if (a == "--region-fd") {
      region_fd = v;
    } else {
      return Usage(("unknown argument " + a).c_str());
    }
  }
  if (host_pid <= 0 || region_fd < 0) return Usage("--host-pid and --region-fd are required");
  const int fd = static_cast<int>(region_fd);
  // Everything else the host had open stays with the host.
  if (fd > 3) ::syscall(SYS_close_range, 3U, static_cast<unsigned>(fd - 1), 0U);
  ::syscall(SYS_close_range, static_cast<unsigned>(fd + 1), ~0U, 0U);
  // stdin and stdout to /dev/null: a reader of the host's stdout (a pipe, `$(program)`) gets its
  // EOF when the host exits, not when this process does. stderr stays the host's: warnings, and
  // findings for STALLWATCH_ENDPOINT=stderr.
  if (const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    if (null > 1) ::close(null);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  // Out of the host's session and process group: ^C at the terminal and group-wide signals
  // reach the host alone; this process ends with it.
  ::setsid();
  for (int sig : {SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2}) {
    ::signal(sig, SIG_IGN);
  }
  ::prctl(PR_SET_NAME, "sw-watchdog", 0, 0, 0);

  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < sizeof(Region)) {
    return Usage("--region-fd is not the agent's shared region");
  }
  void* mem = ::mmap(nullptr, sizeof(Region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (mem == MAP_FAILED) return Usage("cannot map the shared region");
  auto* region = static_cast<Region*>(mem);
  RegionHeader& h = region->header;
  if (h.magic != kRegionMagic || h.version != kRegionVersion || h.host_pid != host_pid) {
    return Usage("the shared region does not match this version or host");
  }
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(host_pid), 0));
  if (pidfd < 0 || ::getppid() != static_cast<pid_t>(host_pid)) return 0;  // the host is gone

  Runtime::ServeHost(static_cast<pid_t>(host_pid), h.sample_signal);
  agent::internal::Unwinder::SetOwnModule(h.own_module);
  Options o;
  o.service = h.service;
  o.endpoint = h.endpoint;
  o.token_file = h.token_file;
  o.sampling = static_cast<SamplingMode>(h.sampling);
  o.sample_signal = h.sample_signal;
  o.queue_capacity = h.queue_capacity;
  o.watchdog = WatchdogMode::kThread;
  // The host resolved its settings; what the region does not carry takes the defaults (the
  // environment is the host's business).
  o = agent::internal::OptionsFromEnv(std::move(o), nullptr);
  auto acquired = Runtime::Acquire(o);
  if (!acquired.ok()) {
    PublishText(&h.sampling_status, acquired.status().message());
    h.watchdog_state.store(RegionHeader::kExited, std::memory_order_release);
    Bump(&h.to_host);
    return 1;
  }
  std::shared_ptr<Runtime> rt = *acquired;
  h.watchdog_state.store(RegionHeader::kRunning, std::memory_order_release);
  Bump(&h.to_host);

  struct Served {
    std::shared_ptr<LoopContext> ctx;
    uint64_t generation = 0;
  };
  std::vector<Served> served(kMaxProcessLoops);
  auto drop = [&](Served& s) {
    if (!s.ctx) return;
    try {
      rt->Remove(s.ctx.get());
      rt->PublishSnapshot(*s.ctx);
    } catch (...) {
    }
    s.ctx.reset();
  };
  std::string last_status;
  int64_t next_exec_check = 0;
  for (;;) {
    const uint32_t seen = h.to_watchdog.load(std::memory_order_acquire);
    pollfd p{pidfd, POLLIN, 0};
    bool host_gone = ::poll(&p, 1, 0) > 0;
    if (!host_gone && MonotonicNanos() >= next_exec_check) {
      // A host that called execve keeps its pid but no longer maps the region (MFD_CLOEXEC
      // memory is dropped): its loops are gone.
      next_exec_check = MonotonicNanos() + 1'000'000'000;
      host_gone = !HostMapsRegion(static_cast<pid_t>(host_pid));
    }
    for (int i = 0; i < kMaxProcessLoops; ++i) {
      RegionSlot& slot = region->slots[i];
      Served& sv = served[i];
      const int state = slot.state.load(std::memory_order_acquire);
      if (sv.ctx && (state == RegionSlot::kFree || sv.generation != slot.generation)) {
        drop(sv);  // the host gave up waiting for this loop, or reused its slot
      }
      if (state == RegionSlot::kAttaching && !sv.ctx) {
        auto ctx = std::make_shared<LoopContext>(&slot.loop);
        ctx->served = &slot;
        ctx->slot = i;
        ctx->name = std::string(slot.name, strnlen(slot.name, sizeof(slot.name)));
        ctx->options = o;
        ctx->options.stall_threshold = std::chrono::nanoseconds(slot.threshold_ns);
        ctx->options.report_interval = std::chrono::nanoseconds(slot.report_interval_ns);
        ctx->options.max_stack_reports_per_minute = slot.max_stack_reports_per_minute;
        ctx->options.loop_name_from_thread = slot.name_from_thread;
        ctx->service = rt->service();
        ctx->runtime = rt;
        ctx->epfd_tries = slot.bind_epfd ? 0 : 1000;
        rt->Add(ctx);
        rt->PublishSnapshot(*ctx);
        sv.ctx = std::move(ctx);
        sv.generation = slot.generation;
        int expected = RegionSlot::kAttaching;
        slot.state.compare_exchange_strong(expected, RegionSlot::kActive);
      } else if (state == RegionSlot::kDetaching) {
        drop(sv);
        slot.state.store(RegionSlot::kReleased, std::memory_order_release);
        Bump(&h.to_host);
      }
    }
    if (std::string status = rt->sampling_status(); status != last_status) {
      PublishText(&h.sampling_status, status);
      last_status = std::move(status);
    }
    if (host_gone ||
        h.watchdog_state.load(std::memory_order_acquire) == RegionHeader::kStopRequested) {
      break;
    }
    FutexWait(&h.to_watchdog, seen, 500'000'000);
  }
  for (auto& sv : served) drop(sv);
  rt.reset();  // joins the watchdog and the reporter (which delivers what it can)
  h.watchdog_state.store(RegionHeader::kExited, std::memory_order_release);
  Bump(&h.to_host);
  return 0;
}

}  // namespace stallwatch::internal
