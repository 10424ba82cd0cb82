// stallwatch-watchdog: the watchdog process the agent starts for a single-threaded host
// (watchdog_process.h). Not meant to be run by hand. It maps the host's region
// (watchdog/region.h), runs the watchdog engine on the host's threads (a ThreadWatchdog with
// TargetThreads::Remote) and follows the host's slots until the host asks it to stop or is gone.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "options.h"
#include "platform/proc.h"
#include "reporter.h"
#include "stallwatch/common/clock.h"
#include "unwinder.h"
#include "watchdog/loop_context.h"
#include "watchdog/region.h"
#include "watchdog/target_threads.h"
#include "watchdog/watchdog_thread.h"

namespace stallwatch::internal {
namespace {

using agent::internal::SamplingState;
namespace platform = agent::platform;

// Whether the host still maps the shared region (it does until it exits or calls execve).
bool HostMapsRegion(pid_t pid) {
  std::string maps;
  const std::string path = "/proc/" + std::to_string(pid) + "/maps";
  if (!platform::ReadSmallFileLarge(path.c_str(), &maps)) {
    return false;
  }
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

int Main(int argc, char** argv) {
  long host_pid = -1, region_fd = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      Usage("the watchdog process of the stallwatch agent");
      return 0;
    }
    if (i + 1 >= argc) {
      return Usage(("missing value after " + a).c_str());
    }
    char* end = nullptr;
    const long v = std::strtol(argv[++i], &end, 10);
    if (*end != '\0' || v < 0) {
      return Usage(("bad number after " + a).c_str());
    }
    if (a == "--host-pid") {
      host_pid = v;
    } else if (a == "--region-fd") {
      region_fd = v;
    } else {
      return Usage(("unknown argument " + a).c_str());
    }
  }
  if (host_pid <= 0 || region_fd < 0) {
    return Usage("--host-pid and --region-fd are required");
  }
  const int fd = static_cast<int>(region_fd);
  // Everything else the host had open stays with the host.
  if (fd > 3) {
    ::syscall(SYS_close_range, 3U, static_cast<unsigned>(fd - 1), 0U);
  }
  ::syscall(SYS_close_range, static_cast<unsigned>(fd + 1), ~0U, 0U);
  // stdin and stdout to /dev/null: a reader of the host's stdout (a pipe, `$(program)`) gets its
  // EOF when the host exits, not when this process does. stderr stays the host's: warnings, and
  // findings for STALLWATCH_ENDPOINT=stderr.
  if (const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    if (null > 1) {
      ::close(null);
    }
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
  if (mem == MAP_FAILED) {
    return Usage("cannot map the shared region");
  }
  auto* region = static_cast<Region*>(mem);
  RegionHeader& h = region->header;
  if (h.magic != kRegionMagic || h.version != kRegionVersion || h.host_pid != host_pid) {
    return Usage("the shared region does not match this version or host");
  }
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(host_pid), 0));
  if (pidfd < 0 || ::getppid() != static_cast<pid_t>(host_pid)) {
    return 0;  // the host is gone
  }

  // The host's threads are the watched ones (and their process the unwinder's) from here on.
  auto target =
      agent::internal::TargetThreads::Remote(static_cast<pid_t>(host_pid), h.sample_signal);
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
  auto endpoint =
      agent::internal::ParseEndpoint(o.endpoint.empty() ? kDefaultEndpoint : o.endpoint);
  if (!endpoint.ok()) {
    PublishText(&h.sampling_status, endpoint.status().message());
    h.watchdog_state.store(RegionHeader::kExited, std::memory_order_release);
    Bump(&h.to_host);
    return 1;
  }
  endpoint->token_file = o.token_file;
  WatchdogConfig config;
  config.service = o.service;  // the host's resolved service name
  config.sampling = o.sampling.value_or(SamplingMode::kOn);
  config.mono_to_real_ns = RealtimeNanos() - MonotonicNanos();
  if (config.sampling == SamplingMode::kOff) {
    config.status = {SamplingState::kOff, ""};
  } else if (h.sample_signal == 0) {
    config.status = {SamplingState::kNoHostSignal, ""};
  }
  const std::string service = config.service;
  auto wd = std::make_unique<ThreadWatchdog>(o, *endpoint, std::move(config), std::move(target));
  h.watchdog_state.store(RegionHeader::kRunning, std::memory_order_release);
  Bump(&h.to_host);

  struct Served {
    std::shared_ptr<LoopContext> ctx;
    uint64_t generation = 0;
  };
  std::vector<Served> served(kMaxProcessLoops);
  auto drop = [&](Served& s) {
    if (!s.ctx) {
      return;
    }
    try {
      wd->Remove(s.ctx.get());
      PublishSnapshot(s.ctx->snapshot, &s.ctx->served->snapshot);
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
        ctx->snapshot.name = std::string(slot.name, strnlen(slot.name, sizeof(slot.name)));
        ctx->options = o;
        ctx->options.stall_threshold = std::chrono::nanoseconds(slot.threshold_ns);
        ctx->options.report_interval = std::chrono::nanoseconds(slot.report_interval_ns);
        ctx->options.max_stack_reports_per_minute = slot.max_stack_reports_per_minute;
        ctx->options.loop_name_from_thread = slot.name_from_thread;
        ctx->service = service;
        ctx->epfd_binding = slot.bind_epfd ? EpfdBinding::kSearch : EpfdBinding::kNone;
        wd->Add(ctx);
        PublishSnapshot(ctx->snapshot, &slot.snapshot);
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
    if (std::string status = wd->sampling_status(); status != last_status) {
      PublishText(&h.sampling_status, status);
      last_status = std::move(status);
    }
    if (host_gone ||
        h.watchdog_state.load(std::memory_order_acquire) == RegionHeader::kStopRequested) {
      break;
    }
    FutexWait(&h.to_watchdog, seen, 500'000'000);
  }
  for (auto& sv : served) {
    drop(sv);
  }
  wd.reset();  // joins the watchdog and the reporter (which delivers what it can)
  h.watchdog_state.store(RegionHeader::kExited, std::memory_order_release);
  Bump(&h.to_host);
  return 0;
}

}  // namespace
}  // namespace stallwatch::internal

int main(int argc, char** argv) { return stallwatch::internal::Main(argc, argv); }
