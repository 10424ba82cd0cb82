// Agent settings on real libevent loops: the environment under the C++ API, file: endpoints
// that cannot be written, and the stack budget by stack signature.
#include <event2/event.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/stallwatch.h"

using namespace std::chrono_literals;

namespace stallwatch {
namespace {

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

std::string TempDir() {
  char dir[] = "/tmp/stallwatch-settings-XXXXXX";
  EXPECT_NE(mkdtemp(dir), nullptr);
  return dir;
}

// Runs `base` for about `run_for` with a timer that calls `work` every `period`.
void RunLoop(event_base* base, std::chrono::milliseconds run_for, std::chrono::milliseconds period,
             std::function<void(int)> work) {
  struct Ctx {
    std::function<void(int)> work;
    int n = 0;
    int64_t end_ns = 0;
    event_base* base = nullptr;
  } ctx{std::move(work), 0, MonotonicNanos() + std::chrono::nanoseconds(run_for).count(), base};
  event* ev = event_new(
      base, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* arg) {
        auto* c = static_cast<Ctx*>(arg);
        if (MonotonicNanos() >= c->end_ns) {
          event_base_loopexit(c->base, nullptr);
          return;
        }
        if (c->work) {
          c->work(c->n++);
        }
      },
      &ctx);
  timeval tv{0, static_cast<suseconds_t>(std::chrono::microseconds(period).count())};
  event_add(ev, &tv);
  event_base_dispatch(base);
  event_free(ev);
}

__attribute__((noinline)) int64_t PeriodicHousekeepingSleeps(std::chrono::milliseconds d) {
  const int64_t t0 = MonotonicNanos();
  std::this_thread::sleep_for(d);
  return MonotonicNanos() - t0;  // not a tail call: this frame stays on the stack
}

volatile int g_rare_calls = 0;

// Not identical to the function above (identical code would be folded into one function).
__attribute__((noinline)) int64_t RareCulpritSleeps(std::chrono::milliseconds d) {
  const int64_t t0 = MonotonicNanos();
  g_rare_calls = g_rare_calls + 1;
  usleep(static_cast<useconds_t>(std::chrono::microseconds(d).count()));
  return MonotonicNanos() - t0;
}

bool StackHas(const StallFinding& f, const std::string& fn) {
  for (const auto& s : f.stacks) {
    for (const auto& fr : s.frames) {
      if (fr.function.find(fn) != std::string::npos) {
        return true;
      }
    }
  }
  return false;
}

std::string Describe(const StallFinding& f) {
  std::string s = "stall " + std::to_string(f.stall_id) + " " + std::to_string(f.duration_s) +
                  "s note='" + f.sampling_note +
                  "' suppressed=" + std::to_string(f.reports_suppressed) + " stacks:";
  for (const auto& st : f.stacks) {
    s += "\n  [" + st.method + " x" + std::to_string(st.samples) + "]";
    for (const auto& fr : st.frames) {
      s += " " + fr.function;
    }
  }
  return s;
}

// A periodic stall uses the budget up; a stall in another function still arrives with its stack
// naming that function, and the repeats are counted and say what they repeat.
TEST(StackBudget, NewStackAfterThePeriodicOneUsedTheBudgetStillGetsItsStack) {
  std::mutex mu;
  std::vector<StallFinding> closed;
  std::vector<DelayFinding> windows;
  Options o{.stall_threshold = 30ms,
            .report_interval = 500ms,
            .endpoint = "off",
            .max_stack_reports_per_minute = 2};
  o.on_stall = [&](const StallFinding& f) {
    std::lock_guard<std::mutex> l(mu);
    if (!f.ongoing) {
      closed.push_back(f);
    }
  };
  o.on_delay = [&](const DelayFinding& d) {
    std::lock_guard<std::mutex> l(mu);
    windows.push_back(d);
  };
  event_base* base = event_base_new();
  auto agent = Agent::Attach(base, o);
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  // Let the unwinder warm up first (a stall before that has no stack either way).
  RunLoop(base, 1500ms, 100ms, nullptr);
  constexpr int kPeriodic = 6;
  RunLoop(base, 3000ms, 150ms, [&](int n) {
    if (n < kPeriodic) {
      PeriodicHousekeepingSleeps(90ms);
    } else if (n == kPeriodic + 2) {
      RareCulpritSleeps(90ms);
    }
  });
  agent->reset();
  event_base_free(base);

  std::lock_guard<std::mutex> l(mu);
  std::string all;
  for (const auto& f : closed) {
    all += Describe(f) + "\n";
  }
  ASSERT_GE(closed.size(), static_cast<size_t>(kPeriodic + 1)) << all;
  const StallFinding* rare = nullptr;
  int periodic_with_stacks = 0, repeats = 0;
  for (const auto& f : closed) {
    if (StackHas(f, "RareCulpritSleeps")) {
      rare = &f;
    }
    if (StackHas(f, "PeriodicHousekeepingSleeps")) {
      ++periodic_with_stacks;
    }
    if (f.stacks.empty() && f.sampling_note.find("stack repeats stall") != std::string::npos) {
      ++repeats;
      // The reader can still name the function: the note says what it repeats.
      EXPECT_NE(f.sampling_note.find("PeriodicHousekeepingSleeps"), std::string::npos)
          << Describe(f);
    }
  }
  ASSERT_NE(rare, nullptr) << "the new culprit lost its stack:\n" << all;
  EXPECT_GE(periodic_with_stacks, 1) << all;
  EXPECT_LE(periodic_with_stacks, 2) << "budget of 2/min:\n" << all;  // the first + 1 token
  EXPECT_GE(repeats, kPeriodic - 2) << all;
  EXPECT_GE(rare->reports_suppressed, static_cast<uint64_t>(repeats)) << all;
  // Repeats were sampled and counted: every stall with a stack sample is in the counter.
  ASSERT_FALSE(windows.empty());
  EXPECT_GE(windows.back().reports_suppressed_total, static_cast<uint64_t>(repeats));
  EXPECT_GE(windows.back().stack_samples_total, static_cast<uint64_t>(kPeriodic + 1)) << all;
}

// The C API takes the budget from STALLWATCH_MAX_STACK_REPORTS: with 0, only the first stall of
// a stack is reported with it; its repeats say what they repeat.
TEST(StackBudget, CApiTakesTheBudgetFromTheEnvironment) {
  setenv("STALLWATCH_MAX_STACK_REPORTS", "0", 1);
  setenv("STALLWATCH_WATCHDOG", "thread", 1);
  setenv("STALLWATCH_ENDPOINT", "off", 1);
  setenv("STALLWATCH_THRESHOLD", "30ms", 1);
  event_base* base = event_base_new();
  stallwatch_agent* agent = stallwatch_attach(base, "c-loop");
  ASSERT_NE(agent, nullptr);
  RunLoop(base, 1500ms, 100ms, nullptr);  // the unwinder warms up
  RunLoop(base, 1000ms, 150ms, [](int n) {
    if (n < 4) {
      PeriodicHousekeepingSleeps(90ms);
    }
  });
  std::string json(1 << 20, '\0');
  json.resize(std::min(json.size() - 1, stallwatch_snapshot_json(agent, json.data(), json.size())));
  stallwatch_detach(agent);
  event_base_free(base);
  for (const char* v : {"STALLWATCH_MAX_STACK_REPORTS", "STALLWATCH_WATCHDOG",
                        "STALLWATCH_ENDPOINT", "STALLWATCH_THRESHOLD"}) {
    unsetenv(v);
  }
  EXPECT_GE(Count(json, "\"kind\":\"stall\""), 4u) << json;
  // The first stall of the stack is not always stall 1: a slow start (sanitizers) may stall the
  // warm-up loop first. The repeats name whichever stall carried the stack.
  const std::string_view note = "stack repeats stall ";
  const size_t first = json.find(note);
  ASSERT_NE(first, std::string::npos) << json;
  const size_t id_end = json.find(' ', first + note.size());
  const std::string repeats = json.substr(first, id_end - first) + " (in";
  EXPECT_EQ(Count(json, "PeriodicHousekeepingSleeps"), Count(json, repeats) + 1)
      << "one stall with the stack, the rest naming it (" << repeats << "):\n"
      << json;
  EXPECT_GE(Count(json, repeats), 3u) << json;
}

// STALLWATCH_* reach C++ services too: fields left unset take the environment, fields set in
// code keep their value.
TEST(Environment, CppOptionsHonourTheEnvironmentBelowExplicitFields) {
  const std::string dir = TempDir();
  const std::string path = dir + "/findings.jsonl";
  setenv("STALLWATCH_SERVICE", "billing-cpp", 1);
  setenv("STALLWATCH_ENDPOINT", ("file:" + path).c_str(), 1);
  setenv("STALLWATCH_THRESHOLD", "10s", 1);  // overridden by the field below
  setenv("STALLWATCH_REPORT_INTERVAL", "200ms", 1);
  {
    event_base* base = event_base_new();
    auto a = Agent::Attach(base, {.stall_threshold = 30ms, .watchdog = WatchdogMode::kThread});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    EXPECT_EQ((*a)->Snapshot().service, "billing-cpp");
    RunLoop(base, 600ms, 100ms, [](int n) {
      if (n == 1) {
        std::this_thread::sleep_for(120ms);
      }
    });
    a->reset();
    event_base_free(base);
  }
  for (const char* v : {"STALLWATCH_SERVICE", "STALLWATCH_ENDPOINT", "STALLWATCH_THRESHOLD",
                        "STALLWATCH_REPORT_INTERVAL"}) {
    unsetenv(v);
  }
  std::string text;
  if (FILE* f = fopen(path.c_str(), "r")) {
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
      text.append(buf, n);
    }
    fclose(f);
  }
  unlink(path.c_str());
  rmdir(dir.c_str());
  EXPECT_GE(Count(text, "\"service\":\"billing-cpp\""), 1u) << text;
  // The 120 ms stall is one with the code's 30 ms threshold, none with the environment's 10 s.
  EXPECT_GE(Count(text, "\"kind\":\"stall\""), 1u) << text;
  // Windows of 200 ms (the environment's) over 600 ms, not one of 10 s at detach only.
  EXPECT_GE(Count(text, "\"kind\":\"delay\""), 2u) << text;
}

