#include "upstream.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "http_response.h"
#include "routes.h"

namespace stallwatch::cli {

using internal::KeepFrame;

__attribute__((noinline)) StatusOr<std::string> BlockingUpstreamFetch(const std::string& host,
                                                                      int port,
                                                                      const std::string& path) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (getaddrinfo(host.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) {
    return UnavailableError("upstream: cannot resolve " + host);
  }
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return UnavailableError(std::string("socket: ") + std::strerror(errno));
  }
  // Still a blocking call, but one that gives up after 30 s instead of hanging the loop forever.
  const timeval limit{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  std::string body;
  Status st;
  const int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    st = UnavailableError(std::string("upstream connect: ") + std::strerror(errno));
  } else {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: upstream\r\n\r\n";
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      st = UnavailableError("upstream send failed");
    } else {
      char buf[4096];
      for (;;) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);  // blocks the loop: the point of the route
        if (n > 0) {
          body.append(buf, static_cast<size_t>(n));
        } else if (n == 0) {
          break;
        } else if (errno != EINTR) {
          st = UnavailableError(std::string("upstream recv: ") + std::strerror(errno));
          break;
        }
      }
    }
  }
  close(fd);
  KeepFrame();
  if (!st.ok()) {
    return st;
  }
  auto response = ParseHttpResponse(body);
  if (!response.ok()) {
    return UnavailableError("upstream sent no HTTP response (" + response.status().message() + ")");
  }
  return std::move(response->body);
}

namespace internal {

using std::chrono::milliseconds;

StatusOr<std::unique_ptr<SlowUpstream>> SlowUpstream::Start(milliseconds delay) {
  auto u = std::unique_ptr<SlowUpstream>(new SlowUpstream(delay));
  u->base_ = event_base_new();
  if (u->base_ == nullptr || !u->waker_->ok()) {
    return InternalError("upstream: no event base");
  }
  u->http_ = evhttp_new(u->base_);
  std::string error;
  u->port_ = BindHttp(u->http_, "127.0.0.1", 0, &error);
  if (u->port_ < 0) {
    return UnavailableError("upstream: " + error);
  }
  evhttp_set_gencb(u->http_, &SlowUpstream::OnRequest, u.get());
  u->waker_->Bind(u->base_, &SlowUpstream::OnWake, u.get());
  u->thread_ = std::thread([p = u.get()] { event_base_dispatch(p->base_); });
  return u;
}

SlowUpstream::~SlowUpstream() {
  waker_->Notify();
  if (thread_.joinable()) {
    thread_.join();
  }
  pending_.FailAll();
  if (http_ != nullptr) {
    evhttp_free(http_);
  }
  waker_.reset();  // its event goes before the base
  if (base_ != nullptr) {
    event_base_free(base_);
  }
}

void SlowUpstream::OnWake(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<SlowUpstream*>(arg);
  self->waker_->Drain();
  event_base_loopbreak(self->base_);
}

void SlowUpstream::OnRequest(evhttp_request* req, void* arg) {
  auto* self = static_cast<SlowUpstream*>(arg);
  auto ms = ParseMsParam(QueryOf(req), "ms", static_cast<int>(self->delay_.count()));
  if (!ms.ok()) {
    return ReplyBadRequest(req, ms.status().message());
  }
  Pending* p = self->pending_.Add(req, *ms);
  p->timer = evtimer_new(self->base_, &SlowUpstream::OnTimer, p);
  const timeval tv{*ms / 1000, (*ms % 1000) * 1000L};
  evtimer_add(p->timer, &tv);
}

void SlowUpstream::OnTimer(evutil_socket_t, short, void* arg) {
  auto* p = static_cast<Pending*>(arg);
  p->owner->Finish(p, HTTP_OK, "OK", "upstream answered after " + std::to_string(p->ms) + " ms\n");
}

}  // namespace internal
}  // namespace stallwatch::cli
