#pragma once
// The report of a load run (`stallwatch load`): text like ab/wrk, JSON, and the one-line reason
// of a run where nothing succeeded. Pure; thread-safe.

#include <nlohmann/json_fwd.hpp>
#include <string>

#include "load.h"

namespace stallwatch::cli {

// When no request succeeded (every one failed or got a non-2xx/3xx status): one line saying
// why, e.g. "all 40 requests failed: connect: Connection refused (nothing listens on
// 127.0.0.1:1?)"; "" when at least one succeeded or nothing was sent.
std::string FailedRunReason(const LoadResult& r);

// ab/wrk-like report (several lines, trailing newline).
std::string FormatLoadText(const LoadResult& r);
nlohmann::json LoadResultToJson(const LoadResult& r);

}  // namespace stallwatch::cli
