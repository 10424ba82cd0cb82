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

}  // namespace

int main(int argc, char** argv) {
  DaemonOptions o;
  std::string log_level = "info";
  std::string expire_after = "5m";
  std::string silent_after = "35s";
  std::string socket_mode = "0660";

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
                 "Permissions of the agent socket, octal (its directory is created 0750)")
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
