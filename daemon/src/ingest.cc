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
#include <climits>
#include <cstdio>

#include "sockets.h"

namespace stallwatch::daemon {

namespace internal {

bool TokenEquals(std::string_view presented, std::string_view expected) {
  // Every byte of the expected token is compared, whatever the presented one holds; a
  // presented token of another length compares against itself cyclically so the loop's work
  // and memory accesses do not depend on where it differs.
  const size_t n = expected.size();
  unsigned char diff = presented.size() == n ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char p =
        presented.empty() ? 0 : static_cast<unsigned char>(presented[i % presented.size()]);
    diff |= static_cast<unsigned char>(p ^ static_cast<unsigned char>(expected[i]));
  }
  // Keep the compiler from turning the accumulation into an early exit.
  volatile unsigned char result = diff;
  return n > 0 && result == 0;
}

}  // namespace internal

bool IngestBytes(Registry* registry, Registry::ConnId id, wire::FrameDecoder* decoder,
                 const char* data, size_t n, Now now, const IngestCallbacks& cb, bool* completed) {
  decoder->Feed(data, n);
  wire::Message m;
  wire::DecodeError err;
  for (;;) {
    const auto r = decoder->Next(&m, &err);
    if (r == wire::FrameDecoder::Result::kNeedMore) {
      return true;
    }
    if (completed != nullptr) {
      *completed = true;
    }
    if (r == wire::FrameDecoder::Result::kMessage) {
      if (cb.admit && !cb.admit(m)) {
        return false;
      }
      auto rejected = registry->Apply(id, std::move(m), now);
      if (!rejected) {
        continue;
      }
      err = *rejected;
    }
    registry->Reject(err.reason);
    if (cb.on_reject) {
      cb.on_reject(err.message);
    }
    if (err.fatal || (cb.close_on_reject && cb.close_on_reject())) {
      return false;
    }
  }
}

bool IngestBytes(Registry* registry, Registry::ConnId id, wire::FrameDecoder* decoder,
                 const char* data, size_t n, Now now, const RejectLog& on_reject) {
  IngestCallbacks cb;
  cb.on_reject = on_reject;
  return IngestBytes(registry, id, decoder, data, n, now, cb, nullptr);
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
  event* timer = nullptr;
  bool timer_armed = false;
  bool needs_token = false;     // TCP listener of a daemon with --agent-token-file
  bool handshake_done = false;  // a hello was accepted (and authenticated where required)
  // Unix peers: the kernel's credentials of the connecting process (SO_PEERCRED).
  bool has_cred = false;
  PeerCred cred;
  int64_t claimed_pid = 0;  // the pid of the hello, when it is not the one reported under
  int64_t pid = 0;          // the pid the connection reports under
  int64_t accepted_ns = 0;
  int64_t frame_started_ns = 0;  // when the partial frame now held began; 0 when none
};

namespace {
constexpr const char* kTokenForm =
    "the first frame on a TCP connection must be a hello carrying the daemon's token "
    "(agent: STALLWATCH_TOKEN_FILE)";

int64_t MonoNowNs() { return Now::FromClocks().mono_ns; }

std::string Seconds(std::chrono::nanoseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g s", static_cast<double>(d.count()) / 1e9);
  return buf;
}
}  // namespace

Ingest::Ingest(event_base* base, Registry* registry, IngestOptions options)
    : base_(base), registry_(registry), options_(std::move(options)) {}

Ingest::~Ingest() {
  while (!conns_.empty()) {
    Close(conns_.back().get());
  }
  for (auto& l : listeners_) {
    evconnlistener_free(l.listener);
  }
}

