#pragma once
// stallwatchd's core, without its command line: listening sockets, the libevent loop, the ingest,
// the registry, the HTTP server and the periodic sweep.
//
// Threading: Create() and Run() on one thread (the daemon's loop thread); Stop() from any thread
// or a signal-free context (it uses libevent's thread-safe loop break); the destructor on the
// loop thread after Run() returned.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "registry.h"
#include "stallwatch/common/defaults.h"
#include "stallwatch/status.h"

struct event_base;
struct event;

namespace stallwatch::daemon {

inline constexpr std::string_view kDefaultAgentSocket = defaults::kAgentSocketPath;
inline constexpr std::string_view kDefaultHttpListen = defaults::kDaemonHttpAddress;

struct DaemonOptions {
  std::string agent_socket{kDefaultAgentSocket};  // "" = no Unix socket
  // Any local user may connect (their agents are told apart by the kernel's SO_PEERCRED and
  // limited per uid); 0660 admits only the socket's group (docs/security.md).
  unsigned agent_socket_mode = 0666;
  std::string agent_listen;  // "" = no TCP ingest; "PORT" or ":PORT" = 127.0.0.1:PORT
  std::string http_listen{kDefaultHttpListen};
  RegistryOptions registry;
  size_t max_agents = 4096;
  size_t max_agents_per_uid = 256;        // open Unix-socket connections of one uid
  bool trust_hello_pid_for_test = false;  // IngestOptions::trust_hello_pid_for_test
  // Agent connection timeouts (ingest.h, IngestOptions).
  std::chrono::nanoseconds handshake_timeout = std::chrono::seconds(10);
  std::chrono::nanoseconds frame_timeout = std::chrono::seconds(10);
  // A file holding the shared secret TCP agents must present ("" = none). Read at start-up:
  // refused when missing, empty, or accessible by group or others.
  std::string agent_token_file;
  // evhttp's per-connection read/write inactivity timeout.
  std::chrono::nanoseconds http_timeout = std::chrono::seconds(10);
  bool handle_signals = true;  // SIGTERM/SIGINT stop the loop; SIGPIPE ignored
};

class Daemon {
 public:
  // Binds every socket. Errors are one line naming the flag and the problem.
  static StatusOr<std::unique_ptr<Daemon>> Create(const DaemonOptions& options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs the loop until Stop() or a handled signal.
  [[nodiscard]] Status Run();
  // Any thread.
  void Stop();

  int http_port() const { return http_port_; }
  int agent_tcp_port() const { return agent_tcp_port_; }

 private:
  Daemon() = default;
  static void OnSweep(int, short, void* arg) noexcept;
  static void OnPrepare(int, short, void* arg) noexcept;
  static void OnSignal(int signo, short, void* arg) noexcept;
  static void OnStop(int, short, void* arg) noexcept;

  DaemonOptions options_;
  event_base* base_ = nullptr;
  std::unique_ptr<Registry> registry_;
  struct Parts;
  std::unique_ptr<Parts> parts_;
  event* sweep_ = nullptr;
  event* prepare_ = nullptr;  // serializes changed series between scrapes
  event* stop_ = nullptr;     // activated by Stop(): unlike a loop break, it is not lost before Run
  event* sigterm_ = nullptr;
  event* sigint_ = nullptr;
  uint64_t socket_inode_ = 0;
  int http_port_ = 0;
  int agent_tcp_port_ = 0;
};

}  // namespace stallwatch::daemon
