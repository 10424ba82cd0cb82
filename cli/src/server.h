#pragma once
// The bundled libevent HTTP server of `stallwatch serve` and `stallwatch experiment`.
//
// Routes: see routes.h. The server's parts: server.cc (start, run, stop), routes.cc (the
// handlers), upstream.cc (the slow upstream and the blocking client), worker_pool.cc (/offload),
// http_support.cc (replies, the waker, requests answered later).
//
// Threading: Create() may be called on any thread; Run() runs the loop on the calling thread
// (the loop thread) until Stop(). Stop(), port() and Snapshot() may be called on any thread.
// Lifetime: destroy the Server after Run() has returned (or without calling Run()).

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "stallwatch/agent.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

struct ServerOptions {
  std::string bind = "127.0.0.1";
  int port = 8888;  // 0: an ephemeral port (see Server::port())
  int workers = 5;  // threads of the /offload pool
  // The slow upstream of /upstream-*: "" starts one on a loopback ephemeral port, on its own
  // thread, answering every request after upstream_delay (or ?ms= when given).
  std::string upstream;  // "host:port" of an existing upstream, or ""
  std::chrono::milliseconds upstream_delay{500};
  bool attach_agent = true;
  // Flag values win over STALLWATCH_* which win over the defaults (50ms, the daemon's socket).
  std::optional<std::chrono::nanoseconds> stall_threshold;
  std::string endpoint;  // "" → STALLWATCH_ENDPOINT, else the daemon's default socket
  std::string service;   // "" → STALLWATCH_SERVICE or the program name
  std::string loop_name = "main";
  // Called on the agent's reporter thread for every stall finding.
  std::function<void(const StallFinding&)> on_stall;
  bool handle_signals = false;  // stop on SIGINT/SIGTERM (serve); off when embedded
  bool log_requests = false;
};

class Server {
 public:
  // Binds the listening socket (and starts the upstream when needed). Fails with a one-line
  // message when the address is in use or invalid.
  static StatusOr<std::unique_ptr<Server>> Create(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Runs the loop on the calling thread until Stop() or a handled signal. Attaches the agent
  // to the loop first (when attach_agent). Called once.
  Status Run();
  // Asks the loop to stop: handlers in progress finish, queued blocking work is skipped.
  // Called on any thread; async-signal safe (one write(2) to an eventfd).
  void Stop();

  int port() const;
  int upstream_port() const;
  // The agent's view of the loop; nullopt before Run() attached it or without an agent.
  // Called on any thread.
  std::optional<LoopSnapshot> Snapshot() const;

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stallwatch::cli
