#include "classifier.h"

#include <algorithm>
#include <array>

namespace stallwatch::agent::internal {

namespace {

using std::string_view_literals::operator""sv;

// A lookup waits for the resolver's answer in one of these (glibc: poll on a connected UDP
// socket, then recvfrom/recvmsg; other resolvers read or select).
constexpr std::array kResolverWaits = {"poll"sv,       "ppoll"sv,      "recvfrom"sv, "recvmsg"sv,
                                       "recvmmsg"sv,   "read"sv,       "select"sv,   "pselect6"sv,
                                       "epoll_wait"sv, "epoll_pwait"sv};
// Blocking name lookups and the resolver internals under them.
constexpr std::array kResolverFrames = {"*getaddrinfo*"sv, "*gethostbyname*"sv, "*gethostbyaddr*"sv,
                                        "*getnameinfo*"sv, "res_*"sv,           "__res_*"sv,
                                        "__libc_res_*"sv,  "_nss_dns_*"sv};
constexpr std::array kFileWrites = {"fsync"sv, "fdatasync"sv, "sync_file_range"sv, "msync"sv};
constexpr std::array kConnects = {"connect"sv};

constexpr std::string_view kDnsHint =
    "The loop thread waited in %s: a DNS lookup (getaddrinfo) on the loop; resolve "
    "asynchronously with libevent's evdns_getaddrinfo() (event2/dns.h), or cache the address "
    "and resolve off the loop.";

const std::array<HintRule, 4> kRules = {{
    // A UDP socket to port 53 (udp or udp6) is a DNS server, whichever library asked.
    {"dns-udp", kResolverWaits, "socket udp* -> *:53", {}, kDnsHint},
    // The resolver's frames on the stack (a TCP fallback, a local cache over a unix socket …).
    {"dns-frames", {}, "", kResolverFrames, kDnsHint},
    {"fsync",
     kFileWrites,
     "",
     {},
     "The loop thread waited in %s: flushing to disk blocks for as long as the device takes; "
     "batch the writes and flush on a worker thread, or drop the sync where durability allows."},
    {"connect",
     kConnects,
     "",
     {},
     "The loop thread waited in %s: a blocking connect; make the socket non-blocking and wait for "
     "it with an EV_WRITE event (or bufferevent_socket_connect())."},
}};

bool AnyGlob(std::span<const std::string_view> patterns, std::string_view text) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](std::string_view p) { return !p.empty() && GlobMatch(p, text); });
}

bool RuleMatches(const HintRule& r, const std::string& syscall, const std::string& fd_target,
                 const std::vector<std::string>& functions) {
  if (!r.syscalls.empty() &&
      std::find(r.syscalls.begin(), r.syscalls.end(), syscall) == r.syscalls.end()) {
    return false;
  }
  if (!r.fd_target.empty() && !GlobMatch(r.fd_target, fd_target)) return false;
  if (!r.frames.empty() &&
      std::none_of(functions.begin(), functions.end(),
                   [&](const std::string& f) { return !f.empty() && AnyGlob(r.frames, f); })) {
    return false;
  }
  return true;
}

std::string Fill(std::string_view hint, const std::string& what) {
  std::string out(hint);
  if (const size_t at = out.find("%s"); at != std::string::npos) out.replace(at, 2, what);
  return out;
}

}  // namespace

std::span<const HintRule> HintRules() { return kRules; }

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Iterative glob with backtracking to the last '*' (linear in practice).
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string HintFor(StallClass c, const std::string& syscall, const std::string& fd_target,
                    const std::vector<std::string>& functions) {
  switch (c) {
    case StallClass::kCpu:
      return "The loop thread was computing: move CPU-heavy work (parsing, hashing, compression, "
             "big loops) to a worker thread or process, or split it into chunks that yield to "
             "the loop.";
    case StallClass::kBlocked: {
      std::string what = syscall.empty() ? "a blocking call" : syscall + "()";
      if (!fd_target.empty()) what += " on " + fd_target;
      for (const HintRule& r : kRules) {
        if (RuleMatches(r, syscall, fd_target, functions)) return Fill(r.hint, what);
      }
      if (syscall == "futex") {
        return "The loop thread waited for a lock (futex): do not take locks held by slow "
               "threads on the loop; hand the work to a thread pool and post the result back.";
      }
      if (syscall.find("sleep") != std::string::npos) {
        return "The loop thread slept in " + what +
               ": replace the sleep with a loop timer (evtimer_add) so other events keep being "
               "served.";
      }
      return "The loop thread waited in " + what +
             ": use an asynchronous client for this call, or run it on a thread pool and "
             "answer from the loop.";
    }
    case StallClass::kStarved:
      return "The loop thread was ready to run but got no CPU (contention): reduce other load on "
             "this host, give the service more CPU, or run fewer busy threads than cores.";
    case StallClass::kSuspended:
      return "The whole process was paused (SIGSTOP, debugger, VM or container freeze): not the "
             "loop's own work; check the host, hypervisor or orchestrator.";
    case StallClass::kUnknown:
      break;
  }
  return "The loop made no progress; stacks and the syscall (if any) show where it was.";
}

Classification Classify(const ClassifierInput& in) {
  Classification c;
  const double wall = static_cast<double>(std::max<int64_t>(in.wall_ns, 1));
  c.cpu_ratio = in.cpu_ns >= 0 ? std::clamp(static_cast<double>(in.cpu_ns) / wall, 0.0, 1.0) : 0;
  c.wait_ratio =
      in.run_delay_ns >= 0 ? std::clamp(static_cast<double>(in.run_delay_ns) / wall, 0.0, 1.0) : 0;
  const double suspended = std::clamp(static_cast<double>(in.suspended_ns) / wall, 0.0, 1.0);
  if (suspended >= 0.5) {
    c.stall_class = StallClass::kSuspended;
  } else if (in.cpu_ns >= 0 && c.cpu_ratio >= 0.5) {
    c.stall_class = StallClass::kCpu;
  } else if (!in.syscall.empty() && in.samples > 0 && 2 * in.syscall_samples >= in.samples) {
    // Seen waiting in the same syscall most of the time: that is the cause, even if the thread
    // then queued for a CPU after the call returned.
    c.stall_class = StallClass::kBlocked;
  } else if (in.run_delay_ns >= 0 && c.wait_ratio >= 0.3 && c.wait_ratio >= c.cpu_ratio) {
    c.stall_class = StallClass::kStarved;
  } else if (!in.syscall.empty()) {
    c.stall_class = StallClass::kBlocked;
  } else if (in.cpu_ns >= 0 && c.cpu_ratio >= 0.2) {
    c.stall_class = StallClass::kCpu;
  } else if (in.seen_running) {
    c.stall_class = StallClass::kStarved;
  }
  c.hint = HintFor(c.stall_class, in.syscall, in.fd_target, in.functions);
  return c;
}

}  // namespace stallwatch::agent::internal
