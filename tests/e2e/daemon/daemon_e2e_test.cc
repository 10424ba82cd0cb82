// stallwatchd + an instrumented program + Prometheus, all real processes on loopback. The test
// starts each process itself and stops only those (by pid).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "http_get.h"
#include "test_support.h"

namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kPrometheus = "/usr/bin/prometheus";
constexpr const char* kPromtool = "/usr/bin/promtool";

int FreePort() { return stallwatch::testing::FreeLoopbackPort(); }

// A child process with its output in a log file; killed (SIGTERM, then SIGKILL) on destruction.
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& log,
        const std::vector<std::pair<std::string, std::string>>& env = {}) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      for (const auto& [k, v] : env) {
        ::setenv(k.c_str(), v.c_str(), 1);
      }
      std::vector<char*> args;
      args.reserve(argv.size() + 1);
      for (auto& a : argv) {
        args.push_back(a.data());
      }
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~Child() { Stop(); }
  pid_t pid() const { return pid_; }
  // Waits for exit within timeout; returns the exit status or -1.
  int Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }
  int Stop() {
    if (pid_ <= 0) {
      return 0;
    }
    ::kill(pid_, SIGCONT);  // in case a failed test left it stopped
    ::kill(pid_, SIGTERM);
    int rc = Wait(10s);
    if (rc < 0 && pid_ > 0) {
      ::kill(pid_, SIGKILL);
      rc = Wait(5s);
    }
    return rc;
  }

 private:
  pid_t pid_ = -1;
};

std::string HttpGet(int port, const std::string& path, int* status = nullptr) {
  auto r = stallwatch::cli::HttpGet("http://127.0.0.1:" + std::to_string(port) + path, 5s);
  if (status) {
    *status = r.ok() ? r->status : 0;
  }
  return r.ok() ? r->body : "";
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  char b[4];
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '-' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      std::snprintf(b, sizeof(b), "%%%02X", c);
      out += b;
    }
  }
  return out;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  return stallwatch::testing::WaitFor(pred, timeout, 250ms);
}

// Result vector of an instant query, or an empty array.
json Query(int port, const std::string& promql) {
  const std::string body = HttpGet(port, "/api/v1/query?query=" + UrlEncode(promql));
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "success") {
    return json::array();
  }
  return j["data"]["result"];
}

double Value(const json& sample) { return std::stod(sample["value"][1].get<std::string>()); }

// stallwatchd on a private agent socket and a free loopback port, and Debian's Prometheus
// scraping it every second, in a fresh directory that holds their logs. Both stop with the
// object (or before, by their Stop); the directory is removed when the test passed.
struct ScrapedDaemon {
  std::string dir;
  std::string sock;
  int http_port = FreePort();
  int prom_port = FreePort();
  std::unique_ptr<Child> daemon;
  std::unique_ptr<Child> prometheus;

  // `prometheus_flags` are added to Prometheus's command line.
  void Start(const std::string& log_level, const std::vector<std::string>& prometheus_flags) {
    char tmpl[] = "/tmp/swe2e.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
    sock = dir + "/run/agent.sock";
    daemon = std::make_unique<Child>(
        std::vector<std::string>{SW_STALLWATCHD, "--agent-socket", sock, "--http-listen",
                                 "127.0.0.1:" + std::to_string(http_port), "--log-level",
                                 log_level},
        dir + "/stallwatchd.log");
    ASSERT_TRUE(WaitFor(
        [&] {
          int st = 0;
          return HttpGet(http_port, "/healthz", &st) == "ok\n" && st == 200;
        },
        20s))
        << "stallwatchd did not come up; see " << dir << "/stallwatchd.log";
    {
      std::ofstream cfg(dir + "/prometheus.yml");
      cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
          << "scrape_configs:\n  - job_name: stallwatch\n    static_configs:\n"
          << "      - targets: ['127.0.0.1:" << http_port << "']\n";
    }
    std::vector<std::string> argv = {kPrometheus, "--config.file=" + dir + "/prometheus.yml",
                                     "--storage.tsdb.path=" + dir + "/data",
                                     "--web.listen-address=127.0.0.1:" + std::to_string(prom_port),
                                     "--log.level=warn"};
    argv.insert(argv.end(), prometheus_flags.begin(), prometheus_flags.end());
    prometheus = std::make_unique<Child>(std::move(argv), dir + "/prometheus.log");
  }
  ~ScrapedDaemon() {
    prometheus.reset();
    daemon.reset();
    if (!dir.empty() && !::testing::Test::HasFailure()) {
      std::filesystem::remove_all(dir);
    }
  }
};

