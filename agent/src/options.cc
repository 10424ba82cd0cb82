#include "options.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "log.h"
#include "platform/signal_sampler.h"
#include "reporter.h"
#include "stallwatch/agent.h"
#include "stallwatch/common/defaults.h"
#include "stallwatch/common/duration.h"
#include "stallwatch/common/log_text.h"

namespace stallwatch {

// The public header spells the default endpoint out (it includes nothing private); it must
// name the daemon's default socket.
static_assert(std::string_view(kDefaultEndpoint) == defaults::kAgentEndpoint);
namespace agent::internal {

// Callable from any thread, including before main and during exit: the logger is created on
// first use (a thread-safe static), never destroyed, and its stderr sink (_mt) serialises lines.
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

// Text from outside (paths, environment values, resolver errors) goes into log lines through
// EscapeForLog; the bound is wider than its default because a path may be long and a message
// carries advice after it.
constexpr size_t kMaxLoggedText = 1024;

// Each malformed variable is reported once per process.
void WarnOnce(const std::string& var, const std::string& value, const std::string& why,
              const std::string& used) {
  static std::mutex mu;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mu);
  if (!warned.insert(var).second) {
    return;
  }
  LogWarn("{}='{}' ignored: {}; using {}", var, EscapeForLog(value, kMaxLoggedText),
          EscapeForLog(why, kMaxLoggedText), EscapeForLog(used, kMaxLoggedText));
}

}  // namespace
}  // namespace agent::internal

Options Options::FromEnvironment() { return FromEnvironment(Options{}); }

Options Options::FromEnvironment(Options base) {
  return agent::internal::OptionsFromEnv(std::move(base),
                                         [](const char* name) { return std::getenv(name); });
}

namespace agent::internal {

namespace {

constexpr int kMaxStackReportsLimit = 1'000'000;

const char* SamplingName(SamplingMode m) {
  switch (m) {
    case SamplingMode::kOff:
      return "off";
    case SamplingMode::kOn:
      return "on";
    case SamplingMode::kSignalAll:
      return "signal-all";
  }
  return "on";
}

const char* WatchdogName(WatchdogMode m) {
  switch (m) {
    case WatchdogMode::kAuto:
      return "auto";
    case WatchdogMode::kThread:
      return "thread";
    case WatchdogMode::kProcess:
      return "process";
  }
  return "auto";
}

// A whole number written with digits only (at most 9 of them); false for anything else.
bool ParseDigits(std::string_view text, long* out) {
  if (text.empty() || text.size() > 9) {
    return false;
  }
  long n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    n = n * 10 + (c - '0');
  }
  *out = n;
  return true;
}

}  // namespace

StatusOr<int> ParseSampleSignal(std::string_view text) {
  const int lo = SIGRTMIN, hi = SIGRTMAX;
  const std::string range = "SIGRTMIN..SIGRTMAX, " + std::to_string(lo) + ".." + std::to_string(hi);
  const std::string forms =
      "expected a real-time signal: SIGRTMIN+N, SIGRTMAX-N or a number in " + range;
  std::string_view t = text;
  long value = 0;
  if (ParseDigits(t, &value)) {
    if (value < lo || value > hi) {
      return InvalidArgumentError("signal " + std::string(text) +
                                  " is not a real-time signal; a real-time signal (" + range +
                                  ") is needed, e.g. SIGRTMIN+3");
    }
    return static_cast<int>(value);
  }
  if (t.rfind("SIG", 0) == 0) {
    t.remove_prefix(3);
  }
  int base = 0;
  if (t.rfind("RTMIN", 0) == 0) {
    base = lo;
  } else if (t.rfind("RTMAX", 0) == 0) {
    base = hi;
  } else if (!t.empty() && std::all_of(t.begin(), t.end(), [](char c) {
               return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
             })) {
    // A signal name such as SIGUSR1 or SIGPROF: a signal, but not a real-time one.
    return InvalidArgumentError(std::string(text) +
                                " is not a real-time signal; a real-time signal (" + range +
                                ") is needed, e.g. SIGRTMIN+3");
  } else {
    return InvalidArgumentError(forms);
  }
  t.remove_prefix(5);
  long offset = 0;
  if (!t.empty()) {
    if ((t[0] != '+' && t[0] != '-') || !ParseDigits(t.substr(1), &offset)) {
      return InvalidArgumentError(forms);
    }
    if (t[0] == '-') {
      offset = -offset;
    }
  }
  const long n = base + offset;
  if (n < lo || n > hi) {
    return InvalidArgumentError(std::string(text) + " = " + std::to_string(n) + " is outside " +
                                range + "; a real-time signal is needed");
  }
  return static_cast<int>(n);
}

std::string EndpointHint(std::string_view text) {
  if (text == "stdout" || text == "stderr:" || text == "console" || text == "-") {
    return "did you mean stderr?";
  }
  if (!text.empty() && text[0] == '/') {
    return "did you mean file:" + std::string(text) + " or unix:" + std::string(text) + "?";
  }
  if (text == "none" || text == "disabled" || text == "false" || text == "0") {
    return "did you mean off?";
  }
  return "";
}

