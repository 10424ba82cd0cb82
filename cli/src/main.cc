// stallwatch: the command-line tool. The only file that includes CLI11 (slow to compile);
// everything it runs lives in sw_cli.
#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "check.h"
#include "experiment.h"
#include "experiment_daemon.h"
#include "experiment_tornado.h"
#include "http_get.h"
#include "live.h"
#include "load.h"
#include "load_report.h"
#include "report.h"
#include "run.h"
#include "server.h"
#include "stallwatch/common/blocking_calls.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/defaults.h"
#include "stallwatch/common/duration.h"
#include "stallwatch/common/finding_json.h"
#include "views.h"

namespace sw = stallwatch;
namespace cli = stallwatch::cli;

namespace {

std::atomic<bool> g_cancel{false};
static_assert(std::atomic<bool>::is_always_lock_free);

// Async-signal safe.
void OnCancelSignal(int) { g_cancel.store(true); }

void InstallCancelHandler() {
  struct sigaction sa {};
  sa.sa_handler = &OnCancelSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Validates a duration flag ("500ms", "2s", "1m").
const CLI::Validator kDuration(
    [](std::string& s) -> std::string {
      auto d = sw::ParseDuration(s);
      return d.ok() ? std::string() : d.status().message();
    },
    "DURATION", "duration");

// Validates an agent endpoint flag (the agent checks it again when it attaches).
const CLI::Validator kEndpoint(
    [](std::string& s) -> std::string {
      const auto starts = [&](const char* p) {
        return s.rfind(p, 0) == 0 && s.size() > std::strlen(p);
      };
      if (s == "off" || s == "stderr" || starts("unix:/") || starts("file:/")) {
        return {};
      }
      if (starts("tcp:") && s.rfind(':') > 4) {
        return {};
      }
      return "bad endpoint '" + s +
             "': expected unix:/path, tcp:host:port, file:/path, stderr or off";
    },
    "ENDPOINT", "endpoint");

// Validates a duration flag that must be above zero (a run length, a timeout, a period).
const CLI::Validator kPositiveDuration(
    [](std::string& s) -> std::string {
      auto d = sw::ParseDuration(s);
      if (!d.ok()) {
        return d.status().message();
      }
      return d->count() > 0 ? std::string()
                            : "'" + s + "' is not above zero; expected a duration such as 500ms";
    },
    "DURATION>0", "positive duration");

// Validates a whole number in lo..hi (CLI11's Range prints its bounds as doubles).
CLI::Validator WholeIn(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (s.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
          return "'" + s + "' is not in " + range + "; expected a whole number in " + range;
        }
        return {};
      },
      std::to_string(lo) + ".." + std::to_string(hi), "whole number in range");
}

// Validates a request rate: a positive number (0 would mean never sending).
const CLI::Validator kRate(
    [](std::string& s) -> std::string {
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (s.empty() || *end != '\0' || !(v >= 0.001 && v <= 1e6)) {
        return "'" + s + "' is not a rate; expected requests per second in 0.001..1000000";
      }
      return {};
    },
    "REQ/S", "rate");

// Validates a URL flag, with the example of the kind of URL this flag takes.
CLI::Validator UrlOf(const char* example) {
  return CLI::Validator(
      [example](std::string& s) -> std::string {
        auto u = cli::ParseUrl(s, example);
        return u.ok() ? std::string() : u.status().message();
      },
      "URL", "url");
}

std::chrono::nanoseconds Dur(const std::string& s) { return *sw::ParseDuration(s); }

// What the server URL flags (block/unblock --url) look like.
constexpr const char* kServerBaseExample = "http://127.0.0.1:8888";

int Fail(const std::string& cmd, const sw::Status& st) {
  std::fprintf(stderr, "stallwatch %s: %s\n", cmd.c_str(), st.message().c_str());
  return 1;
}

struct ServeFlags {
  std::string bind = "127.0.0.1";
  int port = 8888;
  int workers = 5;
  std::string threshold;
  std::string endpoint;
  std::string upstream;
  std::string upstream_delay = "500ms";
  std::string service;
  bool no_agent = false;
  bool log_requests = false;
};

