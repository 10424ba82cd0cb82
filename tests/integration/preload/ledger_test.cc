// The blocking-call ledger in real programs under the preload shim: a plain epoll loop in C
// (ledger_app.c) whose loop thread resolves names, sleeps, syncs a file and connects on a
// blocking socket, beside a worker thread making the same calls; the same with file, pipe and
// socket I/O, popen, lock waits and a contended mutex (ledger_io_app.c); Python asyncio loops
// calling time.sleep and reading a file; and `stallwatch check`, the CI gate built on it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "test_support.h"

using namespace std::chrono_literals;
using nlohmann::json;
using stallwatch::testing::CommandResult;
using stallwatch::testing::RunCommand;

namespace {

constexpr const char* kPython = "/usr/bin/python3";

// A call site summed over a run's "calls" findings.
struct Site {
  uint64_t count = 0;
  double total_s = 0;
  double max_s = 0;
  std::string file;
  int line = 0;
  std::string module;
  std::string kind;
};

class Findings {
 public:
  Findings() {
    char path[] = "/tmp/stallwatch-ledger-XXXXXX";
    const int fd = mkstemp(path);
    close(fd);
    path_ = path;
  }
  ~Findings() { unlink(path_.c_str()); }
  Findings(const Findings&) = delete;
  Findings& operator=(const Findings&) = delete;

  // Runs `args` under the shim with findings to this file; returns its exit code.
  CommandResult Run(const std::string& args) {
    return RunCommand(std::string("env LD_PRELOAD=") + SW_PRELOAD_LIB +
                          " STALLWATCH_WATCHDOG=thread STALLWATCH_ENDPOINT=file:" + path_ +
                          " STALLWATCH_THRESHOLD=200ms " + args + " 2>&1",
                      30s);
  }

  std::vector<json> Read(const std::string& kind) const {
    std::vector<json> out;
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("kind", "") == kind) {
        out.push_back(std::move(j));
      }
    }
    return out;
  }

  // (call, function) → totals, over every calls finding.
  std::map<std::pair<std::string, std::string>, Site> Sites() const {
    std::map<std::pair<std::string, std::string>, Site> sites;
    for (const auto& f : Read("calls")) {
      for (const auto& c : f["calls"]) {
        Site& s = sites[{c["call"].get<std::string>(), c["site"]["function"].get<std::string>()}];
        s.count += c["count"].get<uint64_t>();
        s.total_s += c["total_s"].get<double>();
        s.max_s = std::max(s.max_s, c["max_s"].get<double>());
        s.file = c["site"]["file"].get<std::string>();
        s.line = c["site"]["line"].get<int>();
        s.module = c["site"].value("module", "");
        s.kind = c["site"].value("kind", "");
      }
    }
    return sites;
  }

  std::string Dump() const {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string path_;
};

std::string Check(const std::string& flags, const std::string& program) {
  return std::string(SW_CLI) + " check " + flags + " -- " + program + " 2>&1";
}

TEST(Ledger, CountsAndTimesEachCallFamilyOnTheLoopThreadByCaller) {
  Findings f;
  const CommandResult r = f.Run(std::string(SW_LEDGER_APP) + " dirty 5");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto sites = f.Sites();
  std::string all;
  for (const auto& [k, s] : sites) {
    all += k.first + " from " + k.second + ": " + std::to_string(s.count) + "\n";
  }
  SCOPED_TRACE(all + f.Dump());

  // Name resolution: the count is exact and the caller named, with its file and line.
  const auto dns = sites.find({"getaddrinfo", "resolve_backend"});
  ASSERT_NE(dns, sites.end());
  EXPECT_EQ(dns->second.count, 100u);
  EXPECT_GT(dns->second.total_s, 0);
  EXPECT_NE(dns->second.file.find("ledger_app.c"), std::string::npos);
  EXPECT_GT(dns->second.line, 0);

  // Sleeps: 5 × usleep(2000), each at least 2 ms.
  const auto nap = sites.find({"usleep", "nap"});
  ASSERT_NE(nap, sites.end());
  EXPECT_EQ(nap->second.count, 5u);
  EXPECT_GE(nap->second.max_s, 0.002);
  EXPECT_GE(nap->second.total_s, 5 * 0.002);
  EXPECT_LT(nap->second.total_s, 5.0);

  // A disk sync, a blocking connect, a join.
  const auto sync = sites.find({"fsync", "sync_file"});
  ASSERT_NE(sync, sites.end());
  EXPECT_EQ(sync->second.count, 1u);
  const auto dial = sites.find({"connect", "dial"});
  ASSERT_NE(dial, sites.end());
  EXPECT_EQ(dial->second.count, 1u);
  const auto join = sites.find({"pthread_join", "main"});
  ASSERT_NE(join, sites.end());
  EXPECT_EQ(join->second.count, 1u);

  // The worker thread made the same calls: none is the loop's.
  for (const auto& [k, s] : sites) {
    EXPECT_NE(k.second, "worker_calls") << k.first;
  }
}

