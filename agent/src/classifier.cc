#include "classifier.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace stallwatch::agent::internal {

namespace {

using std::string_view_literals::operator""sv;  // NOLINT(misc-unused-using-decls): used below

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
// Blocking HTTP clients: Python's standard library and the common packages (their files), and
// libcurl's easy interface in native programs (its module).
constexpr std::array kHttpClients = {"*/http/client.py"sv, "*/urllib/request.py"sv,
                                     "*/urllib3/*"sv,      "*/requests/*"sv,
                                     "*/httpx/*"sv,        "*/libcurl*.so*"sv};
// Synchronous database clients: the C libraries and the Python drivers over them.
constexpr std::array kDbDrivers = {"*/libsqlite3.so*"sv, "*/_sqlite3.*"sv,      "*/sqlite3/*"sv,
                                   "*/libpq.so*"sv,      "*/_psycopg*"sv,       "*/psycopg2/*"sv,
                                   "*/psycopg/*"sv,      "*/libmysqlclient*"sv, "*/libmariadb*"sv,
                                   "*/pymysql/*"sv,      "*/MySQLdb/*"sv,       "*/_mysql*"sv};

constexpr std::string_view kDnsHint =
    "The loop thread waited in %s: a DNS lookup (getaddrinfo) on the loop; resolve "
    "asynchronously with libevent's evdns_getaddrinfo() (event2/dns.h), or cache the address "
    "and resolve off the loop.";

constexpr std::array kFutex = {"futex"sv};

const std::array<HintRule, 7> kRules = {{
    // A Python loop waiting for the GIL another thread holds (its fd_target names that thread).
    {"gil",
     kFutex,
     "GIL held by *",
     {},
     {},
     "The loop thread waited in %s: another thread of the interpreter kept the GIL; move that "
     "work to a process (ProcessPoolExecutor) or use calls that release the GIL."},
    // A UDP socket to port 53 (udp or udp6) is a DNS server, whichever library asked.
    {"dns-udp", kResolverWaits, "socket udp* -> *:53", {}, {}, kDnsHint},
    // The resolver's frames on the stack (a TCP fallback, a local cache over a unix socket …).
    {"dns-frames", {}, "", kResolverFrames, {}, kDnsHint},
    {"fsync",
     kFileWrites,
     "",
     {},
     {},
     "The loop thread waited in %s: flushing to disk blocks for as long as the device takes; "
     "batch the writes and flush on a worker thread, or drop the sync where durability allows."},
    // Before "connect": a client's connect is the client's, and so is its DNS lookup (above).
    {"http-client",
     {},
     "",
     {},
     kHttpClients,
     "The loop thread waited in %s inside a blocking HTTP client (libcurl's easy interface): "
     "drive the transfer from the loop with curl's multi interface (curl_multi_socket_action) or "
     "use libevent's evhttp client."},
    {"db-driver",
     {},
     "",
     {},
     kDbDrivers,
     "The loop thread waited in %s inside a synchronous database client (libpq, SQLite, MySQL): "
     "use the client's asynchronous API with its socket watched by the loop (libpq's "
     "PQsendQuery and PQsocket), or run the queries on a thread pool and answer from the loop."},
    {"connect",
     kConnects,
     "",
     {},
     {},
     "The loop thread waited in %s: a blocking connect; make the socket non-blocking and wait for "
     "it with an EV_WRITE event (or bufferevent_socket_connect())."},
}};

const std::array<RuntimeAdvice, 20> kAdvice = {{
    {"python", "gil",
     "The loop thread waited for the GIL (%s): that thread ran Python or a C call without "
     "releasing it, and the loop could not run; move that work to a process "
     "(loop.run_in_executor(ProcessPoolExecutor(), fn)), or use libraries that release the GIL."},
    {"python", "cpu",
     "The loop thread was running Python code: move CPU-heavy work to a process pool (await "
     "loop.run_in_executor(ProcessPoolExecutor(), fn)) or split it into chunks with await "
     "asyncio.sleep(0) between them."},
    {"python", "sleep",
     "The loop thread slept in %s: in a coroutine use await asyncio.sleep() (Tornado: await "
     "tornado.gen.sleep()) instead of time.sleep(), so other requests keep being served."},
    {"python", "futex",
     "The loop thread waited for a lock (futex): in Python often the GIL or a threading.Lock held "
     "by another thread; keep CPU-heavy threads out of the loop's process, or use asyncio.Lock."},
    {"python", "blocked",
     "The loop thread waited in %s: a blocking call in a coroutine (requests, urllib, a database "
     "driver); use an asyncio client (Tornado's AsyncHTTPClient, aiohttp, asyncpg, …) or run the "
     "call with await loop.run_in_executor(None, fn)."},
    {"python", "dns-udp",
     "The loop thread waited in %s: a DNS lookup (socket.getaddrinfo) on the loop; use await "
     "loop.getaddrinfo() or an asynchronous resolver (aiodns), or resolve once and cache."},
    {"python", "dns-frames",
     "The loop thread waited in %s: a DNS lookup (socket.getaddrinfo) on the loop; use await "
     "loop.getaddrinfo() or an asynchronous resolver (aiodns), or resolve once and cache."},
    {"python", "fsync",
     "The loop thread waited in %s: flushing to disk blocks for as long as the device takes; "
     "flush on a thread (await loop.run_in_executor(None, os.fsync, fd)) or batch the writes."},
    {"python", "http-client",
     "The loop thread waited in %s inside a blocking HTTP client (requests, urllib, http.client): "
     "use an asynchronous one (Tornado's AsyncHTTPClient, aiohttp, httpx.AsyncClient), or run the "
     "call with await loop.run_in_executor(None, fn)."},
    {"python", "db-driver",
     "The loop thread waited in %s inside a synchronous database driver (sqlite3, psycopg2, "
     "PyMySQL): use an asyncio driver (asyncpg, aiosqlite, aiomysql), or run the query with await "
     "loop.run_in_executor(None, fn) on a thread pool."},
    {"python", "connect",
     "The loop thread waited in %s: a blocking connect; use await asyncio.open_connection() (or "
     "loop.sock_connect() on a non-blocking socket)."},
    {"node", "cpu",
     "The loop thread was running JavaScript: move the work to a worker_threads Worker, or split "
     "it into chunks with setImmediate() between them."},
    {"node", "sleep",
     "The loop thread slept in %s: a synchronous sleep on the loop (child_process.execSync('sleep "
     "…'), Atomics.wait, a native addon); use setTimeout or timers/promises."},
    {"node", "futex",
     "The loop thread waited for a lock (futex): a synchronous call waiting for another thread "
     "(Atomics.wait, a native addon, a *Sync call served by the thread pool); use the asynchronous "
     "API."},
    {"node", "blocked",
     "The loop thread waited in %s: a synchronous call on the loop (fs.*Sync, "
     "child_process.*Sync, zlib.*Sync, a native addon); use the asynchronous API (fs.promises, "
     "child_process.exec, zlib's callbacks)."},
    {"redis", "cpu",
     "Redis's main thread ran one slow command (a Lua script, KEYS, SORT, a big DEL): find it with "
     "SLOWLOG GET and LATENCY DOCTOR; break the work up, use SCAN instead of KEYS and UNLINK "
     "instead of DEL."},
    {"redis", "sleep",
     "Redis's main thread slept in %s (DEBUG SLEEP, a module): no client is served meanwhile; "
     "remove the sleep."},
    {"redis", "futex",
     "Redis's main thread waited for a lock (futex): a module or I/O thread held it; check "
     "LATENCY DOCTOR and the modules loaded."},
    {"redis", "blocked",
     "Redis's main thread waited in %s: a blocking call on the main thread (a module, a slow "
     "disk); check LATENCY DOCTOR and SLOWLOG GET."},
    {"redis", "fsync",
     "Redis's main thread waited in %s: an fsync of the AOF or RDB on the main thread; use "
     "appendfsync everysec and no-appendfsync-on-rewrite yes, or a faster disk."},
}};

// The runtime's wording of case `what`, or "" (then the default wording applies).
std::string_view Advice(std::string_view runtime, std::string_view what) {
  if (runtime.empty()) {
    return {};
  }
  for (const RuntimeAdvice& a : kAdvice) {
    if (a.runtime == runtime && a.what == what) {
      return a.hint;
    }
  }
  return {};
}

bool AnyGlob(std::span<const std::string_view> patterns, std::string_view text) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](std::string_view p) { return !p.empty() && GlobMatch(p, text); });
}