void AddServe(CLI::App& app, ServeFlags& f) {
  CLI::App* s =
      app.add_subcommand("serve", "Run the bundled libevent HTTP server with the agent attached");
  s->add_option("--port", f.port, "TCP port (0: any free port)")
      ->capture_default_str()
      ->check(WholeIn(0, 65535));
  s->add_option("--bind", f.bind, "Address to listen on")->capture_default_str();
  s->add_option("--workers", f.workers, "Threads of the /offload pool")
      ->capture_default_str()
      ->check(WholeIn(1, 1024));
  s->add_option("--threshold", f.threshold,
                "Stall threshold (default: STALLWATCH_THRESHOLD, else 50ms)")
      ->check(kPositiveDuration);
  s->add_option("--endpoint", f.endpoint,
                "Where the agent reports: unix:/path, tcp:host:port, file:/path, stderr, off "
                "(default: STALLWATCH_ENDPOINT, else the daemon's socket)")
      ->check(kEndpoint);
  s->add_option("--upstream", f.upstream,
                "host:port of the slow upstream for /upstream-* (default: start one on loopback)");
  s->add_option("--upstream-delay", f.upstream_delay,
                "How long the bundled upstream takes to answer")
      ->capture_default_str()
      ->check(kDuration);
  s->add_option("--service", f.service,
                "Service name in findings (default: STALLWATCH_SERVICE or program name)");
  s->add_flag("--no-agent", f.no_agent, "Do not attach the agent (for overhead comparisons)");
  s->add_flag("--log-requests", f.log_requests, "Print each request's URI on stderr");
  s->footer(
      "Routes:\n"
      "  /                      hello world\n"
      "  /block?ms=500          sleeps on the loop (stalls it: class blocked)\n"
      "  /cpu?ms=500            burns CPU on the loop (stalls it: class cpu)\n"
      "  /async?ms=500          waits with a loop timer (no stall)\n"
      "  /offload?ms=500        sleeps on a worker thread, answers from the loop (no stall)\n"
      "  /upstream-blocking     calls the slow upstream with a blocking socket (stalls)\n"
      "  /upstream-async        calls it with libevent's HTTP client (no stall)\n"
      "  /control/block?duration=200ms&period=1s&kind=cpu|sleep   periodic deliberate stall\n"
      "  /control/unblock       stops it\n"
      "Examples:\n"
      "  stallwatch serve --endpoint stderr\n"
      "  stallwatch serve --port 9000 --workers 10 --threshold 20ms\n"
      "  curl 'http://127.0.0.1:8888/block?ms=300'\n"
      "Stop with Ctrl-C (SIGINT) or SIGTERM: pending requests get 503, then it exits.");
  s->callback([&f]() {
    cli::ServerOptions o;
    o.bind = f.bind;
    o.port = f.port;
    o.workers = f.workers;
    if (!f.threshold.empty()) {
      o.stall_threshold = Dur(f.threshold);
    }
    o.endpoint = f.endpoint;
    o.upstream = f.upstream;
    o.upstream_delay = std::chrono::duration_cast<std::chrono::milliseconds>(Dur(f.upstream_delay));
    o.service = f.service;
    o.attach_agent = !f.no_agent;
    o.handle_signals = true;
    o.log_requests = f.log_requests;
    auto server = cli::Server::Create(o);
    if (!server.ok()) {
      throw CLI::RuntimeError(Fail("serve", server.status()));
    }
    std::string endpoint = f.endpoint;
    if (endpoint.empty()) {
      const char* env = std::getenv("STALLWATCH_ENDPOINT");
      endpoint = env != nullptr && *env != '\0' ? env : sw::kDefaultEndpoint;
    }
    const std::string agent = f.no_agent ? "off" : "-> " + endpoint;
    std::fprintf(stderr,
                 "stallwatch serve: listening on http://%s:%d (upstream 127.0.0.1:%d, %d workers, "
                 "agent %s)\n",
                 f.bind.c_str(), (*server)->port(), (*server)->upstream_port(), f.workers,
                 agent.c_str());
    if (sw::Status st = (*server)->Run(); !st.ok()) {
      throw CLI::RuntimeError(Fail("serve", st));
    }
  });
}

struct LoadFlags {
  std::string url;
  uint64_t requests = 0;
  int concurrency = 10;
  int threads = 1;
  std::string duration;
  std::string timeout = "30s";
  double rate = 0;
  std::string max_time = "5m";
  bool json = false;
  bool drain = false;
};

