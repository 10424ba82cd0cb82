#include "stallwatch/wire/codec.h"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "stallwatch/common/blocking_calls.h"
#include "stallwatch/common/finding_fields.h"
#include "stallwatch/common/finding_json.h"
#include "stallwatch/common/histogram.h"

namespace stallwatch::wire {
namespace {

using nlohmann::json;

constexpr const char* kFrameForm =
    "a frame is \"SW\", version 1, flags 0, a big-endian 32-bit length and a JSON object";
constexpr int kMaxDepth = 32;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Nesting depth of a JSON text, ignoring brackets inside strings. Bounds the parser's and the
// destructor's work before anything is allocated for a hostile body.
int MaxDepth(std::string_view s) {
  int depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max = std::max(max, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max;
}

bool Fail(DecodeError* err, RejectReason reason, std::string message) {
  err->reason = reason;
  err->message = std::move(message);
  err->fatal = false;
  return false;
}

bool CheckName(const std::string& value, const char* field, bool required, DecodeError* err) {
  if (required && value.empty()) {
    return Fail(err, RejectReason::kBadField,
                std::string("field '") + field + "' is required: a non-empty string of at most " +
                    std::to_string(kMaxNameBytes) + " bytes");
  }
  if (value.size() > kMaxNameBytes) {
    return Fail(err, RejectReason::kBadField,
                std::string("field '") + field + "' is longer than " +
                    std::to_string(kMaxNameBytes) + " bytes");
  }
  return true;
}

bool CheckSeconds(double v, const char* field, DecodeError* err) {
  if (!std::isfinite(v) || v < 0) {
    return Fail(err, RejectReason::kBadField,
                std::string("field '") + field + "' must be a non-negative number of seconds");
  }
  return true;
}

bool CheckRatio(double v, const char* field, DecodeError* err) {
  if (!std::isfinite(v) || v < 0 || v > 1.000001) {
    return Fail(err, RejectReason::kBadField,
                std::string("field '") + field + "' must be a ratio between 0 and 1");
  }
  return true;
}

bool CheckSparse(const SparseHistogram& h, const char* field, DecodeError* err) {
  for (const auto& [index, count] : h) {
    if (index >= kHistBuckets) {
      return Fail(err, RejectReason::kBadField,
                  std::string("field '") + field + "' has bucket index " + std::to_string(index) +
                      "; accepted: 0.." + std::to_string(kHistBuckets - 1));
    }
    (void)count;
  }
  return true;
}

bool DecodeHello(const json& j, Hello* h, DecodeError* err) {
  auto str = [&](const char* key, std::string* out) {
    auto it = j.find(key);
    if (it == j.end()) {
      return true;
    }
    if (!it->is_string()) {
      return Fail(err, RejectReason::kBadField,
                  std::string("field '") + key + "' must be a string");
    }
    *out = it->get<std::string>();
    return true;
  };
  if (!str("service", &h->service) || !str("host", &h->host) ||
      !str("executable", &h->executable) || !str("agent_version", &h->agent_version) ||
      !str("token", &h->token)) {
    return false;
  }
  if (h->token.size() > kMaxTokenBytes) {
    return Fail(err, RejectReason::kBadField,
                "field 'token' is longer than " + std::to_string(kMaxTokenBytes) + " bytes");
  }
  auto pid = j.find("pid");
  if (pid == j.end() || !pid->is_number_integer() || pid->get<int64_t>() <= 0) {
    return Fail(err, RejectReason::kBadField, "field 'pid' is required: a positive integer");
  }
  h->pid = pid->get<int64_t>();
  if (auto it = j.find("start_time_ns"); it != j.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      return Fail(err, RejectReason::kBadField,
                  "field 'start_time_ns' must be a non-negative integer (Unix ns)");
    }
    h->start_time_ns = it->get<int64_t>();
  }
  if (auto it = j.find("loops"); it != j.end()) {
    if (!it->is_array() || it->size() > kMaxLoopsInHello) {
      return Fail(err, RejectReason::kBadField,
                  "field 'loops' must be an array of at most " + std::to_string(kMaxLoopsInHello) +
                      " strings");
    }
    for (const auto& l : *it) {
      if (!l.is_string()) {
        return Fail(err, RejectReason::kBadField, "field 'loops' must be an array of strings");
      }
      h->loops.push_back(l.get<std::string>());
      if (!CheckName(h->loops.back(), "loops", true, err)) {
        return false;
      }
    }
  }
  return CheckName(h->service, "service", true, err) && CheckName(h->host, "host", false, err) &&
         (h->executable.size() <= 4096 ||
          Fail(err, RejectReason::kBadField, "field 'executable' is longer than 4096 bytes")) &&
         CheckName(h->agent_version, "agent_version", false, err);
}

bool CheckStall(const StallFinding& f, DecodeError* err) {
  if (!CheckName(f.service, "service", true, err) || !CheckName(f.loop, "loop", true, err)) {
    return false;
  }
  if (f.pid <= 0) {
    return Fail(err, RejectReason::kBadField, "field 'pid' must be positive");
  }
  if (!CheckSeconds(f.duration_s, "duration_s", err) ||
      !CheckRatio(f.cpu_ratio, "cpu_ratio", err) || !CheckRatio(f.wait_ratio, "wait_ratio", err)) {
    return false;
  }
  if (f.stacks.size() > kMaxStacks) {
    return Fail(err, RejectReason::kBadField,
                "field 'stacks' has more than " + std::to_string(kMaxStacks) + " stacks");
  }
  for (const auto& s : f.stacks) {
    if (s.frames.size() > kMaxFrames) {
      return Fail(err, RejectReason::kBadField,
                  "a stack has more than " + std::to_string(kMaxFrames) + " frames");
    }
  }
  return true;
}

bool CheckCalls(const CallsFinding& f, DecodeError* err) {
  if (!CheckName(f.service, "service", true, err) || !CheckName(f.loop, "loop", true, err)) {
    return false;
  }
  if (f.pid <= 0) {
    return Fail(err, RejectReason::kBadField, "field 'pid' must be positive");
  }
  if (!CheckSeconds(f.window_s, "window_s", err)) {
    return false;
  }
  if (f.calls.size() > kMaxCallSites) {
    return Fail(err, RejectReason::kBadField,
                "field 'calls' has more than " + std::to_string(kMaxCallSites) + " call sites");
  }
  for (const auto& c : f.calls) {
    if (BlockingCallIndex(c.call) < 0) {
      std::string names;
      for (const auto& k : kBlockingCalls) {
        names += names.empty() ? "" : ", ";
        names += k.name;
      }
      return Fail(err, RejectReason::kBadField,
                  "unknown call '" + c.call.substr(0, 32) + "'; accepted calls: " + names);
    }
    if (!CheckSeconds(c.total_s, "total_s", err) || !CheckSeconds(c.max_s, "max_s", err) ||
        !CheckSeconds(c.p99_s, "p99_s", err)) {
      return false;
    }
    if (c.site.function.size() > kMaxTokenBytes || c.site.file.size() > kMaxTokenBytes ||
        c.site.module.size() > kMaxTokenBytes) {
      return Fail(err, RejectReason::kBadField,
                  "a call site's function, file or module is longer than " +
                      std::to_string(kMaxTokenBytes) + " bytes");
    }
    for (const auto& [index, count] : c.buckets) {
      if (index >= static_cast<uint32_t>(kCallBuckets)) {
        return Fail(err, RejectReason::kBadField,
                    "field 'buckets' of a call site has bucket index " + std::to_string(index) +
                        "; accepted: 0.." + std::to_string(kCallBuckets - 1));
      }
      (void)count;
    }
  }
  return true;
}

bool CheckDelay(const DelayFinding& f, DecodeError* err) {
  if (!CheckName(f.service, "service", true, err) || !CheckName(f.loop, "loop", true, err)) {
    return false;
  }
  if (f.pid <= 0) {
    return Fail(err, RejectReason::kBadField, "field 'pid' must be positive");
  }
  return CheckSeconds(f.window_s, "window_s", err) && CheckSeconds(f.sum_s, "sum_s", err) &&
         CheckSeconds(f.max_s, "max_s", err) &&
         CheckSeconds(f.iteration_sum_s, "iteration_sum_s", err) &&
         CheckRatio(f.utilization, "utilization", err) &&
         CheckSparse(f.delay_buckets, "delay_buckets", err) &&
         CheckSparse(f.iteration_buckets, "iteration_buckets", err);
}

// The fast path for delay windows, by far the most frequent frame: a hand-written scanner that
// fills a DelayFinding straight from the bytes, without a DOM and without nlohmann's lexer
// (which, even in SAX mode, cost most of the daemon's ingest CPU). It accepts only the shape
// agents send — one flat object, plain ASCII strings without escapes, unsigned integers, JSON
// numbers, true/false, the two [[index, count], …] arrays — and gives up on anything else (another
// kind, a negative number, an escape, null, nesting, a syntax error, a value out of range);
// the DOM path then decides, so both paths accept and reject exactly the same bodies (a
// differential fuzz test checks it). Which keys it reads, into which members and as which type
// comes from kDelayFields (finding_fields.h), the table DelayFromJson and ToJson use too. A key
// that is not in the table is ignored, as DelayFromJson ignores it (a newer agent's field): its
// value is skipped when it is a string, a number or true/false; otherwise the DOM path decides
// (and ignores it too). Nothing counts ignored keys, on either path. Where it accepts, it reads
// what nlohmann reads: integers that fit in 64 bits exactly, other numbers correctly rounded
// (std::from_chars, as strtod), duplicate keys last-wins.
class DelayScanner {
 public:
  explicit DelayScanner(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}

