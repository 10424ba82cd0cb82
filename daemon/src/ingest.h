#pragma once
// The agent ingest: accepts agent connections on the daemon's listening sockets (Unix and
// optionally TCP), decodes frames (stallwatch::wire) and applies them to the registry.
//
// Threading: created, used and destroyed on the daemon's loop thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "registry.h"
#include "stallwatch/common/log_text.h"

struct event_base;
struct evconnlistener;
struct bufferevent;
struct sockaddr;
struct event;

namespace stallwatch::daemon {

// Rejection log lines: at most kRejectLogBurst per kRejectLogWindow.
inline constexpr std::chrono::nanoseconds kRejectLogWindow = std::chrono::seconds(10);
inline constexpr int kRejectLogBurst = 20;

// Admission limits and timeouts of agent connections (docs/daemon.md, docs/security.md).
struct IngestOptions {
  // Most agent connections open at once; more are accepted and closed at once, counted with
  // reason="limit".
  size_t max_connections = 4096;
  // Most connections open at once from one uid on the Unix socket (the kernel's SO_PEERCRED):
  // any local user may connect, and none may take every slot. Beyond it: reason="limit".
  size_t max_connections_per_uid = 256;
  // Tests that play many processes from one: take the hello's pid as sent on the Unix socket.
  bool trust_hello_pid_for_test = false;
  // A connection must deliver its hello within this time (reason="handshake_timeout").
  std::chrono::nanoseconds handshake_timeout = std::chrono::seconds(10);
  // A frame, once its first byte arrived, must be complete within this time
  // (reason="frame_timeout"): a slow-loris client trickling a frame cannot hold the daemon's
  // buffers. An idle connection between frames is not timed out: a frozen agent stays visible
  // (--silent-after), and the number of connections is bounded by max_connections.
  std::chrono::nanoseconds frame_timeout = std::chrono::seconds(10);
  // The shared secret TCP agents must present in their hello ("" = none required). Unix-socket
  // agents are admitted by the socket's file permissions and need none.
  std::string token;
};

namespace internal {
// Compares a presented token with the expected one in time that depends only on the expected
// token's length (no early exit on the first differing byte; a different length is a mismatch
// found after the same work).
bool TokenEquals(std::string_view presented, std::string_view expected);
}  // namespace internal

// The frame handling of one agent connection, apart from its socket: the bytes it sent →
// frames → the registry. Every refused frame is counted (Registry::Reject) and its one-line
// reason passed to `on_reject`. Pure logic over the registry; tested and fuzzed without sockets.
using RejectLog = std::function<void(const std::string& message)>;
// What the connection's owner adds to the frame handling (all optional).
struct IngestCallbacks {
  RejectLog on_reject;
  // Called with every decoded message before it is applied; false closes the connection
  // (admission: the hello of a TCP agent without the right token).
  std::function<bool(wire::Message&)> admit;
  // Called after a rejected frame; true closes the connection (an unauthenticated peer).
  std::function<bool()> close_on_reject;
};
// Feeds `n` bytes of connection `id`'s stream to its decoder and applies every complete frame.
// Returns false when the stream cannot continue (a fatal header error, or a callback said so):
// close the connection. `completed` (optional) is set when a frame ended in these bytes.
bool IngestBytes(Registry* registry, Registry::ConnId id, wire::FrameDecoder* decoder,
                 const char* data, size_t n, Now now, const IngestCallbacks& cb, bool* completed);
bool IngestBytes(Registry* registry, Registry::ConnId id, wire::FrameDecoder* decoder,
                 const char* data, size_t n, Now now, const RejectLog& on_reject);
// The stream ended (EOF or error): a frame cut short is counted as truncated.
void IngestEnd(Registry* registry, const wire::FrameDecoder& decoder, const RejectLog& on_reject);

class Ingest {
 public:
  Ingest(event_base* base, Registry* registry, IngestOptions options);
  ~Ingest();  // closes every connection and listener
  Ingest(const Ingest&) = delete;
  Ingest& operator=(const Ingest&) = delete;

  // Accepts agents on a listening socket (takes ownership of fd). `what` names it in logs.
  // With require_token, agents on it must present IngestOptions::token in their hello.
  [[nodiscard]] Status AddListener(int fd, std::string what, bool require_token = false);
  size_t connections() const { return conns_.size(); }

 private:
  struct Connection;
  struct Listener {
    evconnlistener* listener = nullptr;
    std::string what;
    bool require_token = false;
  };
  static void OnAccept(evconnlistener* l, int fd, sockaddr* sa, int len, void* arg) noexcept;
  static void OnRead(bufferevent* bev, void* arg) noexcept;
  static void OnEvent(bufferevent* bev, short what, void* arg) noexcept;
  static void OnTimer(int fd, short what, void* arg) noexcept;
  // Handshake and authentication of one decoded message; false when the connection must close.
  bool Admit(Connection* c, wire::Message* m);
  // Unix peers: the pid the kernel vouches for replaces the one the agent claimed.
  void ApplyPeerPid(Connection* c, wire::Message* m);
  // Arms the connection's timer for its next deadline (handshake, frame completion), if any.
  void ArmTimer(Connection* c, int64_t now_ns);
  void Close(Connection* c);
  void LogReject(const std::string& peer, const std::string& message);

  event_base* base_;
  Registry* registry_;
  IngestOptions options_;
  std::vector<Listener> listeners_;
  std::vector<std::unique_ptr<Connection>> conns_;
  std::map<uint32_t, size_t> conns_per_uid_;  // open Unix connections by peer uid
  // Rate limit of rejection logs (20 lines per 10 s): the counter counts everything, the log
  // shows a sample.
  LogRateLimit reject_log_limit_{kRejectLogWindow.count(), kRejectLogBurst};
};

}  // namespace stallwatch::daemon