// Some non-empty entry of `texts` matches one of `patterns`.
bool AnyMatches(std::span<const std::string_view> patterns, const std::vector<std::string>& texts) {
  return std::any_of(texts.begin(), texts.end(),
                     [&](const std::string& t) { return !t.empty() && AnyGlob(patterns, t); });
}

bool RuleMatches(const HintRule& r, const std::string& syscall, const std::string& fd_target,
                 const std::vector<std::string>& functions,
                 const std::vector<std::string>& places) {
  if (!r.syscalls.empty() &&
      std::find(r.syscalls.begin(), r.syscalls.end(), syscall) == r.syscalls.end()) {
    return false;
  }
  if (!r.fd_target.empty() && !GlobMatch(r.fd_target, fd_target)) {
    return false;
  }
  if (!r.frames.empty() && !AnyMatches(r.frames, functions)) {
    return false;
  }
  if (!r.places.empty() && !AnyMatches(r.places, places)) {
    return false;
  }
  return true;
}

std::string Fill(std::string_view hint, const std::string& what) {
  std::string out(hint);
  if (const size_t at = out.find("%s"); at != std::string::npos) {
    out.replace(at, 2, what);
  }
  return out;
}

}  // namespace

std::span<const HintRule> HintRules() { return kRules; }
std::span<const RuntimeAdvice> RuntimeAdviceTable() { return kAdvice; }

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
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

