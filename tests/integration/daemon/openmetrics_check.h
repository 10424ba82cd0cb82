#pragma once
// A strict reading of an OpenMetrics 1.0 text exposition (https://openmetrics.io), for tests:
// the line syntax of the ABNF (descriptors, samples, label sets and their escapes, numbers,
// timestamps, exemplars), the family rules (a # TYPE before its samples, each family once and
// contiguous, sample names by type: a counter's `_total`, a histogram's `_bucket`/`_count`/
// `_sum`), the histogram rules (per series: `le` increasing up to +Inf, cumulative counts,
// `_count` equal to the +Inf bucket, exemplars within their bucket, exemplar label sets of at
// most 128 characters) and `# EOF` as the last line.

#include <map>
#include <string>
#include <vector>

namespace stallwatch::daemon::testing {

struct OpenMetricsExemplar {
  std::map<std::string, std::string> labels;
  double value = 0;
  bool has_timestamp = false;
  double timestamp = 0;
};

struct OpenMetricsSample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
  bool has_exemplar = false;
  OpenMetricsExemplar exemplar;
  std::string line;  // the sample line as written, without its exemplar
};

struct OpenMetricsParse {
  std::string error;                         // empty when the text is valid; else "line N: what"
  std::map<std::string, std::string> types;  // family name → type
  std::vector<OpenMetricsSample> samples;
};

OpenMetricsParse ParseOpenMetrics(const std::string& text);

}  // namespace stallwatch::daemon::testing
