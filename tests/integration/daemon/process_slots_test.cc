// Process slots over the daemon's real socket (docs/daemon.md, "Process slots"): series are
// labelled with a process's slot in its service, not its pid, so that restarts and pre-forked
// workers keep one set of series per process running at once.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace stallwatch::daemon {
namespace {

using namespace std::chrono_literals;
using testing::DaemonOptionsIn;
using testing::DaemonThread;
using testing::MetricValue;
using testing::RawClient;
using testing::SeriesLines;
using testing::TempDir;
using testing::WaitFor;

// Starts the real instrumented example program (a libevent loop with the agent attached: one
// cpu and one blocking stall, then exit) as service `service`, reporting to `socket`.
pid_t StartDemo(const std::string& socket, const std::string& service) {
  const std::string endpoint = "STALLWATCH_ENDPOINT=unix:" + socket;
  const std::string svc = "STALLWATCH_SERVICE=" + service;
  const std::string interval = "STALLWATCH_REPORT_INTERVAL=1s";
  char* const envp[] = {const_cast<char*>(endpoint.c_str()), const_cast<char*>(svc.c_str()),
                        const_cast<char*>(interval.c_str()), nullptr};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execle(SW_STALL_DEMO, SW_STALL_DEMO, static_cast<char*>(nullptr), envp);
    ::_exit(127);
  }
  return pid;
}

bool Exited0(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// The `process` label values of the series of `service`.
std::set<std::string> SlotsOf(const std::string& text, const std::string& service) {
  std::set<std::string> slots;
  for (const auto& s : SeriesLines(text)) {
    if (s.find("service=\"" + service + "\"") == std::string::npos) {
      continue;
    }
    const size_t at = s.find("process=\"");
    if (at != std::string::npos) {
      const size_t from = at + 9;
      slots.insert(s.substr(from, s.find('"', from) - from));
    }
  }
  return slots;
}

// Every finding of the demo run `pid` has arrived: the daemon holds the process and counted its
// two stalls (the slot's counters start from 0 with each new process, so these are its own).
bool RunArrived(const DaemonThread& d, const std::string& service, pid_t pid) {
  const std::string m = d.Metrics();
  const std::string svc = "service=\"" + service + "\"";
  const std::string p = "pid=\"" + std::to_string(pid) + "\"";
  const auto info = MetricValue(m, "stallwatch_process_info", {svc, p});
  if (!info) {
    return false;
  }
  // The slot this run holds, from its info series.
  std::string slot;
  for (const auto& s : SeriesLines(m)) {
    if (s.starts_with("stallwatch_process_info{") && s.find(p) != s.npos && s.find(svc) != s.npos) {
      const size_t from = s.find("process=\"") + 9;
      slot = "process=\"" + s.substr(from, s.find('"', from) - from) + "\"";
    }
  }
  // Two stalls of any class: on a busy machine the cpu one may be `starved`.
  double stalls = 0;
  std::istringstream in(m);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("stallwatch_stalls_total{") && line.find(svc) != line.npos &&
        line.find(slot) != line.npos) {
      stalls += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
    }
  }
  return stalls >= 2;
}

// The restart test of issue 16: a service restarted 10 times (a real program with the agent,
// a new pid each time, over the real socket) keeps the same number of series on /metrics. With
// a pid label each restart added ~51 series that stayed until --expire-after (5 min).
TEST(ProcessSlots, AServiceRestartedTenTimesKeepsTheSameSeries) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  std::vector<std::string> first;
  std::set<pid_t> pids;
  for (int run = 0; run <= 10; ++run) {
    const pid_t pid = StartDemo(o.agent_socket, "restarted");
    ASSERT_GT(pid, 0);
    pids.insert(pid);
    ASSERT_TRUE(Exited0(pid)) << "run " << run;
    ASSERT_TRUE(WaitFor([&] { return RunArrived(d, "restarted", pid); })) << "run " << run << "\n"
                                                                          << d.Metrics();
    const std::string m = d.Metrics();
    const std::vector<std::string> series = SeriesLines(m);
    if (run == 0) {
      first = series;
      EXPECT_GT(first.size(), 50u);
      continue;
    }
    EXPECT_EQ(series.size(), first.size()) << "after restart " << run << ":\n" << m;
    EXPECT_EQ(SlotsOf(m, "restarted"), std::set<std::string>{"0"}) << m;
    // The same series (labels), not only as many: only the info series names the new pid.
    std::set<std::string> now(series.begin(), series.end()), before(first.begin(), first.end());
    std::vector<std::string> added;
    for (const auto& s : now) {
      if (!before.count(s)) {
        added.push_back(s);
      }
    }
    ASSERT_EQ(added.size(), 1u) << "after restart " << run << ": "
                                << ::testing::PrintToString(added);
    EXPECT_TRUE(added[0].starts_with("stallwatch_process_info{")) << added[0];
    EXPECT_NE(added[0].find("pid=\"" + std::to_string(pid) + "\""), std::string::npos);
  }
  EXPECT_EQ(pids.size(), 11u) << "each run was a new process";
}

