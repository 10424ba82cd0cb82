// `stallwatch top` in a real terminal (tmux): it draws the loops a daemon reports, refreshes in
// place and quits on q. The daemon side is a small HTTP server answering the daemon API's
// /api/v1/loops and /api/v1/stalls with recorded bodies.
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "stallwatch/common/clock.h"

namespace {

std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(SW_CLI_FIXTURES) + "/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Sh(const std::string& command, int* code = nullptr) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  if (code != nullptr) *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// Serves the recorded daemon answers on a loopback port, on its own thread.
class RecordedDaemon {
 public:
  RecordedDaemon() : loops_(Fixture("loops.json")), stalls_(Fixture("stalls.json")) {
    base_ = event_base_new();
    http_ = evhttp_new(base_);
    auto* bs = evhttp_bind_socket_with_handle(http_, "127.0.0.1", 0);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(evhttp_bound_socket_get_fd(bs), reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    evhttp_set_gencb(http_, &RecordedDaemon::OnRequest, this);
    // The loop polls stop_ on a timer: no cross-thread wake-up needed.
    tick_ = event_new(base_, -1, EV_PERSIST, &RecordedDaemon::OnTick, this);
    const timeval tv{0, 20'000};
    event_add(tick_, &tv);
    thread_ = std::thread([this] { event_base_dispatch(base_); });
  }
  ~RecordedDaemon() {
    stop_.store(true);
    thread_.join();
    event_free(tick_);
    evhttp_free(http_);
    event_base_free(base_);
  }
  int port() const { return port_; }
  int requests() const { return requests_.load(); }

 private:
  static void OnTick(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<RecordedDaemon*>(arg);
    if (self->stop_.load()) event_base_loopbreak(self->base_);
  }
  static void OnRequest(evhttp_request* req, void* arg) {
    auto* self = static_cast<RecordedDaemon*>(arg);
    self->requests_.fetch_add(1);
    const std::string uri = evhttp_request_get_uri(req);
    const std::string* body = nullptr;
    if (uri.rfind("/api/v1/loops", 0) == 0) body = &self->loops_;
    if (uri.rfind("/api/v1/stalls", 0) == 0) body = &self->stalls_;
    evbuffer* b = evbuffer_new();
    if (body != nullptr) {
      evbuffer_add(b, body->data(), body->size());
      evhttp_send_reply(req, 200, "OK", b);
    } else {
      evhttp_send_reply(req, 404, "Not Found", b);
    }
    evbuffer_free(b);
  }

  std::string loops_, stalls_;
  event_base* base_;
  evhttp* http_;
  event* tick_ = nullptr;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

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
  EXPECT_NE(out.find("3 loops, 1 stalled now"), std::string::npos) << out;
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
  EXPECT_NE(screen.find("3 loops, 1 stalled now"), std::string::npos) << screen;
  EXPECT_NE(screen.find("89.3ms cpu  stallwatch::cli::BurnCpuOnLoop"), std::string::npos) << screen;
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
  EXPECT_EQ(after.find("STALLED FOR"), std::string::npos) << after;

  // Ctrl-C quits as cleanly.
  Sh(tmux + " new-session -d -s ctrlc -x 180 -y 30 '" + cmd + "'");
  const int64_t drawn_until = stallwatch::MonotonicNanos() + 5'000'000'000;
  while (stallwatch::MonotonicNanos() < drawn_until &&
         Sh(tmux + " capture-pane -p -t ctrlc").find("STALLED FOR") == std::string::npos) {
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
  EXPECT_EQ(after.find("STALLED FOR"), std::string::npos) << after;
  Sh(tmux + " kill-server");
}

}  // namespace
