// stallwatchd: receives findings from every stallwatch agent on the host and exports them as
// Prometheus metrics and a JSON API (docs/daemon.md). The only file with CLI11.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "daemon.h"
#include "stallwatch/common/duration.h"

namespace {

using stallwatch::daemon::Daemon;
using stallwatch::daemon::DaemonOptions;

// A CLI11 validator for durations in the project's form ("30s", "5m").
CLI::Validator DurationValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        auto d = stallwatch::ParseDuration(s);
        return d.ok() ? std::string() : d.status().message();
      },
      "DURATION", "duration");
}

// A duration that must be more than zero (timeouts).
CLI::Validator PositiveDurationValidator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        auto d = stallwatch::ParseDuration(s);
        if (!d.ok()) return d.status().message();
        return d->count() > 0 ? std::string()
                              : "'" + s + "' must be more than zero, e.g. 10s or 500ms";
      },
      "DURATION", "positive duration");
}

}  // namespace

int main(int argc, char** argv) {
  DaemonOptions o;
  std::string log_level = "info";
  std::string expire_after = "5m";
  std::string silent_after = "35s";
  std::string socket_mode = "0666";
  std::string handshake_timeout = "10s";
  std::string frame_timeout = "10s";
  std::string http_timeout = "10s";

  CLI::App app{
      "stallwatchd: receives stall findings from the stallwatch agents of this host and serves "
      "Prometheus metrics (/metrics) and a JSON API (/api/v1/...)",
      "stallwatchd"};
  app.set_config("--config", "",
                 "Read options from a TOML/INI file (keys are the long flag names)");
  app.add_option("--agent-socket", o.agent_socket,
                 "Unix socket the agents connect to (\"\" to disable)")
      ->capture_default_str();
  app.add_option("--agent-socket-mode", socket_mode,
                 "Permissions of the agent socket, octal: 0666 admits any local user (told apart "
                 "by the kernel's peer credentials), 0660 only the socket's group")
      ->capture_default_str();
  app.add_option("--agent-listen", o.agent_listen,
                 "Also accept agents over TCP on HOST:PORT (off by default; PORT alone means "
                 "127.0.0.1:PORT)");
  app.add_option("--http-listen", o.http_listen, "HTTP listener for /metrics and /api/v1")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--expire-after", expire_after,
                 "Remove the series of an agent this long after its connection closed")
      ->capture_default_str()
      ->check(DurationValidator());
  app.add_option("--silent-after", silent_after,
                 "Report a connected agent that sent nothing this long (frozen process)")
      ->capture_default_str()
      ->check(DurationValidator());
  app.add_option("--max-agents", o.max_agents, "Most agent connections accepted at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-agents-per-uid", o.max_agents_per_uid,
                 "Most agent connections open at once from one user on the Unix socket")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--handshake-timeout", handshake_timeout,
                 "Close an agent connection that sent no hello within this time")
      ->capture_default_str()
      ->check(PositiveDurationValidator());
  app.add_option("--frame-timeout", frame_timeout,
                 "Close an agent connection whose started frame is not complete within this "
                 "time (slow clients)")
      ->capture_default_str()
      ->check(PositiveDurationValidator());
  app.add_option("--agent-token-file", o.agent_token_file,
                 "File holding a shared token that agents connecting over TCP must present "
                 "(mode 0600; agents: STALLWATCH_TOKEN_FILE)");
  app.add_option("--max-loops-per-process", o.registry.max_loops_per_process,
                 "Most loops kept for one process; further loops are refused and counted")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--max-loops", o.registry.max_loops,
                 "Most loops kept in all (each ~9 KiB of series)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-processes", o.registry.max_processes,
                 "Most processes kept, connected or gone but not yet expired")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-stacks", o.registry.max_stacks,
                 "Most merged stacks kept for /api/v1/stacks (least recently sampled evicted)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-stacks-per-service", o.registry.max_stacks_per_service,
                 "Most merged stacks kept for one service")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--http-timeout", http_timeout,
                 "Close an HTTP connection idle this long while reading a request or writing a "
                 "reply (slow clients)")
      ->capture_default_str()
      ->check(PositiveDurationValidator());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    auto logger = spdlog::stderr_color_mt("stallwatchd");
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(log_level));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stallwatchd: cannot set up logging: %s\n", e.what());
  }

  o.registry.expire_after = *stallwatch::ParseDuration(expire_after);
  o.registry.silent_after = *stallwatch::ParseDuration(silent_after);
  o.handshake_timeout = *stallwatch::ParseDuration(handshake_timeout);
  o.frame_timeout = *stallwatch::ParseDuration(frame_timeout);
  o.http_timeout = *stallwatch::ParseDuration(http_timeout);
  char* end = nullptr;
  const unsigned long mode = std::strtoul(socket_mode.c_str(), &end, 8);
  if (socket_mode.empty() || *end != '\0' || mode > 0777) {
    std::fprintf(stderr,
                 "stallwatchd: bad --agent-socket-mode '%s': expected octal permissions such as "
                 "0660\n",
                 socket_mode.c_str());
    return 2;
  }
  o.agent_socket_mode = static_cast<unsigned>(mode);

  try {
    auto daemon = Daemon::Create(o);
    if (!daemon.ok()) {
      std::fprintf(stderr, "stallwatchd: %s\n", daemon.status().message().c_str());
      return 1;
    }
    spdlog::info("stallwatchd {} started", SW_PROJECT_VERSION);
    if (auto s = (*daemon)->Run(); !s.ok()) {
      spdlog::error("{}", s.message());
      return 1;
    }
    spdlog::info("stallwatchd stopped");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stallwatchd: %s\n", e.what());
    return 1;
  }
  return 0;
}
