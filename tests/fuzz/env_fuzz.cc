// Fuzz target: the agent's STALLWATCH_* environment parsing (agent/src/options.cc) and its
// endpoint and signal parsers. The input is the environment: one value per line, in the order of
// kVars; a missing line is an unset variable. Whatever the values, the options that come out are
// resolved (every optional set) and valid: a malformed value keeps the default.
#include <algorithm>
#include <csignal>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "options.h"
#include "reporter.h"
#include "stallwatch/common/duration.h"

namespace {

constexpr const char* kVars[] = {
    "STALLWATCH_SERVICE",         "STALLWATCH_THRESHOLD", "STALLWATCH_INTERVAL",
    "STALLWATCH_REPORT_INTERVAL", "STALLWATCH_ENDPOINT",  "STALLWATCH_SAMPLING",
    "STALLWATCH_SIGNAL",          "STALLWATCH_WATCHDOG",  "STALLWATCH_MAX_STACK_REPORTS"};

bool AllDigits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// STALLWATCH_SIGNAL as an independent reading: a plain number, or SIGRTMIN+k / SIGRTMAX-k.
// Returns 0 when the text is none of these or falls outside the real-time range.
long ExpectedSignal(const std::string& v) {
  auto number = [](const std::string& s) -> long {
    return AllDigits(s) && s.size() <= 9 ? std::stol(s) : -1;
  };
  long n = -1;
  if (AllDigits(v)) {
    n = number(v);
  } else if (v.rfind("SIGRTMIN+", 0) == 0 && number(v.substr(9)) >= 0) {
    n = SIGRTMIN + number(v.substr(9));
  } else if (v.rfind("SIGRTMAX-", 0) == 0 && number(v.substr(9)) >= 0) {
    n = SIGRTMAX - number(v.substr(9));
  } else if (v == "SIGRTMIN" || v == "RTMIN") {
    n = SIGRTMIN;
  } else if (v == "SIGRTMAX" || v == "RTMAX") {
    n = SIGRTMAX;
  } else {
    return -1;  // other spellings: only the range is checked
  }
  return n >= SIGRTMIN && n <= SIGRTMAX ? n : 0;
}

void CheckEndpoint(const std::string& text) {
  using stallwatch::agent::internal::Endpoint;
  auto e = stallwatch::agent::internal::ParseEndpoint(text);
  if (!e.ok()) {
    SW_FUZZ_CHECK(e.status().message().find("expected unix:/path") != std::string::npos);
    return;
  }
  switch (e->kind) {
    case Endpoint::Kind::kFile:
    case Endpoint::Kind::kUnix:
      SW_FUZZ_CHECK(!e->path.empty() && e->path[0] == '/');
      break;
    case Endpoint::Kind::kTcp:
      SW_FUZZ_CHECK(!e->host.empty());
      SW_FUZZ_CHECK(e->port >= 1 && e->port <= 65535);
      break;
    case Endpoint::Kind::kOff:
      SW_FUZZ_CHECK(text == "off");
      break;
    case Endpoint::Kind::kStderr:
      SW_FUZZ_CHECK(text == "stderr");
      break;
  }
}

}  // namespace

SW_FUZZ_TARGET(SwFuzzEnv) {
  using namespace std::chrono_literals;
  const std::string_view text = stallwatch::fuzz::AsText(data, size);
  std::vector<std::string> values;
  size_t start = 0;
  while (start <= text.size() && values.size() < std::size(kVars)) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    values.emplace_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  auto lookup = [&](const char* name) -> const char* {
    for (size_t i = 0; i < values.size(); ++i) {
      if (std::string_view(name) == kVars[i]) return values[i].c_str();  // a NUL ends it
    }
    return nullptr;
  };
  const stallwatch::Options o = stallwatch::agent::internal::OptionsFromEnv({}, lookup);

  // Resolved: every optional field is set.
  SW_FUZZ_CHECK(o.stall_threshold && o.probe_interval && o.report_interval && o.sampling &&
                o.watchdog && o.max_stack_reports_per_minute);
  SW_FUZZ_CHECK(*o.stall_threshold >= 1ms);
  SW_FUZZ_CHECK(*o.probe_interval >= 100us);
  SW_FUZZ_CHECK(*o.report_interval >= 100ms);
  SW_FUZZ_CHECK(*o.max_stack_reports_per_minute >= 0 &&
                *o.max_stack_reports_per_minute <= 1'000'000);
  // A real-time signal, or 0 (the default, SIGRTMIN+3).
  SW_FUZZ_CHECK(o.sample_signal == 0 ||
                (o.sample_signal >= SIGRTMIN && o.sample_signal <= SIGRTMAX));
  SW_FUZZ_CHECK(!o.endpoint.empty());
  SW_FUZZ_CHECK(stallwatch::agent::internal::ParseEndpoint(o.endpoint).ok());
  // A well-formed threshold is applied exactly; anything else keeps the default.
  if (values.size() > 1) {
    const char* v = values[1].c_str();
    auto d = stallwatch::ParseDuration(v);
    const bool applies = *v != '\0' && d.ok() && *d >= 1ms;
    stallwatch::fuzz::Count(applies);
    SW_FUZZ_CHECK(*o.stall_threshold == (applies ? *d : stallwatch::kDefaultStallThreshold));
  }
  // The watchdog mode: exactly one of the three words, anything else keeps the default.
  if (values.size() > 7) {
    const std::string v = values[7].c_str();  // as the lookup: a NUL ends the value
    using stallwatch::WatchdogMode;
    const WatchdogMode want = v == "thread"    ? WatchdogMode::kThread
                              : v == "process" ? WatchdogMode::kProcess
                                               : WatchdogMode::kAuto;
    SW_FUZZ_CHECK(o.watchdog == want);
  }
  // The signal: the documented spellings apply exactly; anything else keeps the default; a
  // refusal is one line that says a real-time signal is needed.
  if (values.size() > 6) {
    const std::string v = values[6].c_str();
    const long want = ExpectedSignal(v);
    if (!v.empty() && want >= 0) SW_FUZZ_CHECK(o.sample_signal == want);
    auto sig = stallwatch::agent::internal::ParseSampleSignal(v);
    stallwatch::fuzz::Count(sig.ok());
    if (!v.empty()) SW_FUZZ_CHECK(o.sample_signal == (sig.ok() ? *sig : 0));
    if (!sig.ok()) {
      SW_FUZZ_CHECK(sig.status().message().find("real-time signal") != std::string::npos);
      SW_FUZZ_CHECK(sig.status().message().find('\n') == std::string::npos);
    }
  }
  // The stack budget: a whole number 0-1000000 applies exactly, anything else keeps 12.
  if (values.size() > 8) {
    const std::string v = values[8].c_str();
    const bool applies = AllDigits(v) && v.size() <= 9 && std::stol(v) <= 1'000'000;
    SW_FUZZ_CHECK(*o.max_stack_reports_per_minute ==
                  (applies ? std::stol(v) : stallwatch::kDefaultMaxStackReportsPerMinute));
  }
  for (const auto& v : values) CheckEndpoint(v);
  return 0;
}