Options OptionsFromEnv(Options base, const EnvLookup& lookup) {
  Options o = std::move(base);
  // A variable's value, or nullptr when it is unset or empty (or there is no environment).
  auto get = [&](const char* var) -> const char* {
    if (!lookup) {
      return nullptr;
    }
    const char* v = lookup(var);
    return v != nullptr && *v != '\0' ? v : nullptr;
  };
  if (o.service.empty()) {
    if (const char* v = get("STALLWATCH_SERVICE")) {
      o.service = v;
    }
  }
  auto duration = [&](const char* var, std::optional<std::chrono::nanoseconds>* field,
                      std::chrono::nanoseconds fallback, std::chrono::nanoseconds min) {
    if (field->has_value()) {
      return;  // set in code
    }
    *field = fallback;
    const char* v = get(var);
    if (v == nullptr) {
      return;
    }
    auto d = ParseDuration(v);
    if (!d.ok()) {
      WarnOnce(var, v, d.status().message(), FormatDuration(fallback));
    } else if (*d < min) {
      WarnOnce(var, v, "must be at least " + FormatDuration(min), FormatDuration(fallback));
    } else {
      *field = *d;
    }
  };
  duration("STALLWATCH_THRESHOLD", &o.stall_threshold, kDefaultStallThreshold,
           std::chrono::milliseconds(1));
  duration("STALLWATCH_INTERVAL", &o.probe_interval, kDefaultProbeInterval,
           std::chrono::microseconds(100));
  duration("STALLWATCH_REPORT_INTERVAL", &o.report_interval, kDefaultReportInterval,
           std::chrono::milliseconds(100));
  if (o.endpoint.empty()) {
    o.endpoint = kDefaultEndpoint;
    if (const char* v = get("STALLWATCH_ENDPOINT")) {
      auto e = ParseEndpoint(v);
      if (e.ok()) {
        o.endpoint = v;
      } else {
        // Not a silent fallback: the line says where findings go instead.
        const std::string hint = EndpointHint(v);
        WarnOnce("STALLWATCH_ENDPOINT", v,
                 e.status().message() + (hint.empty() ? "" : " (" + hint + ")"),
                 std::string("the default endpoint ") + kDefaultEndpoint);
      }
    }
  }
  if (o.token_file.empty()) {
    if (const char* v = get("STALLWATCH_TOKEN_FILE")) {
      if (v[0] == '/') {
        o.token_file = v;
      } else {
        WarnOnce("STALLWATCH_TOKEN_FILE", v, "expected an absolute path", "no token");
      }
    }
  }
  if (!o.sampling) {
    o.sampling = SamplingMode::kOn;
    if (const char* v = get("STALLWATCH_SAMPLING")) {
      const std::string s = v;
      if (s == "signal-all") {
        o.sampling = SamplingMode::kSignalAll;
      } else if (auto b = ParseBool(s); b.ok()) {
        o.sampling = *b ? SamplingMode::kOn : SamplingMode::kOff;
      } else {
        WarnOnce("STALLWATCH_SAMPLING", v, "expected on, off or signal-all",
                 SamplingName(*o.sampling));
      }
    }
  }
  if (!o.watchdog) {
    o.watchdog = WatchdogMode::kAuto;
    if (const char* v = get("STALLWATCH_WATCHDOG")) {
      const std::string s = v;
      if (s == "auto") {
        o.watchdog = WatchdogMode::kAuto;
      } else if (s == "thread") {
        o.watchdog = WatchdogMode::kThread;
      } else if (s == "process") {
        o.watchdog = WatchdogMode::kProcess;
      } else {
        WarnOnce("STALLWATCH_WATCHDOG", v, "expected auto, thread or process",
                 WatchdogName(*o.watchdog));
      }
    }
  }
  if (o.sample_signal == 0) {
    if (const char* v = get("STALLWATCH_SIGNAL")) {
      auto sig = ParseSampleSignal(v);
      if (sig.ok()) {
        o.sample_signal = *sig;
      } else {
        WarnOnce("STALLWATCH_SIGNAL", v, sig.status().message(),
                 "SIGRTMIN+3 (" + std::to_string(platform::DefaultSampleSignal()) + ")");
      }
    }
  }
  if (!o.max_stack_reports_per_minute) {
    o.max_stack_reports_per_minute = kDefaultMaxStackReportsPerMinute;
    if (const char* v = get("STALLWATCH_MAX_STACK_REPORTS")) {
      long n = 0;
      if (ParseDigits(v, &n) && n <= kMaxStackReportsLimit) {
        o.max_stack_reports_per_minute = static_cast<int>(n);
      } else {
        WarnOnce("STALLWATCH_MAX_STACK_REPORTS", v,
                 "expected a whole number of stack reports per loop per minute, 0-" +
                     std::to_string(kMaxStackReportsLimit),
                 std::to_string(kDefaultMaxStackReportsPerMinute));
      }
    }
  }
  // Read by the unwinder (the modules' debug-info lookup); checked here so that a misspelling is
  // said like every other variable's.
  if (const char* v = get("STALLWATCH_DEBUGINFO")) {
    if (std::strcmp(v, "all") != 0 && std::strcmp(v, "embedded") != 0) {
      WarnOnce("STALLWATCH_DEBUGINFO", v,
               "expected all (also separate debug files in /usr/lib/debug/.build-id) or embedded",
               "embedded (debug info inside the modules only)");
    }
  }
  return o;
}

}  // namespace agent::internal
}  // namespace stallwatch
