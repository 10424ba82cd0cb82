#include "classifier.h"

#include <gtest/gtest.h>

namespace stallwatch::agent::internal {
namespace {

constexpr int64_t kMs = 1'000'000;

TEST(Classify, BurningCpuIsCpu) {
  auto c = Classify({.wall_ns = 100 * kMs, .cpu_ns = 97 * kMs, .run_delay_ns = 1 * kMs});
  EXPECT_EQ(c.stall_class, StallClass::kCpu);
  EXPECT_NEAR(c.cpu_ratio, 0.97, 1e-9);
  EXPECT_NE(c.hint.find("worker"), std::string::npos);
}

TEST(Classify, WaitingInASyscallIsBlockedWithItsTarget) {
  auto c = Classify({.wall_ns = 100 * kMs,
                     .cpu_ns = 0,
                     .run_delay_ns = 0,
                     .syscall = "read",
                     .fd_target = "socket tcp 127.0.0.1:4000 -> 127.0.0.1:5432"});
  EXPECT_EQ(c.stall_class, StallClass::kBlocked);
  EXPECT_NE(c.hint.find("read() on socket tcp"), std::string::npos);
  EXPECT_NE(c.hint.find("thread pool"), std::string::npos);
}

TEST(Classify, SleepGetsATimerHint) {
  auto c = Classify(
      {.wall_ns = 100 * kMs, .cpu_ns = 0, .run_delay_ns = 0, .syscall = "clock_nanosleep"});
  EXPECT_EQ(c.stall_class, StallClass::kBlocked);
  EXPECT_NE(c.hint.find("timer"), std::string::npos);
}

TEST(Classify, RunnableButNotRunningIsStarved) {
  auto c = Classify(
      {.wall_ns = 100 * kMs, .cpu_ns = 30 * kMs, .run_delay_ns = 65 * kMs, .seen_running = true});
  EXPECT_EQ(c.stall_class, StallClass::kStarved);
  EXPECT_NEAR(c.wait_ratio, 0.65, 1e-9);
}

TEST(Classify, StealCountsAsWaitingForACpu) {
  // A busy loop on a vCPU the hypervisor preempted a third of the time: its CPU clock stops
  // while the vCPU is not running, and the guest's run queue does not see the wait.
  auto c = Classify({.wall_ns = 100 * kMs,
                     .cpu_ns = 62 * kMs,
                     .run_delay_ns = 3 * kMs,
                     .steal_ns = 33 * kMs,
                     .seen_running = true});
  EXPECT_EQ(c.stall_class, StallClass::kCpu);
  EXPECT_NEAR(c.wait_ratio, 0.36, 1e-9);
  EXPECT_NEAR(c.cpu_ratio + c.wait_ratio, 0.98, 1e-9);
  EXPECT_EQ(c.hint.find("steal"), std::string::npos);  // computing was the cause
}

TEST(Classify, AStallMostlyStolenSaysSo) {
  auto c = Classify({.wall_ns = 100 * kMs,
                     .cpu_ns = 20 * kMs,
                     .run_delay_ns = 5 * kMs,
                     .steal_ns = 70 * kMs,
                     .seen_running = true});
  EXPECT_EQ(c.stall_class, StallClass::kStarved);
  EXPECT_NEAR(c.wait_ratio, 0.75, 1e-9);
  EXPECT_NE(c.hint.find("hypervisor steal 70%"), std::string::npos) << c.hint;
  // Starved by this machine's own load: the ordinary hint.
  auto local = Classify({.wall_ns = 100 * kMs,
                         .cpu_ns = 20 * kMs,
                         .run_delay_ns = 70 * kMs,
                         .steal_ns = 5 * kMs,
                         .seen_running = true});
  EXPECT_EQ(local.stall_class, StallClass::kStarved);
  EXPECT_EQ(local.hint.find("steal"), std::string::npos) << local.hint;
  EXPECT_NE(local.hint.find("contention"), std::string::npos) << local.hint;
}

TEST(Classify, StealAloneMakesTheWaitKnown) {
  auto c = Classify({.wall_ns = 100 * kMs, .cpu_ns = 10 * kMs, .steal_ns = 80 * kMs});
  EXPECT_EQ(c.stall_class, StallClass::kStarved);
  EXPECT_NEAR(c.wait_ratio, 0.8, 1e-9);
}

TEST(Classify, PausedProcessIsSuspendedEvenIfItWasComputing) {
  auto c = Classify({.wall_ns = 100 * kMs, .cpu_ns = 40 * kMs, .suspended_ns = 60 * kMs});
  EXPECT_EQ(c.stall_class, StallClass::kSuspended);
  EXPECT_NE(c.hint.find("paused"), std::string::npos);
}

TEST(Classify, MutexWaitIsBlockedOnALock) {
  auto c = Classify({.wall_ns = 100 * kMs, .cpu_ns = 0, .run_delay_ns = 0, .syscall = "futex"});
  EXPECT_EQ(c.stall_class, StallClass::kBlocked);
  EXPECT_NE(c.hint.find("lock"), std::string::npos);
}

TEST(Classify, NothingKnownIsUnknownNotAGuess) {
  auto c = Classify({.wall_ns = 100 * kMs});
  EXPECT_EQ(c.stall_class, StallClass::kUnknown);
  EXPECT_FALSE(c.hint.empty());
}

TEST(GlobMatch, StarsAndLiterals) {
  EXPECT_TRUE(GlobMatch("socket udp* -> *:53", "socket udp 127.0.0.1:40000 -> 127.0.0.1:53"));
  EXPECT_TRUE(GlobMatch("socket udp* -> *:53", "socket udp6 [::1]:40000 -> [::1]:53"));
  EXPECT_FALSE(GlobMatch("socket udp* -> *:53", "socket udp 10.0.0.1:4000 -> 10.0.0.2:5353"));
  EXPECT_FALSE(GlobMatch("socket udp* -> *:53", "socket tcp 127.0.0.1:4000 -> 127.0.0.1:53"));
  EXPECT_FALSE(GlobMatch("socket udp* -> *:53", "socket udp 0.0.0.0:53"));  // a DNS server
  EXPECT_TRUE(GlobMatch("*getaddrinfo*", "__GI_getaddrinfo"));
  EXPECT_TRUE(GlobMatch("res_*", "res_nquery"));
  EXPECT_FALSE(GlobMatch("res_*", "parse_res_x"));
  EXPECT_TRUE(GlobMatch("", ""));
  EXPECT_TRUE(GlobMatch("*", ""));
}

ClassifierInput Blocked(std::string syscall, std::string fd_target,
                        std::vector<std::string> functions = {}) {
  return {.wall_ns = 100 * kMs,
          .cpu_ns = 0,
          .run_delay_ns = 0,
          .syscall = std::move(syscall),
          .fd_target = std::move(fd_target),
          .functions = std::move(functions)};
}

// One test per row of the hint table.
TEST(HintTable, DnsUdpRowAPollOnAUdpSocketToPort53IsALookup) {
  for (const char* sys : {"poll", "recvfrom", "recvmsg", "read"}) {
    auto c = Classify(Blocked(sys, "socket udp 127.0.0.1:41234 -> 127.0.0.1:53"));
    EXPECT_EQ(c.stall_class, StallClass::kBlocked);
    EXPECT_NE(c.hint.find("evdns_getaddrinfo()"), std::string::npos) << sys << ": " << c.hint;
    EXPECT_NE(c.hint.find(std::string(sys) + "() on socket udp"), std::string::npos) << c.hint;
  }
  auto v6 = Classify(Blocked("poll", "socket udp6 [::1]:41234 -> [::1]:53"));
  EXPECT_NE(v6.hint.find("evdns_getaddrinfo()"), std::string::npos) << v6.hint;
  // Another UDP port, or TCP to 53 with no resolver frames, is not (yet) evidence of DNS.
  EXPECT_EQ(
      Classify(Blocked("poll", "socket udp 127.0.0.1:41234 -> 127.0.0.1:5353")).hint.find("evdns"),
      std::string::npos);
  EXPECT_EQ(
      Classify(Blocked("recvfrom", "socket tcp 127.0.0.1:4 -> 127.0.0.1:53")).hint.find("evdns"),
      std::string::npos);
  // A write to the resolver is not a wait for it.
  EXPECT_EQ(Classify(Blocked("sendmmsg", "socket udp 127.0.0.1:41234 -> 127.0.0.1:53"))
                .hint.find("evdns"),
            std::string::npos);
}

TEST(HintTable, DnsFramesRowResolverFunctionsOnTheStackAreALookup) {
  for (const char* fn : {"getaddrinfo", "__res_context_send", "res_nquery", "gethostbyname_r",
                         "_nss_dns_gethostbyname4_r"}) {
    auto c = Classify(Blocked("poll", "socket tcp 127.0.0.1:4 -> 10.0.0.1:53",
                              {"__GI___poll", fn, "handler", "event_base_loop"}));
    EXPECT_NE(c.hint.find("evdns_getaddrinfo()"), std::string::npos) << fn << ": " << c.hint;
  }
  auto none = Classify(Blocked("poll", "socket tcp 127.0.0.1:4 -> 10.0.0.1:5432",
                               {"__GI___poll", "PQexec", "handler"}));
  EXPECT_EQ(none.hint.find("evdns"), std::string::npos) << none.hint;
}

TEST(HintTable, FsyncRowFlushingOnTheLoop) {
  auto c = Classify(Blocked("fdatasync", "/var/lib/app/journal"));
  EXPECT_NE(c.hint.find("fdatasync() on /var/lib/app/journal"), std::string::npos) << c.hint;
  EXPECT_NE(c.hint.find("worker thread"), std::string::npos) << c.hint;
}

TEST(HintTable, ConnectRowABlockingConnect) {
  auto c = Classify(Blocked("connect", "socket tcp 10.0.0.1:4 -> 10.0.0.2:5432"));
  EXPECT_NE(c.hint.find("blocking connect"), std::string::npos) << c.hint;
  EXPECT_NE(c.hint.find("EV_WRITE"), std::string::npos) << c.hint;
}

// Evidence from where the frames are: a module's path or a Python frame's file.
ClassifierInput BlockedIn(const std::string& syscall, const std::string& fd_target,
                          std::vector<std::string> places, std::string runtime = "") {
  ClassifierInput in = Blocked(syscall, fd_target);
  in.places = std::move(places);
  in.runtime = std::move(runtime);
  return in;
}

TEST(HintTable, GilRowAPythonLoopWaitingForTheGil) {
  const std::string holder = "GIL held by thread 4242 (cruncher) in crunch (app.py:7)";
  auto py = Classify(BlockedIn("futex", holder, {"/usr/bin/python3.11"}, "python"));
  EXPECT_NE(py.hint.find("waited for the GIL (futex() on " + holder + ")"), std::string::npos)
      << py.hint;
  EXPECT_NE(py.hint.find("ProcessPoolExecutor"), std::string::npos) << py.hint;
  // Any other futex wait of a Python loop (a threading.Lock) keeps the lock hint.
  auto lock = Classify(BlockedIn("futex", "", {"/usr/bin/python3.11"}, "python"));
  EXPECT_EQ(lock.hint.find("waited for the GIL"), std::string::npos) << lock.hint;
  EXPECT_NE(lock.hint.find("lock (futex)"), std::string::npos) << lock.hint;
}

TEST(HintTable, HttpClientRowABlockingHttpClientOfAnyLanguage) {
  const std::string up = "socket tcp 127.0.0.1:4 -> 127.0.0.1:8080";
  for (const char* file :
       {"/usr/lib/python3.11/http/client.py", "/usr/lib/python3.11/urllib/request.py",
        "/usr/lib/python3/dist-packages/requests/sessions.py",
        "/usr/lib/python3/dist-packages/urllib3/connectionpool.py"}) {
    auto c = Classify(
        BlockedIn("poll", up, {"/usr/bin/python3.11", file, "/app/handlers.py"}, "python"));
    EXPECT_NE(c.hint.find("blocking HTTP client"), std::string::npos) << file << ": " << c.hint;
    EXPECT_NE(c.hint.find("AsyncHTTPClient"), std::string::npos) << file << ": " << c.hint;
    EXPECT_NE(c.hint.find("poll() on " + up), std::string::npos) << c.hint;
  }
  // A native program in libcurl's easy interface, connecting: the client's, not a bare connect.
  auto curl = Classify(
      BlockedIn("connect", up, {"/usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0", "/usr/bin/app"}));
  EXPECT_NE(curl.hint.find("curl_multi_socket_action"), std::string::npos) << curl.hint;
  // The same poll with no client on the stack keeps the runtime's generic wording.
  auto plain = Classify(BlockedIn("poll", up, {"/usr/bin/python3.11", "/app/x.py"}, "python"));
  EXPECT_EQ(plain.hint.find("HTTP client"), std::string::npos) << plain.hint;
}

TEST(HintTable, DbDriverRowASynchronousDatabaseDriver) {
  auto py = Classify(BlockedIn(
      "clock_nanosleep", "",
      {"/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6",
       "/usr/lib/python3.11/lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so", "/app/db.py"},
      "python"));
  EXPECT_NE(py.hint.find("synchronous database driver"), std::string::npos) << py.hint;
  EXPECT_NE(py.hint.find("aiosqlite"), std::string::npos) << py.hint;
  EXPECT_NE(py.hint.find("clock_nanosleep()"), std::string::npos) << py.hint;
  auto c = Classify(BlockedIn("poll", "socket tcp 10.0.0.1:4 -> 10.0.0.2:5432",
                              {"/usr/lib/x86_64-linux-gnu/libpq.so.5.15", "/usr/sbin/app"}));
  EXPECT_NE(c.hint.find("PQsendQuery"), std::string::npos) << c.hint;
  // A CPU-bound query is a CPU stall: the table is for blocked stalls only.
  ClassifierInput cpu = BlockedIn("poll", "", {"/usr/lib/x86_64-linux-gnu/libpq.so.5.15"});
  cpu.cpu_ns = 95 * kMs;
  EXPECT_EQ(Classify(cpu).hint.find("PQsendQuery"), std::string::npos);
}

TEST(HintTable, EveryRowIsTestedAndRowsOnlyApplyToBlockedStalls) {
  std::vector<std::string> names;
  for (const HintRule& r : HintRules()) {
    names.emplace_back(r.name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"gil", "dns-udp", "dns-frames", "fsync", "http-client",
                                             "db-driver", "connect"}));
  ClassifierInput cpu = Blocked("poll", "socket udp 127.0.0.1:41234 -> 127.0.0.1:53");
  cpu.cpu_ns = 95 * kMs;
  EXPECT_EQ(Classify(cpu).hint.find("evdns"), std::string::npos);
}

}  // namespace
}  // namespace stallwatch::agent::internal
