// Fuzz target: the agent's STALLWATCH_* environment parsing (agent/src/options.cc) and its
// endpoint parser. The input is the environment: one value per line, in the order of kVars; a
// missing line is an unset variable. Whatever the values, the options that come out are valid:
// a malformed value keeps the default.
#include <csignal>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "options.h"
#include "reporter.h"
#include "stallwatch/common/duration.h"

namespace {

constexpr const char* kVars[] = {"STALLWATCH_SERVICE",  "STALLWATCH_THRESHOLD",
                                 "STALLWATCH_INTERVAL", "STALLWATCH_REPORT_INTERVAL",
                                 "STALLWATCH_ENDPOINT", "STALLWATCH_SAMPLING",
                                 "STALLWATCH_SIGNAL",   "STALLWATCH_WATCHDOG"};

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
  const stallwatch::Options defaults;
  const stallwatch::Options o = stallwatch::agent::internal::OptionsFromEnv(defaults, lookup);

  SW_FUZZ_CHECK(o.stall_threshold >= 1ms);
  SW_FUZZ_CHECK(o.probe_interval >= 100us);
  SW_FUZZ_CHECK(o.report_interval >= 100ms);
  SW_FUZZ_CHECK(o.sample_signal == 0 || (o.sample_signal > 0 && o.sample_signal < NSIG &&
                                         o.sample_signal != SIGKILL && o.sample_signal != SIGSTOP));
  if (!o.endpoint.empty()) {
    SW_FUZZ_CHECK(stallwatch::agent::internal::ParseEndpoint(o.endpoint).ok());
  }
  // A well-formed threshold is applied exactly; anything else keeps the default.
  if (values.size() > 1) {
    const char* v = values[1].c_str();
    auto d = stallwatch::ParseDuration(v);
    const bool applies = *v != '\0' && d.ok() && *d >= 1ms;
    stallwatch::fuzz::Count(applies);
    SW_FUZZ_CHECK(o.stall_threshold == (applies ? *d : defaults.stall_threshold));
  }
  // The watchdog mode: exactly one of the three words, anything else keeps the default.
  if (values.size() > 7) {
    const std::string v = values[7].c_str();  // as the lookup: a NUL ends the value
    using stallwatch::WatchdogMode;
    const WatchdogMode want = v == "thread"    ? WatchdogMode::kThread
                              : v == "process" ? WatchdogMode::kProcess
                                               : defaults.watchdog;
    SW_FUZZ_CHECK(o.watchdog == want);
  }
  for (const auto& v : values) CheckEndpoint(v);
  return 0;
}
