#pragma once
// Server::Impl: the state of the bundled server, shared by server.cc (start, run, stop) and
// routes.cc (the request handlers). Private to the server.
//
// Threading: Init() on the creating thread; Run(), Shutdown() and every callback on the loop
// thread; Stop() and Snapshot() on any thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "http_support.h"
#include "routes.h"
#include "server.h"
#include "upstream.h"
#include "worker_pool.h"

namespace stallwatch::cli {

class Server::Impl {
 public:
  explicit Impl(ServerOptions o) : opts_(std::move(o)) {}
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  Status Init();
  Status Run();
  // Async-signal safe.
  void Stop();
  std::optional<LoopSnapshot> Snapshot() const;
  int port() const { return port_; }
  int upstream_port() const { return upstream_port_; }

 private:
  // server.cc: the loop's lifecycle.
  void Shutdown();
  static void OnWake(evutil_socket_t, short, void* arg);
  static void OnSignal(evutil_socket_t sig, short, void* arg);

  // routes.cc: the handlers. Called on the loop thread.
  static void OnRequest(evhttp_request* req, void* arg);
  void HandleRequest(evhttp_request* req, const std::string& path);
  void HandleStall(evhttp_request* req, Route route, const std::string& query);
  void HandleUpstream(evhttp_request* req, Route route, const std::string& query);
  void HandleControlBlock(evhttp_request* req, const std::string& query);
  void HandleControlStats(evhttp_request* req);
  void HandleControlUnblock(evhttp_request* req);
  void BadRequest(evhttp_request* req, const std::string& message);
  void FetchAsync(evhttp_request* req, const std::string& upath, int ms);
  static void OnUpstreamDone(evhttp_request* ureq, void* arg);
  static void FreeConnection(evutil_socket_t, short, void* arg);
  static void OnAsyncTimer(evutil_socket_t, short, void* arg);
  static void OnControlTimer(evutil_socket_t, short, void* arg);

  ServerOptions opts_;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  int port_ = -1;
  std::unique_ptr<internal::SlowUpstream> upstream_;
  std::string upstream_host_;
  int upstream_port_ = -1;
  std::unique_ptr<internal::Waker> waker_;
  std::unique_ptr<internal::WorkerPool> pool_;
  internal::PendingSet pending_;
  std::vector<event*> signals_;
  event* control_timer_ = nullptr;
  ControlSpec control_;
  std::atomic<bool> stopping_{false};
  uint64_t requests_ = 0;      // loop thread only
  uint64_t bad_requests_ = 0;  // loop thread only: answered 400
  mutable std::mutex agent_mu_;
  std::unique_ptr<Agent> agent_;
};

}  // namespace stallwatch::cli