void AddLoad(CLI::App& app, LoadFlags& f) {
  CLI::App* s =
      app.add_subcommand("load", "Send HTTP load to a URL and report QPS, latency and errors");
  s->add_option("url", f.url, "Target, http://host[:port][/path]")
      ->required()
      ->check(UrlOf(cli::kServerUrlExample));
  // Checked before conversion: "-3" must be refused, not wrapped into an unsigned count.
  s->add_option("-n,--requests", f.requests,
                "Number of requests (default: bounded by --duration only)")
      ->check(WholeIn(1, 1'000'000'000));
  s->add_option("-c,--concurrency", f.concurrency, "Connections (keep-alive)")
      ->capture_default_str()
      ->check(WholeIn(1, 10000));
  s->add_option("-t,--threads", f.threads, "Client threads, each with its own loop")
      ->capture_default_str()
      ->check(WholeIn(1, 64));
  s->add_option("-d,--duration", f.duration, "Run for this long (default 10s when -n is not given)")
      ->check(kPositiveDuration);
  s->add_option("--timeout", f.timeout, "Per-request timeout (counted as an error)")
      ->capture_default_str()
      ->check(kPositiveDuration);
  s->add_option("-r,--rate", f.rate,
                "Fixed rate in requests/s over all connections; latency is measured from the "
                "scheduled send time (no coordinated omission)")
      ->check(kRate);
  s->add_option("--max-time", f.max_time, "Hard time limit of a run bounded by -n")
      ->capture_default_str()
      ->check(kPositiveDuration);
  s->add_flag("--json", f.json, "Print the result as one JSON object");
  s->add_flag("--drain", f.drain,
              "When --duration ends, wait for the requests in flight (up to --timeout) and count "
              "them instead of dropping them");
  s->footer(
      "The run stops at -n requests or --duration, whichever comes first; a run given only -n "
      "stops after --max-time anyway.\n"
      "QPS = completed responses / (last response - first request).\n"
      "Examples:\n"
      "  stallwatch load http://127.0.0.1:8888/ -c 50 -d 10s\n"
      "  stallwatch load 'http://127.0.0.1:8888/block?ms=500' -n 20 -c 5\n"
      "  stallwatch load http://127.0.0.1:8888/async -c 20 --rate 30 -d 10s --json");
  s->callback([&f]() {
    cli::LoadOptions o;
    o.url = f.url;
    o.requests = f.requests;
    o.concurrency = f.concurrency;
    o.threads = f.threads;
    if (!f.duration.empty()) {
      o.duration = Dur(f.duration);
    }
    o.timeout = Dur(f.timeout);
    o.rate = f.rate;
    o.max_time = Dur(f.max_time);
    o.drain = f.drain;
    if (sw::Status st = cli::ValidateLoadOptions(o); !st.ok()) {
      throw CLI::RuntimeError(Fail("load", st));
    }
    InstallCancelHandler();
    auto r = cli::RunLoad(o, &g_cancel);
    if (!r.ok()) {
      throw CLI::RuntimeError(Fail("load", r.status()));
    }
    if (f.json) {
      std::cout << cli::LoadResultToJson(*r).dump() << "\n";
    } else {
      std::cout << cli::FormatLoadText(*r);
    }
    // A run in which nothing succeeded is a failure, whatever was printed above.
    if (const std::string why = cli::FailedRunReason(*r); !why.empty()) {
      std::cout << std::flush;  // the report first, then the verdict as the last line
      std::fprintf(stderr, "stallwatch load: %s\n", why.c_str());
      throw CLI::RuntimeError(1);
    }
  });
}

struct ExperimentFlags {
  std::vector<std::string> modes;
  std::vector<int> concurrency;
  std::string work;
  std::string duration;
  int workers = 5;
  std::string threshold = "50ms";
  std::string endpoint = "off";
  std::string daemon;
  std::string format = "table";
  std::string plot;
  bool json = false;
  bool quick = false;
  bool no_daemon = false;
  std::string target = "libevent";
  std::string python = "/usr/bin/python3";
};

void AddExperiment(CLI::App& app, ExperimentFlags& f) {
  CLI::App* s = app.add_subcommand(
      "experiment",
      "Measure block vs cpu vs async vs thread pool vs upstream clients, with findings");
  std::string mode_names;
  for (cli::Mode m : cli::AllModes()) {
    mode_names += std::string(mode_names.empty() ? "" : ", ") + cli::ModeName(m);
  }
  s->add_option("--target", f.target,
                "What serves the requests: libevent (the bundled server, in this process) or "
                "tornado (the bundled Tornado app in an unmodified python3 under the shim)")
      ->capture_default_str()
      ->check(CLI::IsMember({"libevent", "tornado"}));
  s->add_option("--python", f.python, "--target tornado: the interpreter to run the app with")
      ->capture_default_str();
  s->add_option("--modes", f.modes, "Modes to run (default: all): " + mode_names)
      ->delimiter(',')
      ->check([](const std::string& v) {
        cli::Mode m;
        return cli::ParseMode(v, &m) ? std::string()
                                     : "unknown mode '" + v +
                                           "'; expected one of block, cpu, "
                                           "async, offload, upstream-blocking, upstream-async";
      });
  s->add_option("-c,--concurrency", f.concurrency, "Concurrency levels (default 5,10,20)")
      ->delimiter(',')
      ->check(WholeIn(1, 1000));
  s->add_option(
       "--work", f.work,
       "Work per request: sleep, CPU burn, timer or upstream delay (default 500ms; --quick 100ms)")
      ->check(kDuration);
  s->add_option("-d,--duration", f.duration,
                "Length of each run (default 10s; --quick 1s); runs of modes that block the loop "
                "are stretched to whole waves of c × work")
      ->check(kPositiveDuration);
  s->add_option("--workers", f.workers, "Threads of the server's /offload pool")
      ->capture_default_str()
      ->check(WholeIn(1, 1024));
  s->add_option("--threshold", f.threshold, "The agent's stall threshold")
      ->capture_default_str()
      ->check(kPositiveDuration);
  s->add_option("--endpoint", f.endpoint,
                "Send the agent's findings there instead of the daemon chosen automatically "
                "(e.g. " +
                    std::string(sw::defaults::kAgentEndpoint) + ")")
      ->check(kEndpoint);
  s->add_option("--daemon", f.daemon,
                "Use the stallwatchd with this HTTP address (its findings from --endpoint, else "
                "the default socket) for the closing count, e.g. " +
                    std::string(sw::defaults::kDaemonUrl))
      ->check(UrlOf(cli::kDaemonUrlExample));
  s->add_option("--format", f.format, "table, markdown, csv or json")
      ->capture_default_str()
      ->check([](const std::string& v) {
        cli::ReportFormat r;
        return cli::ParseReportFormat(v, &r)
                   ? std::string()
                   : "unknown format '" + v + "'; expected table, markdown, csv or json";
      });
  s->add_flag("--json", f.json, "Same as --format json");
  s->add_option("--plot", f.plot, "Also write an SVG plot of QPS against concurrency to FILE");
  s->add_flag("--quick", f.quick, "Short runs (work 100ms, 1s per run): about 25 s in all");
  s->add_flag("--no-daemon", f.no_daemon,
              "Read the agent in-process only: no stallwatchd is used or started (by default "
              "findings also go to a running stallwatchd, or to one started for the run)");
  s->footer(
      "The server (agent attached) runs in this process on its own thread; a fresh one per run,\n"
      "so each run's findings are its own. Expected QPS: block, cpu, upstream-blocking 1/work;\n"
      "async, upstream-async c/work; offload min(c, workers)/work. A progress line per run goes\n"
      "to stderr; the report to stdout. A loop that blocks in every handler answers in waves\n"
      "(all c handlers run, then libevent writes the c replies), so those runs last whole waves.\n"
      "Examples:\n"
      "  stallwatch experiment                      the seeds' table: 0.5 s work, c = 5,10,20\n"
      "  stallwatch experiment --quick --format markdown --plot qps.svg\n"
      "  stallwatch experiment --modes block,async,offload -c 1,5,10,20 --workers 10 --json\n"
      "  stallwatch experiment --target tornado     the same table on real Tornado "
      "(python3-tornado):\n"
      "                                             time.sleep vs asyncio.sleep vs a thread pool\n"
      "With --target tornado each run starts examples/tornado_seed.py (or "
      "$STALLWATCH_TORNADO_APP)\n"
      "in its own python3 process under the preload shim; the agent's findings come from a file\n"
      "(no stallwatchd is involved), and the routes are /sleep, /cpu, /async, /pool (--workers\n"
      "threads), /fetch-blocking and /fetch-async.");
  s->callback([&f]() {
    cli::ExperimentOptions o;
    if (!f.modes.empty()) {
      o.modes.clear();
      for (const auto& name : f.modes) {
        cli::Mode m;
        cli::ParseMode(name, &m);
        o.modes.push_back(m);
      }
    }
    if (!f.concurrency.empty()) {
      o.concurrency = f.concurrency;
    }
    o.work = std::chrono::milliseconds(f.quick ? 100 : 500);
    o.run_duration = f.quick ? std::chrono::milliseconds(1000) : std::chrono::milliseconds(10000);
    if (!f.work.empty()) {
      o.work = std::chrono::duration_cast<std::chrono::milliseconds>(Dur(f.work));
    }
    if (!f.duration.empty()) {
      o.run_duration = Dur(f.duration);
    }
    o.workers = f.workers;
    o.stall_threshold = Dur(f.threshold);
    o.endpoint = f.endpoint;
    o.target = f.target == "tornado" ? cli::Target::kTornado : cli::Target::kLibevent;
    o.python = f.python;
    // Bad options fail before anything is started.
    if (sw::Status st = cli::ValidateExperimentOptions(o); !st.ok()) {
      throw CLI::RuntimeError(Fail("experiment", st));
    }
    if (o.target == cli::Target::kTornado) {
      if (sw::Status st = cli::CheckTornadoTarget(o); !st.ok()) {
        throw CLI::RuntimeError(Fail("experiment", st));
      }
      if (!f.daemon.empty() || f.endpoint != "off") {
        throw CLI::RuntimeError(
            Fail("experiment", sw::InvalidArgumentError("--target tornado reads the agent's "
                                                        "findings from a file: drop --daemon "
                                                        "and --endpoint")));
      }
      f.no_daemon = true;
    }
    // Findings also go to stallwatchd: the one running with the default socket, or one started
    // here for the experiment (and stopped after it), unless --no-daemon or --endpoint.
    cli::ExperimentDaemon daemon;
    bool with_daemon = false;
    if (!f.daemon.empty()) {
      if (f.no_daemon) {
        throw CLI::RuntimeError(Fail(
            "experiment", sw::InvalidArgumentError("--daemon and --no-daemon exclude each other")));
      }
      if (sw::Status st = daemon.UseRunning(f.daemon, f.endpoint == "off" ? "" : f.endpoint);
          !st.ok()) {
        throw CLI::RuntimeError(Fail("experiment", st));
      }
      o.endpoint = daemon.endpoint();
      with_daemon = true;
      std::fprintf(stderr, "stallwatch experiment: findings go to %s, counted at stallwatchd %s\n",
                   daemon.endpoint().c_str(), daemon.url().c_str());
    } else if (!f.no_daemon && f.endpoint == "off") {
      if (sw::Status st = daemon.Acquire(); st.ok()) {
        o.endpoint = daemon.endpoint();
        with_daemon = true;
        std::fprintf(stderr, "stallwatch experiment: findings also go to stallwatchd at %s%s\n",
                     daemon.url().c_str(), daemon.started() ? " (started for this run)" : "");
      } else {
        std::fprintf(stderr, "stallwatch experiment: %s; reading the agent in-process only\n",
                     st.message().c_str());
      }
    }
    cli::ReportFormat format = cli::ReportFormat::kTable;
    cli::ParseReportFormat(f.json ? "json" : f.format, &format);
    o.progress = [](size_t i, size_t n, const cli::ExperimentRow& row) {
      std::fprintf(stderr, "%s\n", cli::FormatProgressLine(i, n, row).c_str());
    };
    InstallCancelHandler();
    const int64_t experiment_start_ns = sw::RealtimeNanos();
    auto rows = cli::RunExperiment(o, &g_cancel);
    if (!rows.ok()) {
      throw CLI::RuntimeError(Fail("experiment", rows.status()));
    }
    const cli::ReportContext ctx{
        .work = o.work, .workers = o.workers, .run_duration = o.run_duration};
    std::cout << cli::FormatExperiment(*rows, format, ctx) << std::flush;
    if (!f.plot.empty()) {
      std::ofstream out(f.plot);
      out << cli::RenderQpsSvg(*rows, ctx);
      if (!out) {
        throw CLI::RuntimeError(Fail("experiment", sw::UnavailableError("cannot write " + f.plot)));
      }
      std::fprintf(stderr, "stallwatch experiment: plot written to %s\n", f.plot.c_str());
    }
    if (with_daemon) {
      auto r = cli::HttpGet(daemon.url() + "/api/v1/stalls?limit=1000");
      // Only this run's stalls: a daemon that was already running holds other services' too.
      auto n = r.ok() && r->status == 200
                   ? cli::CountOwnStalls(r->body, getpid(), experiment_start_ns)
                   : sw::StatusOr<size_t>(sw::UnavailableError("no answer"));
      if (n.ok()) {
        std::fprintf(stderr,
                     "stallwatch experiment: stallwatchd recorded %zu stalls of this run%s\n", *n,
                     daemon.started() ? "" : " (see: stallwatch stalls)");
      }
    }
    if (g_cancel.load()) {
      throw CLI::RuntimeError(130);
    }
  });
}

struct ControlFlags {
  std::string url = "http://127.0.0.1:8888";
  std::string duration = "200ms";
  std::string period = "1s";
  std::string kind = "sleep";
};

void AddBlockUnblock(CLI::App& app, ControlFlags& f) {
  CLI::App* b =
      app.add_subcommand("block", "Make a running `stallwatch serve` stall its loop periodically");
  b->add_option("--url", f.url, "The server")
      ->capture_default_str()
      ->check(UrlOf(kServerBaseExample));
  b->add_option("--duration", f.duration, "How long each stall lasts")
      ->capture_default_str()
      ->check(kPositiveDuration);
  b->add_option("--period", f.period, "How often a stall starts")
      ->capture_default_str()
      ->check(kPositiveDuration);
  b->add_option("--kind", f.kind, "sleep (blocked in a syscall) or cpu (busy loop)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sleep", "cpu"}));
  b->footer(
      "Drives GET /control/block?duration=&period=&kind= of the server.\n"
      "Examples:\n"
      "  stallwatch block                                   200ms sleep every second\n"
      "  stallwatch block --duration 500ms --period 2s --kind cpu\n"
      "  stallwatch block --url http://127.0.0.1:9000 && stallwatch stalls\n"
      "  stallwatch unblock");
  b->callback([&f]() {
    auto to_ms = [](const std::string& d) {
      return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(Dur(d)).count());
    };
    const std::string url = cli::BaseUrl(f.url) + "/control/block?duration=" + to_ms(f.duration) +
                            "&period=" + to_ms(f.period) + "&kind=" + f.kind;
    auto r = cli::HttpGet(url);
    if (!r.ok()) {
      throw CLI::RuntimeError(Fail("block", r.status()));
    }
    if (r->status != 200) {
      throw CLI::RuntimeError(Fail("block", sw::InvalidArgumentError(cli::Trimmed(r->body))));
    }
    std::printf("%s: loop stalls %s every %s (%s); undo with: stallwatch unblock --url %s\n",
                cli::BaseUrl(f.url).c_str(), f.duration.c_str(), f.period.c_str(), f.kind.c_str(),
                cli::BaseUrl(f.url).c_str());
  });
  CLI::App* u =
      app.add_subcommand("unblock", "Stop the periodic stall of a running `stallwatch serve`");
  u->add_option("--url", f.url, "The server")
      ->capture_default_str()
      ->check(UrlOf(kServerBaseExample));
  u->footer(
      "Drives GET /control/unblock of the server.\nExample:\n  stallwatch unblock --url "
      "http://127.0.0.1:8888");
  u->callback([&f]() {
    auto r = cli::HttpGet(cli::BaseUrl(f.url) + "/control/unblock");
    if (!r.ok()) {
      throw CLI::RuntimeError(Fail("unblock", r.status()));
    }
    if (r->status != 200) {
      throw CLI::RuntimeError(Fail("unblock", sw::InvalidArgumentError(cli::Trimmed(r->body))));
    }
    const bool was = r->body.find("\"was_blocking\":true") != std::string::npos;
    std::printf("%s: periodic stall %s\n", cli::BaseUrl(f.url).c_str(),
                was ? "stopped" : "was not on");
  });
}

