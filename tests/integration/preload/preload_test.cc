// LD_PRELOAD=libstallwatch_preload.so in programs built without stallwatch.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Outcome {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string TempPath(const char* tag) {
  char buf[] = "/tmp/stallwatch-preload-XXXXXX";
  int fd = mkstemp(buf);
  close(fd);
  return std::string(buf) + "-" + tag;
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `cmd` through sh, bounded to 60 s, with `env` ("K=V ...") in front.
Outcome Sh(const std::string& env, const std::string& cmd) {
  const std::string out = TempPath("out"), err = TempPath("err");
  const std::string line = "env " + env + " timeout 60 " + cmd + " >" + out + " 2>" + err;
  Outcome r;
  r.status = std::system(line.c_str());
  r.out = Slurp(out);
  r.err = Slurp(err);
  unlink(out.c_str());
  unlink(err.c_str());
  return r;
}

std::vector<nlohmann::json> Findings(const std::string& path) {
  std::vector<nlohmann::json> v;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty()) {
      v.push_back(nlohmann::json::parse(line));
    }
  }
  return v;
}

bool HasFrame(const nlohmann::json& stall, const std::string& fn) {
  for (const auto& s : stall["stacks"]) {
    for (const auto& fr : s["frames"]) {
      if (fr["function"].get<std::string>().find(fn) != std::string::npos) {
        return true;
      }
    }
  }
  return false;
}

std::string Preload() { return std::string("LD_PRELOAD=") + SW_PRELOAD_LIB; }

TEST(Preload, EveryLoopOfAPlainProgramIsWatchedAndNamedAndItsStallsCaught) {
  const std::string file = TempPath("findings");
  Outcome r = Sh(Preload() + " STALLWATCH_ENDPOINT=file:" + file +
                     " STALLWATCH_REPORT_INTERVAL=500ms STALLWATCH_THRESHOLD=50ms",
                 SW_PLAIN_APP);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("done"), std::string::npos);
  EXPECT_EQ(r.out.find("interrupted"), std::string::npos) << "the agent woke a sleeping thread";
  EXPECT_EQ(r.err, "");
  auto findings = Findings(file);
  unlink(file.c_str());
  std::set<std::string> loops;
  int cpu = 0, blocked = 0;
  for (const auto& f : findings) {
    loops.insert(f["loop"].get<std::string>());
    if (f["kind"] != "stall" || f["ongoing"].get<bool>()) {
      continue;
    }
    const std::string cls = f["class"];
    if ((cls == "cpu" || cls == "starved") && HasFrame(f, "compute_report")) {
      ++cpu;
    }
    if (cls == "blocked" && f["syscall"] == "clock_nanosleep" && HasFrame(f, "fetch_from_disk")) {
      ++blocked;
    }
    EXPECT_EQ(f["loop"].get<std::string>().rfind("worker", 0), 0u) << f.dump();
  }
  EXPECT_EQ(loops, (std::set<std::string>{"main", "worker", "worker-2"}));
  EXPECT_EQ(cpu, 1) << findings.size() << " findings";
  EXPECT_EQ(blocked, 1);
}

TEST(Preload, AForkedChildKeepsWorkingAndIsWatchedOnItsOwn) {
  const std::string file = TempPath("findings");
  // DEBUGINFOD_URLS: the agent must never reach for debuginfod (network, dlopen) from a host.
  Outcome r =
      Sh(Preload() + " DEBUGINFOD_URLS=http://127.0.0.1:9 STALLWATCH_ENDPOINT=file:" + file +
             " STALLWATCH_REPORT_INTERVAL=500ms",
         std::string(SW_PLAIN_APP) + " fork");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("child done"), std::string::npos);
  EXPECT_NE(r.out.find("\ndone"), std::string::npos);
  std::set<int64_t> pids_with_cpu_stall;
  for (const auto& f : Findings(file)) {
    if (f["kind"] == "stall" && !f["ongoing"].get<bool>() && HasFrame(f, "compute_report")) {
      pids_with_cpu_stall.insert(f["pid"].get<int64_t>());
    }
  }
  unlink(file.c_str());
  EXPECT_EQ(pids_with_cpu_stall.size(), 2u) << "parent and child each report their own stall";
}

