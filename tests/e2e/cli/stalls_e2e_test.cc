// `stallwatch stalls` as a user runs it: on a file: endpoint's JSON Lines, against a daemon with
// a filter that matches nothing, and --follow until Ctrl-C. The daemon side is a RecordedDaemon.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <cstdlib>

#include "recorded_daemon.h"
#include "stallwatch/common/clock.h"

namespace {

using sw_e2e::Fixture;
using sw_e2e::RecordedDaemon;
using sw_e2e::Sh;

std::string Daemon(const RecordedDaemon& d) {
  return " --daemon http://127.0.0.1:" + std::to_string(d.port());
}

TEST(StallsE2E, ReadsAFileEndpointsJsonLines) {
  int code = -1;
  const std::string out =
      Sh(std::string(SW_STALLWATCH_BIN) + " stalls --file " + SW_CLI_FIXTURES + "/findings.jsonl",
         &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("findings.jsonl: 2 of 7 lines are not findings, skipped (first: line 3)\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("batch pid 301 loop loop-1  ONGOING for 90.0ms  cpu"), std::string::npos)
      << out;
  EXPECT_NE(out.find("blocked  in app::Cache::Reload (cache.cc:42)\n  ×2, same stack"),
            std::string::npos)
      << out;
  // A missing file: one line saying what was expected.
  const std::string missing =
      Sh(std::string(SW_STALLWATCH_BIN) + " stalls --file /nonexistent/f.jsonl", &code);
  EXPECT_EQ(code, 1) << missing;
  EXPECT_NE(missing.find("cannot read /nonexistent/f.jsonl"), std::string::npos) << missing;
  EXPECT_EQ(missing.find('\n'), missing.size() - 1) << missing;
}

TEST(StallsE2E, AFilterThatMatchesNothingNamesTheKnownLoops) {
  RecordedDaemon daemon;
  int code = -1;
  const std::string out =
      Sh(std::string(SW_STALLWATCH_BIN) + " stalls" + Daemon(daemon) + " --loop mian", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("no loop 'mian' in the daemon's stalls; known loops: "), std::string::npos)
      << out;
  EXPECT_NE(out.find("main (demo)"), std::string::npos) << out;
  EXPECT_NE(out.find("connection-worker-17 (batch)"), std::string::npos) << out;
  // A known loop is listed normally.
  const std::string ok =
      Sh(std::string(SW_STALLWATCH_BIN) + " stalls" + Daemon(daemon) + " --loop main", &code);
  EXPECT_EQ(code, 0) << ok;
  EXPECT_NE(ok.find("in stallwatch::cli::BurnCpuOnLoop (server.cc:321)"), std::string::npos) << ok;
}

TEST(StallsE2E, FollowPrintsNewStallsUntilCtrlC) {
  RecordedDaemon daemon;
  char path[] = "/tmp/sw-stalls-follow-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const int null = open("/dev/null", O_RDONLY);
    dup2(null, STDIN_FILENO);
    const std::string url = "http://127.0.0.1:" + std::to_string(daemon.port());
    execl(SW_STALLWATCH_BIN, SW_STALLWATCH_BIN, "stalls", "--daemon", url.c_str(), "--follow",
          "--interval", "100ms", "--no-stacks", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fd);
  auto output = [&] { return Sh(std::string("cat ") + path); };
  auto wait_for = [&](const std::string& text) {
    const int64_t until = stallwatch::MonotonicNanos() + 5'000'000'000LL;
    std::string out;
    while (stallwatch::MonotonicNanos() < until) {
      out = output();
      if (out.find(text) != std::string::npos) break;
      usleep(100'000);
    }
    return out;
  };
  std::string out = wait_for("BurnCpuOnLoop");
  EXPECT_NE(out.find("ONGOING for 89.3ms"), std::string::npos) << out;
  EXPECT_EQ(out.find("app::Cache::Reload"), std::string::npos) << out;
  // New stalls at the daemon: printed as they come, repeats as one short line each.
  daemon.SetStalls(Fixture("repeated_stalls.json"));
  out = wait_for("same stack: ");
  EXPECT_NE(out.find("blocked  in app::Cache::Reload (cache.cc:42)"), std::string::npos) << out;
  EXPECT_NE(out.find("\n  ×2 same stack: "), std::string::npos) << out;
  // Nothing printed twice: the old ones were seen.
  EXPECT_EQ(out.find("ONGOING for 89.3ms"), out.rfind("ONGOING for 89.3ms")) << out;
  kill(pid, SIGINT);
  int status = 0;
  pid_t done = 0;
  const int64_t until = stallwatch::MonotonicNanos() + 3'000'000'000LL;
  while ((done = waitpid(pid, &status, WNOHANG)) == 0 && stallwatch::MonotonicNanos() < until) {
    usleep(20'000);
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "stalls --follow did not stop on SIGINT";
  } else {
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  unlink(path);
}

}  // namespace
