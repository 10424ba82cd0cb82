#pragma once
// JSON form of findings (docs/findings.md). Pure functions; thread-safe.

#include <nlohmann/json_fwd.hpp>
#include <string>

#include "stallwatch/findings.h"
#include "stallwatch/status.h"

namespace stallwatch {

// Include the sparse histograms in delay findings (the daemon stream does; the JSON Lines
// output does not, to stay readable).
struct JsonOptions {
  bool include_buckets = false;
};

nlohmann::json ToJson(const StallFinding& f);
nlohmann::json ToJson(const DelayFinding& f, JsonOptions options = {});
nlohmann::json ToJson(const CallsFinding& f);
nlohmann::json ToJson(const Frame& f);
nlohmann::json ToJson(const Stack& s);

// One line (no trailing newline).
std::string ToJsonLine(const StallFinding& f);
std::string ToJsonLine(const DelayFinding& f, JsonOptions options = {});
std::string ToJsonLine(const CallsFinding& f);

StatusOr<StallFinding> StallFromJson(const nlohmann::json& j);
StatusOr<DelayFinding> DelayFromJson(const nlohmann::json& j);
StatusOr<CallsFinding> CallsFromJson(const nlohmann::json& j);

}  // namespace stallwatch