TEST(Preload, ProgramsWithoutLibeventAreUnchanged) {
  for (const std::string cmd : {"sh -c 'printf \"b\\na\\nc\\n\" | sort'", "sh -c 'echo hi; exit 3'",
                                "ls /nonexistent-stallwatch-path"}) {
    Outcome plain = Sh("", cmd);
    Outcome pre = Sh(Preload(), cmd);
    EXPECT_EQ(pre.status, plain.status) << cmd;
    EXPECT_EQ(pre.out, plain.out) << cmd;
    EXPECT_EQ(pre.err, plain.err) << cmd;
  }
}

TEST(Preload, AMalformedVariableGetsOneLineAndTheDefault) {
  const std::string file = TempPath("findings");
  Outcome r = Sh(Preload() + " STALLWATCH_ENDPOINT=file:" + file + " STALLWATCH_THRESHOLD=soon",
                 SW_PLAIN_APP);
  unlink(file.c_str());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("done"), std::string::npos);
  EXPECT_NE(r.err.find("STALLWATCH_THRESHOLD='soon' ignored"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("using 50ms"), std::string::npos) << r.err;
  size_t lines = 0;
  for (char c : r.err) {
    lines += c == '\n';
  }
  EXPECT_EQ(lines, 1u) << r.err;
}

}  // namespace

namespace {

TEST(StallwatchRun, RunsAProgramUnderTheShimWithItsExitStatus) {
  const std::string file = TempPath("findings");
  Outcome r = Sh("", std::string(SW_CLI) + " run --endpoint file:" + file + " -- " + SW_PLAIN_APP);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("done"), std::string::npos);
  std::set<std::string> loops;
  for (const auto& f : Findings(file)) {
    loops.insert(f["loop"].get<std::string>());
  }
  unlink(file.c_str());
  EXPECT_EQ(loops, (std::set<std::string>{"main", "worker", "worker-2"}));

  Outcome exit3 = Sh("", std::string(SW_CLI) + " run --endpoint off -- sh -c 'exit 3'");
  EXPECT_EQ(WEXITSTATUS(exit3.status), 3);
  Outcome missing = Sh("", std::string(SW_CLI) + " run -- /nonexistent/stallwatch-prog");
  EXPECT_EQ(WEXITSTATUS(missing.status), 127);
  EXPECT_NE(missing.err.find("cannot run '/nonexistent/stallwatch-prog'"), std::string::npos)
      << missing.err;
}

}  // namespace

namespace {

// Bases created, stalled (and sampled) and freed one after another on a thread: event_base_free
// meets the watchdog in the middle of its work on that loop.
TEST(Preload, BasesFreedRightAfterASampledStallAreDetachedCleanly) {
  const std::string file = TempPath("findings");
  Outcome r =
      Sh(Preload() + " STALLWATCH_ENDPOINT=file:" + file, std::string(SW_PLAIN_APP) + " churn");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("churn done"), std::string::npos);
  EXPECT_EQ(r.err, "");
  int closed = 0;
  for (const auto& f : Findings(file)) {
    closed += f["kind"] == "stall" && !f["ongoing"].get<bool>();
  }
  unlink(file.c_str());
  EXPECT_GE(closed, 15) << "stalls of the freed bases";  // 20 injected; generous margin
}

// exit() from a worker thread while loops are attached and one is stalled: the process ends
// with the program's status, nothing hangs or crashes.
TEST(Preload, ExitFromAWorkerThreadDuringAStallEndsTheProcessNormally) {
  Outcome r =
      Sh(Preload() + " STALLWATCH_ENDPOINT=off", std::string(SW_PLAIN_APP) + " exit-thread");
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("exiting from a worker thread"), std::string::npos);
  EXPECT_EQ(r.err, "");
}

}  // namespace

