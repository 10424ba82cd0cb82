// Event loops that are not libevent's, in unmodified programs from Debian (or on this machine),
// under the preload shim: Tornado serving the seed article's handlers, a plain asyncio server,
// redis-server, Node. Each must be found by how it waits, its stalls caught while they happen,
// classified and timed, and the program must keep serving.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

using namespace std::chrono_literals;
using nlohmann::json;
using stallwatch::testing::RunCommand;
using stallwatch::testing::WaitFor;

namespace {

bool Have(const char* path) { return access(path, X_OK) == 0; }

// A program under the shim, reporting to a file of its own; ended by SIGTERM at the end.
class Watched {
 public:
  explicit Watched(std::vector<std::string> argv, const std::vector<std::string>& env = {}) {
    char path[] = "/tmp/stallwatch-foreign-XXXXXX";
    const int fd = mkstemp(path);
    close(fd);
    findings_ = path;
    // The program runs in a folder of its own: what it writes to its working directory (node's
    // isolate-*.log with --perf-basic-prof) goes with the folder.
    char dir[] = "/tmp/stallwatch-foreign-cwd-XXXXXX";
    cwd_ = mkdtemp(dir) != nullptr ? dir : "/tmp";
    pid_ = fork();
    if (pid_ == 0) {
      if (chdir(cwd_.c_str()) != 0) {
        _exit(126);
      }
      setenv("LD_PRELOAD", SW_PRELOAD_LIB, 1);
      setenv("STALLWATCH_ENDPOINT", ("file:" + findings_).c_str(), 1);
      setenv("STALLWATCH_REPORT_INTERVAL", "500ms", 1);
      setenv("STALLWATCH_THRESHOLD", "50ms", 1);
      for (const auto& e : env) {
        putenv(strdup(e.c_str()));
      }
      std::vector<char*> args;
      args.reserve(argv.size() + 1);
      for (auto& a : argv) {
        args.push_back(a.data());
      }
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Watched() {
    Stop();
    unlink(findings_.c_str());
    if (cwd_ != "/tmp") {
      std::system(("rm -rf '" + cwd_ + "'").c_str());
    }
  }
  Watched(const Watched&) = delete;
  Watched& operator=(const Watched&) = delete;

  bool Running() {
    if (pid_ <= 0) {
      return false;
    }
    int st = 0;
    const pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      pid_ = -1;
    }
    return r == 0;
  }
  int Stop() {
    if (pid_ <= 0) {
      return status_;
    }
    kill(pid_, SIGTERM);
    waitpid(pid_, &status_, 0);
    pid_ = -1;
    return status_;
  }
  pid_t pid() const { return pid_; }

  std::vector<json> Findings() const {
    std::vector<json> out;
    std::ifstream f(findings_);
    std::string line;
    while (std::getline(f, line)) {
      if (!line.empty()) {
        out.push_back(json::parse(line));
      }
    }
    return out;
  }
  // Closed stalls, in order.
  std::vector<json> Stalls() const {
    std::vector<json> out;
    for (auto& j : Findings()) {
      if (j["kind"] == "stall" && !j["ongoing"].get<bool>()) {
        out.push_back(j);
      }
    }
    return out;
  }
  std::vector<json> Windows() const {
    std::vector<json> out;
    for (auto& j : Findings()) {
      if (j["kind"] == "delay") {
        out.push_back(j);
      }
    }
    return out;
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  std::string findings_;
  std::string cwd_;
};

std::string Frames(const json& stall) {
  std::string s;
  for (const auto& st : stall["stacks"]) {
    for (const auto& f : st["frames"]) {
      s += f.value("function", "") + " ";
    }
  }
  return s;
}

// The first Python frame of any stack of the stall ("" if none): {qualname, file, line}.
struct PyFrame {
  std::string function, file;
  int line = 0;
};
PyFrame FirstPythonFrame(const json& stall) {
  for (const auto& st : stall["stacks"]) {
    for (const auto& f : st["frames"]) {
      if (f.value("kind", "") == "python") {
        return {f.value("function", ""), f.value("file", ""), f.value("line", 0)};
      }
    }
  }
  return {};
}

// The line of `text` in `path` (1-based), 0 if absent.
int LineOf(const std::string& path, const std::string& text) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find(text) != std::string::npos) {
      return n;
    }
  }
  return 0;
}

