// The blocking-call ledger end to end: a plain epoll loop in C (ledger_app.c) under the preload
// shim reports to a real stallwatchd over its Unix socket; the daemon's /api/v1/calls, its
// metrics and `stallwatch calls` show the loop's call sites with their exact counts.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>

#include "test_support.h"

using namespace std::chrono_literals;
using nlohmann::json;
using stallwatch::testing::CommandResult;
using stallwatch::testing::RunCommand;

namespace {

class Daemon {
 public:
  Daemon() {
    char dir[] = "/tmp/stallwatch-ledgerd-XXXXXX";
    if (mkdtemp(dir) == nullptr) {
      return;
    }
    dir_ = dir;
    sock_ = dir_ + "/agent.sock";
    port_ = stallwatch::testing::FreeLoopbackPort();
    const std::string http = "127.0.0.1:" + std::to_string(port_);
    pid_ = fork();
    if (pid_ == 0) {
      execl(SW_DAEMON, "stallwatchd", "--agent-socket", sock_.c_str(), "--http-listen",
            http.c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Daemon() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) {
      RunCommand("rm -rf " + dir_, 10s);
    }
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  bool Ready() const {
    return pid_ > 0 &&
           stallwatch::testing::WaitFor([&] { return access(sock_.c_str(), F_OK) == 0; }, 10s);
  }
  const std::string& sock() const { return sock_; }
  // Runs `program` under the shim (watchdog thread), reporting to this daemon as `service`;
  // `env`: more VAR=value words.
  CommandResult RunUnderShim(const std::string& service, const std::string& program,
                             const std::string& env = "") const {
    return RunCommand(std::string("env LD_PRELOAD=") + SW_PRELOAD_LIB +
                          " STALLWATCH_WATCHDOG=thread STALLWATCH_SERVICE=" + service + " " + env +
                          " STALLWATCH_ENDPOINT=unix:" + sock_ + " " + program + " 2>&1",
                      30s);
  }
  // /api/v1/calls?service=`service` once `ready` holds of it (10 s at most): true and the reply
  // in *reply, or false and the last reply.
  bool CallsOnceReady(const std::string& service, const std::function<bool(const json&)>& ready,
                      json* reply) const {
    return stallwatch::testing::WaitFor(
        [&] {
          *reply = json::parse(Get("/api/v1/calls?service=" + service), nullptr, false);
          return ready(*reply);
        },
        10s);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The body of GET path (curl: the status line is not needed; -w appends the HTTP code).
  std::string Get(const std::string& path, int* status = nullptr) const {
    const CommandResult r =
        RunCommand("curl -s -w '\\n%{http_code}' --max-time 5 '" + url() + path + "'", 10s);
    const size_t nl = r.out.rfind('\n');
    if (status != nullptr) {
      *status = nl == std::string::npos ? 0 : std::atoi(r.out.c_str() + nl + 1);
    }
    return nl == std::string::npos ? r.out : r.out.substr(0, nl);
  }

 private:
  std::string dir_, sock_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// The entry of (call, function) in a /api/v1/calls reply, or null.
json Entry(const json& reply, const std::string& call, const std::string& function) {
  for (const auto& c : reply.value("calls", json::array())) {
    if (c.value("call", "") == call && c["site"].value("function", "") == function) {
      return c;
    }
  }
  return nullptr;
}

TEST(Ledger, TheDaemonRanksTheLoopsCallSitesCountsThemAndTheCliShowsThem) {
  if (access("/usr/bin/curl", X_OK) != 0) {
    GTEST_SKIP() << "curl is needed (scripts/install-deps.sh installs it)";
  }
  Daemon d;
  ASSERT_TRUE(d.Ready()) << "stallwatchd did not create its socket";
  const CommandResult run = d.RunUnderShim("ledger-e2e", std::string(SW_LEDGER_APP) + " dirty 5");
  ASSERT_EQ(run.code, 0) << run.out;

  json reply;
  ASSERT_TRUE(d.CallsOnceReady(
      "ledger-e2e",
      [](const json& r) {
        const json dns = Entry(r, "getaddrinfo", "resolve_backend");
        return dns.is_object() && dns["count"] == 100;
      },
      &reply))
      << reply.dump(1);
  const json dns = Entry(reply, "getaddrinfo", "resolve_backend");
  EXPECT_EQ(dns["family"], "dns");
  EXPECT_NE(dns["site"]["file"].get<std::string>().find("ledger_app.c"), std::string::npos);
  EXPECT_GT(dns["site"]["line"].get<int>(), 0);
  EXPECT_GT(dns["total_s"].get<double>(), 0);
  EXPECT_GE(dns["max_s"].get<double>(), dns["p99_s"].get<double>());
  const json nap = Entry(reply, "usleep", "nap");
  ASSERT_TRUE(nap.is_object()) << reply.dump(1);
  EXPECT_EQ(nap["count"], 5);
  // 5 × usleep(2000): at least 10 ms in all, each at least 2 ms.
  EXPECT_GE(nap["total_s"].get<double>(), 0.0099);
  EXPECT_GE(nap["max_s"].get<double>(), 0.0019);
  // Most total time first.
  double previous = 1e9;
  for (const auto& c : reply["calls"]) {
    EXPECT_LE(c["total_s"].get<double>(), previous);
    previous = c["total_s"].get<double>();
  }
  // The worker thread's calls (no loop) are nowhere.
  EXPECT_TRUE(Entry(reply, "getaddrinfo", "worker_calls").is_null()) << reply.dump(1);

  const std::string metrics = d.Get("/metrics");
  const std::string series =
      "stallwatch_blocking_calls_total{call=\"getaddrinfo\",loop=\"main\","
      "process=\"0\",service=\"ledger-e2e\"} 100";
  EXPECT_NE(metrics.find(series), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("stallwatch_blocking_call_seconds_count{call=\"usleep\",loop=\"main\","
                         "process=\"0\",service=\"ledger-e2e\"} 5"),
            std::string::npos);

  // The CLI: one line per site, named with file:line, filtered by family.
  const CommandResult cli = RunCommand(
      std::string(SW_CLI) + " calls --daemon " + d.url() + " --service ledger-e2e 2>&1", 20s);
  ASSERT_EQ(cli.code, 0) << cli.out;
  EXPECT_NE(cli.out.find("ledger-e2e (process 0"), std::string::npos) << cli.out;
  EXPECT_TRUE(std::regex_search(
      cli.out, std::regex(R"(getaddrinfo from resolve_backend \([^)]*ledger_app\.c:[0-9]+\): )"
                          R"(100 calls, [0-9.]+(us|ms) p99, )")))
      << cli.out;
  EXPECT_TRUE(std::regex_search(
      cli.out, std::regex(R"(usleep from nap \([^)]*ledger_app\.c:[0-9]+\): 5 calls, )")))
      << cli.out;
  EXPECT_TRUE(std::regex_search(cli.out, std::regex(R"(fsync from sync_file \(.*\): 1 call, )")))
      << cli.out;
  const CommandResult dns_only =
      RunCommand(std::string(SW_CLI) + " calls --daemon " + d.url() + " --family dns 2>&1", 20s);
  ASSERT_EQ(dns_only.code, 0) << dns_only.out;
  EXPECT_NE(dns_only.out.find("getaddrinfo from"), std::string::npos) << dns_only.out;
  EXPECT_EQ(dns_only.out.find("usleep"), std::string::npos) << dns_only.out;
  const CommandResult as_json =
      RunCommand(std::string(SW_CLI) + " calls --daemon " + d.url() + " --json", 20s);
  ASSERT_EQ(as_json.code, 0);
  EXPECT_FALSE(json::parse(as_json.out, nullptr, false)["calls"].empty()) << as_json.out;

  // Bad input: one line naming the accepted form, a 400, and the daemon goes on.
  int status = 0;
  const std::string bad = d.Get("/api/v1/calls?call=gettimeofday", &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(bad.find("bad call 'gettimeofday': expected one of getaddrinfo|"), std::string::npos)
      << bad;
  const CommandResult bad_cli =
      RunCommand(std::string(SW_CLI) + " calls --daemon " + d.url() + " --family disk 2>&1", 20s);
  EXPECT_NE(bad_cli.code, 0);
  EXPECT_NE(bad_cli.out.find("--family"), std::string::npos) << bad_cli.out;
  EXPECT_EQ(d.Get("/healthz", &status), "ok\n");
}

// The file, socket, wait and lock families (ledger_io_app.c) through the daemon: the new names
// are labels of the fixed list, and `stallwatch calls --family` takes the new families.
TEST(Ledger, TheNewCallFamiliesReachTheDaemonAsCallsOfTheFixedList) {
  if (access("/usr/bin/curl", X_OK) != 0) {
    GTEST_SKIP() << "curl is needed (scripts/install-deps.sh installs it)";
  }
  Daemon d;
  ASSERT_TRUE(d.Ready()) << "stallwatchd did not create its socket";
  const CommandResult run = d.RunUnderShim("ledger-io", std::string(SW_LEDGER_IO_APP) + " io 10",
                                           "STALLWATCH_THRESHOLD=500ms");
  ASSERT_EQ(run.code, 0) << run.out;

  json reply;
  ASSERT_TRUE(d.CallsOnceReady(
      "ledger-io",
      [](const json& r) {
        const json pipe = Entry(r, "read_blocking", "pipe_blocking");
        return pipe.is_object() && pipe["count"] == 10;
      },
      &reply))
      << reply.dump(1);
  EXPECT_EQ(Entry(reply, "read_blocking", "pipe_blocking")["family"], "socket");
  const json pread = Entry(reply, "pread", "file_io");
  ASSERT_TRUE(pread.is_object()) << reply.dump(1);
  EXPECT_EQ(pread["count"], 10);
  EXPECT_EQ(pread["family"], "file");
  const json mutex = Entry(reply, "pthread_mutex_lock", "mutex_taken");
  ASSERT_TRUE(mutex.is_object()) << reply.dump(1);
  EXPECT_EQ(mutex["family"], "lock");
  EXPECT_TRUE(Entry(reply, "recv", "sock_nonblock").is_null()) << reply.dump(1);

  const std::string metrics = d.Get("/metrics");
  EXPECT_NE(metrics.find("stallwatch_blocking_calls_total{call=\"read_blocking\",loop=\"main\","
                         "process=\"0\",service=\"ledger-io\"} 20"),  // two sites of 10
            std::string::npos)
      << metrics;
  const CommandResult file_only =
      RunCommand(std::string(SW_CLI) + " calls --daemon " + d.url() + " --family file 2>&1", 20s);
  ASSERT_EQ(file_only.code, 0) << file_only.out;
  EXPECT_NE(file_only.out.find("pread from file_io ("), std::string::npos) << file_only.out;
  EXPECT_EQ(file_only.out.find("read_blocking"), std::string::npos) << file_only.out;
}

// STALLWATCH_LEDGER=off: the same loop and calls, watched as before (its delay windows go out),
// but no call is counted; with the switch at any other value they are.
TEST(Ledger, TheLedgerOffSwitchCountsNothingAndLeavesTheLoopWatched) {
  char path[] = "/tmp/stallwatch-ledger-off-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  auto kinds = [&](const char* value) {
    std::map<std::string, int> n;
    const CommandResult r =
        RunCommand(std::string("env LD_PRELOAD=") + SW_PRELOAD_LIB + " STALLWATCH_LEDGER=" + value +
                       " STALLWATCH_WATCHDOG=thread STALLWATCH_ENDPOINT=file:" + path + " " +
                       SW_LEDGER_APP + " dirty 5 2>&1",
                   30s);
    EXPECT_EQ(r.code, 0) << r.out;
    const CommandResult cat = RunCommand(std::string("cat ") + path, 10s);
    std::istringstream in(cat.out);
    std::string line;
    while (std::getline(in, line)) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_object()) {
        ++n[j.value("kind", "")];
      }
    }
    RunCommand(std::string(": > ") + path, 10s);
    return n;
  };
  const auto off = kinds("off");
  EXPECT_GE(off.count("delay") ? off.at("delay") : 0, 1);
  EXPECT_EQ(off.count("calls"), 0u);
  const auto on = kinds("yes");
  EXPECT_GE(on.count("calls") ? on.at("calls") : 0, 1);
  unlink(path);
}

}  // namespace
