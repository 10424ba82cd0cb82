#include "options.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <csignal>
#include <cstdlib>
#include <mutex>
#include <set>

#include "log.h"
#include "platform/signal_sampler.h"
#include "reporter.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/duration.h"

namespace stallwatch {
namespace agent::internal {

spdlog::logger& Log() {
  static spdlog::logger* logger = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto* l = new spdlog::logger("stallwatch", std::move(sink));  // lives until exit
    l->set_pattern("stallwatch: %l: %v");
    l->set_level(spdlog::level::info);
    return l;
  }();
  return *logger;
}

namespace {

// Each malformed variable is reported once per process.
void WarnOnce(const std::string& var, const std::string& value, const std::string& why,
              const std::string& used) {
  static std::mutex mu;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mu);
  if (!warned.insert(var).second) return;
  try {
    Log().warn("{}='{}' ignored: {}; using {}", var, value, why, used);
  } catch (...) {
  }
}

}  // namespace
}  // namespace agent::internal

Options Options::FromEnvironment() { return FromEnvironment(Options{}); }

Options Options::FromEnvironment(Options base) {
  return agent::internal::OptionsFromEnv(std::move(base),
                                         [](const char* name) { return std::getenv(name); });
}

namespace agent::internal {

Options OptionsFromEnv(Options base, const EnvLookup& lookup) {
  Options o = std::move(base);
  if (const char* v = lookup("STALLWATCH_SERVICE"); v != nullptr && *v != '\0') {
    o.service = v;
  }
  auto duration = [&](const char* var, std::chrono::nanoseconds* field,
                      std::chrono::nanoseconds min) {
    const char* v = lookup(var);
    if (v == nullptr || *v == '\0') return;
    auto d = ParseDuration(v);
    if (!d.ok()) {
      WarnOnce(var, v, d.status().message(), FormatDuration(*field));
    } else if (*d < min) {
      WarnOnce(var, v, "must be at least " + FormatDuration(min), FormatDuration(*field));
    } else {
      *field = *d;
    }
  };
  duration("STALLWATCH_THRESHOLD", &o.stall_threshold, std::chrono::milliseconds(1));
  duration("STALLWATCH_INTERVAL", &o.probe_interval, std::chrono::microseconds(100));
  duration("STALLWATCH_REPORT_INTERVAL", &o.report_interval, std::chrono::milliseconds(100));
  if (const char* v = lookup("STALLWATCH_ENDPOINT"); v != nullptr && *v != '\0') {
    auto e = ParseEndpoint(v);
    if (e.ok()) {
      o.endpoint = v;
    } else {
      WarnOnce("STALLWATCH_ENDPOINT", v, e.status().message(),
               o.endpoint.empty() ? kDefaultEndpoint : o.endpoint);
    }
  }
  if (const char* v = lookup("STALLWATCH_TOKEN_FILE"); v != nullptr && *v != '\0') {
    if (v[0] == '/') {
      o.token_file = v;
    } else {
      WarnOnce("STALLWATCH_TOKEN_FILE", v, "expected an absolute path",
               o.token_file.empty() ? "no token" : o.token_file);
    }
  }
  if (const char* v = lookup("STALLWATCH_SAMPLING"); v != nullptr && *v != '\0') {
    const std::string s = v;
    if (s == "signal-all") {
      o.sampling = SamplingMode::kSignalAll;
    } else if (auto b = ParseBool(s); b.ok()) {
      o.sampling = *b ? SamplingMode::kOn : SamplingMode::kOff;
    } else {
      WarnOnce("STALLWATCH_SAMPLING", v, "expected on, off or signal-all",
               o.sampling == SamplingMode::kOff ? "off" : "on");
    }
  }
  if (const char* v = lookup("STALLWATCH_WATCHDOG"); v != nullptr && *v != '\0') {
    const std::string s = v;
    if (s == "auto") {
      o.watchdog = WatchdogMode::kAuto;
    } else if (s == "thread") {
      o.watchdog = WatchdogMode::kThread;
    } else if (s == "process") {
      o.watchdog = WatchdogMode::kProcess;
    } else {
      WarnOnce("STALLWATCH_WATCHDOG", v, "expected auto, thread or process",
               o.watchdog == WatchdogMode::kThread
                   ? "thread"
                   : (o.watchdog == WatchdogMode::kProcess ? "process" : "auto"));
    }
  }
  if (const char* v = lookup("STALLWATCH_SIGNAL"); v != nullptr && *v != '\0') {
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n <= 0 || n >= NSIG || n == SIGKILL || n == SIGSTOP) {
      WarnOnce("STALLWATCH_SIGNAL", v, "expected a signal number (e.g. 37)",
               std::to_string(o.sample_signal ? o.sample_signal : platform::DefaultSampleSignal()));
    } else {
      o.sample_signal = static_cast<int>(n);
    }
  }
  return o;
}

}  // namespace agent::internal
}  // namespace stallwatch
