#pragma once
// Text and JSON helpers shared by the daemon views (views.cc) and `top` (top.cc). Pure;
// thread-safe.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "stallwatch/status.h"
#include "views.h"

namespace stallwatch::cli::internal {

inline constexpr int64_t kMinuteNs = 60'000'000'000;

// `body` as JSON; INVALID_ARGUMENT naming the daemon's `what` answer when it is not JSON.
StatusOr<nlohmann::json> ParseJson(const std::string& body, const char* what);
// The array under `key`, or the body itself when it is an array.
StatusOr<nlohmann::json> ArrayOf(const nlohmann::json& j, const char* key);
// Cuts to `width` columns, ending with "…" when cut.
std::string Cut(const std::string& s, size_t width);
// Cuts from the left (a frame's most telling part is its end: function name and line).
std::string CutLeft(const std::string& s, size_t width);
// Pads with spaces to `width` columns, on the left when `right` (right-aligned).
std::string Pad(const std::string& s, size_t width, bool right = false);
LoopKey KeyOf(const StallFinding& s);

}  // namespace stallwatch::cli::internal
