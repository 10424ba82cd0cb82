#include "ingest.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

namespace stallwatch::daemon {

bool IngestBytes(Registry* registry, Registry::ConnId id, wire::FrameDecoder* decoder,
                 const char* data, size_t n, Now now, const RejectLog& on_reject) {
  decoder->Feed(data, n);
  wire::Message m;
  wire::DecodeError err;
  for (;;) {
    const auto r = decoder->Next(&m, &err);
    if (r == wire::FrameDecoder::Result::kNeedMore) return true;
    if (r == wire::FrameDecoder::Result::kMessage) {
      auto rejected = registry->Apply(id, std::move(m), now);
      if (!rejected) continue;
      err = *rejected;
    }
    registry->Reject(err.reason);
    on_reject(err.message);
    if (err.fatal) return false;
  }
}

void IngestEnd(Registry* registry, const wire::FrameDecoder& decoder, const RejectLog& on_reject) {
  if (decoder.pending() > 0 && !decoder.failed()) {
    registry->Reject(wire::RejectReason::kTruncated);
    on_reject("connection closed in the middle of a frame (" + std::to_string(decoder.pending()) +
              " bytes)");
  }
}

struct Ingest::Connection {
  Ingest* owner = nullptr;
  bufferevent* bev = nullptr;
  Registry::ConnId id = 0;
  std::string peer;
  wire::FrameDecoder decoder;
};

Ingest::Ingest(event_base* base, Registry* registry, size_t max_connections)
    : base_(base), registry_(registry), max_connections_(max_connections) {}

Ingest::~Ingest() {
  while (!conns_.empty()) Close(conns_.back().get());
  for (auto& [l, what] : listeners_) evconnlistener_free(l);
}

Status Ingest::AddListener(int fd, std::string what) {
  evconnlistener* l = evconnlistener_new(base_, &Ingest::OnAccept, this,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
  if (!l) {
    ::close(fd);
    return UnavailableError("cannot listen for agents on " + what);
  }
  listeners_.emplace_back(l, std::move(what));
  return OkStatus();
}

void Ingest::OnAccept(evconnlistener* l, int fd, sockaddr* sa, int, void* arg) noexcept {
  auto* self = static_cast<Ingest*>(arg);
  std::string what;
  for (auto& [lis, name] : self->listeners_) {
    if (lis == l) what = name;
  }
  std::string peer = what;
  if (sa && sa->sa_family != AF_UNIX) {
    char host[64] = "?";
    if (sa->sa_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(sa);
      evutil_inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
      peer = std::string("tcp:") + host + ":" + std::to_string(ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(sa);
      evutil_inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
      peer = std::string("tcp:[") + host + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
  }
  try {
    if (self->conns_.size() >= self->max_connections_) {
      self->registry_->Reject(wire::RejectReason::kLimit);
      self->LogReject(peer, "more than " + std::to_string(self->max_connections_) +
                                " agent connections (--max-agents); connection refused");
      ::close(fd);
      return;
    }
    bufferevent* bev = bufferevent_socket_new(self->base_, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
      ::close(fd);
      return;
    }
    auto c = std::make_unique<Connection>();
    c->owner = self;
    c->bev = bev;
    c->peer = peer;
    c->id = self->registry_->Connect(peer, Now::FromClocks());
    bufferevent_setcb(bev, &Ingest::OnRead, nullptr, &Ingest::OnEvent, c.get());
    // Bounded input: the read callback drains it into the decoder (itself bounded by one frame).
    bufferevent_setwatermark(bev, EV_READ, 0, 256 * 1024);
    bufferevent_enable(bev, EV_READ);
    self->conns_.push_back(std::move(c));
  } catch (const std::exception& e) {
    spdlog::error("accepting an agent connection failed: {}", e.what());
  }
}

void Ingest::OnRead(bufferevent* bev, void* arg) noexcept {
  auto* c = static_cast<Connection*>(arg);
  Ingest* self = c->owner;
  try {
    evbuffer* in = bufferevent_get_input(bev);
    char chunk[64 * 1024];
    const RejectLog log = [&](const std::string& message) { self->LogReject(c->peer, message); };
    bool open = true;
    while (open && evbuffer_get_length(in) > 0) {
      const int n = evbuffer_remove(in, chunk, sizeof(chunk));
      if (n <= 0) break;
      open = IngestBytes(self->registry_, c->id, &c->decoder, chunk, static_cast<size_t>(n),
                         Now::FromClocks(), log);
    }
    if (!open) self->Close(c);
  } catch (const std::exception& e) {
    spdlog::error("agent {}: {}; connection closed", c->peer, e.what());
    self->Close(c);
  }
}

void Ingest::OnEvent(bufferevent*, short what, void* arg) noexcept {
  auto* c = static_cast<Connection*>(arg);
  Ingest* self = c->owner;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    try {
      IngestEnd(self->registry_, c->decoder,
                [&](const std::string& message) { self->LogReject(c->peer, message); });
    } catch (const std::exception& e) {
      spdlog::error("agent {}: {}", c->peer, e.what());
    }
    self->Close(c);
  }
}

void Ingest::Close(Connection* c) {
  registry_->Disconnect(c->id, Now::FromClocks());
  bufferevent_free(c->bev);
  auto it = std::find_if(conns_.begin(), conns_.end(), [&](const auto& p) { return p.get() == c; });
  if (it != conns_.end()) conns_.erase(it);
}

void Ingest::LogReject(const std::string& peer, const std::string& message) {
  const int64_t now = Now::FromClocks().mono_ns;
  if (now - log_window_start_ns_ > 10'000'000'000) {
    if (logs_suppressed_ > 0) {
      spdlog::warn(
          "{} more rejected frames not logged (see stallwatch_daemon_frames_rejected_total)",
          logs_suppressed_);
    }
    log_window_start_ns_ = now;
    logs_in_window_ = 0;
    logs_suppressed_ = 0;
  }
  if (++logs_in_window_ > 20) {
    ++logs_suppressed_;
    return;
  }
  spdlog::warn("agent {}: frame rejected: {}", peer, message);
}

}  // namespace stallwatch::daemon