  // True when the body is a delay window of that shape (*d filled); false: ask the DOM path.
  bool Scan(DelayFinding* d) {
    SkipWs();
    if (!Eat('{')) {
      return false;
    }
    SkipWs();
    bool is_delay = false;
    for (;;) {
      std::string_view key;
      if (!String(&key)) {
        return false;
      }
      SkipWs();
      if (!Eat(':')) {
        return false;
      }
      SkipWs();
      if (!Value(key, d, &is_delay)) {
        return false;
      }
      SkipWs();
      if (Eat(',')) {
        SkipWs();
        continue;
      }
      if (!Eat('}')) {
        return false;
      }
      break;
    }
    SkipWs();
    return p_ == end_ && is_delay;
  }

 private:
  // One value: "kind" must be "delay"; a field of kDelayFields is read as its member's type;
  // any other key is skipped, as DelayFromJson ignores keys it does not know.
  bool Value(std::string_view key, DelayFinding* d, bool* is_delay) {
    if (key == "kind") {
      std::string_view v;
      *is_delay = String(&v) && v == "delay";
      return *is_delay;  // any other kind or type: the DOM path
    }
    bool ok = false;
    if (VisitFieldNamed(kDelayFields, key, *d, [&](auto& member) { ok = Read(&member); })) {
      return ok;
    }
    return SkipScalar();
  }