TEST(Ledger, ALoopThatOnlyWaitsHasNoCallsEvenWhenOtherThreadsMakeThem) {
  Findings f;
  const CommandResult r = f.Run(std::string(SW_LEDGER_APP) + " clean");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(f.Read("delay").empty()) << f.Dump();  // the loop was watched
  EXPECT_TRUE(f.Sites().empty()) << f.Dump();
}

TEST(Ledger, PythonAsyncioTimeSleepOnTheLoopIsCounted) {
  if (access(kPython, X_OK) != 0) {
    GTEST_SKIP() << kPython << " is not installed";
  }
  Findings f;
  const CommandResult r = f.Run(std::string(kPython) +
                                " -c 'import asyncio, time\n"
                                "async def main():\n"
                                "    for _ in range(20):\n"
                                "        time.sleep(0.002)\n"
                                "        await asyncio.sleep(0.001)\n"
                                "asyncio.run(main())'");
  ASSERT_EQ(r.code, 0) << r.out;
  uint64_t sleeps = 0;
  for (const auto& [k, s] : f.Sites()) {
    if (k.first == "clock_nanosleep" || k.first == "nanosleep") {
      sleeps += s.count;
    }
  }
  EXPECT_GE(sleeps, 19u) << f.Dump();  // the first may come before the loop is found
}

// The sites of one run, one per line, for failure messages.
std::string Listing(const std::map<std::pair<std::string, std::string>, Site>& sites) {
  std::string all;
  for (const auto& [k, s] : sites) {
    all += k.first + " from " + k.second + ": " + std::to_string(s.count) + " (" + s.file + ":" +
           std::to_string(s.line) + ")\n";
  }
  return all;
}

// Checks that (call, function) was counted `count` times, timed, and named with its line in
// ledger_io_app.c.
void ExpectSite(const std::map<std::pair<std::string, std::string>, Site>& sites,
                const std::string& call, const std::string& function, uint64_t count) {
  const auto it = sites.find({call, function});
  ASSERT_NE(it, sites.end()) << call << " from " << function << " was not counted";
  EXPECT_EQ(it->second.count, count) << call << " from " << function;
  EXPECT_GT(it->second.total_s, 0) << call << " from " << function;
  EXPECT_LT(it->second.total_s, 5.0) << call << " from " << function;
  EXPECT_NE(it->second.file.find("ledger_io_app.c"), std::string::npos) << call;
  EXPECT_GT(it->second.line, 0) << call << " from " << function;
}

void ExpectNoSite(const std::map<std::pair<std::string, std::string>, Site>& sites,
                  const std::string& function) {
  for (const auto& [k, s] : sites) {
    EXPECT_NE(k.second, function) << k.first << " from " << function << " was counted";
  }
}

constexpr int kIoCalls = 10;  // ledger_io_app's N

class LedgerIo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    findings_ = new Findings();
    run_ = new CommandResult(
        findings_->Run(std::string(SW_LEDGER_IO_APP) + " io " + std::to_string(kIoCalls)));
  }
  static void TearDownTestSuite() {
    delete findings_;
    delete run_;
  }
  void SetUp() override {
    ASSERT_EQ(run_->code, 0) << run_->out;
    sites_ = findings_->Sites();
  }

  static Findings* findings_;
  static CommandResult* run_;
  std::map<std::pair<std::string, std::string>, Site> sites_;
};
Findings* LedgerIo::findings_ = nullptr;
CommandResult* LedgerIo::run_ = nullptr;