std::string Get(int port, const std::string& path) {
  return RunCommand("curl -s --max-time 10 'http://127.0.0.1:" + std::to_string(port) + path + "'")
      .out;
}

// The loop's windows say what it is.
void ExpectLoopOf(Watched& w, const std::string& runtime) {
  const auto windows = w.Windows();
  ASSERT_FALSE(windows.empty());
  for (const auto& d : windows) {
    EXPECT_EQ(d["loop_kind"], "epoll") << d.dump();
    EXPECT_EQ(d["runtime"], runtime) << d.dump();
    EXPECT_EQ(d["boundary_source"], "epoll_wait") << d.dump();
  }
}

// A loop that burns a CPU makes a cpu stall; on a machine whose hypervisor or other processes
// took most of that CPU away (wait_ratio: steal, run queue), the classifier rightly says
// starved. Either, with the evidence behind it.
void ExpectBusy(const json& stall) {
  if (stall["class"] == "starved") {
    EXPECT_GE(stall["wait_ratio"].get<double>(), 0.3) << stall.dump();
  } else {
    EXPECT_EQ(stall["class"], "cpu") << stall.dump();
  }
}

// Stalls whose duration is within max(0.5 ms, 2 %) of `ms` above it, plus a margin for the
// host's own work around the injected block (request parsing, the response) on a loaded machine.
bool Near(const json& stall, double ms) {
  const double d = stall["duration_s"].get<double>() * 1000;
  return d >= ms - 0.5 && d <= ms + std::max(0.5, 0.02 * ms) + 15;
}

TEST(ForeignLoops, TornadoSeedHandlersSleepBlocksTheLoopAsyncAndThePoolDoNot) {
  if (!Have("/usr/bin/python3") ||
      RunCommand("/usr/bin/python3 -c 'import tornado' 2>&1").code != 0) {
    GTEST_SKIP() << "python3-tornado is not installed (scripts/install-deps.sh installs it)";
  }
  const int port = stallwatch::testing::FreeLoopbackPort();
  Watched w({"/usr/bin/python3", SW_TORNADO_SEED, "--port", std::to_string(port)});
  ASSERT_TRUE(WaitFor([&] { return Get(port, "/") == "hello world"; }, 20s))
      << "the Tornado app did not start under the shim";
  EXPECT_EQ(Get(port, "/sleep?ms=300"), "slept on the loop");
  EXPECT_EQ(Get(port, "/async?ms=300"), "waited with asyncio.sleep");
  EXPECT_EQ(Get(port, "/pool?ms=300"), "slept on a worker");
  EXPECT_EQ(Get(port, "/fetch-async?ms=300"), "upstream answered after 300 ms");
  EXPECT_EQ(Get(port, "/fetch-blocking?ms=300"), "upstream answered after 300 ms");
  EXPECT_EQ(Get(port, "/cpu?ms=200").rfind("burned ", 0), 0u);
  EXPECT_EQ(Get(port, "/"), "hello world");
  ASSERT_TRUE(WaitFor([&] { return w.Stalls().size() >= 3; }, 10s));
  std::this_thread::sleep_for(700ms);  // one more window
  EXPECT_TRUE(w.Running()) << "the app died under the shim";
  w.Stop();
  const auto stalls = w.Stalls();
  ASSERT_EQ(stalls.size(), 3u) << "only time.sleep, the blocking fetch and the CPU burn stall";
  EXPECT_EQ(stalls[0]["class"], "blocked");
  EXPECT_EQ(stalls[0]["syscall"], "clock_nanosleep");
  EXPECT_TRUE(Near(stalls[0], 300)) << stalls[0].dump();
  EXPECT_NE(Frames(stalls[0]).find("PyObject_Vectorcall"), std::string::npos) << Frames(stalls[0]);
  EXPECT_NE(stalls[0]["hint"].get<std::string>().find("await asyncio.sleep()"), std::string::npos)
      << stalls[0]["hint"];
  // The Python function that blocked, named while it blocked: innermost Python frame first.
  const PyFrame sleep = FirstPythonFrame(stalls[0]);
  EXPECT_EQ(sleep.function, "Sleep.get") << stalls[0].dump();
  EXPECT_EQ(sleep.file, SW_TORNADO_SEED);
  EXPECT_EQ(sleep.line, LineOf(SW_TORNADO_SEED, "time.sleep(millis(self) / 1000)"));
  EXPECT_NE(Frames(stalls[0]).find("RequestHandler._execute"), std::string::npos)
      << "Tornado's own frames below it: " << Frames(stalls[0]);
  EXPECT_EQ(stalls[1]["class"], "blocked");
  EXPECT_EQ(stalls[1]["syscall"], "poll");
  EXPECT_NE(stalls[1]["fd_target"].get<std::string>().find("127.0.0.1:" + std::to_string(port + 1)),
            std::string::npos)
      << stalls[1].dump();
  EXPECT_GE(stalls[1]["duration_s"].get<double>(), 0.2995);
  // Blocked deep in the standard library (socket reads of urllib): the handler is on the stack,
  // and the hint names the blocking HTTP client it used (http/client.py among the frames).
  EXPECT_NE(Frames(stalls[1]).find("FetchBlocking.get"), std::string::npos) << Frames(stalls[1]);
  EXPECT_NE(stalls[1]["hint"].get<std::string>().find("blocking HTTP client"), std::string::npos)
      << stalls[1]["hint"];
  EXPECT_NE(stalls[1]["hint"].get<std::string>().find("AsyncHTTPClient"), std::string::npos)
      << stalls[1]["hint"];
  ExpectBusy(stalls[2]);
  EXPECT_TRUE(Near(stalls[2], 200)) << stalls[2].dump();
  // A running thread: its Python frames are read just after the native sample, so a sample may
  // miss them; the handler is named in the stall's stacks all the same.
  EXPECT_NE(Frames(stalls[2]).find("Cpu.get"), std::string::npos) << Frames(stalls[2]);
  ExpectLoopOf(w, "python");
}