  bool Read(std::string* out) {
    std::string_view v;
    if (!String(&v)) {
      return false;
    }
    out->assign(v);
    return true;
  }
  bool Read(bool* out) {
    if (Literal("true")) {
      *out = true;
      return true;
    }
    if (Literal("false")) {
      *out = false;
      return true;
    }
    return false;
  }
  bool Read(uint64_t* out) {
    double unused;
    return Number(out, &unused) == Num::kUnsigned;
  }
  bool Read(int64_t* out) {
    uint64_t u = 0;
    if (!Read(&u) || u > static_cast<uint64_t>(INT64_MAX)) {
      return false;  // negative: DOM path
    }
    *out = static_cast<int64_t>(u);
    return true;
  }
  bool Read(double* out) {
    uint64_t u = 0;
    switch (Number(&u, out)) {
      case Num::kUnsigned:
        *out = static_cast<double>(u);
        return true;
      case Num::kDouble:
        return true;
      case Num::kNone:
        return false;
    }
    return false;
  }
  bool Read(SparseHistogram* h) { return p_ != end_ && *p_ == '[' && Hist(h); }

  // The value of a key no field has: a string, true/false or a number is skipped; anything
  // else (null, an array, an object) makes the scanner give up, and the DOM path ignores it.
  bool SkipScalar() {
    if (p_ == end_) {
      return false;
    }
    switch (*p_) {
      case '"': {
        std::string_view unused;
        return String(&unused);
      }
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      default: {
        uint64_t u;
        double x;
        return Number(&u, &x) != Num::kNone;
      }
    }
  }

