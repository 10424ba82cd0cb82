#include "api_query.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>

#include "stallwatch/common/ascii.h"
#include "stallwatch/common/blocking_calls.h"
#include "stallwatch/common/defaults.h"
#include "stallwatch/common/log_text.h"
#include "stallwatch/findings.h"

namespace stallwatch::daemon {
namespace {

// Request text echoed in an error message is escaped and at most this long, so that the message
// stays one bounded line whatever the request held ("%0A" in a query value decodes to a newline).
constexpr size_t kMaxEchoBytes = 64;
// Echoes followed by a long list of what is accepted are shorter, so that every error stays
// one line of at most 512 bytes: a bad call= value (then the 41 call names) and an unknown
// parameter's name (then the path's whole form, ~270 bytes for the web page's).
constexpr size_t kMaxCallEchoBytes = 24;
constexpr size_t kMaxKeyEchoBytes = 32;

constexpr const char* kTimeForm =
    "expected Unix nanoseconds (1765119845000000000), RFC 3339 (2026-12-07T15:04:05Z) or a "
    "duration ago (90s, 10m, 2h, 1d)";

// Exactly `n` decimal digits at `*pos` as a number (advancing `*pos`); false otherwise.
bool Digits(std::string_view s, size_t* pos, size_t n, int64_t* out) {
  if (*pos + n > s.size()) {
    return false;
  }
  int64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    const char c = s[*pos + i];
    if (c < '0' || c > '9') {
      return false;
    }
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

// RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM).
std::optional<int64_t> ParseRfc3339(std::string_view s) {
  size_t pos = 0;
  int64_t year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  auto sep = [&](std::string_view allowed) {
    if (pos < s.size() && allowed.find(s[pos]) != std::string_view::npos) {
      ++pos;
      return true;
    }
    return false;
  };
  if (!Digits(s, &pos, 4, &year) || !sep("-") || !Digits(s, &pos, 2, &month) || !sep("-") ||
      !Digits(s, &pos, 2, &day) || !sep("Tt ") || !Digits(s, &pos, 2, &hour) || !sep(":") ||
      !Digits(s, &pos, 2, &minute) || !sep(":") || !Digits(s, &pos, 2, &second)) {
    return std::nullopt;
  }
  int64_t frac_ns = 0;
  if (sep(".")) {
    int64_t scale = 100'000'000;
    const size_t first = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      frac_ns += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == first) {
      return std::nullopt;
    }
  }
  int64_t offset_s = 0;
  if (sep("Zz")) {
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-' || s[pos] == ' ')) {
    const int64_t sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    int64_t oh = 0, om = 0;
    if (!Digits(s, &pos, 2, &oh) || !sep(":") || !Digits(s, &pos, 2, &om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_s = sign * (oh * 3600 + om * 60);
  } else {
    return std::nullopt;
  }
  if (pos != s.size() || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  const std::chrono::year_month_day ymd{std::chrono::year(static_cast<int>(year)),
                                        std::chrono::month(static_cast<unsigned>(month)),
                                        std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) {
    return std::nullopt;
  }
  // Unix ns reach from 1677 to 2262.
  if (year < 1678 || year > 2261) {
    return std::nullopt;
  }
  const int64_t days = std::chrono::sys_days(ymd).time_since_epoch().count();
  const int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
  return seconds * 1'000'000'000 + frac_ns;
}

// A duration ago: a non-negative decimal number and a unit ms, s, m, h or d.
std::optional<int64_t> ParseAgo(std::string_view s) {
  const size_t unit_at = s.find_first_not_of("0123456789.");
  if (unit_at == 0 || unit_at == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view number = s.substr(0, unit_at), unit = s.substr(unit_at);
  if (number.find('.') != number.rfind('.') || number.front() == '.' || number.back() == '.') {
    return std::nullopt;
  }
  double scale = 0;
  if (unit == "ms") {
    scale = 1e6;
  } else if (unit == "s") {
    scale = 1e9;
  } else if (unit == "m") {
    scale = 60e9;
  } else if (unit == "h") {
    scale = 3600e9;
  } else if (unit == "d") {
    scale = 86400e9;
  } else {
    return std::nullopt;
  }
  const double v = std::strtod(std::string(number).c_str(), nullptr) * scale;
  if (!std::isfinite(v) || v > 1e18) {
    return std::nullopt;
  }
  return static_cast<int64_t>(std::llround(v));
}

// A decimal integer of at most 19 digits (leading zeros aside) within [min, max]; else nullopt.
std::optional<int64_t> ParseInteger(std::string_view s, int64_t min, int64_t max) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view digits = s.substr(std::min(s.find_first_not_of('0'), s.size()));
  if (digits.size() > 19 || (digits.size() == 19 && digits > "9223372036854775807")) {
    return std::nullopt;
  }
  int64_t v = 0;
  for (const char c : digits) {
    v = v * 10 + (c - '0');
  }
  if (v < min || v > max) {
    return std::nullopt;
  }
  return v;
}

// `limit`: any positive integer, capped at kMaxLimit, so a client asking for "everything" gets
// the most the daemon serves in one reply rather than an error.
constexpr size_t kMaxLimit = defaults::kMaxStallsPerReply;
static_assert(kMaxLimit == 1000, "the forms and the errors name the cap");
StatusOr<size_t> ParseLimit(const std::string& v) {
  const size_t first = v.find_first_not_of('0');
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos ||
      first == std::string::npos) {
    return InvalidArgumentError("bad limit '" + EscapeForLog(v, kMaxEchoBytes) +
                                "': expected a positive integer (at most 1000 are returned)");
  }
  const std::string digits = v.substr(first);
  return digits.size() > 4 ? kMaxLimit
                           : std::min(kMaxLimit, static_cast<size_t>(std::stoi(digits)));
}

// `service` or `loop` (`k`): a non-empty name.
Status ParseName(const std::string& k, const std::string& v, std::optional<std::string>* out) {
  if (v.empty()) {
    return InvalidArgumentError(k == "service" ? "bad service '': expected a service name"
                                               : "bad loop '': expected a loop name");
  }
  *out = v;
  return OkStatus();
}

// `pid`: a process id.
Status ParsePid(const std::string& v, std::optional<int64_t>* out) {
  const auto pid = ParseInteger(v, 1, std::numeric_limits<int64_t>::max());
  if (!pid) {
    return InvalidArgumentError("bad pid '" + EscapeForLog(v, kMaxEchoBytes) +
                                "': expected a process id (a positive integer)");
  }
  *out = *pid;
  return OkStatus();
}

// The parameters that select loops and cap a reply, shared by /api/v1/stalls and /api/v1/calls:
// limit, service, loop and pid. nullopt when `k` is none of them; else the parse's status.
std::optional<Status> ParseSelection(const std::string& k, const std::string& v, size_t* limit,
                                     std::optional<std::string>* service,
                                     std::optional<std::string>* loop,
                                     std::optional<int64_t>* pid) {
  if (k == "limit") {
    auto l = ParseLimit(v);
    if (!l.ok()) {
      return l.status();
    }
    *limit = *l;
    return OkStatus();
  }
  if (k == "service" || k == "loop") {
    return ParseName(k, v, k == "service" ? service : loop);
  }
  if (k == "pid") {
    return ParsePid(v, pid);
  }
  return std::nullopt;
}

}  // namespace

const WebAsset* FindWebAsset(std::string_view name) {
  for (const WebAsset& a : WebAssets()) {
    if (a.name == name) {
      return &a;
    }
  }
  return nullptr;
}

StatusOr<TimeBound> ParseTimeBound(std::string_view name, std::string_view text) {
  auto bad = [&] {
    return InvalidArgumentError("bad " + std::string(name) + " '" +
                                EscapeForLog(std::string(text), kMaxEchoBytes) + "': " + kTimeForm);
  };
  if (text.empty()) {
    return bad();
  }
  if (text.find_first_not_of("0123456789") == std::string_view::npos) {
    // Unix ns: at most 19 digits and within int64.
    const size_t first = std::min(text.find_first_not_of('0'), text.size());
    const std::string_view digits = text.substr(first);
    if (digits.size() > 19 || (digits.size() == 19 && digits > "9223372036854775807")) {
      return bad();
    }
    int64_t v = 0;
    for (const char c : digits) {
      v = v * 10 + (c - '0');
    }
    return TimeBound{v, false};
  }
  if (auto ago = ParseAgo(text)) {
    return TimeBound{*ago, true};
  }
  if (auto at = ParseRfc3339(text)) {
    return TimeBound{*at, false};
  }
  return bad();
}

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
      status = InvalidArgumentError("unknown parameter '" + EscapeForLog(e->key, kMaxKeyEchoBytes) +
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

namespace {

std::string_view Trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) {
    return {};
  }
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

}  // namespace

bool WantsOpenMetrics(std::string_view accept) {
  double om_q = 0;
  double text_q = 0;
  while (!accept.empty()) {
    const size_t comma = accept.find(',');
    std::string_view range = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);
    const size_t semi = range.find(';');
    const std::string_view media = Trim(range.substr(0, semi));
    double q = 1;
    while (semi != std::string_view::npos && !range.empty()) {
      const size_t next = range.find(';', 1);
      const std::string_view param =
          Trim(range.substr(1, next == std::string_view::npos ? std::string_view::npos : next - 1));
      range = next == std::string_view::npos ? std::string_view() : range.substr(next);
      if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        // A malformed weight counts as 0: the range is not accepted.
        const std::string text(param.substr(2));
        char* end = nullptr;
        q = std::strtod(text.c_str(), &end);
        if (end != text.c_str() + text.size() || !(q >= 0)) {
          q = 0;
        }
        q = std::min(q, 1.0);
      }
    }
    if (EqualsIgnoreCase(media, "application/openmetrics-text")) {
      om_q = std::max(om_q, q);
    } else if (EqualsIgnoreCase(media, "text/plain")) {
      text_q = std::max(text_q, q);
    }
  }
  return om_q > 0 && om_q >= text_q;
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
        "ongoing=true|false, pid=PID, loop=NAME, id=STALL_ID";
    auto params =
        ParseQueryString(query, {"limit", "service", "ongoing", "pid", "loop", "id"}, kForm);
    if (!params.ok()) {
      return params.status();
    }
    r.kind = ApiRequest::Kind::kStalls;
    StallQuery& q = r.stalls;
    for (const auto& [k, v] : *params) {
      if (std::optional<Status> st = ParseSelection(k, v, &q.limit, &q.service, &q.loop, &q.pid)) {
        if (!st->ok()) {
          return *st;
        }
      } else if (k == "id") {
        const auto id = ParseInteger(v, 1, std::numeric_limits<int64_t>::max());
        if (!id) {
          return InvalidArgumentError("bad id '" + EscapeForLog(v, kMaxEchoBytes) +
                                      "': expected a stall id (a positive integer)");
        }
        q.stall_id = static_cast<uint64_t>(*id);
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
  if (path == "/api/v1/calls") {
    std::string call_names, family_names;
    for (const auto& c : kBlockingCalls) {
      call_names += (call_names.empty() ? "" : "|") + std::string(c.name);
    }
    for (const auto& f : kBlockingCallFamilies) {
      family_names += (family_names.empty() ? "" : "|") + std::string(f);
    }
    // The 41 call names are listed only when call= is wrong, so that every error stays one
    // short line (a bad call's echo is cut at 24 bytes for the same reason).
    const std::string form =
        "limit=1..1000 (default 100; larger values are capped at 1000), service=NAME, pid=PID, "
        "loop=NAME, call=NAME (a counted call: docs/findings.md), family=" +
        family_names;
    auto params =
        ParseQueryString(query, {"limit", "service", "pid", "loop", "call", "family"}, form);
    if (!params.ok()) {
      return params.status();
    }
    r.kind = ApiRequest::Kind::kCalls;
    CallQuery& q = r.calls;
    for (const auto& [k, v] : *params) {
      if (std::optional<Status> st = ParseSelection(k, v, &q.limit, &q.service, &q.loop, &q.pid)) {
        if (!st->ok()) {
          return *st;
        }
      } else if (k == "call") {
        if (BlockingCallIndex(v) < 0) {
          return InvalidArgumentError("bad call '" + EscapeForLog(v, kMaxCallEchoBytes) +
                                      "': expected one of " + call_names);
        }
        q.call = v;
      } else {
        if (std::find(kBlockingCallFamilies.begin(), kBlockingCallFamilies.end(), v) ==
            kBlockingCallFamilies.end()) {
          return InvalidArgumentError("bad family '" + EscapeForLog(v, kMaxEchoBytes) +
                                      "': expected one of " + family_names);
        }
        q.family = v;
      }
    }
    return r;
  }
  if (path == "/api/v1/stacks") {
    constexpr const char* kForm =
        "format=json|folded|pprof, service=NAME, loop=NAME, "
        "class=cpu|blocked|starved|suspended|unknown, since=TIME, until=TIME (TIME: Unix ns, RFC "
        "3339 or a duration ago such as 10m)";
    auto params =
        ParseQueryString(query, {"format", "service", "loop", "class", "since", "until"}, kForm);
    if (!params.ok()) {
      return params.status();
    }
    std::string format = "json";
    StackQuery& q = r.stacks;
    for (const auto& [k, v] : *params) {
      if (k == "format") {
        format = v;
      } else if (k == "service" || k == "loop") {
        if (Status st = ParseName(k, v, k == "service" ? &q.service : &q.loop); !st.ok()) {
          return st;
        }
      } else if (k == "class") {
        StallClass c = StallClass::kUnknown;
        if (!ParseStallClass(v, &c)) {
          return InvalidArgumentError("bad class '" + EscapeForLog(v, kMaxEchoBytes) +
                                      "': expected cpu, blocked, starved, suspended or unknown");
        }
        q.stall_class = c;
      } else {
        auto t = ParseTimeBound(k, v);
        if (!t.ok()) {
          return t.status();
        }
        (k == "since" ? q.since : q.until) = *t;
      }
    }
    // Bounds of one kind compare now; a Unix time and a duration ago only at the request.
    if (q.since && q.until && q.since->ago == q.until->ago && q.since->At(0) > q.until->At(0)) {
      return InvalidArgumentError("since is after until; expected since <= until");
    }
    if (format == "json") {
      r.kind = ApiRequest::Kind::kStacksJson;
    } else if (format == "folded") {
      r.kind = ApiRequest::Kind::kStacksFolded;
    } else if (format == "pprof") {
      r.kind = ApiRequest::Kind::kStacksPprof;
    } else {
      return InvalidArgumentError("bad format '" + EscapeForLog(format, kMaxEchoBytes) +
                                  "': expected folded, json or pprof");
    }
    return r;
  }
  if (path == "/") {
    // The page's state is its query string, read by app.js (docs/daemon.md, "Web UI"); the
    // names are checked here so that a mistyped link says what the page understands.
    constexpr const char* kForm =
        "view=loops|flame|diff|stall, service=NAME, pid=PID, loop=NAME, class=CLASS, id=STALL_ID, "
        "since=TIME, until=TIME, a_since=TIME, a_until=TIME, b_since=TIME, b_until=TIME, "
        "span=TIME, "
        "zoom=FRAME;FRAME;… (a flame graph's zoomed frame: names from the service down)";
    auto params =
        ParseQueryString(query,
                         {"view", "service", "pid", "loop", "class", "id", "since", "until",
                          "a_since", "a_until", "b_since", "b_until", "span", "zoom"},
                         kForm);
    if (!params.ok()) {
      return params.status();
    }
    for (const auto& [k, v] : *params) {
      if (k == "view" && v != "loops" && v != "flame" && v != "diff" && v != "stall") {
        return InvalidArgumentError("bad view '" + EscapeForLog(v, kMaxEchoBytes) +
                                    "': expected loops, flame, diff or stall");
      }
    }
    r.kind = ApiRequest::Kind::kWebUi;
    r.asset = FindWebAsset("index.html");
    return r;
  }
  if (path.starts_with("/ui/")) {
    r.asset = FindWebAsset(path.substr(4));
    if (r.asset && r.asset->name != "index.html") {
      auto params = ParseQueryString(query, {}, "no parameters");
      if (!params.ok()) {
        return params.status();
      }
      r.kind = ApiRequest::Kind::kWebUi;
      return r;
    }
  }
  return NotFoundError("no such path '" + EscapeForLog(path, kMaxEchoBytes) +
                       "'; served: / (web UI), /metrics, /healthz, /api/v1/loops, /api/v1/stalls, "
                       "/api/v1/stacks, /api/v1/calls");
}

}  // namespace stallwatch::daemon
