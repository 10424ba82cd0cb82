#pragma once
// The upstream side of the bundled server's /upstream-* routes: the slow upstream it starts
// when none is given, and the deliberately blocking client of /upstream-blocking.

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "http_support.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

// A blocking HTTP/1.0 GET over a plain socket; returns the body or an error. Called on the
// loop thread by /upstream-blocking, which blocks the loop on purpose (for at most 30 s).
StatusOr<std::string> BlockingUpstreamFetch(const std::string& host, int port,
                                            const std::string& path);

namespace internal {

// The slow upstream: its own thread and loop on a loopback ephemeral port, answering each
// request after `delay` (or ?ms=) with a loop timer.
//
// Threading: Start() and the destructor are called on the owner's thread; the upstream's own
// thread runs its loop in between. Lifetime: the destructor stops and joins that thread.
class SlowUpstream {
 public:
  static StatusOr<std::unique_ptr<SlowUpstream>> Start(std::chrono::milliseconds delay);
  ~SlowUpstream();
  SlowUpstream(const SlowUpstream&) = delete;
  SlowUpstream& operator=(const SlowUpstream&) = delete;
  // Called on any thread.
  int port() const { return port_; }

 private:
  explicit SlowUpstream(std::chrono::milliseconds delay) : delay_(delay) {}
  // Called on the upstream's thread.
  static void OnWake(evutil_socket_t, short, void* arg);
  static void OnRequest(evhttp_request* req, void* arg);
  static void OnTimer(evutil_socket_t, short, void* arg);

  std::chrono::milliseconds delay_;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  int port_ = -1;
  std::unique_ptr<Waker> waker_ = std::make_unique<Waker>();
  PendingSet pending_;
  std::thread thread_;
};

}  // namespace internal
}  // namespace stallwatch::cli