TEST(ForeignLoops, PreForkedTornadoWorkersAreEachWatchedUnderTheirOwnPid) {
  if (!Have("/usr/bin/python3") ||
      RunCommand("/usr/bin/python3 -c 'import tornado' 2>&1").code != 0) {
    GTEST_SKIP() << "python3-tornado is not installed (scripts/install-deps.sh installs it)";
  }
  const int port = stallwatch::testing::FreeLoopbackPort();
  Watched w(
      {"/usr/bin/python3", SW_TORNADO_SEED, "--port", std::to_string(port), "--processes", "4"});
  ASSERT_TRUE(WaitFor([&] { return Get(port, "/") == "hello world"; }, 20s));
  // Eight blocking requests at once: a worker blocked in one cannot accept the next, so the
  // others serve them.
  const auto out = RunCommand(
      "for i in 1 2 3 4 5 6 7 8; do curl -s --max-time 10 "
      "'http://127.0.0.1:" +
      std::to_string(port) + "/sleep?ms=200' & done; wait");
  EXPECT_EQ(out.out.size(), 8 * std::strlen("slept on the loop")) << out.out;
  ASSERT_TRUE(WaitFor([&] { return w.Stalls().size() >= 2; }, 10s));
  std::this_thread::sleep_for(700ms);
  std::set<int64_t> pids;
  for (const auto& s : w.Stalls()) {
    if (s["duration_s"].get<double>() < 0.19) {
      continue;  // not a 200 ms sleep: a worker kept from a CPU by the other three on a busy host
    }
    EXPECT_EQ(s["class"], "blocked") << s.dump();
    pids.insert(s["pid"].get<int64_t>());
  }
  std::set<int64_t> loops;
  for (const auto& d : w.Windows()) {
    loops.insert(d["pid"].get<int64_t>());
  }
  const pid_t parent = w.pid();
  w.Stop();
  for (int64_t pid : loops) {
    if (pid != parent) {
      kill(static_cast<pid_t>(pid), SIGTERM);  // the workers outlive the parent
    }
  }
  EXPECT_EQ(loops.size(), 4u) << "every worker's loop reports, under its own pid";
  EXPECT_EQ(loops.count(parent), 0u) << "the parent runs no loop";
  EXPECT_GE(pids.size(), 2u);
  for (int64_t pid : pids) {
    EXPECT_EQ(loops.count(pid), 1u);
  }
}