std::string HintFor(StallClass c, const std::string& syscall, const std::string& fd_target,
                    const std::vector<std::string>& functions, std::string_view runtime,
                    const std::vector<std::string>& places) {
  switch (c) {
    case StallClass::kCpu:
      if (auto a = Advice(runtime, "cpu"); !a.empty()) {
        return std::string(a);
      }
      return "The loop thread was computing: move CPU-heavy work (parsing, hashing, compression, "
             "big loops) to a worker thread or process, or split it into chunks that yield to "
             "the loop.";
    case StallClass::kBlocked: {
      std::string what = syscall.empty() ? "a blocking call" : syscall + "()";
      if (!fd_target.empty()) {
        what += " on " + fd_target;
      }
      for (const HintRule& r : kRules) {
        if (RuleMatches(r, syscall, fd_target, functions, places)) {
          const auto a = Advice(runtime, r.name);
          return Fill(a.empty() ? r.hint : a, what);
        }
      }
      const std::string_view fallback = syscall == "futex"                           ? "futex"
                                        : syscall.find("sleep") != std::string::npos ? "sleep"
                                                                                     : "blocked";
      if (auto a = Advice(runtime, fallback); !a.empty()) {
        return Fill(a, what);
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
  const bool wait_known = in.run_delay_ns >= 0 || in.steal_ns >= 0;
  const int64_t steal = std::max<int64_t>(in.steal_ns, 0);
  const int64_t waited = std::max<int64_t>(in.run_delay_ns, 0) + steal;
  c.wait_ratio = wait_known ? std::clamp(static_cast<double>(waited) / wall, 0.0, 1.0) : 0;
  const double suspended = std::clamp(static_cast<double>(in.suspended_ns) / wall, 0.0, 1.0);
  // The order of the tests is the rule (docs/design.md "Classification"); some classes appear
  // twice.
  // NOLINTBEGIN(bugprone-branch-clone)
  if (suspended >= 0.5) {
    c.stall_class = StallClass::kSuspended;
  } else if (in.cpu_ns >= 0 && c.cpu_ratio >= 0.5) {
    c.stall_class = StallClass::kCpu;
  } else if (!in.syscall.empty() && in.samples > 0 && 2 * in.syscall_samples >= in.samples) {
    // Seen waiting in the same syscall most of the time: that is the cause, even if the thread
    // then queued for a CPU after the call returned.
    c.stall_class = StallClass::kBlocked;
  } else if (wait_known && c.wait_ratio >= 0.3 && c.wait_ratio >= c.cpu_ratio) {
    c.stall_class = StallClass::kStarved;
  } else if (!in.syscall.empty()) {
    c.stall_class = StallClass::kBlocked;
  } else if (in.cpu_ns >= 0 && c.cpu_ratio >= 0.2) {
    c.stall_class = StallClass::kCpu;
  } else if (in.seen_running) {
    c.stall_class = StallClass::kStarved;
  }
  // NOLINTEND(bugprone-branch-clone)
  c.hint = HintFor(c.stall_class, in.syscall, in.fd_target, in.functions, in.runtime, in.places);
  if (c.stall_class == StallClass::kStarved && 2 * steal >= std::max<int64_t>(waited, 1)) {
    // Mostly stolen: the contention is outside this machine.
    const int pct = static_cast<int>(std::lround(100.0 * std::min(1.0, steal / wall)));
    c.hint = "The loop thread was ready to run but its virtual CPU was not (hypervisor steal " +
             std::to_string(pct) +
             "% of the stall): the host is overcommitted; move the VM, ask for dedicated "
             "vCPUs, or check the hypervisor's load.";
  }
  return c;
}

}  // namespace stallwatch::agent::internal
