// `stallwatch top` in a real terminal (tmux): it draws the loops a daemon reports, refreshes in
// place, fits the terminal and quits on q. The daemon side is a RecordedDaemon.
#include <gtest/gtest.h>

#include "recorded_daemon.h"
#include "stallwatch/common/clock.h"

namespace {

using sw_e2e::RecordedDaemon;
using sw_e2e::Sh;

TEST(TopE2E, PlainSnapshotsWhenNotATerminal) {
  RecordedDaemon daemon;
  int code = -1;
  const std::string out = Sh(std::string(SW_STALLWATCH_BIN) +
                                 " top --daemon http://127.0.0.1:" + std::to_string(daemon.port()) +
                                 " --iterations 2 --interval 100ms | cat",
                             &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << "no escape codes when not a terminal";
  size_t headers = 0;
  for (size_t p = out.find("stallwatch top"); p != std::string::npos;
       p = out.find("stallwatch top", p + 1)) {
    ++headers;
  }
  EXPECT_EQ(headers, 2u) << out;
  EXPECT_NE(out.find("4 loops (1 gone), 1 stalled now"), std::string::npos) << out;
  EXPECT_NE(out.find("stallwatch::cli::BurnCpuOnLoop"), std::string::npos) << out;
}

TEST(TopE2E, LiveViewInATerminalQuitsOnQ) {
  if (Sh("command -v tmux").empty()) GTEST_SKIP() << "tmux is not installed";
  RecordedDaemon daemon;
  const std::string tmux = "tmux -L sw-top-test-" + std::to_string(getpid());
  const std::string session = "top";
  const std::string cmd = std::string(SW_STALLWATCH_BIN) +
                          " top --daemon http://127.0.0.1:" + std::to_string(daemon.port()) +
                          " --interval 100ms; echo exited=$?; sleep 5";
  Sh(tmux + " -f /dev/null new-session -d -s " + session + " -x 180 -y 30 '" + cmd + "'");
  std::string screen;
  const int64_t until = stallwatch::MonotonicNanos() + 5'000'000'000;
  while (stallwatch::MonotonicNanos() < until) {
    screen = Sh(tmux + " capture-pane -p -t " + session);
    if (screen.find("BurnCpuOnLoop") != std::string::npos) break;
    usleep(100'000);
  }
  EXPECT_NE(screen.find("stallwatch top"), std::string::npos) << screen;
  EXPECT_NE(screen.find("4 loops (1 gone), 1 stalled now"), std::string::npos) << screen;
  EXPECT_NE(screen.find("89.3ms cpu  stallwatch::cli::BurnCpuOnLoop (server.cc:321)"),
            std::string::npos)
      << screen;
  EXPECT_NE(screen.find("q or Ctrl-C to quit"), std::string::npos) << screen;
  // Refreshing in place: several refreshes, still one header on the screen.
  const int before = daemon.requests();
  usleep(500'000);
  EXPECT_GE(daemon.requests(), before + 4);
  screen = Sh(tmux + " capture-pane -p -t " + session);
  EXPECT_EQ(screen.find("stallwatch top"), screen.rfind("stallwatch top")) << screen;

  Sh(tmux + " send-keys -t " + session + " q");
  std::string after;
  const int64_t quit_until = stallwatch::MonotonicNanos() + 3'000'000'000;
  while (stallwatch::MonotonicNanos() < quit_until) {
    after = Sh(tmux + " capture-pane -p -t " + session);
    if (after.find("exited=") != std::string::npos) break;
    usleep(100'000);
  }
  EXPECT_NE(after.find("exited=0"), std::string::npos) << after;
  // The alternate screen is gone: the view does not linger in the scrollback.
  EXPECT_EQ(after.find("STALLS/MIN"), std::string::npos) << after;

  // Ctrl-C quits as cleanly.
  Sh(tmux + " new-session -d -s ctrlc -x 180 -y 30 '" + cmd + "'");
  const int64_t drawn_until = stallwatch::MonotonicNanos() + 5'000'000'000;
  while (stallwatch::MonotonicNanos() < drawn_until &&
         Sh(tmux + " capture-pane -p -t ctrlc").find("STALLS/MIN") == std::string::npos) {
    usleep(100'000);
  }
  Sh(tmux + " send-keys -t ctrlc C-c");
  const int64_t ctrlc_until = stallwatch::MonotonicNanos() + 3'000'000'000;
  while (stallwatch::MonotonicNanos() < ctrlc_until) {
    after = Sh(tmux + " capture-pane -p -t ctrlc");
    if (after.find("exited=") != std::string::npos) break;
    usleep(100'000);
  }
  EXPECT_NE(after.find("exited=0"), std::string::npos) << after;
  EXPECT_EQ(after.find("STALLS/MIN"), std::string::npos) << after;
  Sh(tmux + " kill-server");
}

// Waits up to `seconds` for `text` on the pane; returns the last capture.
std::string WaitForPane(const std::string& tmux, const std::string& session,
                        const std::string& text, int seconds) {
  std::string screen;
  const int64_t until = stallwatch::MonotonicNanos() + seconds * 1'000'000'000LL;
  while (stallwatch::MonotonicNanos() < until) {
    screen = Sh(tmux + " capture-pane -p -t " + session);
    if (screen.find(text) != std::string::npos) break;
    usleep(100'000);
  }
  return screen;
}

TEST(TopE2E, RefusesIntervalsBelow100ms) {
  int code = -1;
  const std::string out =
      Sh(std::string(SW_STALLWATCH_BIN) + " top --interval 50ms --iterations 1", &code);
  EXPECT_EQ(code, 2) << out;
  // The first line names the flag, the value and the accepted range.
  EXPECT_EQ(out.substr(0, out.find('\n')),
            "--interval: refresh interval 50ms is out of range; expected 100ms to 60m (e.g. 500ms, "
            "2s)")
      << out;
}

TEST(TopE2E, FitsAn80ColumnTerminalAndQuitsAtALongInterval) {
  if (Sh("command -v tmux").empty()) GTEST_SKIP() << "tmux is not installed";
  RecordedDaemon daemon;
  const std::string tmux = "tmux -L sw-top80-test-" + std::to_string(getpid());
  const std::string cmd = std::string(SW_STALLWATCH_BIN) +
                          " top --daemon http://127.0.0.1:" + std::to_string(daemon.port()) +
                          " --interval 60m; echo exited=$?; sleep 5";
  Sh(tmux + " -f /dev/null new-session -d -s t80 -x 80 -y 24 '" + cmd + "'");
  std::string screen = WaitForPane(tmux, "t80", "BurnCpuOnLoop", 5);
  // Whole loop names, the frame on its own line, nothing wrapped past 80 columns.
  EXPECT_NE(screen.find("connection-worker-17"), std::string::npos) << screen;
  EXPECT_NE(screen.find("  ↳ stallwatch::cli::BurnCpuOnLoop (server.cc:321)"), std::string::npos)
      << screen;
  EXPECT_NE(screen.find(" gone"), std::string::npos) << screen;
  EXPECT_EQ(screen.find("…"), std::string::npos) << screen;
  // The gone process is the last row.
  EXPECT_GT(screen.find("connection-worker-17"), screen.find("worker-1 ")) << screen;
  // q quits at once although the next refresh is an hour away.
  const int64_t sent = stallwatch::MonotonicNanos();
  Sh(tmux + " send-keys -t t80 q");
  const std::string after = WaitForPane(tmux, "t80", "exited=", 3);
  EXPECT_NE(after.find("exited=0"), std::string::npos) << after;
  EXPECT_LT(stallwatch::MonotonicNanos() - sent, 3'000'000'000LL);
  Sh(tmux + " kill-server");
}

}  // namespace
