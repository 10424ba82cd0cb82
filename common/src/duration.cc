#include "stallwatch/common/duration.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace stallwatch {
namespace {
constexpr const char* kDurationForm =
    "expected a number with a unit: ns, us, ms, s or m (e.g. 50ms, 0.5s, 250us)";
}  // namespace

StatusOr<std::chrono::nanoseconds> ParseDuration(std::string_view text) {
  std::string s(text);
  if (s.empty()) return InvalidArgumentError("empty duration: " + std::string(kDurationForm));
  size_t i = 0;
  bool seen_digit = false, seen_dot = false;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) {
    if (s[i] == '.') {
      if (seen_dot) break;
      seen_dot = true;
    } else {
      seen_digit = true;
    }
    ++i;
  }
  if (!seen_digit) {
    return InvalidArgumentError("bad duration '" + s + "': " + kDurationForm);
  }
  std::string number = s.substr(0, i), unit = s.substr(i);
  double scale = 0;
  if (unit == "ns")
    scale = 1;
  else if (unit == "us")
    scale = 1e3;
  else if (unit == "ms")
    scale = 1e6;
  else if (unit == "s")
    scale = 1e9;
  else if (unit == "m")
    scale = 60e9;
  else
    return InvalidArgumentError("bad duration '" + s + "': " + kDurationForm);
  double v = std::strtod(number.c_str(), nullptr) * scale;
  if (!std::isfinite(v) || v > 1e18) {
    return InvalidArgumentError("duration '" + s + "' is too large (at most 1e9 s)");
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(std::llround(v)));
}

std::string FormatDuration(std::chrono::nanoseconds d) {
  const int64_t ns = d.count();
  char buf[64];
  auto fmt = [&](double v, const char* unit) {
    std::snprintf(buf, sizeof(buf), "%.*f%s", v == std::floor(v) ? 0 : (v < 10 ? 2 : 1), v, unit);
    return std::string(buf);
  };
  // The magnitude in unsigned arithmetic: -ns overflows for nanoseconds::min().
  const uint64_t a = ns < 0 ? uint64_t{0} - static_cast<uint64_t>(ns) : static_cast<uint64_t>(ns);
  if (a < 1000) return std::to_string(ns) + "ns";
  if (a < 1'000'000) return fmt(ns / 1e3, "us");
  if (a < 1'000'000'000) return fmt(ns / 1e6, "ms");
  return fmt(ns / 1e9, "s");
}

StatusOr<bool> ParseBool(std::string_view text) {
  std::string s(text);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "on" || s == "true" || s == "1" || s == "yes") return true;
  if (s == "off" || s == "false" || s == "0" || s == "no") return false;
  return InvalidArgumentError("bad switch '" + std::string(text) + "': expected on or off");
}

}  // namespace stallwatch