// Validates a refresh interval: a duration from 100ms to 60m.
const CLI::Validator kRefresh(
    [](std::string& s) -> std::string {
      auto d = sw::ParseDuration(s);
      if (!d.ok()) {
        return d.status().message();
      }
      if (*d < cli::kMinRefresh || *d > cli::kMaxRefresh) {
        return "refresh interval " + s + " is out of range; expected 100ms to 60m (e.g. 500ms, 2s)";
      }
      return {};
    },
    "DURATION", "refresh interval");

struct ViewFlags {
  std::string daemon{sw::defaults::kDaemonUrl};
  int limit = 20;
  std::string service;
  std::string loop;
  std::string since;
  std::string file;
  bool ongoing = false;
  bool no_stacks = false;
  bool full = false;
  bool follow = false;
  bool json = false;
  cli::StacksOptions stacks;
  std::string interval = "1s";
  int iterations = 0;
};

void AddStallsStacks(CLI::App& app, ViewFlags& f) {
  CLI::App* s = app.add_subcommand(
      "stalls", "Recent and ongoing stalls from stallwatchd (or a file), with stacks and hints");
  s->add_option("--daemon", f.daemon, "The daemon's HTTP address")
      ->capture_default_str()
      ->check(UrlOf(cli::kDaemonUrlExample));
  s->add_option("--file", f.file,
                "Read the JSON Lines of a file: endpoint (STALLWATCH_ENDPOINT=file:PATH) instead "
                "of the daemon");
  s->add_option("-n,--limit", f.limit, "At most this many stalls (newest first)")
      ->capture_default_str()
      ->check(WholeIn(1, 1000));
  s->add_option("--service", f.service, "Only this service");
  s->add_option("--loop", f.loop, "Only this loop");
  s->add_option("--since", f.since, "Only stalls that started within this long ago, e.g. 10m")
      ->check(kDuration);
  s->add_flag("--ongoing", f.ongoing, "Only stalls still going on");
  s->add_flag("--no-stacks", f.no_stacks, "Leave the stacks out");
  s->add_flag("--full", f.full,
              "Every stack and frame, also the callers of the loop's dispatch (main, set-up)");
  s->add_flag("-f,--follow", f.follow, "Keep printing new stalls until q or Ctrl-C");
  s->add_option("--interval", f.interval, "How often --follow polls (100ms to 60m)")
      ->capture_default_str()
      ->check(kRefresh);
  s->add_flag("--json", f.json,
              "Print the stalls as a JSON array (the finding format); with --follow, one per "
              "line");
  s->footer(
      "Each stall's headline names the first frame of your own code. Consecutive stalls of a\n"
      "loop with the same class and stack are one entry (\"×20, same stack\"). Frames that called\n"
      "the loop's dispatch (event_base_loop: main, option parsing, libc start) are folded.\n"
      "Examples:\n"
      "  stallwatch stalls\n"
      "  stallwatch stalls --service api --since 10m --no-stacks\n"
      "  stallwatch stalls --follow --loop main\n"
      "  stallwatch stalls --file /tmp/findings.jsonl --full\n"
      "  stallwatch stalls --ongoing --json | jq '.[0].stacks'");
  s->callback([&f]() {
    cli::StallsOptions o;
    o.daemon = f.daemon;
    o.file = f.file;
    o.limit = static_cast<size_t>(f.limit);
    o.filter.service = f.service;
    o.filter.loop = f.loop;
    if (f.ongoing) {
      o.filter.ongoing = true;
    }
    if (!f.since.empty()) {
      o.since = Dur(f.since);
    }
    o.format = {.stacks = !f.no_stacks, .full = f.full};
    o.json = f.json;
    o.follow = f.follow;
    o.interval = Dur(f.interval);
    if (f.follow) {
      InstallCancelHandler();
    }
    if (sw::Status st = cli::RunStalls(o, &g_cancel); !st.ok()) {
      throw CLI::RuntimeError(Fail("stalls", st));
    }
  });

  CLI::App* k = app.add_subcommand(
      "stacks", "Stall stacks from stallwatchd (flame graphs, pprof), filtered or merged");
  k->add_option("--daemon", f.daemon, "The daemon's HTTP address")
      ->capture_default_str()
      ->check(UrlOf(cli::kDaemonUrlExample));
  k->add_option("--format", f.stacks.format,
                "text, folded (flamegraph.pl / speedscope), json or pprof (go tool pprof; binary: "
                "-o FILE or a pipe)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "folded", "json", "pprof"}));
  k->add_option("--service", f.stacks.service, "Only this service");
  k->add_option("--loop", f.stacks.loop, "Only this loop");
  k->add_option("--class", f.stacks.stall_class, "Only stalls of this class")
      ->check(CLI::IsMember({"cpu", "blocked", "starved", "suspended", "unknown"}));
  k->add_option("--since", f.stacks.since,
                "Only samples taken since: a duration ago (10m, 2h, 1d), RFC 3339 "
                "(2026-12-07T15:04:05Z) or Unix ns");
  k->add_option("--until", f.stacks.until, "Only samples taken until (same forms as --since)");
  k->add_option("-o,--output", f.stacks.output, "Write to this file instead of stdout");
  k->add_flag("--full", f.full, "text: also the callers of the loop's dispatch (main, set-up)");
  k->footer(
      "Without filters: every stack the daemon merged since it started. With --service, --loop,\n"
      "--class, --since or --until: the stacks of the stall reports kept (docs/daemon.md).\n"
      "text merges the daemon's stacks by function and line (one entry per source line, not per\n"
      "exact pc), sorts them by samples and folds what called the loop's dispatch (--full shows\n"
      "it); folded, json and pprof are the daemon's, as served.\n"
      "Examples:\n"
      "  stallwatch stacks\n"
      "  stallwatch stacks --format folded | flamegraph.pl > stalls.svg\n"
      "  stallwatch stacks --service api --class blocked --since 10m\n"
      "  stallwatch stacks --format pprof --since 1h -o stalls.pb.gz && go tool pprof -top "
      "stalls.pb.gz\n"
      "  stallwatch stacks --format json --loop main");
  k->callback([&f]() {
    f.stacks.daemon = f.daemon;
    f.stacks.full = f.full;
    if (sw::Status st = cli::RunStacks(f.stacks); !st.ok()) {
      throw CLI::RuntimeError(Fail("stacks", st));
    }
  });
}

void AddCalls(CLI::App& app, cli::CallsOptions& o) {
  CLI::App* c = app.add_subcommand(
      "calls", "Blocking calls made on loop threads, by call site, most total time first");
  c->add_option("--daemon", o.daemon, "The daemon's HTTP address")
      ->capture_default_str()
      ->check(UrlOf(cli::kDaemonUrlExample));
  c->add_option("-n,--limit", o.limit, "At most this many call sites")
      ->capture_default_str()
      ->check(WholeIn(1, 1000));
  c->add_option("--service", o.service, "Only this service");
  c->add_option("--pid", o.pid, "Only this process")->check(CLI::PositiveNumber);
  c->add_option("--loop", o.loop, "Only this loop");
  std::vector<std::string> calls, families;
  for (const auto& k : sw::kBlockingCalls) {
    calls.emplace_back(k.name);
  }
  for (const auto& f : sw::kBlockingCallFamilies) {
    families.emplace_back(f);
  }
  c->add_option("--call", o.call, "Only this call (getaddrinfo, usleep, fsync, …)")
      ->check(CLI::IsMember(calls));
  c->add_option("--family", o.family, "Only this family of calls (dns, sleep, sync, …)")
      ->check(CLI::IsMember(families));
  c->add_flag("--json", o.json, "Print the daemon's JSON (/api/v1/calls) as served");
  c->footer(
      "The agent counts and times every call of a known-blocking function (name resolution,\n"
      "sleeps, disk syncs, blocking connects, waits, locks: docs/findings.md) made on a watched\n"
      "loop thread, even far below the stall threshold, by call site. Totals add up since the\n"
      "daemon first saw the loop's calls (\"in 10 min\"). Per call, the same calls are in\n"
      "stallwatch_blocking_calls_total and stallwatch_blocking_call_seconds.\n"
      "Examples:\n"
      "  stallwatch calls\n"
      "  stallwatch calls --service api --family dns\n"
      "  stallwatch calls --json | jq '.calls[0]'\n"
      "In CI, `stallwatch check --forbid getaddrinfo -- CMD` fails a run that makes such calls.");
  c->callback([&o]() {
    if (sw::Status st = cli::RunCalls(o); !st.ok()) {
      throw CLI::RuntimeError(Fail("calls", st));
    }
  });
}

void AddTop(CLI::App& app, ViewFlags& f) {
  CLI::App* t =
      app.add_subcommand("top", "Live view of every loop the daemon knows (refreshes in place)");
  t->add_option("--daemon", f.daemon, "The daemon's HTTP address")
      ->capture_default_str()
      ->check(UrlOf(cli::kDaemonUrlExample));
  t->add_option("--interval", f.interval, "Refresh period, 100ms to 60m")
      ->capture_default_str()
      ->check(kRefresh);
  t->add_option("--iterations", f.iterations,
                "Stop after this many refreshes (0: until q or Ctrl-C on a terminal; 1 otherwise)")
      ->check(WholeIn(0, 1'000'000));
  t->footer(
      "Per loop: loop delay p50/p99/max and utilization of the last window, stalls that started\n"
      "in the last minute (STALLS/MIN), the age and class of a stall going on now, and the top\n"
      "frame of your code (of the ongoing stall, else of the latest; \"as before:\" when that\n"
      "stall came without stacks and an earlier one of the loop named it). Processes that exited\n"
      "or lost their connection show \"gone\" and are listed last. The view fits the terminal\n"
      "width (narrow ones put the frame on its own line). On a terminal it refreshes in place;\n"
      "q or Ctrl-C quits. Otherwise it prints plain snapshots ($COLUMNS wide, else 80).\n"
      "Examples:\n"
      "  stallwatch top\n"
      "  stallwatch top --interval 500ms\n"
      "  stallwatch top --iterations 3 > snapshot.txt");
  t->callback([&f]() {
    cli::TopOptions o;
    o.daemon = f.daemon;
    o.interval = Dur(f.interval);
    o.iterations = f.iterations;
    InstallCancelHandler();
    if (sw::Status st = cli::RunTop(o, &g_cancel); !st.ok()) {
      throw CLI::RuntimeError(Fail("top", st));
    }
  });
}

}  // namespace