TEST(DaemonE2E, PrometheusScrapesStallsAndDelayFromTheDaemon) {
  if (::access(kPrometheus, X_OK) != 0 || ::access(kPromtool, X_OK) != 0) {
    GTEST_SKIP() << "needs Debian's prometheus package (" << kPrometheus << ", " << kPromtool
                 << ")";
  }
  ScrapedDaemon e2e;
  ASSERT_NO_FATAL_FAILURE(e2e.Start("debug", {}));
  const std::string& dir = e2e.dir;
  const std::string& sock = e2e.sock;
  const int http_port = e2e.http_port;
  const int prom_port = e2e.prom_port;

  // The instrumented program: one 300 ms CPU stall and one 200 ms sleep on its loop.
  Child demo({SW_STALL_DEMO}, dir + "/stall_demo.log",
             {{"STALLWATCH_ENDPOINT", "unix:" + sock}, {"STALLWATCH_SERVICE", "e2e_demo"}});
  EXPECT_EQ(demo.Wait(60s), 0) << "see " << dir << "/stall_demo.log";

  // Prometheus scraped the daemon and holds the stalls by class.
  json stalls;
  ASSERT_TRUE(WaitFor(
      [&] {
        json sum = Query(prom_port, "sum(stallwatch_stalls_total{service=\"e2e_demo\"})");
        return sum.size() == 1 && Value(sum[0]) >= 2;
      },
      90s))
      << "Prometheus never saw both stalls; logs in " << dir;
  stalls = Query(prom_port, "stallwatch_stalls_total{service=\"e2e_demo\"} > 0");
  std::set<std::string> classes;
  double total = 0;
  for (const auto& s : stalls) {
    classes.insert(s["metric"]["class"].get<std::string>());
    total += Value(s);
  }
  // The two injected stalls; a loaded machine may add a short starved one (startup).
  EXPECT_GE(total, 2.0) << stalls.dump();
  EXPECT_TRUE(classes.count("blocked")) << stalls.dump();
  // The CPU burn is "cpu", or "starved" when the machine's other work kept it off the CPU.
  EXPECT_TRUE(classes.count("cpu") || classes.count("starved")) << stalls.dump();

  // The delay histogram: the stalls' late ticks show above 100 ms.
  json slow = Query(prom_port,
                    "sum(stallwatch_loop_delay_seconds_count{service=\"e2e_demo\"}) - "
                    "sum(stallwatch_loop_delay_seconds_bucket{service=\"e2e_demo\",le=\"0.1\"})");
  ASSERT_EQ(slow.size(), 1u) << slow.dump();
  EXPECT_GT(Value(slow[0]), 0.0);
  json p100 = Query(prom_port,
                    "histogram_quantile(1, sum by (le) "
                    "(stallwatch_loop_delay_seconds_bucket{service=\"e2e_demo\"}))");
  ASSERT_EQ(p100.size(), 1u) << p100.dump();
  EXPECT_GE(Value(p100[0]), 0.1);
  json duration = Query(prom_port, "stallwatch_stall_duration_seconds_count{service=\"e2e_demo\"}");
  ASSERT_EQ(duration.size(), 1u);
  EXPECT_EQ(Value(duration[0]), total) << "every counted stall has its duration observed";

  // promtool accepts the exposition.
  {
    std::ofstream out(dir + "/metrics.txt");
    out << HttpGet(http_port, "/metrics");
  }
  const std::string cmd = std::string(kPromtool) + " check metrics < " + dir + "/metrics.txt > " +
                          dir + "/promtool.log 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "see " << dir << "/promtool.log";

  // A SIGSTOPped daemon changes nothing for the host: the demo runs and exits as before, its
  // stalls are the injected ones only. (Its findings wait in the socket buffer.)
  ::kill(e2e.daemon->pid(), SIGSTOP);
  const auto t0 = std::chrono::steady_clock::now();
  Child frozen_demo(
      {SW_STALL_DEMO}, dir + "/stall_demo_stopped.log",
      {{"STALLWATCH_ENDPOINT", "unix:" + sock}, {"STALLWATCH_SERVICE", "e2e_stopped"}});
  EXPECT_EQ(frozen_demo.Wait(30s), 0) << "see " << dir << "/stall_demo_stopped.log";
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 10s) << "the demo takes ~1.5 s; a stopped daemon must not hold it";
  ::kill(e2e.daemon->pid(), SIGCONT);
  // Once it runs again, the daemon catches up with what the agent left in the socket.
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string m = HttpGet(http_port, "/metrics");
        return m.find("service=\"e2e_stopped\"") != std::string::npos;
      },
      20s));

  EXPECT_EQ(e2e.prometheus->Stop(), 0);
  EXPECT_EQ(e2e.daemon->Stop(), 0) << "SIGTERM stops stallwatchd cleanly";
  struct stat st {};
  EXPECT_NE(::lstat(sock.c_str(), &st), 0) << "the daemon removed its socket";
}