  // [[index, count], …] of unsigned integers, index ≤ UINT32_MAX.
  bool Hist(SparseHistogram* h) {
    h->clear();
    ++p_;  // '['
    SkipWs();
    if (Eat(']')) {
      return true;
    }
    for (;;) {
      if (!Eat('[')) {
        return false;
      }
      uint64_t pair[2];
      double unused;
      for (int i = 0; i < 2; ++i) {
        SkipWs();
        if (Number(&pair[i], &unused) != Num::kUnsigned) {
          return false;
        }
        SkipWs();
        if (!Eat(i == 0 ? ',' : ']')) {
          return false;
        }
      }
      if (pair[0] > UINT32_MAX) {
        return false;
      }
      h->emplace_back(static_cast<uint32_t>(pair[0]), pair[1]);
      SkipWs();
      if (Eat(',')) {
        SkipWs();
        continue;
      }
      return Eat(']');
    }
  }

  enum class Num { kNone, kUnsigned, kDouble };
  // A JSON number without a sign: kUnsigned for an integer that fits in 64 bits, kDouble for a
  // finite fraction/exponent form; kNone for anything else (invalid, negative, out of range).
  Num Number(uint64_t* u, double* x) {
    const char* start = p_;
    if (p_ == end_ || !IsDigit(*p_)) {
      return Num::kNone;
    }
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && IsDigit(*p_)) {
        ++p_;
      }
    }
    bool integer = true;
    if (p_ != end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ == end_ || !IsDigit(*p_)) {
        return Num::kNone;
      }
      while (p_ != end_ && IsDigit(*p_)) {
        ++p_;
      }
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) {
        ++p_;
      }
      if (p_ == end_ || !IsDigit(*p_)) {
        return Num::kNone;
      }
      while (p_ != end_ && IsDigit(*p_)) {
        ++p_;
      }
    }
    if (integer) {
      const auto r = std::from_chars(start, p_, *u);
      return r.ec == std::errc() && r.ptr == p_ ? Num::kUnsigned : Num::kNone;
    }
    const auto r = std::from_chars(start, p_, *x);
    return r.ec == std::errc() && r.ptr == p_ && std::isfinite(*x) ? Num::kDouble : Num::kNone;
  }

  // A string of printable ASCII without escapes (what agents send); anything else: give up.
  bool String(std::string_view* out) {
    if (!Eat('"')) {
      return false;
    }
    const char* start = p_;
    while (p_ != end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        *out = std::string_view(start, static_cast<size_t>(p_ - start));
        ++p_;
        return true;
      }
      if (c < 0x20 || c > 0x7e || c == '\\') {
        return false;
      }
      ++p_;
    }
    return false;
  }

  bool Literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
      return false;
    }
    p_ += word.size();
    return true;
  }
  bool Eat(char c) {
    if (p_ == end_ || *p_ != c) {
      return false;
    }
    ++p_;
    return true;
  }
  void SkipWs() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) {
      ++p_;
    }
  }
  static bool IsDigit(char c) { return c >= '0' && c <= '9'; }

  const char* p_;
  const char* end_;
};

uint32_t ReadBe32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

std::string Hex(unsigned char c) {
  char b[8];
  std::snprintf(b, sizeof(b), "0x%02x", c);
  return b;
}

}  // namespace

