#include "api_query.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>

#include <algorithm>
#include <cstdio>

#include "stallwatch/common/defaults.h"
#include "stallwatch/common/log_text.h"

namespace stallwatch::daemon {
namespace {

// Request text echoed in an error message is escaped and at most this long, so that the message
// stays one bounded line whatever the request held ("%0A" in a query value decodes to a newline).
constexpr size_t kMaxEchoBytes = 64;

}  // namespace

StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQueryString(
    std::string_view query, const std::vector<std::string_view>& accepted, std::string_view form) {
  std::vector<std::pair<std::string, std::string>> out;
  if (query.empty()) {
    return out;
  }
  // libevent's splitter wants a C string: a NUL inside the query ends it there, as it would
  // have in the request line.
  const std::string q(query.substr(0, query.find('\0')));
  evkeyvalq kv{};
  TAILQ_INIT(&kv);
  if (evhttp_parse_query_str(q.c_str(), &kv) != 0) {
    evhttp_clear_headers(&kv);
    return InvalidArgumentError("malformed query string; accepted: " + std::string(form));
  }
  Status status;
  for (evkeyval* e = kv.tqh_first; e; e = e->next.tqe_next) {
    if (std::find(accepted.begin(), accepted.end(), std::string_view(e->key)) == accepted.end()) {
      status = InvalidArgumentError("unknown parameter '" + EscapeForLog(e->key, kMaxEchoBytes) +
                                    "'; accepted: " + std::string(form));
      break;
    }
    out.emplace_back(e->key, e->value);
  }
  evhttp_clear_headers(&kv);
  if (!status.ok()) {
    return status;
  }
  return out;
}

StatusOr<ApiRequest> ParseApiRequest(std::string_view path, std::string_view query) {
  ApiRequest r;
  auto no_parameters = [&](ApiRequest::Kind kind) -> StatusOr<ApiRequest> {
    auto params = ParseQueryString(query, {}, "no parameters");
    if (!params.ok()) {
      return params.status();
    }
    r.kind = kind;
    return r;
  };
  if (path == "/metrics") {
    return no_parameters(ApiRequest::Kind::kMetrics);
  }
  if (path == "/healthz") {
    return no_parameters(ApiRequest::Kind::kHealthz);
  }
  if (path == "/api/v1/loops") {
    return no_parameters(ApiRequest::Kind::kLoops);
  }
  if (path == "/api/v1/stalls") {
    constexpr const char* kForm =
        "limit=1..1000 (default 100; larger values are capped at 1000), service=NAME, "
        "ongoing=true|false";
    constexpr size_t kMaxLimit = defaults::kMaxStallsPerReply;
    static_assert(kMaxLimit == 1000, "kForm and the errors below name the cap");
    auto params = ParseQueryString(query, {"limit", "service", "ongoing"}, kForm);
    if (!params.ok()) {
      return params.status();
    }
    r.kind = ApiRequest::Kind::kStalls;
    StallQuery& q = r.stalls;
    for (const auto& [k, v] : *params) {
      if (k == "limit") {
        // Any positive integer is accepted and capped, so a client asking for "everything"
        // gets the most the daemon serves in one reply rather than an error.
        const size_t first = v.find_first_not_of('0');
        if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos ||
            first == std::string::npos) {
          return InvalidArgumentError("bad limit '" + EscapeForLog(v, kMaxEchoBytes) +
                                      "': expected a positive integer (at most 1000 are returned)");
        }
        const std::string digits = v.substr(first);
        q.limit = digits.size() > 4 ? kMaxLimit
                                    : std::min(kMaxLimit, static_cast<size_t>(std::stoi(digits)));
      } else if (k == "service") {
        if (v.empty()) {
          return InvalidArgumentError("bad service '': expected a service name");
        }
        q.service = v;
      } else if (k == "ongoing") {
        if (v == "true" || v == "1") {
          q.ongoing = true;
        } else if (v == "false" || v == "0") {
          q.ongoing = false;
        } else {
          return InvalidArgumentError("bad ongoing '" + EscapeForLog(v, kMaxEchoBytes) +
                                      "': expected true or false");
        }
      }
    }
    return r;
  }
  if (path == "/api/v1/stacks") {
    auto params = ParseQueryString(query, {"format"}, "format=folded|json");
    if (!params.ok()) {
      return params.status();
    }
    std::string format = "json";
    for (const auto& [k, v] : *params) {
      format = v;
    }
    if (format == "json") {
      r.kind = ApiRequest::Kind::kStacksJson;
    } else if (format == "folded") {
      r.kind = ApiRequest::Kind::kStacksFolded;
    } else {
      return InvalidArgumentError("bad format '" + EscapeForLog(format, kMaxEchoBytes) +
                                  "': expected folded or json");
    }
    return r;
  }
  return NotFoundError("no such path '" + EscapeForLog(path, kMaxEchoBytes) +
                       "'; served: /metrics, /healthz, /api/v1/loops, /api/v1/stalls, "
                       "/api/v1/stacks");
}

}  // namespace stallwatch::daemon
