#include "server.h"

#include <event2/event.h>
#include <event2/http.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "server_impl.h"

namespace stallwatch::cli {

using internal::BindHttp;
using internal::ParseHostPort;
using internal::Pending;
using internal::SlowUpstream;
using internal::Waker;
using internal::WorkerPool;

Server::Impl::~Impl() {
  pool_.reset();
  if (control_timer_ != nullptr) {
    event_free(control_timer_);
  }
  for (event* e : signals_) {
    event_free(e);
  }
  if (http_ != nullptr) {
    evhttp_free(http_);
  }
  waker_.reset();
  agent_.reset();
  if (base_ != nullptr) {
    event_base_free(base_);
  }
  upstream_.reset();
}

Status Server::Impl::Init() {
  if (opts_.workers < 1 || opts_.workers > 1024) {
    return InvalidArgumentError("--workers must be in 1..1024");
  }
  if (opts_.upstream.empty()) {
    auto u = SlowUpstream::Start(opts_.upstream_delay);
    if (!u.ok()) {
      return u.status();
    }
    upstream_ = std::move(*u);
    upstream_host_ = "127.0.0.1";
    upstream_port_ = upstream_->port();
  } else {
    upstream_port_ = ParseHostPort(opts_.upstream, &upstream_host_);
    if (upstream_port_ < 0) {
      return InvalidArgumentError("bad upstream '" + opts_.upstream + "': expected host:port");
    }
  }
  base_ = event_base_new();
  if (base_ == nullptr) {
    return InternalError("event_base_new failed");
  }
  waker_ = std::make_unique<Waker>();
  if (!waker_->ok() || !waker_->Bind(base_, &Impl::OnWake, this)) {
    return InternalError(std::string("eventfd: ") + std::strerror(errno));
  }
  http_ = evhttp_new(base_);
  std::string error;
  port_ = BindHttp(http_, opts_.bind, opts_.port, &error);
  if (port_ < 0) {
    return UnavailableError(error);
  }
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
  evhttp_set_gencb(http_, &Impl::OnRequest, this);
  pool_ = std::make_unique<WorkerPool>(opts_.workers, waker_.get());
  if (opts_.handle_signals) {
    for (int sig : {SIGINT, SIGTERM}) {
      event* e = evsignal_new(base_, sig, &Impl::OnSignal, this);
      evsignal_add(e, nullptr);
      signals_.push_back(e);
    }
  }
  return OkStatus();
}

Status Server::Impl::Run() {
  if (opts_.attach_agent) {
    Options o = Options::FromEnvironment(Options{});
    if (opts_.stall_threshold) {
      o.stall_threshold = *opts_.stall_threshold;
    }
    if (!opts_.endpoint.empty()) {
      o.endpoint = opts_.endpoint;
    }
    if (!opts_.service.empty()) {
      o.service = opts_.service;
    }
    o.loop_name = opts_.loop_name;
    o.on_stall = opts_.on_stall;
    auto a = Agent::Attach(base_, std::move(o));
    if (!a.ok()) {
      return a.status();
    }
    std::lock_guard<std::mutex> lock(agent_mu_);
    agent_ = std::move(*a);
  }
  if (!stopping_.load()) {
    event_base_dispatch(base_);
  }
  Shutdown();
  return OkStatus();
}

// Async-signal safe.
void Server::Impl::Stop() {
  stopping_.store(true);
  waker_->Notify();
}

std::optional<LoopSnapshot> Server::Impl::Snapshot() const {
  std::lock_guard<std::mutex> lock(agent_mu_);
  if (!agent_) {
    return std::nullopt;
  }
  return agent_->Snapshot();
}

// Called on the loop thread once the loop has stopped: stop accepting, answer what is
// pending with 503, give the replies a moment to leave.
void Server::Impl::Shutdown() {
  if (control_timer_ != nullptr) {
    event_del(control_timer_);
  }
  pool_->Stop();
  for (Pending* p : pool_->TakeQueued()) {
    pending_.Finish(p, 503, "Service Unavailable", "shutting down\n");
  }
  for (Pending* p : pool_->TakeDone()) {
    pending_.Finish(p, 503, "Service Unavailable", "shutting down\n");
  }
  pending_.FailAll();
  const timeval flush{0, 100'000};
  event_base_loopexit(base_, &flush);
  event_base_dispatch(base_);
  if (opts_.handle_signals) {
    std::fprintf(stderr, "stallwatch serve: served %llu requests (%llu rejected as malformed)\n",
                 static_cast<unsigned long long>(requests_),
                 static_cast<unsigned long long>(bad_requests_));
  }
}

void Server::Impl::OnWake(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Impl*>(arg);
  self->waker_->Drain();
  if (self->stopping_.load()) {
    event_base_loopbreak(self->base_);
    return;
  }
  for (Pending* p : self->pool_->TakeDone()) {
    self->pending_.Finish(p, HTTP_OK, "OK",
                          "slept " + std::to_string(p->ms) + " ms on a worker thread\n");
  }
}

void Server::Impl::OnSignal(evutil_socket_t sig, short, void* arg) {
  auto* self = static_cast<Impl*>(arg);
  std::fprintf(stderr, "stallwatch serve: %s received, shutting down\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  self->stopping_.store(true);
  event_base_loopbreak(self->base_);
}

StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (Status st = impl->Init(); !st.ok()) {
    return st;
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;
Status Server::Run() { return impl_->Run(); }
void Server::Stop() { impl_->Stop(); }
int Server::port() const { return impl_->port(); }
int Server::upstream_port() const { return impl_->upstream_port(); }
std::optional<LoopSnapshot> Server::Snapshot() const { return impl_->Snapshot(); }

}  // namespace stallwatch::cli
