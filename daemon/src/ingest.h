#pragma once
// The agent ingest: accepts agent connections on the daemon's listening sockets (Unix and
// optionally TCP), decodes frames (stallwatch::wire) and applies them to the registry.
//
// Threading: created, used and destroyed on the daemon's loop thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "registry.h"

struct event_base;
struct evconnlistener;
struct bufferevent;
struct sockaddr;

namespace stallwatch::daemon {

// The frame handling of one agent connection, apart from its socket: the bytes it sent →
// frames → the registry. Every refused frame is counted (Registry::Reject) and its one-line
// reason passed to `on_reject`. Pure logic over the registry; tested and fuzzed without sockets.
using RejectLog = std::function<void(const std::string& message)>;
// Feeds `n` bytes of connection `id`'s stream to its decoder and applies every complete frame.
// Returns false when the stream cannot continue (a fatal header error): close the connection.
bool IngestBytes(Registry* registry, Registry::ConnId id, wire::FrameDecoder* decoder,
                 const char* data, size_t n, Now now, const RejectLog& on_reject);
// The stream ended (EOF or error): a frame cut short is counted as truncated.
void IngestEnd(Registry* registry, const wire::FrameDecoder& decoder, const RejectLog& on_reject);

class Ingest {
 public:
  Ingest(event_base* base, Registry* registry, size_t max_connections);
  ~Ingest();  // closes every connection and listener
  Ingest(const Ingest&) = delete;
  Ingest& operator=(const Ingest&) = delete;

  // Accepts agents on a listening socket (takes ownership of fd). `what` names it in logs.
  [[nodiscard]] Status AddListener(int fd, std::string what);
  size_t connections() const { return conns_.size(); }

 private:
  struct Connection;
  static void OnAccept(evconnlistener* l, int fd, sockaddr* sa, int len, void* arg) noexcept;
  static void OnRead(bufferevent* bev, void* arg) noexcept;
  static void OnEvent(bufferevent* bev, short what, void* arg) noexcept;
  void Close(Connection* c);
  void LogReject(const std::string& peer, const std::string& message);

  event_base* base_;
  Registry* registry_;
  size_t max_connections_;
  std::vector<std::pair<evconnlistener*, std::string>> listeners_;
  std::vector<std::unique_ptr<Connection>> conns_;
  // Rate limit of rejection logs: the counter counts everything, the log shows a sample.
  int64_t log_window_start_ns_ = 0;
  int logs_in_window_ = 0;
  uint64_t logs_suppressed_ = 0;
};

}  // namespace stallwatch::daemon