// Workers that inherit the parent's epoll fd and all wait on it (one loop, shared): each worker
// is a loop of its own, under its own pid; the parent, which only waits for them, is none.
TEST(ForeignLoops, PreForkWorkersSharingTheParentsEpollFdAreEachWatched) {
  const int port = stallwatch::testing::FreeLoopbackPort();
  Watched w({SW_PREFORK_APP, std::to_string(port), "4", "4000"});
  auto request = [&](int ms) {
    return "exec 3<>/dev/tcp/127.0.0.1/" + std::to_string(port) + " && echo 'block " +
           std::to_string(ms) + "' >&3 && cat <&3";
  };
  // Up, and every worker past its second wait (a loop from then on: epoll_loop.h).
  ASSERT_TRUE(WaitFor(
      [&] { return RunCommand("bash -c \"" + request(0) + "\" 2>/dev/null").code == 0; }, 10s));
  std::this_thread::sleep_for(300ms);
  const std::string one = request(150);
  const auto out = RunCommand("for i in 1 2 3 4 5 6 7 8; do bash -c \"" + one + "\" & done; wait");
  std::set<std::string> answered_by;
  std::istringstream lines(out.out);
  for (std::string l; std::getline(lines, l);) {
    answered_by.insert(l);
  }
  EXPECT_GE(answered_by.size(), 2u) << out.out;
  ASSERT_TRUE(WaitFor([&] { return !w.Running(); }, 20s)) << "the server did not end by itself";
  std::set<int64_t> stall_pids;
  size_t stalls = 0;
  for (const auto& s : w.Stalls()) {
    // An idle worker that the loaded machine left unscheduled while its probe was due shows as
    // an estimated stall of its own (no busy period: the loop was waiting); the blocking
    // requests are busy periods with exact ends.
    if (s.value("estimated", false)) {
      EXPECT_LT(s["duration_s"].get<double>(), 0.15) << s.dump();
      continue;
    }
    ++stalls;
    EXPECT_EQ(s["class"], "blocked") << s.dump();
    EXPECT_EQ(s["syscall"], "clock_nanosleep") << s.dump();
    EXPECT_NE(Frames(s).find("handle_block"), std::string::npos) << Frames(s);
    stall_pids.insert(s["pid"].get<int64_t>());
  }
  std::set<int64_t> loops;
  for (const auto& d : w.Windows()) {
    loops.insert(d["pid"].get<int64_t>());
  }
  EXPECT_EQ(stalls, 8u) << "one per blocking request";
  EXPECT_EQ(loops.size(), 4u) << "every worker reports its own loop";
  EXPECT_GE(stall_pids.size(), 2u);
  for (const auto& a : answered_by) {
    EXPECT_EQ(loops.count(std::atoll(a.c_str() + 3)), 1u) << a << " answered but is not watched";
  }
}

TEST(ForeignLoops, APlainAsyncioServerIsWatched) {
  if (!Have("/usr/bin/python3")) {
    GTEST_SKIP() << "no /usr/bin/python3";
  }
  const int port = stallwatch::testing::FreeLoopbackPort();
  const std::string server = R"(
import asyncio, sys, time
async def handle(r, w):
    while line := await r.readline():
        cmd, _, arg = line.decode().strip().partition(' ')
        if cmd == 'block':
            time.sleep(int(arg) / 1000)
        w.write(b'ok ' + line)
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', int(sys.argv[1]))
    async with s:
        await s.serve_forever()
asyncio.run(main())
)";
  Watched w({"/usr/bin/python3", "-c", server, std::to_string(port)});
  const std::string client =
      "/usr/bin/python3 -c \"import socket,sys\ns=socket.create_connection(('127.0.0.1'," +
      std::to_string(port) +
      "))\nf=s.makefile('rw')\nfor c in ['ping','block 250','ping']:\n f.write(c+'\\n');"
      "f.flush();print(f.readline().strip())\"";
  ASSERT_TRUE(WaitFor([&] { return RunCommand(client + " 2>/dev/null").code == 0; }, 20s));
  ASSERT_TRUE(WaitFor([&] { return !w.Stalls().empty(); }, 10s));
  const auto out = RunCommand(client);
  EXPECT_EQ(out.out, "ok ping\nok block 250\nok ping\n");
  std::this_thread::sleep_for(700ms);
  w.Stop();
  const auto stalls = w.Stalls();
  ASSERT_EQ(stalls.size(), 2u);
  for (const auto& s : stalls) {
    EXPECT_EQ(s["class"], "blocked") << s.dump();
    EXPECT_EQ(s["syscall"], "clock_nanosleep") << s.dump();
    EXPECT_TRUE(Near(s, 250)) << s.dump();
  }
  ExpectLoopOf(w, "python");
}

