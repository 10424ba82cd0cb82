// Debian's memcached (-t 4) under the preload shim, with a real client load from
// libmemcached-tools' memcslap, on loopback. memcached names its threads ("mc-worker"), so every
// worker loop and the dispatcher ("main") must show up under those names.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
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
