// Debian's memcached (-t 4) under the preload shim, with a real client load from
// libmemcached-tools' memcslap, on loopback. memcached names its threads ("mc-worker"), so every
// worker loop and the dispatcher ("main") must show up under those names.
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "test_support.h"

using namespace std::chrono_literals;

namespace {

bool Have(const char* path) { return access(path, X_OK) == 0; }

int FreePort() { return stallwatch::testing::FreeLoopbackPort(); }

TEST(PreloadMemcached, EveryWorkerLoopIsWatchedUnderItsThreadNameAndALoadRunsUnharmed) {
  if (!Have("/usr/bin/memcached") || !Have("/usr/bin/memcslap")) {
    GTEST_SKIP() << "memcached and libmemcached-tools are not installed (scripts/install-deps.sh "
                    "installs them)";
  }
  char path[] = "/tmp/stallwatch-memcached-XXXXXX";
  close(mkstemp(path));
  const int port = FreePort();
  const std::string endpoint = std::string("STALLWATCH_ENDPOINT=file:") + path;
  const pid_t mc = fork();
  if (mc == 0) {
    putenv(const_cast<char*>("LD_PRELOAD=" SW_PRELOAD_LIB));
    putenv(const_cast<char*>("STALLWATCH_REPORT_INTERVAL=500ms"));
    putenv(strdup(endpoint.c_str()));
    const std::string p = std::to_string(port);
    execl("/usr/bin/memcached", "memcached", "-u", "root", "-t", "4", "-l", "127.0.0.1", "-p",
          p.c_str(), "-U", "0", static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(mc, 0);
  std::this_thread::sleep_for(700ms);
  ASSERT_EQ(waitpid(mc, nullptr, WNOHANG), 0) << "memcached did not start under the shim";

  const std::string load =
      "timeout 60 /usr/bin/memcslap --servers=127.0.0.1:" + std::to_string(port) +
      " --concurrency=4 --execute-number=5000 2>&1";
  FILE* p = popen(load.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  const int load_status = pclose(p);
  std::this_thread::sleep_for(1200ms);  // two more delay windows
  EXPECT_EQ(waitpid(mc, nullptr, WNOHANG), 0) << "memcached died under the shim";
  kill(mc, SIGTERM);
  int status = 0;
  waitpid(mc, &status, 0);

  EXPECT_EQ(load_status, 0) << out;
  EXPECT_NE(out.find("Time total"), std::string::npos) << out;

  std::set<std::string> loops;
  std::ifstream f(path);
  std::string line;
  int windows_with_ticks = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    loops.insert(j["loop"].get<std::string>());
    if (j["kind"] == "delay" && j["count"].get<int>() > 0) ++windows_with_ticks;
    if (j["kind"] == "delay") {
      EXPECT_EQ(j["boundary_source"], "epoll_wait") << line;
    }
  }
  unlink(path);
  EXPECT_EQ(loops, (std::set<std::string>{"main", "mc-worker", "mc-worker-2", "mc-worker-3",
                                          "mc-worker-4"}));
  EXPECT_GE(windows_with_ticks, 5 * 3);
}

}  // namespace

namespace {

std::string HttpBody(int port, const std::string& path) {
  const std::string cmd =
      "curl -s --max-time 2 http://127.0.0.1:" + std::to_string(port) + path + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// The README's example, `stallwatch run -- memcached -t 4 -u memcache`, with the daemon started
// as documented (its default socket mode): memcached drops root for user memcache before its
// loops start, and its agent must still reach the daemon. The loops appear before the first
// report window (10 s), under memcached's own pid (the kernel's, not a claim).
TEST(PreloadMemcached, DroppingPrivilegesStillReportsToTheDaemonUnderItsOwnPid) {
  if (!Have("/usr/bin/memcached") || !Have("/usr/bin/curl")) {
    GTEST_SKIP() << "memcached and curl are needed";
  }
  if (geteuid() != 0 || getpwnam("memcache") == nullptr) {
    GTEST_SKIP() << "needs root and the user memcache (Debian's memcached package)";
  }
  char dir[] = "/tmp/stallwatch-mcd-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  chmod(dir, 0755);  // as /run is: any user may pass through
  const std::string sock = std::string(dir) + "/run/agent.sock";
  const int http = FreePort();
  const std::string http_listen = "127.0.0.1:" + std::to_string(http);
  const pid_t daemon = fork();
  if (daemon == 0) {
    execl(SW_DAEMON, "stallwatchd", "--agent-socket", sock.c_str(), "--http-listen",
          http_listen.c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(daemon, 0);
  ASSERT_TRUE(stallwatch::testing::WaitFor([&] { return access(sock.c_str(), F_OK) == 0; }, 5s));

  const std::string err_path = std::string(dir) + "/memcached.err";
  const int port = FreePort();
  const auto started = std::chrono::steady_clock::now();
  const pid_t mc = fork();
  if (mc == 0) {
    putenv(const_cast<char*>("LD_PRELOAD=" SW_PRELOAD_LIB));
    const std::string endpoint = "STALLWATCH_ENDPOINT=unix:" + sock;
    putenv(strdup(endpoint.c_str()));
    freopen(err_path.c_str(), "w", stderr);
    const std::string p = std::to_string(port);
    execl("/usr/bin/memcached", "memcached", "-u", "memcache", "-t", "4", "-l", "127.0.0.1", "-p",
          p.c_str(), "-U", "0", static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(mc, 0);
  nlohmann::json loops;
  auto mine = [&] {
    std::set<std::string> names;
    const std::string body = HttpBody(http, "/api/v1/loops");
    if (body.empty()) return names;
    loops = nlohmann::json::parse(body)["loops"];
    for (const auto& l : loops) {
      if (l["pid"].get<int64_t>() == mc) names.insert(l["loop"].get<std::string>());
    }
    return names;
  };
  const bool all = stallwatch::testing::WaitFor([&] { return mine().size() >= 5; }, 8s, 100ms);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const std::set<std::string> names = mine();
  const bool alive = waitpid(mc, nullptr, WNOHANG) == 0;
  kill(mc, SIGTERM);
  waitpid(mc, nullptr, 0);
  kill(daemon, SIGTERM);
  int daemon_status = 0;
  waitpid(daemon, &daemon_status, 0);
  std::ifstream ef(err_path);
  const std::string mc_err((std::istreambuf_iterator<char>(ef)), std::istreambuf_iterator<char>());
  unlink(err_path.c_str());
  rmdir((std::string(dir) + "/run").c_str());
  rmdir(dir);

  EXPECT_TRUE(alive) << "memcached did not run under the shim: " << mc_err;
  EXPECT_TRUE(all) << "loops of pid " << mc << " after 8 s: " << loops.dump() << "\n" << mc_err;
  EXPECT_EQ(names.count("main"), 1u) << loops.dump();
  EXPECT_GE(names.count("mc-worker") + names.count("mc-worker-2") + names.count("mc-worker-3") +
                names.count("mc-worker-4"),
            4u)
      << loops.dump();
  EXPECT_EQ(mc_err.find("unavailable"), std::string::npos) << mc_err;
  std::printf("memcached -u memcache: its 5 loops in /api/v1/loops %.1f s after start\n", seconds);
  EXPECT_TRUE(WIFEXITED(daemon_status) && WEXITSTATUS(daemon_status) == 0);
}

}  // namespace