// A synchronous database driver on the loop: sqlite3 waiting for a lock another connection holds
// (SQLite's busy handler sleeps inside libsqlite3 for up to the connection's timeout).
TEST(ForeignLoops, ASqliteQueryWaitingOnTheLoopIsBlamedOnTheDatabaseDriver) {
  if (!Have("/usr/bin/python3") || RunCommand("/usr/bin/python3 -c 'import sqlite3'").code != 0) {
    GTEST_SKIP() << "no /usr/bin/python3 with sqlite3";
  }
  const std::string app = R"(
import asyncio, os, sqlite3, tempfile
db = os.path.join(tempfile.mkdtemp(), 'app.db')
holder = sqlite3.connect(db, isolation_level=None)
holder.execute('create table t (x)')
holder.execute('begin exclusive')
def lookup(conn):
    try:
        return conn.execute('select count(*) from t').fetchone()
    except sqlite3.OperationalError as e:
        return str(e)
async def main():
    await asyncio.sleep(0.3)
    print(lookup(sqlite3.connect(db, timeout=0.3)), flush=True)
    await asyncio.sleep(0.5)
asyncio.run(main())
)";
  Watched w({"/usr/bin/python3", "-c", app});
  ASSERT_TRUE(WaitFor([&] { return !w.Running(); }, 20s));
  const auto stalls = w.Stalls();
  ASSERT_EQ(stalls.size(), 1u);
  const json& s = stalls[0];
  EXPECT_EQ(s["class"], "blocked") << s.dump();
  // SQLite's busy handler sleeps 1, 2, 5, 10 … ms until the 300 ms timeout is used up.
  EXPECT_GE(s["duration_s"].get<double>(), 0.25) << s.dump();
  EXPECT_LT(s["duration_s"].get<double>(), 1.0) << s.dump();
  const std::string hint = s["hint"];
  EXPECT_NE(hint.find("synchronous database driver"), std::string::npos) << hint;
  EXPECT_NE(hint.find("aiosqlite"), std::string::npos) << hint;
  EXPECT_NE(Frames(s).find("lookup"), std::string::npos) << "the Python caller: " << Frames(s);
}

// A loop thread that cannot run because another thread keeps the GIL (a long C call that never
// releases it): its own cause, naming that thread and where it is.
TEST(ForeignLoops, APythonLoopWaitingForTheGilNamesTheThreadThatHoldsIt) {
  if (!Have("/usr/bin/python3")) {
    GTEST_SKIP() << "no /usr/bin/python3";
  }
  const std::string app = R"(
import asyncio, threading, time
def crunch():
    time.sleep(0.3)
    return sum(range(40_000_000))
async def main():
    worker = threading.Thread(target=crunch)
    worker.start()
    while worker.is_alive():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
asyncio.run(main())
)";
  Watched w({"/usr/bin/python3", "-c", app});
  ASSERT_TRUE(WaitFor([&] { return !w.Running(); }, 30s));
  std::vector<json> gil;
  for (const auto& s : w.Stalls()) {
    if (s["fd_target"].get<std::string>().rfind("GIL held by thread ", 0) == 0) {
      gil.push_back(s);
    }
  }
  ASSERT_FALSE(gil.empty()) << "no stall waiting for the GIL among " << w.Stalls().size();
  const json& s = gil.front();
  EXPECT_EQ(s["class"], "blocked") << s.dump();
  EXPECT_EQ(s["syscall"], "futex") << s.dump();
  const std::string target = s["fd_target"];
  EXPECT_NE(target.find(" in crunch (<string>:5)"), std::string::npos) << target;
  const pid_t holder = std::stoi(target.substr(std::strlen("GIL held by thread ")));
  EXPECT_NE(holder, s["pid"].get<int>()) << "the holder is the worker, not the loop thread";
  const std::string hint = s["hint"];
  EXPECT_NE(hint.find("waited for the GIL"), std::string::npos) << hint;
  EXPECT_NE(hint.find("ProcessPoolExecutor"), std::string::npos) << hint;
}

