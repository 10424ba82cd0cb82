#pragma once
// Helpers of the CLI's end-to-end tests: a recorded daemon (a small HTTP server answering the
// daemon API's /api/v1/loops and /api/v1/stalls with fixture bodies, on its own thread) and a
// shell runner.
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

namespace sw_e2e {

inline std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(SW_CLI_FIXTURES) + "/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string Sh(const std::string& command, int* code = nullptr) {
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
  // Called on any thread: later answers of /api/v1/stalls carry `body`.
  void SetStalls(std::string body) {
    std::lock_guard<std::mutex> lock(mu_);
    stalls_ = std::move(body);
  }
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
    std::string body;
    bool found = false;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (uri.rfind("/api/v1/loops", 0) == 0) body = self->loops_, found = true;
      if (uri.rfind("/api/v1/stalls", 0) == 0) body = self->stalls_, found = true;
    }
    evbuffer* b = evbuffer_new();
    if (found) {
      evbuffer_add(b, body.data(), body.size());
      evhttp_send_reply(req, 200, "OK", b);
    } else {
      evhttp_send_reply(req, 404, "Not Found", b);
    }
    evbuffer_free(b);
  }

  std::mutex mu_;
  std::string loops_, stalls_;  // guarded by mu_
  event_base* base_;
  evhttp* http_;
  event* tick_ = nullptr;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

}  // namespace sw_e2e
