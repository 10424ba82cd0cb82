#pragma once
// Parsing and formatting of durations and of the STALLWATCH_* values. Pure functions.

#include <chrono>
#include <string>
#include <string_view>

#include "stallwatch/status.h"

namespace stallwatch {

// Accepted form: a non-negative decimal number followed by a unit: ns, us, ms, s, m
// ("50ms", "0.5s", "250us", "2m"). The error message names the accepted form.
StatusOr<std::chrono::nanoseconds> ParseDuration(std::string_view text);

// "50ms", "1.5s", "250us", "731ns": the shortest exact-enough rendering for humans.
std::string FormatDuration(std::chrono::nanoseconds d);

// "on"/"off"/"true"/"false"/"1"/"0"/"yes"/"no".
StatusOr<bool> ParseBool(std::string_view text);

}  // namespace stallwatch
