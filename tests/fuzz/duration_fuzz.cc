// Fuzz target: the duration and switch parsers of common/ (ParseDuration, FormatDuration,
// ParseBool), which read every STALLWATCH_* duration and the CLI's duration flags.
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "fuzz_check.h"
#include "stallwatch/common/duration.h"

namespace stallwatch {
namespace {

void CheckFormatted(std::chrono::nanoseconds d) {
  const std::string s = FormatDuration(d);
  SW_FUZZ_CHECK(!s.empty() && s.size() < 64);
  SW_FUZZ_CHECK(s.back() == 's');
}

}  // namespace
}  // namespace stallwatch

SW_FUZZ_TARGET(SwFuzzDuration) {
  using stallwatch::FormatDuration;
  using stallwatch::ParseBool;
  using stallwatch::ParseDuration;
  const std::string_view text = stallwatch::fuzz::AsText(data, size);

  auto d = ParseDuration(text);
  stallwatch::fuzz::Count(d.ok());
  if (d.ok()) {
    const int64_t ns = d->count();
    SW_FUZZ_CHECK(ns >= 0 && ns <= 1'000'000'000'000'000'000);
    // What is printed for humans parses back to (nearly) the same duration: FormatDuration
    // keeps at least three significant digits.
    const std::string shown = FormatDuration(*d);
    auto again = ParseDuration(shown);
    SW_FUZZ_CHECK(again.ok());
    const double diff = std::fabs(static_cast<double>(again->count() - ns));
    SW_FUZZ_CHECK(diff <= static_cast<double>(ns) * 0.0051 + 1);
  } else {
    SW_FUZZ_CHECK(!d.status().message().empty());
    SW_FUZZ_CHECK(d.status().code() == stallwatch::StatusCode::kInvalidArgument);
  }

  // Any duration, negative ones included, can be shown.
  if (size >= 8) {
    int64_t raw = 0;
    std::memcpy(&raw, data, sizeof(raw));
    stallwatch::CheckFormatted(std::chrono::nanoseconds(raw));
  }

  auto b = ParseBool(text);
  if (b.ok()) {
    SW_FUZZ_CHECK(text.size() <= 5);
    SW_FUZZ_CHECK(*ParseBool(*b ? "on" : "off") == *b);
  } else {
    SW_FUZZ_CHECK(b.status().message().find("expected on or off") != std::string::npos);
  }
  return 0;
}