TEST(ForeignLoops, RedisDebugSleepAndABusyLuaScriptAreCaughtWithRedisOwnFunctions) {
  if (!Have("/usr/bin/redis-server") || !Have("/usr/bin/redis-cli")) {
    GTEST_SKIP() << "redis-server is not installed (scripts/install-deps.sh installs it)";
  }
  const int port = stallwatch::testing::FreeLoopbackPort();
  Watched w({"/usr/bin/redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--enable-debug-command", "local", "--logfile",
             "/dev/null"});
  const std::string cli = "redis-cli -p " + std::to_string(port) + " ";
  ASSERT_TRUE(WaitFor([&] { return RunCommand(cli + "ping").out == "PONG\n"; }, 20s));
  EXPECT_EQ(RunCommand(cli + "set k v").out, "OK\n");
  EXPECT_EQ(RunCommand(cli + "debug sleep 0.3").out, "OK\n");
  const auto lua = RunCommand(cli + "eval 'local i=0 while i < 100000000 do i=i+1 end return i' 0");
  EXPECT_EQ(lua.out, "100000000\n");
  EXPECT_EQ(RunCommand(cli + "get k").out, "v\n");
  ASSERT_TRUE(WaitFor([&] { return w.Stalls().size() >= 2; }, 10s));
  std::this_thread::sleep_for(700ms);
  EXPECT_TRUE(w.Running());
  w.Stop();
  const auto stalls = w.Stalls();
  ASSERT_EQ(stalls.size(), 2u);
  EXPECT_EQ(stalls[0]["class"], "blocked");
  EXPECT_EQ(stalls[0]["syscall"], "clock_nanosleep");
  EXPECT_TRUE(Near(stalls[0], 300)) << stalls[0].dump();
  EXPECT_NE(Frames(stalls[0]).find("debugCommand"), std::string::npos) << Frames(stalls[0]);
  ExpectBusy(stalls[1]);
  EXPECT_NE(Frames(stalls[1]).find("evalGenericCommand"), std::string::npos) << Frames(stalls[1]);
  EXPECT_NE(stalls[1]["hint"].get<std::string>().find("SLOWLOG GET"), std::string::npos)
      << stalls[1]["hint"];
  ExpectLoopOf(w, "redis");
}

TEST(ForeignLoops, NodeBusyLoopAndSynchronousCallsOnTheLoopThread) {
  if (!Have("/usr/bin/node")) {
    GTEST_SKIP() << "node is not installed";
  }
  const std::string script = R"(
const { execSync } = require('child_process');
const fs = require('fs');
let n = 0;
const t = setInterval(() => {
  n++;
  if (n === 10) { const e = process.hrtime.bigint() + 200000000n; while (process.hrtime.bigint() < e) {} }
  if (n === 20) { execSync('sleep 0.3'); }
  if (n === 30) { fs.readFileSync('/proc/self/status'); }
  if (n === 45) { clearInterval(t); }
}, 20);
)";
  Watched w({"/usr/bin/node", "-e", script});
  ASSERT_TRUE(WaitFor([&] { return !w.Running(); }, 30s)) << "node did not end by itself";
  EXPECT_EQ(w.Stop(), 0);
  const auto stalls = w.Stalls();
  ASSERT_EQ(stalls.size(), 2u);
  ExpectBusy(stalls[0]);
  EXPECT_TRUE(Near(stalls[0], 200)) << stalls[0].dump();
  // execSync runs a loop of its own on the loop thread: the loop is blocked in that wait.
  EXPECT_EQ(stalls[1]["class"], "blocked");
  EXPECT_EQ(stalls[1]["syscall"], "epoll_pwait");
  EXPECT_NE(Frames(stalls[1]).find("SyncProcessRunner"), std::string::npos) << Frames(stalls[1]);
  EXPECT_NE(stalls[1]["hint"].get<std::string>().find("child_process"), std::string::npos)
      << stalls[1]["hint"];
  EXPECT_GE(stalls[1]["duration_s"].get<double>(), 0.2995);
  ExpectLoopOf(w, "node");
}

