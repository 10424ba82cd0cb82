#include "daemon.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>

#include "http_server.h"
#include "ingest.h"
#include "sockets.h"

namespace stallwatch::daemon {

struct Daemon::Parts {
  std::unique_ptr<Ingest> ingest;
  std::unique_ptr<HttpServer> http;
};

StatusOr<std::unique_ptr<Daemon>> Daemon::Create(const DaemonOptions& options) {
  if (options.agent_socket.empty() && options.agent_listen.empty()) {
    return InvalidArgumentError(
        "no agent endpoint: give --agent-socket PATH and/or --agent-listen "
        "HOST:PORT");
  }
  // Parse every address before binding anything.
  auto http_addr = ParseHostPort(options.http_listen, "--http-listen", "127.0.0.1");
  if (!http_addr.ok()) return http_addr.status();
  std::optional<HostPort> tcp_addr;
  if (!options.agent_listen.empty()) {
    auto a = ParseHostPort(options.agent_listen, "--agent-listen", "127.0.0.1");
    if (!a.ok()) return a.status();
    tcp_addr = *a;
  }
  IngestOptions ingest_options{.max_connections = options.max_agents,
                               .max_connections_per_uid = options.max_agents_per_uid,
                               .trust_hello_pid_for_test = options.trust_hello_pid_for_test,
                               .handshake_timeout = options.handshake_timeout,
                               .frame_timeout = options.frame_timeout};
  if (!options.agent_token_file.empty()) {
    auto token = ReadTokenFile(options.agent_token_file);
    if (!token.ok()) return token.status();
    ingest_options.token = std::move(*token);
  }
  static const int kThreads = evthread_use_pthreads();  // Stop() from other threads
  (void)kThreads;

  std::unique_ptr<Daemon> d(new Daemon());
  d->options_ = options;
  d->base_ = event_base_new();
  if (!d->base_) return InternalError("cannot create the event loop");
  d->registry_ = std::make_unique<Registry>(options.registry);
  d->parts_ = std::make_unique<Parts>();
  const bool tcp_token = !ingest_options.token.empty();
  d->parts_->ingest =
      std::make_unique<Ingest>(d->base_, d->registry_.get(), std::move(ingest_options));
  d->parts_->http =
      std::make_unique<HttpServer>(d->base_, d->registry_.get(), options.http_timeout);

  auto http_fd = ListenTcp(*http_addr, "--http-listen");
  if (!http_fd.ok()) return http_fd.status();
  d->http_port_ = LocalPort(*http_fd);
  if (Status s = d->parts_->http->Start(*http_fd); !s.ok()) return s;

  if (!options.agent_socket.empty()) {
    auto fd = ListenUnix(options.agent_socket, options.agent_socket_mode);
    if (!fd.ok()) return fd.status();
    d->socket_inode_ = PathInode(options.agent_socket);
    if (Status s = d->parts_->ingest->AddListener(*fd, "unix:" + options.agent_socket); !s.ok()) {
      return s;
    }
  }
  if (tcp_addr) {
    auto fd = ListenTcp(*tcp_addr, "--agent-listen");
    if (!fd.ok()) return fd.status();
    d->agent_tcp_port_ = LocalPort(*fd);
    if (Status s = d->parts_->ingest->AddListener(
            *fd, "tcp:" + tcp_addr->host + ":" + std::to_string(d->agent_tcp_port_), tcp_token);
        !s.ok()) {
      return s;
    }
  }

  // Logged once everything is bound, so a failed start shows only its error.
  spdlog::info("serving /metrics and /api/v1 on http://{}:{}", http_addr->host, d->http_port_);
  if (!options.agent_socket.empty()) {
    spdlog::info("agents: unix:{} (mode {:04o}: {})", options.agent_socket,
                 options.agent_socket_mode,
                 (options.agent_socket_mode & 0002) != 0   ? "any local user"
                 : (options.agent_socket_mode & 0020) != 0 ? "owner and group"
                                                           : "owner only");
    if (std::string why = UnreachableReason(options.agent_socket, options.agent_socket_mode);
        !why.empty()) {
      spdlog::warn("--agent-socket {}: {}", options.agent_socket, why);
    }
  }
  if (tcp_addr) {
    spdlog::info("agents: tcp:{}:{} ({})", tcp_addr->host, d->agent_tcp_port_,
                 tcp_token ? "token required" : "no token: any local or network peer may report");
    if (!tcp_token && !IsLoopbackHost(tcp_addr->host)) {
      spdlog::warn(
          "--agent-listen {} accepts agents beyond this host without authentication; give "
          "--agent-token-file FILE (docs/security.md)",
          options.agent_listen);
    }
  } else if (tcp_token) {
    spdlog::info("--agent-token-file is set but TCP ingest is off (--agent-listen): unused");
  }
  d->stop_ = event_new(d->base_, -1, 0, &Daemon::OnStop, d.get());
  d->sweep_ = event_new(d->base_, -1, EV_PERSIST, &Daemon::OnSweep, d.get());
  const timeval second{1, 0};
  event_add(d->sweep_, &second);
  d->prepare_ = event_new(d->base_, -1, EV_PERSIST, &Daemon::OnPrepare, d.get());
  const timeval prepare_period{0, 100'000};
  event_add(d->prepare_, &prepare_period);
  if (options.handle_signals) {
    std::signal(SIGPIPE, SIG_IGN);
    d->sigterm_ = evsignal_new(d->base_, SIGTERM, &Daemon::OnSignal, d.get());
    d->sigint_ = evsignal_new(d->base_, SIGINT, &Daemon::OnSignal, d.get());
    event_add(d->sigterm_, nullptr);
    event_add(d->sigint_, nullptr);
  }
  return d;
}

Daemon::~Daemon() {
  if (sweep_) event_free(sweep_);
  if (prepare_) event_free(prepare_);
  if (stop_) event_free(stop_);
  if (sigterm_) event_free(sigterm_);
  if (sigint_) event_free(sigint_);
  parts_.reset();  // connections and listeners before the registry and the base
  registry_.reset();
  if (!options_.agent_socket.empty()) UnlinkUnix(options_.agent_socket, socket_inode_);
  if (base_) event_base_free(base_);
}

Status Daemon::Run() {
  if (event_base_dispatch(base_) < 0) return InternalError("the event loop failed");
  return OkStatus();
}

void Daemon::Stop() { event_active(stop_, EV_TIMEOUT, 0); }

void Daemon::OnStop(int, short, void* arg) noexcept {
  event_base_loopbreak(static_cast<Daemon*>(arg)->base_);
}

void Daemon::OnSweep(int, short, void* arg) noexcept {
  auto* self = static_cast<Daemon*>(arg);
  try {
    self->registry_->Sweep(Now::FromClocks());
  } catch (const std::exception& e) {
    spdlog::error("sweep: {}", e.what());
  }
}

void Daemon::OnPrepare(int, short, void* arg) noexcept {
  auto* self = static_cast<Daemon*>(arg);
  try {
    // At most 10 ms of every 100 ms: agents and scrapes are served in between. With 1000
    // agents × 4 loops reporting every 10 s this is ~1-2 % of a core; a burst (every agent at
    // once) is caught up within ~2 s, and a scrape in the meantime serializes the rest.
    self->registry_->PrepareMetrics(std::chrono::milliseconds(10));
  } catch (const std::exception& e) {
    spdlog::error("preparing /metrics: {}", e.what());
  }
}

void Daemon::OnSignal(int signo, short, void* arg) noexcept {
  auto* self = static_cast<Daemon*>(arg);
  try {
    spdlog::info("{} received: shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
  } catch (...) {
  }
  event_base_loopbreak(self->base_);
}

}  // namespace stallwatch::daemon