const char* RejectReasonName(RejectReason r) {
  switch (r) {
    case RejectReason::kBadMagic:
      return "bad_magic";
    case RejectReason::kBadVersion:
      return "bad_version";
    case RejectReason::kBadLength:
      return "bad_length";
    case RejectReason::kBadJson:
      return "bad_json";
    case RejectReason::kNotObject:
      return "not_object";
    case RejectReason::kUnknownKind:
      return "unknown_kind";
    case RejectReason::kBadField:
      return "bad_field";
    case RejectReason::kNoHello:
      return "no_hello";
    case RejectReason::kIdentityMismatch:
      return "identity_mismatch";
    case RejectReason::kTruncated:
      return "truncated";
    case RejectReason::kLimit:
      return "limit";
    case RejectReason::kHandshakeTimeout:
      return "handshake_timeout";
    case RejectReason::kFrameTimeout:
      return "frame_timeout";
    case RejectReason::kAuth:
      return "auth";
  }
  return "unknown";
}

std::string EncodeBody(const Message& m) {
  if (const auto* h = std::get_if<Hello>(&m)) {
    json j{{"kind", "hello"},  {"service", h->service},       {"pid", h->pid},
           {"host", h->host},  {"executable", h->executable}, {"agent_version", h->agent_version},
           {"loops", h->loops}};
    if (h->start_time_ns > 0) {
      j["start_time_ns"] = h->start_time_ns;
    }
    if (!h->token.empty()) {
      j["token"] = h->token;
    }
    return Dump(j);
  }
  if (const auto* s = std::get_if<StallFinding>(&m)) {
    return Dump(ToJson(*s));
  }
  if (const auto* c = std::get_if<CallsFinding>(&m)) {
    return Dump(ToJson(*c));
  }
  return Dump(ToJson(std::get<DelayFinding>(m), JsonOptions{.include_buckets = true}));
}

std::string EncodeFrame(const Message& m) {
  const std::string body = EncodeBody(m);
  std::string out;
  out.reserve(kHeaderSize + body.size());
  const auto n = static_cast<uint32_t>(body.size());
  out.push_back('S');
  out.push_back('W');
  out.push_back(static_cast<char>(kProtocolVersion));
  out.push_back(0);
  out.push_back(static_cast<char>((n >> 24) & 0xff));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
  out += body;
  return out;
}

bool DecodeBody(std::string_view body, Message* out, DecodeError* err) {
  return internal::DecodeBodyWith(body, internal::DelayDecoding::kScanner, out, err);
}

namespace internal {

bool ScanDelayForTest(std::string_view body, DelayFinding* out) {
  return DelayScanner(body).Scan(out);
}

bool DecodeBodyWith(std::string_view body, DelayDecoding delay, Message* out, DecodeError* err) {
  if (delay == DelayDecoding::kScanner) {
    // The scanner gives up at the first nesting, so a hostile body costs it nothing.
    DelayFinding d;
    if (DelayScanner(body).Scan(&d)) {
      if (!CheckDelay(d, err)) {
        return false;
      }
      *out = std::move(d);
      return true;
    }
  }
  if (MaxDepth(body) > kMaxDepth) {
    return Fail(err, RejectReason::kBadJson,
                "frame body nests deeper than " + std::to_string(kMaxDepth) +
                    " levels; expected a finding or hello JSON object");
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return Fail(err, RejectReason::kBadJson,
                "frame body is not valid UTF-8 JSON; expected a JSON object with a \"kind\"");
  }
  if (!j.is_object()) {
    return Fail(
        err, RejectReason::kNotObject,
        "frame body is JSON but not an object; expected {\"kind\":\"hello|stall|delay|calls\",…}");
  }
  auto kind = j.find("kind");
  if (kind == j.end() || !kind->is_string()) {
    return Fail(err, RejectReason::kUnknownKind,
                "frame body has no string \"kind\"; accepted kinds: hello, stall, delay, calls");
  }
  const std::string& k = kind->get_ref<const std::string&>();
  if (k == "hello") {
    Hello h;
    if (!DecodeHello(j, &h, err)) {
      return false;
    }
    *out = std::move(h);
    return true;
  }
  if (k == "stall") {
    auto f = StallFromJson(j);
    if (!f.ok()) {
      return Fail(err, RejectReason::kBadField, "stall: " + f.status().message());
    }
    if (!CheckStall(*f, err)) {
      return false;
    }
    *out = std::move(*f);
    return true;
  }
  if (k == "delay") {
    auto f = DelayFromJson(j);
    if (!f.ok()) {
      return Fail(err, RejectReason::kBadField, "delay: " + f.status().message());
    }
    if (!CheckDelay(*f, err)) {
      return false;
    }
    *out = std::move(*f);
    return true;
  }
  if (k == "calls") {
    auto f = CallsFromJson(j);
    if (!f.ok()) {
      return Fail(err, RejectReason::kBadField, "calls: " + f.status().message());
    }
    if (!CheckCalls(*f, err)) {
      return false;
    }
    *out = std::move(*f);
    return true;
  }
  return Fail(
      err, RejectReason::kUnknownKind,
      "unknown kind \"" + k.substr(0, 32) + "\"; accepted kinds: hello, stall, delay, calls");
}

}  // namespace internal