// With a perf map (node --perf-basic-prof), the JavaScript functions of a stall are named.
TEST(ForeignLoops, NodeJavaScriptFunctionsAreNamedFromThePerfMap) {
  if (!Have("/usr/bin/node")) {
    GTEST_SKIP() << "node is not installed";
  }
  const std::string script = R"(
function busyLoopHere() {
  const e = process.hrtime.bigint() + 250000000n;
  while (process.hrtime.bigint() < e) {}
}
let n = 0;
const t = setInterval(() => { if (++n === 10) busyLoopHere(); if (n === 60) clearInterval(t); }, 20);
)";
  Watched w(
      {"/usr/bin/node", "--perf-basic-prof", "--interpreted-frames-native-stack", "-e", script});
  const pid_t pid = w.pid();
  ASSERT_TRUE(WaitFor([&] { return !w.Running(); }, 30s)) << "node did not end by itself";
  unlink(("/tmp/perf-" + std::to_string(pid) + ".map").c_str());  // written by node
  const auto stalls = w.Stalls();
  ASSERT_EQ(stalls.size(), 1u);
  ExpectBusy(stalls[0]);
  bool named = false;
  for (const auto& st : stalls[0]["stacks"]) {
    for (const auto& f : st["frames"]) {
      if (f.value("function", "").rfind("busyLoopHere", 0) == 0) {
        named = true;
        EXPECT_EQ(f["module"], "[jit]") << f.dump();
      }
    }
  }
  EXPECT_TRUE(named) << Frames(stalls[0]);
}

}  // namespace

namespace {

const char* kTwoLoops = R"(
import asyncio, time
async def work():
    await asyncio.sleep(0.1)
    time.sleep(0.15)
    await asyncio.sleep(0.1)
asyncio.run(work())
time.sleep(0.3)  # between the loops: no loop runs, so no stall
asyncio.run(work())
print("done")
)";

// asyncio.run twice: the first loop's epoll fd is closed and the second loop's gets the same
// number. Two loops, one stall each; the thread's time between them is no stall.
TEST(ForeignLoopsSafety, AnEpollFdClosedAndReusedIsANewLoop) {
  if (!Have("/usr/bin/python3")) {
    GTEST_SKIP() << "no /usr/bin/python3";
  }
  Watched w({"/usr/bin/python3", "-c", kTwoLoops});
  ASSERT_TRUE(WaitFor([&] { return !w.Running(); }, 20s));
  EXPECT_EQ(w.Stop(), 0);
  const auto stalls = w.Stalls();
  ASSERT_EQ(stalls.size(), 2u);
  for (const auto& s : stalls) {
    EXPECT_EQ(s["syscall"], "clock_nanosleep") << s.dump();
    EXPECT_TRUE(Near(s, 150)) << s.dump();
  }
}

// Another preloaded interposer of the wait calls, before or after the shim: both see the waits,
// and the loop is watched.
TEST(ForeignLoopsSafety, AnotherPreloadedInterposerIsChained) {
  if (!Have("/usr/bin/python3")) {
    GTEST_SKIP() << "no /usr/bin/python3";
  }
  for (const bool shim_first : {true, false}) {
    char path[] = "/tmp/stallwatch-chained-XXXXXX";
    close(mkstemp(path));
    const std::string preload = shim_first ? std::string(SW_PRELOAD_LIB) + " " + SW_COUNT_WAITS
                                           : std::string(SW_COUNT_WAITS) + " " + SW_PRELOAD_LIB;
    const std::string script = std::string(kTwoLoops);
    std::string cmd = "LD_PRELOAD='" + preload + "' STALLWATCH_ENDPOINT=file:";
    cmd += path;
    cmd += " /usr/bin/python3 -c '" + script + "' 2>&1";
    const auto r = RunCommand(cmd);
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("done\n"), std::string::npos) << r.out;
    // The program's count (the agent's watchdog process, which inherits the environment, prints
    // its own, 0).
    long most = -1;
    for (size_t at = r.out.find("count_waits: "); at != std::string::npos;
         at = r.out.find("count_waits: ", at + 1)) {
      most = std::max(most, std::atol(r.out.c_str() + at + 13));
    }
    EXPECT_GT(most, 4) << r.out;
    std::ifstream f(path);
    int stalls = 0;
    for (std::string line; std::getline(f, line);) {
      const auto j = json::parse(line);
      if (j["kind"] == "stall" && !j["ongoing"].get<bool>()) {
        ++stalls;
      }
    }
    unlink(path);
    EXPECT_EQ(stalls, 2) << (shim_first ? "shim first" : "shim second");
  }
}