Status Ingest::AddListener(int fd, std::string what, bool require_token) {
  if (require_token && options_.token.empty()) {
    ::close(fd);
    return InvalidArgumentError("a token is required on " + what + " but none was given");
  }
  evconnlistener* l = evconnlistener_new(base_, &Ingest::OnAccept, this,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
  if (!l) {
    ::close(fd);
    return UnavailableError("cannot listen for agents on " + what);
  }
  listeners_.push_back(Listener{l, std::move(what), require_token});
  return OkStatus();
}

void Ingest::OnAccept(evconnlistener* l, int fd, sockaddr* sa, int, void* arg) noexcept {
  auto* self = static_cast<Ingest*>(arg);
  std::string what;
  bool require_token = false;
  for (const auto& lis : self->listeners_) {
    if (lis.listener == l) {
      what = lis.what;
      require_token = lis.require_token;
    }
  }
  std::string peer = what;
  std::optional<PeerCred> cred;
  if (sa == nullptr || sa->sa_family == AF_UNIX) {
    cred = UnixPeerCred(fd);
    if (cred) {
      peer += " (pid " + std::to_string(cred->pid) + ", uid " + std::to_string(cred->uid) + ")";
    }
  } else {
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
    if (self->conns_.size() >= self->options_.max_connections) {
      self->registry_->Reject(wire::RejectReason::kLimit);
      self->LogReject(peer, "more than " + std::to_string(self->options_.max_connections) +
                                " agent connections (--max-agents); connection refused");
      ::close(fd);
      return;
    }
    if (cred && self->conns_per_uid_[cred->uid] >= self->options_.max_connections_per_uid) {
      self->registry_->Reject(wire::RejectReason::kLimit);
      self->LogReject(peer, "uid " + std::to_string(cred->uid) + " has " +
                                std::to_string(self->options_.max_connections_per_uid) +
                                " agent connections open (--max-agents-per-uid); connection "
                                "refused");
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
    c->needs_token = require_token;
    if (cred) {
      c->has_cred = true;
      c->cred = *cred;
      ++self->conns_per_uid_[cred->uid];
    }
    c->timer = event_new(self->base_, -1, 0, &Ingest::OnTimer, c.get());
    if (!c->timer) {
      bufferevent_free(bev);
      return;
    }
    const Now now = Now::FromClocks();
    c->accepted_ns = now.mono_ns;
    c->id = self->registry_->Connect(peer, now);
    self->ArmTimer(c.get(), now.mono_ns);
    bufferevent_setcb(bev, &Ingest::OnRead, nullptr, &Ingest::OnEvent, c.get());
    // Bounded input: the read callback drains it into the decoder (itself bounded by one frame).
    bufferevent_setwatermark(bev, EV_READ, 0, size_t{256} * 1024);
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
    IngestCallbacks cb;
    cb.on_reject = [&](const std::string& message) { self->LogReject(c->peer, message); };
    cb.admit = [&](wire::Message& m) {
      if (!c->handshake_done && !self->Admit(c, &m)) {
        return false;
      }
      self->ApplyPeerPid(c, &m);
      return true;
    };
    // An unauthenticated TCP peer gets no second chance to send anything.
    cb.close_on_reject = [&] { return c->needs_token && !c->handshake_done; };
    bool open = true;
    bool completed = false;  // a frame ended in this read: a partial one left over is new
    while (open && evbuffer_get_length(in) > 0) {
      const int n = evbuffer_remove(in, chunk, sizeof(chunk));
      if (n <= 0) {
        break;
      }
      open = IngestBytes(self->registry_, c->id, &c->decoder, chunk, static_cast<size_t>(n),
                         Now::FromClocks(), cb, &completed);
    }
    if (!open) {
      self->Close(c);
      return;
    }
    // Slow-loris bound: time a partial frame from the moment it began.
    if (c->decoder.pending() == 0) {
      c->frame_started_ns = 0;
    } else if (completed || c->frame_started_ns == 0) {
      c->frame_started_ns = MonoNowNs();
      // Armed already for a later handshake deadline only when the hello is still awaited.
      if (!c->timer_armed || !c->handshake_done) {
        self->ArmTimer(c, c->frame_started_ns);
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("agent {}: {}; connection closed", EscapeForLog(c->peer), e.what());
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
      spdlog::error("agent {}: {}", EscapeForLog(c->peer), e.what());
    }
    self->Close(c);
  }
}

bool Ingest::Admit(Connection* c, wire::Message* m) {
  auto* hello = std::get_if<wire::Hello>(m);
  if (c->needs_token) {
    if (!hello || !internal::TokenEquals(hello->token, options_.token)) {
      registry_->Reject(wire::RejectReason::kAuth);
      LogReject(c->peer, !hello ? std::string("a frame before the hello; ") + kTokenForm
                         : hello->token.empty()
                             ? std::string("hello without a token; ") + kTokenForm
                             : std::string("hello with a wrong token; ") + kTokenForm);
      return false;
    }
  }
  if (hello) {
    // The secret goes no further than this check: not into the registry, logs or the API.
    hello->token.clear();
    if (c->has_cred && !options_.trust_hello_pid_for_test) {
      // The kernel says which process connected. An agent reports for itself, or — the
      // watchdog process of a single-threaded program (docs/design.md) — for its parent.
      // Any other claim is replaced by the connecting process's own pid, so no local user can
      // report for (or hide the findings of) a process that is not theirs. In a container with
      // its own pid namespace, the agent's pid is mapped to the daemon's namespace this way.
      c->pid = c->cred.pid;
      if (hello->pid != c->cred.pid) {
        if (hello->pid > 0 && ParentPid(c->cred.pid) == hello->pid) {
          c->pid = hello->pid;
        } else {
          c->claimed_pid = hello->pid;
          spdlog::info(
              "agent {}: hello claims pid {}; reported under the connecting process's "
              "pid {}",
              EscapeForLog(c->peer), hello->pid, c->cred.pid);
        }
      }
    }
    c->handshake_done = true;
    // The handshake deadline is gone; the next deadline (a partial frame's) arms it anew.
    if (c->timer_armed) {
      event_del(c->timer);
      c->timer_armed = false;
    }
  }
  return true;
}

void Ingest::ApplyPeerPid(Connection* c, wire::Message* m) {
  if (!c->has_cred || c->claimed_pid == 0) {
    return;
  }
  std::visit(
      [&](auto& x) {
        if (x.pid == c->claimed_pid) {
          x.pid = c->pid;
        }
      },
      *m);
}

void Ingest::ArmTimer(Connection* c, int64_t now_ns) {
  int64_t deadline = INT64_MAX;
  if (!c->handshake_done) {
    deadline = c->accepted_ns + options_.handshake_timeout.count();
  }
  if (c->frame_started_ns != 0) {
    deadline = std::min(deadline, c->frame_started_ns + options_.frame_timeout.count());
  }
  if (deadline == INT64_MAX) {
    c->timer_armed = false;
    return;
  }
  const int64_t wait_ns = std::max<int64_t>(deadline - now_ns, 1'000'000);
  const timeval tv{static_cast<time_t>(wait_ns / 1'000'000'000),
                   static_cast<suseconds_t>((wait_ns % 1'000'000'000) / 1000)};
  event_add(c->timer, &tv);
  c->timer_armed = true;
}

void Ingest::OnTimer(int, short, void* arg) noexcept {
  auto* c = static_cast<Connection*>(arg);
  Ingest* self = c->owner;
  c->timer_armed = false;
  try {
    const int64_t now = MonoNowNs();
    if (!c->handshake_done && now - c->accepted_ns >= self->options_.handshake_timeout.count()) {
      self->registry_->Reject(wire::RejectReason::kHandshakeTimeout);
      self->LogReject(c->peer, "no hello within the handshake timeout (" +
                                   Seconds(self->options_.handshake_timeout) +
                                   ", --handshake-timeout); connection closed");
      self->Close(c);
      return;
    }
    if (c->frame_started_ns != 0 &&
        now - c->frame_started_ns >= self->options_.frame_timeout.count()) {
      self->registry_->Reject(wire::RejectReason::kFrameTimeout);
      self->LogReject(c->peer, "a frame was not completed within " +
                                   Seconds(self->options_.frame_timeout) + " (" +
                                   std::to_string(c->decoder.pending()) +
                                   " bytes held, --frame-timeout); connection closed");
      self->Close(c);
      return;
    }
    self->ArmTimer(c, now);
  } catch (const std::exception& e) {
    spdlog::error("agent {}: {}; connection closed", EscapeForLog(c->peer), e.what());
    self->Close(c);
  }
}

void Ingest::Close(Connection* c) {
  registry_->Disconnect(c->id, Now::FromClocks());
  if (c->has_cred) {
    auto it = conns_per_uid_.find(c->cred.uid);
    if (it != conns_per_uid_.end() && --it->second == 0) {
      conns_per_uid_.erase(it);
    }
  }
  if (c->timer) {
    event_free(c->timer);
  }
  bufferevent_free(c->bev);
  auto it = std::find_if(conns_.begin(), conns_.end(), [&](const auto& p) { return p.get() == c; });
  if (it != conns_.end()) {
    conns_.erase(it);
  }
}

void Ingest::LogReject(const std::string& peer, const std::string& message) {
  if (!reject_log_limit_.Allow(Now::FromClocks().mono_ns)) {
    return;
  }
  if (const uint64_t n = reject_log_limit_.TakeSuppressed(); n > 0) {
    spdlog::warn("{} more rejections not logged (see stallwatch_daemon_frames_rejected_total)", n);
  }
  spdlog::warn("agent {}: rejected: {}", EscapeForLog(peer), message);
}

}  // namespace stallwatch::daemon