namespace {

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

// A program that links the agent and attaches its own loop, run under the shim as well: the
// shim's copy of the agent receives both attaches (its symbols come first), and the loop must be
// watched once — one loop, each stall counted once, one warning line.
TEST(Preload, AProgramThatAttachesItsOwnAgentIsWatchedOnce) {
  const std::string file = TempPath("findings");
  const std::string env = " STALLWATCH_ENDPOINT=file:" + file +
                          " STALLWATCH_REPORT_INTERVAL=500ms STALLWATCH_THRESHOLD=50ms";
  Outcome r = Sh(Preload() + env, std::string(SW_LINKED_AGENT_APP) + " 1500 3");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  std::set<std::string> loops;
  int closed = 0;
  for (const auto& f : Findings(file)) {
    loops.insert(f["loop"].get<std::string>());
    closed += f["kind"] == "stall" && !f["ongoing"].get<bool>();
  }
  unlink(file.c_str());
  EXPECT_EQ(loops.size(), 1u) << r.err;
  EXPECT_EQ(closed, 3) << "each of the 3 stalls once";
  EXPECT_EQ(Count(r.err, "already watched"), 1u) << r.err;
  EXPECT_EQ(Count(r.err, "\n"), 1u) << "one line: " << r.err;

  // Without the shim the program's own agent watches it, silently.
  Outcome own = Sh(env, std::string(SW_LINKED_AGENT_APP) + " 1500 3");
  ASSERT_EQ(own.status, 0) << own.err;
  loops.clear();
  closed = 0;
  for (const auto& f : Findings(file)) {
    loops.insert(f["loop"].get<std::string>());
    closed += f["kind"] == "stall" && !f["ongoing"].get<bool>();
  }
  unlink(file.c_str());
  EXPECT_EQ(loops, (std::set<std::string>{"app"}));
  EXPECT_EQ(closed, 3);
  EXPECT_EQ(own.err, "");
}

// An agent whose user may not connect to the daemon's socket says so, why and what to do, in one
// line at attach — not at its first report window (10 s by default, the program ends before).
TEST(Preload, ARefusedConnectionSaysWhyAndHowToFixAtOnce) {
  char dir[] = "/tmp/stallwatch-refuse-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  chmod(dir, 0755);
  const std::string sock = std::string(dir) + "/agent.sock";
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  chmod(sock.c_str(), 0600);  // the owner (root) only, as a group-less daemon socket
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root to run the program as another user";
  }
  Outcome r = Sh(
      Preload() + " STALLWATCH_ENDPOINT=unix:" + sock,
      "setpriv --reuid=65534 --regid=65534 --clear-groups " + std::string(SW_LOOP_APP) + " 1500");
  close(fd);
  unlink(sock.c_str());
  rmdir(dir);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(Count(r.err, "\n"), 1u) << r.err;
  EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("uid 65534 may not connect"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--agent-socket-mode 0666"), std::string::npos) << r.err;
}

std::string Cli() { return SW_CLI; }

TEST(StallwatchRun, SaysWhatItWatchesWhereFindingsGoAndEachLoopItAttachedTo) {
  Outcome r = Sh("STALLWATCH_RUN_NO_LOOP_AFTER=1s",
                 Cli() + " run --endpoint off -- " + SW_LOOP_APP + " 2500");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("done"), std::string::npos);
  // The start line, and one line for the loop the agent attached to.
  EXPECT_EQ(Count(r.err, "\n"), 2u) << r.err;
  EXPECT_NE(r.err.find("stallwatch run: watching every event loop of '"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("stallwatch run: watching loop 'main' of pid "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" (libevent)\n"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("findings go to nowhere (--endpoint off)"), std::string::npos) << r.err;

  Outcome daemon = Sh("STALLWATCH_RUN_NO_LOOP_AFTER=1s STALLWATCH_ENDPOINT=unix:/tmp/x.sock",
                      Cli() + " run -- sh -c 'exit 7'");
  EXPECT_EQ(WEXITSTATUS(daemon.status), 7) << daemon.err;
  EXPECT_NE(daemon.err.find("findings go to stallwatchd at unix:/tmp/x.sock"), std::string::npos)
      << daemon.err;
}

TEST(StallwatchRun, SaysSoWhenNoEventLoopWasSeen) {
  Outcome r = Sh("STALLWATCH_RUN_NO_LOOP_AFTER=1s", Cli() + " run --endpoint off -- sleep 3");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Count(r.err, "\n"), 2u) << r.err;
  EXPECT_EQ(Count(r.err, "stallwatch run: no event loop seen in 'sleep' after 1 s"), 1u) << r.err;
  Outcome bad = Sh("STALLWATCH_RUN_NO_LOOP_AFTER=soon", Cli() + " run --endpoint off -- true");
  EXPECT_EQ(WEXITSTATUS(bad.status), 2);
  EXPECT_NE(bad.err.find("expected a duration such as 10s"), std::string::npos) << bad.err;
}

TEST(StallwatchRun, ForwardsSignalsAndReportsTheSignalThatEndedTheProgram) {
  const pid_t run = fork();
  if (run == 0) {
    setenv("STALLWATCH_ENDPOINT", "off", 1);
    execl(SW_CLI, "stallwatch", "run", "--", "sleep", "30", static_cast<char*>(nullptr));
    _exit(126);
  }
  ASSERT_GT(run, 0);
  usleep(700 * 1000);
  kill(run, SIGTERM);
  int status = 0;
  for (int i = 0; i < 100 && waitpid(run, &status, WNOHANG) == 0; ++i) {
    usleep(50 * 1000);
  }
  if (waitpid(run, &status, WNOHANG) == 0) {
    kill(run, SIGKILL);
    waitpid(run, &status, 0);
    FAIL() << "stallwatch run did not end within 5 s of SIGTERM";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "stallwatch run itself was killed: signal not forwarded";
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
}

TEST(StallwatchRun, TheProgramSeesNoExtraFileDescriptors) {
  Outcome plain = Sh("", "ls /proc/self/fd");
  Outcome run = Sh("", Cli() + " run --endpoint off -- ls /proc/self/fd");
  ASSERT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, plain.out);
}

}  // namespace