// A program that exits by itself, long before its first report window is due: its stall and
// the window so far still reach the endpoint, with the watchdog as a thread (flushed at exit)
// and as a process (which flushes when its host is gone).
TEST(ForeignLoopsSafety, AProgramThatExitsDeliversItsStallAndItsLastWindow) {
  if (!Have("/usr/bin/python3")) {
    GTEST_SKIP() << "no /usr/bin/python3";
  }
  const char* script = R"(
import asyncio, time
async def main():
    await asyncio.sleep(0.3)
    time.sleep(0.15)
    await asyncio.sleep(0.3)
asyncio.run(main())
print("done")
)";
  for (const char* mode : {"thread", "process"}) {
    SCOPED_TRACE(mode);
    Watched w({"/usr/bin/python3", "-c", script},
              {"STALLWATCH_REPORT_INTERVAL=60s", std::string("STALLWATCH_WATCHDOG=") + mode});
    ASSERT_TRUE(WaitFor([&] { return !w.Running(); }, 20s));
    EXPECT_EQ(w.Stop(), 0);
    // A watchdog process sees its host gone within half a second, then writes.
    WaitFor([&] { return !w.Windows().empty(); }, 5s);
    const auto stalls = w.Stalls();
    ASSERT_EQ(stalls.size(), 1u);
    EXPECT_EQ(stalls[0]["syscall"], "clock_nanosleep") << stalls[0].dump();
    const auto windows = w.Windows();
    ASSERT_EQ(windows.size(), 1u) << "the window so far, at exit";
    EXPECT_GE(windows[0]["stalls_total"].get<int>(), 1) << windows[0].dump();
    EXPECT_GT(windows[0]["iterations"].get<int>(), 1) << windows[0].dump();
  }
}

// A loop closed on one thread is detached when another thread's loop attaches, but its state is
// freed only once its own thread is done with it: under valgrind's memcheck, a thread that
// starts a new loop after that never reads freed memory (it did, before the state said so).
TEST(ForeignLoopsSafety, AClosedLoopIsFreedOnlyWhenItsThreadIsDoneWithIt) {
  if (!Have("/usr/bin/valgrind")) {
    GTEST_SKIP() << "no /usr/bin/valgrind (Debian package valgrind)";
  }
  const auto r = RunCommand(std::string("LD_PRELOAD=") + SW_PRELOAD_LIB +
                                " STALLWATCH_ENDPOINT=file:/dev/null /usr/bin/valgrind -q "
                                "--error-exitcode=9 " +
                                SW_CLOSED_LOOPS_APP + " 2>&1",
                            120s);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.find("Invalid read"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done\n"), std::string::npos) << r.out;
}

// A program that never waits on an epoll fd gets nothing: no agent thread, no line.
TEST(ForeignLoopsSafety, AProgramThatNeverWaitsIsLeftAlone) {
  if (!Have("/usr/bin/python3")) {
    GTEST_SKIP() << "no /usr/bin/python3";
  }
  const auto r = RunCommand(std::string("LD_PRELOAD=") + SW_PRELOAD_LIB +
                            " /usr/bin/python3 -c 'import os, time; time.sleep(0.3); "
                            "print(len(os.listdir(\"/proc/self/task\")))' 2>&1");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "1\n") << "one thread and no output but the program's";
}

}  // namespace
