// The watchdog in a process of its own (agent/src/watchdog_process.h): a real single-threaded
// libevent program (single_thread_host) run as a child of this test, with real stalls.
#include <event2/event.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "stallwatch/agent.h"
#include "test_support.h"

extern char** environ;

namespace {

using nlohmann::json;

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif

std::string HostPath() { return SW_SINGLE_THREAD_HOST; }

struct Child {
  pid_t pid = -1;
  FILE* out = nullptr;
};

// Starts the host with `args` and extra environment entries; its stdout is readable line by line.
Child Start(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  std::vector<std::string> all_args = {HostPath()};
  all_args.insert(all_args.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all_args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string(*e).rfind("STALLWATCH_", 0) != 0) env_strings.emplace_back(*e);
  }
  env_strings.insert(env_strings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  Child c;
  EXPECT_EQ(posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), envp.data()), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  c.out = fdopen(fds[0], "r");
  return c;
}

json ReadLine(Child& c) {
  char* line = nullptr;
  size_t cap = 0;
  const ssize_t n = getline(&line, &cap, c.out);
  std::string text = n > 0 ? std::string(line, static_cast<size_t>(n)) : std::string();
  free(line);
  auto j = json::parse(text, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "host printed: " << text;
  return j.is_discarded() ? json::object() : j;
}

int Finish(Child& c) {
  int status = 0;
  waitpid(c.pid, &status, 0);
  if (c.out) fclose(c.out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool AliveNotZombie(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

#define SKIP_UNDER_TSAN()                                             \
  if (kThreadSanitizer)                                               \
  GTEST_SKIP() << "the watchdog process is not used under TSan (one " \
                  "process model; docs/design.md)"

// The stack budget reaches the watchdog process: with STALLWATCH_MAX_STACK_REPORTS=0 the first
// stall of a stack has it, the repeats are counted and name it.
TEST(WatchdogProcess, StackBudgetIsMirroredIntoTheWatchdogProcess) {
  SKIP_UNDER_TSAN();
  Child c = Start({"repeat", "5"}, {"STALLWATCH_MAX_STACK_REPORTS=0"});
  json first = ReadLine(c);
  json last = ReadLine(c);
  EXPECT_EQ(Finish(c), 0);
  ASSERT_EQ(first["watchdog"], "process") << first.dump();
  int with_stack = 0, repeats = 0;
  for (const auto& r : last["recent"]) {
    for (const auto& fn : r["functions"]) {
      if (fn.get<std::string>().find("BurnCpuInNamedFunction") != std::string::npos) {
        ++with_stack;
        break;
      }
    }
    const std::string note = r["sampling_note"].get<std::string>();
    if (note.find("stack repeats stall") != std::string::npos) {
      ++repeats;
      EXPECT_NE(note.find("BurnCpuInNamedFunction"), std::string::npos) << note;
    }
  }
  EXPECT_GE(with_stack, 1) << last.dump();
  // A CPU-bound stall may first be sampled in another callee (a second signature); most of the
  // five repeat the first.
  EXPECT_GE(repeats, 2) << last.dump();
  EXPECT_LE(with_stack, 3) << last.dump();
}

TEST(WatchdogProcess, SingleThreadedHostStaysSingleThreadedAndItsStallsAreCaughtWithStacks) {
  SKIP_UNDER_TSAN();
  Child c = Start({"stalls"});
  json j = ReadLine(c);
  ASSERT_EQ(Finish(c), 0) << j.dump();
  EXPECT_EQ(j["watchdog"], "process") << j.dump();
  EXPECT_GT(j["watchdog_pid"].get<int64_t>(), 0);
  EXPECT_EQ(j["threads_attached"], 1) << "the agent added a thread to the host";
  // The probe's timerfd is the host's only new fd.
  EXPECT_EQ(j["fds_attached_extra"], 1);
  EXPECT_TRUE(j["watchdog_alive_attached"].get<bool>());
  EXPECT_EQ(j["boundary_source"], "epoll_wait");

  const json& recent = j["recent"];
  ASSERT_EQ(recent.size(), 2u) << j.dump(2);
  // CPU stall of 150 ms in a named function: exact duration (loop boundaries), class, stack.
  EXPECT_EQ(recent[0]["class"], "cpu") << recent[0].dump();
  EXPECT_NEAR(recent[0]["duration_s"].get<double>(), 0.150, 0.150 * 0.05) << recent[0].dump();
  EXPECT_EQ(recent[0]["pid"].get<int64_t>(), c.pid) << "findings must name the host's pid";
  bool named = false;
  for (const auto& f : recent[0]["functions"]) {
    named = named || f.get<std::string>().find("BurnCpuInNamedFunction") != std::string::npos;
  }
  EXPECT_TRUE(named) << "stack of the CPU stall: " << recent[0].dump();
  // The sleep: blocked in clock_nanosleep, never signalled (not shortened), stack from /proc.
  EXPECT_EQ(recent[1]["class"], "blocked") << recent[1].dump();
  EXPECT_EQ(recent[1]["syscall"], "clock_nanosleep");
  EXPECT_GE(j["sleep_ms"].get<double>(), 119.9);
  bool usleep_seen = false;
  for (const auto& f : recent[1]["functions"]) {
    usleep_seen = usleep_seen || f.get<std::string>().find("usleep") != std::string::npos;
  }
  EXPECT_TRUE(usleep_seen) << recent[1].dump();

  // Detach stops and reaps the watchdog process; the host is left as it was.
  EXPECT_FALSE(j["watchdog_alive_detached"].get<bool>());
  EXPECT_EQ(j["children_detached"], "") << "a child (or zombie) was left behind";
  EXPECT_EQ(j["fds_detached_extra"], 0);
  EXPECT_EQ(j["threads_detached"], 1);
}

TEST(WatchdogProcess, ThreadModeOnRequest) {
  Child c = Start({"stalls"}, {"STALLWATCH_WATCHDOG=thread"});
  json j = ReadLine(c);
  ASSERT_EQ(Finish(c), 0) << j.dump();
  EXPECT_EQ(j["watchdog"], "thread");
  EXPECT_GT(j["threads_attached"].get<int>(), 1);
  ASSERT_EQ(j["recent"].size(), 2u) << j.dump(2);
  EXPECT_EQ(j["recent"][0]["class"], "cpu");
}

TEST(WatchdogProcess, AttachDetachCyclesLeaveNoFdChildOrThread) {
  SKIP_UNDER_TSAN();
  Child c = Start({"cycle", "100"});
  json j = ReadLine(c);
  ASSERT_EQ(Finish(c), 0) << j.dump();
  EXPECT_EQ(j["watchdog"], "process");
  EXPECT_EQ(j["fds_extra"], 0) << j.dump();
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["children"], "") << j.dump();
  EXPECT_FALSE(j["last_watchdog_alive"].get<bool>());
}

TEST(WatchdogProcess, HooksNeedTheThreadWatchdogAndSayHow) {
  SKIP_UNDER_TSAN();
  Child c = Start({"hooks"});
  json j = ReadLine(c);
  ASSERT_EQ(Finish(c), 0) << j.dump();
  EXPECT_EQ(j["watchdog"], "process");
  EXPECT_FALSE(j["second_ok"].get<bool>());
  EXPECT_NE(j["second_error"].get<std::string>().find("STALLWATCH_WATCHDOG=thread"),
            std::string::npos)
      << j.dump();
  EXPECT_EQ(j["threads"], 1);
}

TEST(WatchdogProcess, EndsWhenTheHostIsKilled) {
  SKIP_UNDER_TSAN();
  Child c = Start({"forever"});
  json j = ReadLine(c);
  ASSERT_EQ(j["watchdog"], "process") << j.dump();
  const int64_t wpid = j["watchdog_pid"].get<int64_t>();
  ASSERT_TRUE(AliveNotZombie(wpid));
  kill(c.pid, SIGKILL);
  Finish(c);
  // It notices within 0.5 s.
  const bool gone =
      stallwatch::testing::WaitFor([&] { return !AliveNotZombie(wpid); }, std::chrono::seconds(5));
  EXPECT_TRUE(gone) << "stallwatch-watchdog " << wpid << " outlived its host";
}

TEST(WatchdogProcess, EndsWhenTheHostExecsAnotherProgram) {
  SKIP_UNDER_TSAN();
  Child c = Start({"exec"});
  json j = ReadLine(c);
  ASSERT_EQ(j["watchdog"], "process") << j.dump();
  const int64_t wpid = j["watchdog_pid"].get<int64_t>();
  // Exec after 0.3 s, noticed within 1 s.
  const bool gone =
      stallwatch::testing::WaitFor([&] { return !AliveNotZombie(wpid); }, std::chrono::seconds(4));
  EXPECT_TRUE(AliveNotZombie(c.pid)) << "the host (now sleep 5) should still run";
  kill(c.pid, SIGKILL);
  Finish(c);
  EXPECT_TRUE(gone) << "stallwatch-watchdog " << wpid << " outlived its host's execve";
}

// The host alone is stopped (SIGSTOP): the watchdog process goes on running, so it must learn
// the suspension from the loop thread's state, not from its own oversleep.
TEST(WatchdogProcess, HostStoppedWithSigstopIsASuspendedStall) {
  SKIP_UNDER_TSAN();
  const std::string file = "/tmp/stallwatch-wdp-" + std::to_string(getpid()) + ".jsonl";
  std::remove(file.c_str());
  Child c = Start({"forever"}, {"STALLWATCH_ENDPOINT=file:" + file});
  json j = ReadLine(c);
  ASSERT_EQ(j["watchdog"], "process") << j.dump();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the start-up grace
  kill(c.pid, SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  kill(c.pid, SIGCONT);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  kill(c.pid, SIGKILL);  // the watchdog flushes its findings when the host is gone
  Finish(c);
  std::vector<json> stalls;
  for (int i = 0; i < 60 && stalls.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
      auto f = json::parse(line, nullptr, false);
      if (!f.is_discarded() && f.value("kind", "") == "stall" && !f.value("ongoing", true)) {
        stalls.push_back(f);
      }
    }
  }
  std::remove(file.c_str());
  ASSERT_EQ(stalls.size(), 1u) << "closed stalls: " << json(stalls).dump();
  EXPECT_EQ(stalls[0]["class"], "suspended") << stalls[0].dump();
  EXPECT_EQ(stalls[0]["pid"].get<int64_t>(), c.pid);
  EXPECT_GT(stalls[0]["duration_s"].get<double>(), 0.3) << stalls[0].dump();
}

__attribute__((noinline)) void SpinOnTheLoopForTest(std::chrono::milliseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  volatile uint64_t x = 1;
  while (std::chrono::steady_clock::now() < end) x = x * 3 + 1;
}

// STALLWATCH_WATCHDOG=process in a program that already has threads (this test binary): the
// loop runs on a thread of its own, and the snapshot comes back from the process.
TEST(WatchdogProcess, ForcedInAMultiThreadedProgramTheSnapshotComesBackFromTheProcess) {
  SKIP_UNDER_TSAN();
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  stallwatch::Options o;
  o.endpoint = "off";
  o.loop_name = "forced";
  o.watchdog = stallwatch::WatchdogMode::kProcess;
  std::unique_ptr<stallwatch::Agent> agent;
  {
    auto a = stallwatch::Agent::Attach(base, o);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    agent = std::move(*a);
  }
  std::thread loop([base] {
    timeval tv{0, 300'000};
    event_base_once(
        base, -1, EV_TIMEOUT,
        [](evutil_socket_t, short, void*) { SpinOnTheLoopForTest(std::chrono::milliseconds(150)); },
        nullptr, &tv);
    timeval stop{1, 500'000};
    event_base_loopexit(base, &stop);
    event_base_dispatch(base);
  });
  stallwatch::LoopSnapshot snap;
  const bool caught = stallwatch::testing::WaitFor(
      [&] {
        snap = agent->Snapshot();
        return !snap.recent_stalls.empty();
      },
      std::chrono::seconds(5));
  loop.join();
  EXPECT_EQ(snap.watchdog, "process");
  EXPECT_GT(snap.watchdog_pid, 0);
  ASSERT_TRUE(caught) << "no stall in the snapshot";
  const auto& f = snap.recent_stalls[0];
  EXPECT_EQ(f.stall_class, stallwatch::StallClass::kCpu);
  EXPECT_NEAR(f.duration_s, 0.150, 0.150 * 0.05);
  EXPECT_EQ(f.pid, getpid());
  EXPECT_EQ(snap.loop, "forced");
  bool named = false;
  for (const auto& st : f.stacks) {
    for (const auto& fr : st.frames) {
      named = named || fr.function.find("SpinOnTheLoopForTest") != std::string::npos;
    }
  }
  EXPECT_TRUE(named) << "the spinning function is not on the stack";
  const pid_t wpid = static_cast<pid_t>(snap.watchdog_pid);
  agent.reset();
  EXPECT_FALSE(AliveNotZombie(wpid));
  event_base_free(base);
}

TEST(WatchdogProcess, RunByHandItExplainsItself) {
  const std::string exe = SW_WATCHDOG_EXE;
  std::string out;
  FILE* p = popen((exe + " 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[512];
  while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  const int status = pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_NE(out.find("started by the stallwatch agent"), std::string::npos) << out;
  EXPECT_NE(out.find("usage: stallwatch-watchdog --host-pid PID --region-fd FD"),
            std::string::npos);
}

}  // namespace