FrameDecoder::Result FrameDecoder::Next(Message* out, DecodeError* err) {
  if (failed_) {
    *err = fatal_error_;
    return Result::kError;
  }
  auto fatal = [&](RejectReason r, std::string msg) {
    failed_ = true;
    fatal_error_ = DecodeError{r, std::move(msg), true};
    buf_.clear();
    pos_ = 0;
    *err = fatal_error_;
    return Result::kError;
  };
  const size_t avail = buf_.size() - pos_;
  if (avail < kHeaderSize) {
    // Reject a foreign stream (an HTTP request, a JSON line) as soon as its first bytes show.
    if (avail >= 1 && buf_[pos_] != 'S') {
      return fatal(RejectReason::kBadMagic, "bad frame header: first byte " + Hex(buf_[pos_]) +
                                                " is not 'S'; " + kFrameForm);
    }
    if (avail >= 2 && buf_[pos_ + 1] != 'W') {
      return fatal(RejectReason::kBadMagic,
                   "bad frame header: magic is not \"SW\"; " + std::string(kFrameForm));
    }
    if (pos_ > 0 && pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
    }
    return Result::kNeedMore;
  }
  const char* h = buf_.data() + pos_;
  if (h[0] != 'S' || h[1] != 'W') {
    return fatal(RejectReason::kBadMagic,
                 "bad frame header: magic is not \"SW\"; " + std::string(kFrameForm));
  }
  if (static_cast<uint8_t>(h[2]) != kProtocolVersion || h[3] != 0) {
    return fatal(RejectReason::kBadVersion,
                 "unsupported protocol version " + std::to_string(static_cast<uint8_t>(h[2])) +
                     " flags " + std::to_string(static_cast<uint8_t>(h[3])) +
                     "; this daemon accepts version 1 with flags 0");
  }
  const uint32_t len = ReadBe32(h + 4);
  if (len < 2 || len > kMaxFrameBody) {
    return fatal(RejectReason::kBadLength, "frame length " + std::to_string(len) +
                                               " out of range; accepted: 2.." +
                                               std::to_string(kMaxFrameBody) + " bytes");
  }
  if (avail < kHeaderSize + len) {
    return Result::kNeedMore;
  }
  std::string_view body(buf_.data() + pos_ + kHeaderSize, len);
  pos_ += kHeaderSize + len;
  const bool ok = DecodeBody(body, out, err);
  // Compact once the consumed prefix dominates, so the buffer stays bounded.
  if (pos_ == buf_.size()) {
    // An idle connection keeps no large buffer: a daemon holds thousands of them.
    if (buf_.capacity() > 4096) {
      std::string().swap(buf_);
    } else {
      buf_.clear();
    }
    pos_ = 0;
  } else if (pos_ > buf_.size() / 2) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return ok ? Result::kMessage : Result::kError;
}

}  // namespace stallwatch::wire