// A typo in STALLWATCH_ENDPOINT is never a silent switch to the daemon socket: one line names
// the accepted forms, a likely intended one, and where findings go instead.
TEST(Environment, UnknownEndpointSchemeIsSaidWithTheAcceptedForms) {
  setenv("STALLWATCH_ENDPOINT", "stdout", 1);
  testing::internal::CaptureStderr();
  {
    event_base* base = event_base_new();
    auto a = Agent::Attach(base, {.watchdog = WatchdogMode::kThread});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    a->reset();
    event_base_free(base);
  }
  const std::string err = testing::internal::GetCapturedStderr();
  unsetenv("STALLWATCH_ENDPOINT");
  EXPECT_NE(err.find("STALLWATCH_ENDPOINT='stdout' ignored"), std::string::npos) << err;
  EXPECT_NE(err.find("unix:/path, tcp:host:port, file:/path, stderr or off"), std::string::npos)
      << err;
  EXPECT_NE(err.find("did you mean stderr?"), std::string::npos) << err;
  EXPECT_NE(err.find(std::string("using the default endpoint ") + kDefaultEndpoint),
            std::string::npos)
      << err;
}

// Attaches and detaches one loop with `endpoint`, returning what went to stderr meanwhile.
std::string AttachOnce(const std::string& endpoint, Options o = {}) {
  o.endpoint = endpoint;
  o.watchdog = WatchdogMode::kThread;
  testing::internal::CaptureStderr();
  event_base* base = event_base_new();
  auto a = Agent::Attach(base, o);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  if (a.ok()) {
    a->reset();
  }
  event_base_free(base);
  return testing::internal::GetCapturedStderr();
}

