// stallwatchd: receives findings from every stallwatch agent on the host and exports them as
// Prometheus metrics and a JSON API (docs/daemon.md). The only file with CLI11.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "daemon.h"
#include "stallwatch/common/defaults.h"
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
        if (!d.ok()) {
          return d.status().message();
        }
        return d->count() > 0 ? std::string()
                              : "'" + s + "' must be more than zero, e.g. 10s or 500ms";
      },
      "DURATION", "positive duration");
}

// Edit distance of two short keys, for "did you mean".
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// CLI11 ignores keys of a config file that name no option, so a misspelled key would silently
// leave its setting at the default. Reads the file as CLI11 does (TOML/INI: `key = value`, `#` and
// `;` comments, `[default]` the only section) and returns the first unknown key as one line
// naming file and line, or "" when every key is an option.
std::string CheckConfigKeys(const CLI::App& app, const std::string& path) {
  std::vector<std::string> known;
  for (const CLI::Option* opt : app.get_options()) {
    for (const std::string& name : opt->get_lnames()) {
      if (name != "help" && name != "version" && name != "config") {
        known.push_back(name);
      }
    }
  }
  std::sort(known.begin(), known.end());
  std::string known_list;
  for (const auto& k : known) {
    known_list += (known_list.empty() ? "" : ", ") + k;
  }

  std::ifstream in(path);
  if (!in) {
    return "";  // CLI11 has already refused a file it cannot read
  }
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string where = "stallwatchd: config " + path + ":" + std::to_string(number) + ": ";
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) {
      continue;
    }
    line = line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
    if (line.front() == '#' || line.front() == ';') {
      continue;
    }
    if (line.front() == '[') {
      if (line == "[default]") {
        continue;
      }
      std::string problem = where;
      problem += "unknown section '";
      problem += line;
      problem += "': stallwatchd reads keys at the top of the file, one `key = value` a line";
      return problem;
    }
    std::string key = line.substr(0, line.find_first_of("=#"));
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key.size() >= 2 && (key.front() == '"' || key.front() == '\'') &&
        key.back() == key.front()) {
      key = key.substr(1, key.size() - 2);
    }
    if (std::find(known.begin(), known.end(), key) != known.end()) {
      continue;
    }
    std::string hint;
    size_t best = 3;  // suggest only a near miss
    for (const auto& k : known) {
      if (const size_t d = EditDistance(key, k); d < best) {
        best = d;
        hint = "did you mean '";
        hint += k;
        hint += "'? ";
      }
    }
    std::string problem = where;
    problem += "unknown key '";
    problem += key;
    problem += "' (";
    problem += hint;
    problem += "known: ";
    problem += known_list;
    problem += ")";
    return problem;
  }
  return "";
}

int Main(int argc, char** argv) {
  DaemonOptions o;
  std::string log_level = "info";
  std::string expire_after = std::to_string(stallwatch::defaults::kSeriesExpiry.count()) + "m";
  std::string silent_after = "35s";
  std::string socket_mode = "0666";
  std::string handshake_timeout = "10s";
  std::string frame_timeout = "10s";
  std::string http_timeout = "10s";
  size_t stack_records_mib = o.registry.max_stack_records_bytes >> 20;

  CLI::App app{
      "stallwatchd: receives stall findings from the stallwatch agents of this host and serves "
      "Prometheus metrics (/metrics) and a JSON API (/api/v1/...)",
      "stallwatchd"};
  app.set_version_flag("--version", "stallwatchd " SW_PROJECT_VERSION);
  const CLI::Option* config =
      app.set_config("--config", "",
                     "Read options from a TOML/INI file (keys are the long flag names; an "
                     "unknown key is an error)");
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
                 "Most loops kept in all (each ~8 KiB of series and their text)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-processes", o.registry.max_processes,
                 "Most processes kept, connected or gone but not yet expired")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-processes-per-service", o.registry.max_processes_per_service,
                 "Process slots per service (the `process` label, 0..N-1): a new process takes "
                 "the lowest slot no connected process of its service holds; with all held, it "
                 "is refused and counted")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--max-stacks", o.registry.max_stacks,
                 "Most merged stacks kept for /api/v1/stacks (least recently sampled evicted)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-stacks-per-service", o.registry.max_stacks_per_service,
                 "Most merged stacks kept for one service")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-call-sites", o.registry.max_call_sites,
                 "Most call sites of the blocking-call ledger kept for /api/v1/calls, in all "
                 "(a site with no room still counts in stallwatch_blocking_calls_total)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--max-call-sites-per-loop", o.registry.max_call_sites_per_loop,
                 "Most call sites of the blocking-call ledger kept for one loop")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--max-stack-records", o.registry.max_stack_records,
                 "Most stack records kept for /api/v1/stacks with filters (service, loop, class, "
                 "time) and the web page's flame graphs; the oldest is dropped first and counted "
                 "in the reply's samples_not_kept")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--max-stack-records-mib", stack_records_mib,
                 "Most memory of those stack records, in MiB (their distinct stacks included)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--http-timeout", http_timeout,
                 "Close an HTTP connection idle this long while reading a request or writing a "
                 "reply (slow clients)")
      ->capture_default_str()
      ->check(PositiveDurationValidator());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error exits 2 after CLI11's message (not CLI11's own
    // per-error codes, which scripts and systemd would have to know).
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (config->count() > 0) {
    if (const std::string bad = CheckConfigKeys(app, config->as<std::string>()); !bad.empty()) {
      std::fprintf(stderr, "%s\n", bad.c_str());
      return 2;
    }
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
  o.registry.max_stack_records_bytes = stack_records_mib << 20;
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

}  // namespace

int main(int argc, char** argv) {
  // Start-up may throw (CLI11's set-up, logging); a clear line and an exit code, never a crash.
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stallwatchd: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "stallwatchd: unexpected error at start-up\n");
  }
  return 1;
}