// stallwatch_process_info names the process's start time (Unix seconds), as its agent read it:
// the fork of the demo, within the margins of the boot time's 1 s resolution.
TEST(ProcessSlots, TheInfoSeriesNamesTheProcessStartTime) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  const auto unix_s = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t before = unix_s();
  const pid_t pid = StartDemo(o.agent_socket, "started");
  ASSERT_GT(pid, 0);
  const int64_t after_fork = unix_s();
  ASSERT_TRUE(Exited0(pid));
  ASSERT_TRUE(WaitFor([&] { return RunArrived(d, "started", pid); })) << d.Metrics();
  std::string info;
  for (const auto& s : SeriesLines(d.Metrics())) {
    if (s.starts_with("stallwatch_process_info{") &&
        s.find("pid=\"" + std::to_string(pid) + "\"") != std::string::npos) {
      info = s;
    }
  }
  ASSERT_FALSE(info.empty());
  const size_t at = info.find("start_time=\"");
  ASSERT_NE(at, std::string::npos) << info;
  const std::string value = info.substr(at + 12, info.find('"', at + 12) - at - 12);
  ASSERT_FALSE(value.empty()) << info;
  ASSERT_EQ(value.find_first_not_of("0123456789"), std::string::npos) << info;
  const int64_t start = std::stoll(value);
  EXPECT_GE(start, before - 2) << info;
  EXPECT_LE(start, after_fork + 2) << info;
}

// Pre-forked workers: W processes of one service running at once hold slots 0 … W-1, and a
// second generation of W workers takes the same slots over: still W series sets.
TEST(ProcessSlots, ConcurrentProcessesHoldOneSlotEachAndTheirSuccessorsTakeThemOver) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  constexpr int kWorkers = 3;
  size_t series_first = 0;
  for (int generation = 0; generation < 2; ++generation) {
    std::vector<pid_t> workers;
    for (int w = 0; w < kWorkers; ++w) {
      workers.push_back(StartDemo(o.agent_socket, "workers"));
      ASSERT_GT(workers.back(), 0);
    }
    // While they all run: one slot each, none shared.
    ASSERT_TRUE(WaitFor([&] {
      const std::string m = d.Metrics();
      for (pid_t w : workers) {
        if (!MetricValue(m, "stallwatch_process_info", {"pid=\"" + std::to_string(w) + "\""})) {
          return false;
        }
      }
      return true;
    })) << d.Metrics();
    for (pid_t w : workers) {
      ASSERT_TRUE(Exited0(w));
    }
    for (pid_t w : workers) {
      ASSERT_TRUE(WaitFor([&] { return RunArrived(d, "workers", w); })) << d.Metrics();
    }
    const std::string m = d.Metrics();
    EXPECT_EQ(SlotsOf(m, "workers"), (std::set<std::string>{"0", "1", "2"})) << m;
    const size_t series = SeriesLines(m).size();
    if (generation == 0) {
      series_first = series;
    } else {
      EXPECT_EQ(series, series_first) << m;
    }
  }
}

// Past --max-processes-per-service a new process of the service is refused, counted and its
// connection closed; other services and the processes holding slots are not affected.
TEST(ProcessSlots, ProcessesBeyondTheBoundAreRefusedAndCounted) {
  TempDir dir;
  DaemonOptions o = DaemonOptionsIn(dir);
  o.trust_hello_pid_for_test = true;  // several processes played from this one
  o.registry.max_processes_per_service = 2;
  DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  auto hello = [](const std::string& service, int64_t pid) {
    wire::Hello h;
    h.service = service;
    h.pid = pid;
    h.loops = {"main"};
    return h;
  };
  auto limit = [&] {
    return MetricValue(d.Metrics(), "stallwatch_daemon_frames_rejected_total", {"reason=\"limit\""})
        .value_or(-1);
  };
  RawClient a(o.agent_socket), b(o.agent_socket);
  ASSERT_TRUE(a.Send(hello("bounded", 9001)));
  ASSERT_TRUE(b.Send(hello("bounded", 9002)));
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(d.Metrics(), "stallwatch_process_info", {"pid=\"9002\""}).has_value();
  }));
  const double before = limit();
  RawClient c(o.agent_socket);
  ASSERT_TRUE(c.Send(hello("bounded", 9003)));
  EXPECT_TRUE(c.ClosedByPeer(5s));
  ASSERT_TRUE(WaitFor([&] { return limit() == before + 1; })) << limit();
  RawClient other(o.agent_socket);
  ASSERT_TRUE(other.Send(hello("unbounded", 9004)));
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(d.Metrics(), "stallwatch_process_info", {"pid=\"9004\""}).has_value();
  }));
  const std::string m = d.Metrics();
  EXPECT_EQ(SlotsOf(m, "bounded"), (std::set<std::string>{"0", "1"})) << m;
  EXPECT_FALSE(MetricValue(m, "stallwatch_process_info", {"pid=\"9003\""}).has_value());
  EXPECT_FALSE(b.ClosedByPeer(100ms)) << "the holders stay connected";
  // One of them leaves: the refused process gets its slot on its next attempt.
  a.Close();
  RawClient retry(o.agent_socket);
  ASSERT_TRUE(retry.Send(hello("bounded", 9003)));
  ASSERT_TRUE(WaitFor([&] {
    return MetricValue(d.Metrics(), "stallwatch_process_info", {"pid=\"9003\"", "process=\"0\""})
        .has_value();
  })) << d.Metrics();
}

}  // namespace
}  // namespace stallwatch::daemon