TEST_F(LedgerIo, RegularFileIoIsCountedByCall) {
  SCOPED_TRACE(Listing(sites_));
  ExpectSite(sites_, "open", "file_io", 1);
  ExpectSite(sites_, "read", "file_io", kIoCalls);
  ExpectSite(sites_, "write", "file_io", kIoCalls);
  ExpectSite(sites_, "pread", "file_io", kIoCalls);
  ExpectSite(sites_, "pwrite", "file_io", kIoCalls);
  ExpectSite(sites_, "readv", "file_io", kIoCalls);
  ExpectSite(sites_, "writev", "file_io", kIoCalls);
}

TEST_F(LedgerIo, APipeCountsOnlyInBlockingModeAndFcntlAndIoctlFlipIt) {
  SCOPED_TRACE(Listing(sites_));
  ExpectSite(sites_, "read_blocking", "pipe_blocking", kIoCalls);
  ExpectNoSite(sites_, "pipe_nonblock");  // after fcntl(F_SETFL, O_NONBLOCK)
  ExpectSite(sites_, "read_blocking", "pipe_blocking_again", kIoCalls);  // after ioctl(FIONBIO, 0)
}

TEST_F(LedgerIo, ASocketCountsOnlyInBlockingModeAndNeverWithMsgDontwait) {
  SCOPED_TRACE(Listing(sites_));
  ExpectSite(sites_, "send", "sock_blocking", kIoCalls);
  ExpectSite(sites_, "recv", "sock_blocking", kIoCalls);  // not its MSG_DONTWAIT ones
  ExpectNoSite(sites_, "sock_nonblock");                  // the normal case of a loop
  ExpectSite(sites_, "accept", "accept_one", 1);
  EXPECT_EQ(sites_.count({"connect", "accept_one"}), 0u);  // its socket is non-blocking
}

TEST_F(LedgerIo, PopenFcntlLockWaitsAndAContendedMutexAreCounted) {
  SCOPED_TRACE(Listing(sites_));
  ExpectSite(sites_, "popen", "run_child", 1);
  ExpectSite(sites_, "pclose", "run_child", 1);
  ExpectSite(sites_, "fcntl", "lock_file", 2);  // F_SETLKW and F_OFD_SETLKW, not F_SETLK
  ExpectSite(sites_, "pthread_mutex_lock", "mutex_taken", 1);
  // The worker held it for 100 ms once the loop asked; the loop waited for most of that.
  const std::pair<std::string, std::string> taken{"pthread_mutex_lock", "mutex_taken"};
  EXPECT_GE(sites_[taken].total_s, 0.005);
  ExpectNoSite(sites_, "mutex_free");  // free: pthread_mutex_trylock took it
}

TEST_F(LedgerIo, TheWorkersCallsAndTheAgentsOwnAreNotCounted) {
  SCOPED_TRACE(Listing(sites_) + findings_->Dump());
  ExpectNoSite(sites_, "worker_calls");
  ExpectNoSite(sites_, "worker");
  for (const auto& [k, s] : sites_) {
    EXPECT_EQ(s.module.find("stallwatch"), std::string::npos) << k.first << " from " << k.second;
  }
}

TEST(Ledger, AnIoLoopThatOnlyWaitsHasNoCallsWhileItsWorkerMakesThem) {
  Findings f;
  const CommandResult r = f.Run(std::string(SW_LEDGER_IO_APP) + " clean");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(f.Read("delay").empty()) << f.Dump();  // the loop was watched
  EXPECT_TRUE(f.Sites().empty()) << Listing(f.Sites());
}