void AddRun(CLI::App& app, cli::RunOptions& o, std::vector<std::string>& command) {
  CLI::App* r = app.add_subcommand(
      "run", "Run an unmodified libevent program with every loop in it watched (LD_PRELOAD)");
  r->add_option("--service", o.service, "Service name of its findings (default: program name)");
  r->add_option("--threshold", o.threshold, "Stall threshold, e.g. 50ms")->check(kPositiveDuration);
  r->add_option("--endpoint", o.endpoint,
                "Where findings go: unix:/path, tcp:host:port, file:/path, stderr, off "
                "(default: the daemon's socket)");
  r->add_option("--sampling", o.sampling, "Stacks: on, off or signal-all")
      ->check(CLI::IsMember({"on", "off", "signal-all"}));
  r->add_option("--preload", o.preload, "Path of libstallwatch_preload.so (found by default)");
  r->add_option("command", command, "The program and its arguments, after --")->required();
  r->footer(
      "Sets LD_PRELOAD to the shim and the STALLWATCH_* variables and runs the program as its\n"
      "parent: signals sent to stallwatch are forwarded, and its exit status is the program's\n"
      "(128+N if signal N ended it). Every libevent event_base it creates is watched;\n"
      "loops are named after their threads. One line on stderr says where findings go, one\n"
      "more if no event loop was seen within 10 s ($STALLWATCH_RUN_NO_LOOP_AFTER).\n"
      "Examples:\n"
      "  stallwatch run -- memcached -t 4 -u memcache\n"
      "  stallwatch run --endpoint stderr --threshold 20ms -- ./my_libevent_server\n"
      "  stallwatch run --service cache -- memcached & stallwatch top");
  r->callback([&o, &command]() {
    const int code = cli::RunUnderShim(o, command);
    if (code != 0) {
      throw CLI::RuntimeError(code);
    }
  });
}

