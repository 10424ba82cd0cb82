#pragma once
// The request parsing of the daemon's HTTP API, apart from the server: a request's path and
// query string → what to serve, or a one-line error naming the problem and the accepted form.
// Pure (libevent's query-string splitter, no sockets), so it is unit-tested and fuzzed alone.
//
// Threading: free functions, thread-safe.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "registry.h"
#include "web_assets.h"

namespace stallwatch::daemon {

struct ApiRequest {
  enum class Kind {
    kMetrics,
    kHealthz,
    kLoops,
    kStalls,
    kCalls,
    kStacksJson,
    kStacksFolded,
    kStacksPprof,
    kWebUi,  // "/" (the page) and "/ui/FILE" (its script and style sheet)
  };
  Kind kind = Kind::kHealthz;
  StallQuery stalls;                // kStalls only
  CallQuery calls;                  // kCalls only
  StackQuery stacks;                // kStacks* only
  const WebAsset* asset = nullptr;  // kWebUi only
};

// The query string's (name, value) pairs, names checked against `accepted`. `query` is what
// follows '?' (percent-encoded, may be empty). InvalidArgument names the accepted `form`.
StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQueryString(
    std::string_view query, const std::vector<std::string_view>& accepted, std::string_view form);

// A time bound of /api/v1/stacks (`since`, `until`): Unix nanoseconds ("1765119845000000000"),
// RFC 3339 ("2026-12-07T15:04:05Z", "2026-12-07T16:04:05.250+01:00"; a space in place of the
// offset's '+', as an unencoded '+' in a query string decodes, is taken as '+'), or a duration
// before the request ("90s", "10m", "2h", "1d"; units ms, s, m, h, d). InvalidArgument names
// the accepted forms.
StatusOr<TimeBound> ParseTimeBound(std::string_view name, std::string_view text);

// Whether a /metrics request's Accept header asks for OpenMetrics: application/openmetrics-text
// is accepted (q > 0) at least as much as text/plain (Prometheus asks so since 2.5). Absent,
// empty, */* or text/plain alone: the Prometheus text format.
bool WantsOpenMetrics(std::string_view accept);

// Routes a GET/HEAD request. NotFound: no such path (HTTP 404); InvalidArgument: a bad query
// (HTTP 400). Both messages are one line naming the accepted forms.
StatusOr<ApiRequest> ParseApiRequest(std::string_view path, std::string_view query);

}  // namespace stallwatch::daemon
