#pragma once
// Output of `stallwatch experiment`: terminal table, Markdown, CSV, JSON and an SVG plot.
// Pure functions of the rows; thread-safe.

#include <chrono>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "experiment.h"

namespace stallwatch::cli {

enum class ReportFormat { kTable, kMarkdown, kCsv, kJson };
// "table", "markdown" (or "md"), "csv", "json".
bool ParseReportFormat(const std::string& s, ReportFormat* out);

struct ReportContext {
  std::chrono::milliseconds work{500};
  int workers = 5;
  std::chrono::nanoseconds run_duration = std::chrono::seconds(10);
};

std::string FormatExperiment(const std::vector<ExperimentRow>& rows, ReportFormat format,
                             const ReportContext& ctx);
nlohmann::json ExperimentToJson(const std::vector<ExperimentRow>& rows, const ReportContext& ctx);
// QPS against concurrency, one colour per mode: measured (solid, dots), expected (dashed).
std::string RenderQpsSvg(const std::vector<ExperimentRow>& rows, const ReportContext& ctx);
// "[3/18] async c=20: 39.9 req/s (expected 40.0), mean 501ms, p95 503ms, 0 errors, 0 stalls"
std::string FormatProgressLine(size_t index, size_t total, const ExperimentRow& row);

// "2.55s", "513ms", "87us": latency for humans (3 significant digits).
std::string HumanSeconds(double s);

}  // namespace stallwatch::cli