// A Python program in a file of its own, removed at the end.
class PythonScript {
 public:
  explicit PythonScript(const std::string& text) {
    char path[] = "/tmp/stallwatch-ledger-py-XXXXXX.py";
    const int fd = mkstemps(path, 3);
    if (fd >= 0) {
      const ssize_t n = write(fd, text.data(), text.size());
      (void)n;
      close(fd);
    }
    path_ = path;
  }
  ~PythonScript() { unlink(path_.c_str()); }
  PythonScript(const PythonScript&) = delete;
  PythonScript& operator=(const PythonScript&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The interpreter's own calls (open, read, getaddrinfo made by CPython's C code) are named by
// their Python caller: function, file and line of the script.
TEST(Ledger, PythonCallsAreNamedByTheirPythonCaller) {
  if (access(kPython, X_OK) != 0) {
    GTEST_SKIP() << kPython << " is not installed";
  }
  const PythonScript script(
      "import asyncio\n"                              // 1
      "\n"                                            // 2
      "def load_config():\n"                          // 3
      "    with open('/etc/hostname', 'rb') as c:\n"  // 4
      "        return c.read()\n"                     // 5
      "\n"                                            // 6
      "async def main():\n"                           // 7
      "    for _ in range(20):\n"                     // 8
      "        load_config()\n"                       // 9
      "        await asyncio.sleep(0.001)\n"          // 10
      "\n"                                            // 11
      "asyncio.run(main())\n");                       // 12
  Findings f;
  const CommandResult r = f.Run(std::string(kPython) + " " + script.path());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto sites = f.Sites();
  SCOPED_TRACE(Listing(sites) + f.Dump());
  const auto open = sites.find({"open", "load_config"});
  ASSERT_NE(open, sites.end());
  EXPECT_GE(open->second.count, 19u);  // the first may come before the loop is found
  EXPECT_LE(open->second.count, 20u);
  EXPECT_GT(open->second.total_s, 0);
  EXPECT_EQ(open->second.file, script.path());
  EXPECT_EQ(open->second.line, 4);
  EXPECT_EQ(open->second.kind, "python");
  const auto read = sites.find({"read", "load_config"});
  ASSERT_NE(read, sites.end());
  EXPECT_GE(read->second.count, 19u);  // a read to the end of the file is two reads
  EXPECT_EQ(read->second.file, script.path());
  EXPECT_EQ(read->second.line, 5);
  EXPECT_EQ(read->second.kind, "python");
  for (const auto& [k, s] : sites) {
    EXPECT_EQ(s.module.find("python3"), std::string::npos) << k.first << " from " << k.second;
  }
}

TEST(Check, PythonFileReadsOnAnAsyncioLoopAreCaughtWithTheirPythonCaller) {
  if (access(kPython, X_OK) != 0) {
    GTEST_SKIP() << kPython << " is not installed";
  }
  const PythonScript script(
      "import asyncio\n"
      "def load_config():\n"
      "    with open('/etc/hostname', 'rb') as c:\n"
      "        return c.read()\n"
      "async def main():\n"
      "    for _ in range(5):\n"
      "        load_config()\n"
      "        await asyncio.sleep(0.001)\n"
      "asyncio.run(main())\n");
  const CommandResult r = RunCommand(
      Check("--max-stall 2s --forbid file", std::string(kPython) + " " + script.path()), 30s);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("read from load_config (" + script.path() + ":4)"), std::string::npos)
      << r.out;
}

TEST(Check, FailsOnADirtyProgramListingTheCallSite) {
  const CommandResult r =
      RunCommand(Check("--forbid getaddrinfo,fsync", std::string(SW_LEDGER_APP) + " dirty"), 30s);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("getaddrinfo from resolve_backend ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ledger_app.c:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("100 calls"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fsync from sync_file"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("usleep from nap"), std::string::npos) << r.out;  // not forbidden
}

TEST(Check, FailsOnTheNewCallsAndFamilies) {
  const CommandResult r =
      RunCommand(Check("--max-stall 2s --forbid read_blocking,pthread_mutex_lock,file",
                       std::string(SW_LEDGER_IO_APP) + " io"),
                 30s);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("read_blocking from pipe_blocking ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pthread_mutex_lock from mutex_taken ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pread from file_io ("), std::string::npos) << r.out;  // the family
  EXPECT_NE(r.out.find("ledger_io_app.c:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("recv from "), std::string::npos) << r.out;  // not forbidden
}

TEST(Check, PassesACleanIoProgram) {
  const CommandResult r = RunCommand(Check("--max-stall 2s --forbid file,socket,wait,lock,connect",
                                           std::string(SW_LEDGER_IO_APP) + " clean"),
                                     30s);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("stallwatch check: clean"), std::string::npos) << r.out;
}

