#pragma once
// Helpers for daemon tests: the daemon on its own loop thread, a libevent loop thread with the
// agent attached, a raw wire client, a tiny HTTP client. Real sockets only.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon.h"
#include "stallwatch/wire/codec.h"

struct event_base;

namespace stallwatch::daemon::testing {

struct HttpResponse {
  int status = 0;
  std::string body;
};
// GET http://127.0.0.1:port/path (HTTP/1.0, 5 s timeout). status 0 when unreachable.
HttpResponse HttpGet(int port, const std::string& path);

// Waits until pred() holds, polling every 50 ms, for at most `timeout`.
bool WaitFor(const std::function<bool()>& pred,
             std::chrono::milliseconds timeout = std::chrono::seconds(20));

// The value of the first sample of `name` whose labels contain every `label="value"` of
// `labels`, or nullopt.
std::optional<double> MetricValue(const std::string& exposition, const std::string& name,
                                  const std::vector<std::string>& labels = {});

// The sample lines of an exposition with their values cut off: one per series.
std::vector<std::string> SeriesLines(const std::string& exposition);

// A fresh private directory under /tmp; removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Daemon options for a test: the agent socket in `dir`, HTTP on a free loopback port.
DaemonOptions DaemonOptionsIn(const TempDir& dir);

// stallwatchd's core on its own thread (port 0 HTTP; no signal handling).
class DaemonThread {
 public:
  explicit DaemonThread(DaemonOptions options);
  ~DaemonThread();  // stops and joins
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  int http_port() const { return http_port_; }
  int agent_tcp_port() const { return agent_tcp_port_; }
  std::string Metrics() const { return HttpGet(http_port_, "/metrics").body; }

 private:
  std::thread thread_;
  Daemon* daemon_ = nullptr;
  bool ok_ = false;
  std::string error_;
  int http_port_ = 0;
  int agent_tcp_port_ = 0;
};

// A libevent loop on its own thread; Post() runs a function on it.
class LoopThread {
 public:
  LoopThread();
  ~LoopThread();  // stops and joins; call Stop() first to detach an agent after it
  event_base* base() const { return base_; }
  void Start();
  void Stop();
  void Post(std::function<void()> fn);

 private:
  event_base* base_ = nullptr;
  struct event* keepalive_ = nullptr;
  std::thread thread_;
};

// A hand-driven agent connection: writes raw bytes or encoded frames.
class RawClient {
 public:
  explicit RawClient(const std::string& socket_path);
  // Over TCP to 127.0.0.1:port.
  explicit RawClient(int tcp_port);
  ~RawClient();
  bool connected() const { return fd_ >= 0; }
  bool Write(const std::string& bytes);
  bool Send(const wire::Message& m) { return Write(wire::EncodeFrame(m)); }
  // True when the daemon closed the connection within the timeout.
  bool ClosedByPeer(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  void Close();

 private:
  int fd_ = -1;
};

// Resident set size of this process in bytes.
int64_t RssBytes();

// Raises this process's open-file soft limit to at least `n` (up to the hard limit); returns the
// soft limit in force afterwards.
uint64_t RaiseFileLimit(uint64_t n);

}  // namespace stallwatch::daemon::testing