struct CheckFlags {
  cli::CheckOptions options;
  std::string max_stall = "50ms";
  std::string max_blocking;
  std::string forbid;
  std::vector<std::string> command;
};

void AddCheck(CLI::App& app, CheckFlags& f) {
  CLI::App* c = app.add_subcommand(
      "check", "CI gate: run a program under the shim and fail when a loop blocked or stalled");
  c->add_option("--max-stall", f.max_stall,
                "Longest stall allowed on a watched loop (also the agent's stall threshold)")
      ->capture_default_str()
      ->check(kPositiveDuration);
  c->add_option("--forbid", f.forbid,
                "Calls no loop may make at all, comma-separated: call names (getaddrinfo, fsync, "
                "…) or families (dns, sleep, sync, connect, wait, lock)")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            auto parsed = cli::ParseForbidList(s);
            return parsed.ok() ? std::string() : parsed.status().message();
          },
          "CALL[,CALL...]", "blocking calls"));
  c->add_option("--max-blocking", f.max_blocking,
                "Longest single blocking call allowed on a loop, e.g. 5ms (default: no limit)")
      ->check(kPositiveDuration);
  c->add_flag("--json", f.options.json, "Print the verdict as one JSON object (for CI systems)");
  c->add_flag("--exit-status", f.options.exit_status,
              "Exit with the program's own status when it failed (default: the check's verdict)");
  c->add_option("--service", f.options.run.service,
                "Service name in findings (default: program name)");
  c->add_option("--preload", f.options.run.preload,
                "Path of libstallwatch_preload.so (found by default)");
  c->add_option("command", f.command, "The program and its arguments, after --")->required();
  c->footer(
      "Runs the program to its end with every event loop watched (as 'stallwatch run'), its\n"
      "findings in a private file, then lists each offence: a call site on a loop thread that\n"
      "made a forbidden call (--forbid) or a call longer than --max-blocking (call, function,\n"
      "file:line, count, longest), and each stall longer than --max-stall with its top frames.\n"
      "Exit status: 0 clean, 3 offences found, the program's own with --exit-status when it\n"
      "failed, 127 when it could not be started, 2 on bad flags. 'sleep' in --forbid is the\n"
      "family (nanosleep, clock_nanosleep, usleep, sleep); known calls: getaddrinfo,\n"
      "gethostbyname, gethostbyname_r, getnameinfo, nanosleep, clock_nanosleep, usleep, sleep,\n"
      "fsync, fdatasync, sync_file_range, syncfs, connect (blocking socket), waitpid, system,\n"
      "pthread_join, flock.\n"
      "Examples:\n"
      "  stallwatch check -- ./server_integration_test\n"
      "  stallwatch check --forbid dns,sleep,fsync -- ./my_libevent_server --self-test\n"
      "  stallwatch check --max-stall 20ms --max-blocking 2ms --json -- python3 -m pytest tests/\n"
      "  stallwatch check --exit-status --forbid sleep -- python3 app_test.py");
  c->callback([&f]() {
    auto stall = sw::ParseDuration(f.max_stall);
    f.options.criteria.max_stall = *stall;  // checked by the validator
    if (!f.max_blocking.empty()) {
      f.options.criteria.max_blocking = *sw::ParseDuration(f.max_blocking);
    }
    if (!f.forbid.empty()) {
      f.options.criteria.forbid = *cli::ParseForbidList(f.forbid);
    }
    const int code = cli::RunCheck(f.options, f.command);
    if (code != 0) {
      throw CLI::RuntimeError(code);
    }
  });
}