TEST(FileEndpoint, MissingFolderIsSaidAtAttachEveryTime) {
  const std::string endpoint =
      "file:/tmp/stallwatch-no-such-folder-" + std::to_string(getpid()) + "/sub/findings.jsonl";
  for (int i = 0; i < 2; ++i) {
    const std::string err = AttachOnce(endpoint);
    EXPECT_EQ(Count(err, "findings cannot be written to " + endpoint), 1u) << i << ": " << err;
    EXPECT_NE(err.find("does not exist"), std::string::npos) << err;
    EXPECT_NE(err.find("dropped and counted"), std::string::npos) << err;
  }
}

TEST(FileEndpoint, FolderInsteadOfAFileIsSaidAtAttach) {
  const std::string dir = TempDir();
  const std::string err = AttachOnce("file:" + dir);
  rmdir(dir.c_str());
  EXPECT_EQ(Count(err, "findings cannot be written to file:" + dir), 1u) << err;
  EXPECT_NE(err.find(dir + " is a folder"), std::string::npos) << err;
}

// Findings that cannot be delivered are dropped only with a line and a counter.
TEST(FileEndpoint, DroppedFindingsAreCountedAndSaid) {
  const std::string endpoint =
      "file:/tmp/stallwatch-no-such-folder-" + std::to_string(getpid()) + "/findings.jsonl";
  testing::internal::CaptureStderr();
  uint64_t dropped = 0;
  {
    event_base* base = event_base_new();
    auto a = Agent::Attach(base, {.report_interval = 100ms,
                                  .endpoint = endpoint,
                                  .queue_capacity = 2,
                                  .watchdog = WatchdogMode::kThread});
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    RunLoop(base, 1200ms, 50ms, nullptr);  // ~12 delay windows into a queue of 2
    dropped = (*a)->Snapshot().findings_dropped;
    a->reset();
    event_base_free(base);
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_GE(dropped, 3u) << err;
  EXPECT_EQ(Count(err, "findings dropped:"), 1u) << err;
  EXPECT_NE(err.find("findings_dropped"), std::string::npos) << err;
}

}  // namespace
}  // namespace stallwatch