// A libevent loop (event_base_dispatch, not a discovered epoll loop): loop_app's callback sleeps
// 150 ms twice. Its slow_call ends in a tail jump to usleep, so the site is libevent's code that
// called the callback (docs/design.md "Blocking-call ledger").
TEST(Check, ALibeventLoopsSleepIsCaught) {
  const CommandResult r =
      RunCommand(Check("--max-stall 2s --forbid sleep", std::string(SW_LOOP_APP) + " 800 2"), 30s);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("usleep from "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(": 2 calls, max "), std::string::npos) << r.out;
}

TEST(Check, MaxBlockingCatchesTheLongCallsOnly) {
  const CommandResult r =
      RunCommand(Check("--max-blocking 1ms", std::string(SW_LEDGER_APP) + " dirty"), 30s);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("usleep from nap"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("longer than 1ms"), std::string::npos) << r.out;
}

TEST(Check, PassesACleanProgram) {
  const CommandResult r = RunCommand(
      Check("--max-stall 2s --forbid dns,sleep,sync,connect,wait,lock --max-blocking 1ms",
            std::string(SW_LEDGER_APP) + " clean"),
      30s);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("stallwatch check: clean"), std::string::npos) << r.out;
}

TEST(Check, PassesThroughTheProgramsExitStatusWithTheFlag) {
  const std::string app = std::string(SW_LEDGER_APP) + " clean 5 7";
  // A long --max-stall: a loaded machine may starve the loop, which is not what this tests.
  EXPECT_EQ(RunCommand(Check("--max-stall 2s --exit-status", app), 30s).code, 7);
  EXPECT_EQ(RunCommand(Check("--max-stall 2s", app), 30s).code, 0);  // the verdict alone
}

TEST(Check, StallsOverMaxStallFailWithTheirFrames) {
  // 40 naps of 2 ms in one busy period: an 80 ms stall, over a 30 ms limit.
  const CommandResult r =
      RunCommand(Check("--max-stall 30ms", std::string(SW_LEDGER_APP) + " dirty 40"), 30s);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("stall of"), std::string::npos) << r.out;
}

TEST(Check, JsonForCi) {
  const CommandResult r = RunCommand(
      std::string(SW_CLI) + " check --json --forbid dns -- " + SW_LEDGER_APP + " dirty 2>/dev/null",
      30s);
  EXPECT_EQ(r.code, 3) << r.out;
  // The verdict is the last line (the program's own output comes first).
  std::string last = r.out;
  while (!last.empty() && last.back() == '\n') {
    last.pop_back();
  }
  last = last.substr(last.rfind('\n') + 1);
  const json j = json::parse(last, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  EXPECT_FALSE(j["ok"].get<bool>());
  ASSERT_FALSE(j["calls"].empty());
  EXPECT_EQ(j["calls"][0]["call"], "getaddrinfo");
  EXPECT_EQ(j["calls"][0]["site"]["function"], "resolve_backend");
  EXPECT_EQ(j["calls"][0]["count"], 100);
}

TEST(Check, PythonTimeSleepOnAnAsyncioLoopIsCaught) {
  if (access(kPython, X_OK) != 0) {
    GTEST_SKIP() << kPython << " is not installed";
  }
  const CommandResult r = RunCommand(
      Check("--forbid sleep", std::string(kPython) + " -c 'import asyncio, time\n"
                                                     "async def main():\n"
                                                     "    for _ in range(20):\n"
                                                     "        time.sleep(0.002)\n"
                                                     "        await asyncio.sleep(0.001)\n"
                                                     "asyncio.run(main())'"),
      30s);
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("nanosleep from "), std::string::npos) << r.out;
}

TEST(Check, BadFlagsGetOneLineNamingTheAcceptedForm) {
  const CommandResult r =
      RunCommand(std::string(SW_CLI) + " check --forbid dns,bogus -- true 2>&1");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("unknown call 'bogus'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("getaddrinfo"), std::string::npos) << r.out;
  const CommandResult d = RunCommand(std::string(SW_CLI) + " check --max-stall soon -- true 2>&1");
  EXPECT_EQ(d.code, 2) << d.out;
}

}  // namespace