// CLI11 reports its own errors through exceptions that app.exit() turns into the exit status;
// anything else escaping ends the program with std::terminate's message, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"stallwatch: find what stalls your event loops"};
  app.set_version_flag("--version", "stallwatch " SW_PROJECT_VERSION);
  app.require_subcommand(1, 1);
  app.footer(
      "Examples:\n"
      "  stallwatch serve                          bundled server on :8888 with the agent\n"
      "  stallwatch load http://127.0.0.1:8888/ -c 50 -d 10s\n"
      "  stallwatch experiment --quick             block vs async vs thread pool, measured\n"
      "  stallwatch block --duration 200ms         make a running server stall periodically\n"
      "  stallwatch stalls                         recent and ongoing stalls from stallwatchd\n"
      "  stallwatch stacks --format folded         merged stacks for flame graphs\n"
      "  stallwatch top                            live per-loop view (q quits)\n"
      "  stallwatch calls                          blocking calls on loop threads, by call site\n"
      "  stallwatch run -- memcached -t 4          watch an unmodified libevent program\n"
      "  stallwatch check --forbid dns -- ./test   CI gate: fail on blocking calls and stalls\n"
      "Run 'stallwatch <command> --help' for a command's flags and examples.");
  ServeFlags serve;
  LoadFlags load;
  ExperimentFlags experiment;
  AddServe(app, serve);
  AddLoad(app, load);
  AddExperiment(app, experiment);
  ControlFlags control;
  AddBlockUnblock(app, control);
  ViewFlags views;
  AddStallsStacks(app, views);
  AddTop(app, views);
  cli::CallsOptions calls;
  AddCalls(app, calls);
  cli::RunOptions run;
  std::vector<std::string> run_command;
  AddRun(app, run, run_command);
  CheckFlags check;
  AddCheck(app, check);
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
      known |= sub->get_name() == argv[1];
    }
    if (!known) {
      std::fprintf(stderr, "stallwatch: unknown command '%s'; expected one of %s\n", argv[1],
                   names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error exits 2 after its one-line message.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return 0;
}
