#pragma once
// The daemon's one HTTP listener (libevent evhttp): /metrics in the Prometheus text format
// (prometheus-cpp's TextSerializer) or, when the scraper's Accept header asks for
// it, in OpenMetrics with exemplars; the JSON API, the web UI and /healthz.
//
// Threading: created, used and destroyed on the daemon's loop thread.

#include <chrono>
#include <string>

#include "registry.h"

struct event_base;
struct evhttp;
struct evhttp_request;

namespace stallwatch::daemon {

class HttpServer {
 public:
  // `timeout`: a connection idle in the middle of reading a request or writing a reply (a slow
  // client) is closed after it.
  HttpServer(event_base* base, Registry* registry,
             std::chrono::nanoseconds timeout = std::chrono::seconds(10));
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves on a listening socket (takes ownership of fd).
  [[nodiscard]] Status Start(int fd);

 private:
  static void OnRequest(evhttp_request* req, void* arg) noexcept;
  void Handle(evhttp_request* req);

  evhttp* http_ = nullptr;
  Registry* registry_;
  std::chrono::nanoseconds timeout_;
};

}  // namespace stallwatch::daemon