// The exemplar round trip: Prometheus (exemplar storage on) scrapes the daemon, which answers
// its Accept header with OpenMetrics; the stall duration buckets' exemplars reach Prometheus's
// exemplar API, and the stall each names — with its series' service and loop — is one the
// daemon's stall API (what its web UI's stall page reads) returns.
TEST(DaemonE2E, PrometheusExemplarsNameStallsTheDaemonResolves) {
  if (::access(kPrometheus, X_OK) != 0) {
    GTEST_SKIP() << "needs Debian's prometheus package (" << kPrometheus << ")";
  }
  ScrapedDaemon e2e;
  ASSERT_NO_FATAL_FAILURE(e2e.Start("info", {"--enable-feature=exemplar-storage"}));
  const std::string& dir = e2e.dir;
  const std::string& sock = e2e.sock;
  const int http_port = e2e.http_port;
  const int prom_port = e2e.prom_port;

  // One 300 ms CPU stall and one 200 ms sleep: two closed stalls, in two buckets.
  Child demo({SW_STALL_DEMO}, dir + "/stall_demo.log",
             {{"STALLWATCH_ENDPOINT", "unix:" + sock}, {"STALLWATCH_SERVICE", "e2e_exemplar"}});
  EXPECT_EQ(demo.Wait(60s), 0) << "see " << dir << "/stall_demo.log";

  const auto exemplars = [&] {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    const std::string body = HttpGet(
        prom_port,
        "/api/v1/query_exemplars?query=" +
            UrlEncode("stallwatch_stall_duration_seconds_bucket{service=\"e2e_exemplar\"}") +
            "&start=" + std::to_string(now - 3600) + "&end=" + std::to_string(now + 60));
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") {
      return json::array();
    }
    return j["data"];
  };
  json found;
  ASSERT_TRUE(WaitFor(
      [&] {
        found = exemplars();
        size_t n = 0;
        for (const auto& series : found) {
          n += series["exemplars"].size();
        }
        return n >= 2;
      },
      90s))
      << "Prometheus holds no exemplars of both stalls: " << found.dump() << "; logs in " << dir;

  std::set<std::string> ids;
  for (const auto& series : found) {
    const json& labels = series["seriesLabels"];
    for (const auto& e : series["exemplars"]) {
      const std::string pid = e["labels"]["pid"].get<std::string>();
      const std::string id = e["labels"]["stall_id"].get<std::string>();
      ids.insert(id);
      // What the web UI's stall page asks the API for (/?view=stall&service=&pid=&loop=&id=).
      std::string path = "/api/v1/stalls?service=";
      path += UrlEncode(labels["service"].get<std::string>());
      path += "&pid=" + pid;
      path += "&loop=" + UrlEncode(labels["loop"].get<std::string>());
      path += "&id=" + id;
      int status = 0;
      const json stalls = json::parse(HttpGet(http_port, path, &status), nullptr, false);
      ASSERT_EQ(status, 200) << path;
      ASSERT_FALSE(stalls.is_discarded()) << path;
      ASSERT_EQ(stalls["stalls"].size(), 1u) << path << " " << stalls.dump();
      const json& stall = stalls["stalls"][0];
      EXPECT_EQ(std::to_string(stall["stall_id"].get<uint64_t>()), id);
      EXPECT_EQ(std::to_string(stall["pid"].get<int64_t>()), pid);
      EXPECT_FALSE(stall["ongoing"].get<bool>());
      // The exemplar's value is the stall's exact duration, within the series' bucket.
      const double value = std::stod(e["value"].get<std::string>());
      EXPECT_NEAR(value, stall["duration_s"].get<double>(), 1e-6) << e.dump();
      const std::string le = labels["le"].get<std::string>();
      if (le != "+Inf") {
        EXPECT_LE(value, std::stod(le)) << e.dump();
      }
      // The page itself is served at that address (it renders the stall from the same API).
      std::string page = "/?view=stall&service=";
      page += UrlEncode(labels["service"].get<std::string>());
      page += "&pid=" + pid;
      page += "&id=" + id;
      HttpGet(http_port, page, &status);
      EXPECT_EQ(status, 200);
    }
  }
  EXPECT_GE(ids.size(), 2u) << found.dump();

  EXPECT_EQ(e2e.prometheus->Stop(), 0);
  EXPECT_EQ(e2e.daemon->Stop(), 0);
}

}  // namespace