namespace {

// A server that creates its base, then daemonizes (forks; the parent exits; the child runs the
// loop): watched in the child, under the child's pid, as a libevent loop; with event_reinit (a
// new epoll fd in the child) and without (the parent's).
void ExpectDaemonizedChildIsWatched(const char* mode) {
  char path[] = "/tmp/stallwatch-daemonized-XXXXXX";
  close(mkstemp(path));
  const std::string cmd = std::string("LD_PRELOAD=" SW_PRELOAD_LIB " STALLWATCH_ENDPOINT=file:") +
                          path + " STALLWATCH_REPORT_INTERVAL=300ms " + SW_LOOP_APP + " 1500 2 " +
                          mode;
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[64] = {};
  ASSERT_NE(fgets(buf, sizeof(buf), p), nullptr);
  EXPECT_EQ(pclose(p), 0);
  const pid_t child = static_cast<pid_t>(std::atoi(buf));
  ASSERT_GT(child, 0);
  // The child ends by itself after 1.5 s.
  for (int i = 0; i < 100 && kill(child, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(kill(child, 0), 0) << "the daemonized child did not end by itself";
  std::ifstream f(path);
  std::string line;
  int stalls = 0;
  int windows = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["pid"].get<int64_t>() != child) {
      // The parent's own loop, attached at event_base_new, never ran: empty windows only.
      EXPECT_EQ(j["kind"], "delay") << line;
      EXPECT_EQ(j["iterations"], 0) << line;
      continue;
    }
    if (j["kind"] == "stall" && !j["ongoing"].get<bool>()) {
      ++stalls;
      EXPECT_EQ(j["class"], "blocked") << line;
    }
    if (j["kind"] == "delay") {
      ++windows;
      EXPECT_EQ(j["loop_kind"], "libevent") << line;
      EXPECT_EQ(j["boundary_source"], "epoll_wait") << line;
    }
  }
  unlink(path);
  EXPECT_EQ(stalls, 2);
  EXPECT_GE(windows, 2);
}

TEST(PreloadFork, ADaemonizingServerIsWatchedInTheChildThatRunsItsBase) {
  ExpectDaemonizedChildIsWatched("daemonize");
}

TEST(PreloadFork, ADaemonizedChildOnTheParentsEpollFdIsWatchedToo) {
  ExpectDaemonizedChildIsWatched("daemonize-keep");
}

}  // namespace
