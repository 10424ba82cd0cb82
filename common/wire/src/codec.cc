#include "stallwatch/wire/codec.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

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
    if (it == j.end()) return true;
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
      if (!CheckName(h->loops.back(), "loops", true, err)) return false;
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
  if (f.pid <= 0) return Fail(err, RejectReason::kBadField, "field 'pid' must be positive");
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

bool CheckDelay(const DelayFinding& f, DecodeError* err) {
  if (!CheckName(f.service, "service", true, err) || !CheckName(f.loop, "loop", true, err)) {
    return false;
  }
  if (f.pid <= 0) return Fail(err, RejectReason::kBadField, "field 'pid' must be positive");
  return CheckSeconds(f.window_s, "window_s", err) && CheckSeconds(f.sum_s, "sum_s", err) &&
         CheckSeconds(f.max_s, "max_s", err) &&
         CheckSeconds(f.iteration_sum_s, "iteration_sum_s", err) &&
         CheckRatio(f.utilization, "utilization", err) &&
         CheckSparse(f.delay_buckets, "delay_buckets", err) &&
         CheckSparse(f.iteration_buckets, "iteration_buckets", err);
}

// The fast path for delay windows, by far the most frequent frame: a SAX pass that fills a
// DelayFinding directly, without building a DOM (half of the daemon's ingest cost). It handles
// only the exact shape agents send; anything else (another kind, an unexpected type or nesting,
// a syntax error) makes it give up, and the DOM path decides, so both paths accept and reject
// exactly the same frames.
class DelaySax : public nlohmann::json_sax<json> {
 public:
  DelayFinding d;
  bool is_delay = false;

  bool null() override { return Scalar(); }
  bool boolean(bool v) override {
    if (depth_ != 1) return false;
    if (key_ == "utilization_estimated") {
      d.utilization_estimated = v;
      return true;
    }
    return Unknown();
  }
  bool number_integer(number_integer_t v) override {
    if (depth_ != 1) return false;  // bucket pairs must be unsigned ("-0" is not)
    if (v < 0) return depth_ == 1 && IsDouble() ? SetDouble(static_cast<double>(v)) : false;
    return number_unsigned(static_cast<number_unsigned_t>(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (depth_ == 3 && hist_) {
      if (pair_n_ >= 2) return false;
      pair_[pair_n_++] = v;
      return true;
    }
    if (depth_ != 1) return false;
    if (uint64_t* u = U64()) {
      *u = v;
      return true;
    }
    if (key_ == "pid" || key_ == "end_ns") {
      if (v > static_cast<uint64_t>(INT64_MAX)) return false;
      (key_ == "pid" ? d.pid : d.end_ns) = static_cast<int64_t>(v);
      return true;
    }
    if (IsDouble()) return SetDouble(static_cast<double>(v));
    return Unknown();
  }
  bool number_float(number_float_t v, const string_t&) override {
    if (depth_ != 1) return false;
    if (IsDouble()) return SetDouble(v);
    return Unknown();
  }
  bool string(string_t& v) override {
    if (depth_ != 1) return false;
    if (key_ == "kind") {
      is_delay = v == "delay";
      return is_delay;  // any other kind: the DOM path
    }
    if (key_ == "service") {
      d.service = std::move(v);
    } else if (key_ == "loop") {
      d.loop = std::move(v);
    } else if (key_ == "boundary_source") {
      d.boundary_source = std::move(v);
    } else {
      return Unknown();
    }
    return true;
  }
  bool binary(binary_t&) override { return false; }
  bool start_object(std::size_t) override { return ++depth_ == 1; }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    ++depth_;
    if (depth_ == 2) {
      if (key_ == "delay_buckets") {
        hist_ = &d.delay_buckets;
      } else if (key_ == "iteration_buckets") {
        hist_ = &d.iteration_buckets;
      } else {
        return false;
      }
      hist_->clear();
      return true;
    }
    if (depth_ == 3 && hist_) {
      pair_n_ = 0;
      return true;
    }
    return false;
  }
  bool end_array() override {
    if (depth_ == 3) {
      if (pair_n_ != 2 || pair_[0] > UINT32_MAX) return false;
      hist_->emplace_back(static_cast<uint32_t>(pair_[0]), pair_[1]);
    } else if (depth_ == 2) {
      hist_ = nullptr;
    }
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  bool Scalar() { return false; }
  // An unknown top-level key with a scalar value is ignored, as the DOM path does; a known key
  // with a value of another type goes to the DOM path, which converts or rejects it.
  bool Unknown() const {
    static const std::set<std::string, std::less<>> kKnown = {"kind",
                                                              "service",
                                                              "loop",
                                                              "boundary_source",
                                                              "pid",
                                                              "end_ns",
                                                              "count",
                                                              "iterations",
                                                              "stalls_total",
                                                              "stack_samples_total",
                                                              "reports_suppressed_total",
                                                              "findings_dropped_total",
                                                              "window_s",
                                                              "p50_s",
                                                              "p90_s",
                                                              "p99_s",
                                                              "p999_s",
                                                              "max_s",
                                                              "sum_s",
                                                              "utilization",
                                                              "iteration_sum_s",
                                                              "utilization_estimated",
                                                              "delay_buckets",
                                                              "iteration_buckets"};
    return depth_ == 1 && kKnown.count(key_) == 0;
  }
  uint64_t* U64() {
    if (key_ == "count") return &d.count;
    if (key_ == "iterations") return &d.iterations;
    if (key_ == "stalls_total") return &d.stalls_total;
    if (key_ == "stack_samples_total") return &d.stack_samples_total;
    if (key_ == "reports_suppressed_total") return &d.reports_suppressed_total;
    if (key_ == "findings_dropped_total") return &d.findings_dropped_total;
    return nullptr;
  }
  double* Double() {
    if (key_ == "window_s") return &d.window_s;
    if (key_ == "p50_s") return &d.p50_s;
    if (key_ == "p90_s") return &d.p90_s;
    if (key_ == "p99_s") return &d.p99_s;
    if (key_ == "p999_s") return &d.p999_s;
    if (key_ == "max_s") return &d.max_s;
    if (key_ == "sum_s") return &d.sum_s;
    if (key_ == "utilization") return &d.utilization;
    if (key_ == "iteration_sum_s") return &d.iteration_sum_s;
    return nullptr;
  }
  bool IsDouble() { return Double() != nullptr; }
  bool SetDouble(double v) {
    *Double() = v;
    return true;
  }

  int depth_ = 0;
  std::string key_;
  SparseHistogram* hist_ = nullptr;
  uint64_t pair_[2] = {0, 0};
  int pair_n_ = 0;
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
    if (!h->token.empty()) j["token"] = h->token;
    return Dump(j);
  }
  if (const auto* s = std::get_if<StallFinding>(&m)) return Dump(ToJson(*s));
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
  return internal::DecodeBodyForTest(body, out, err, /*fast_path=*/true);
}

namespace internal {

bool DecodeBodyForTest(std::string_view body, Message* out, DecodeError* err, bool fast_path) {
  if (fast_path) {
    // The handler gives up beyond three levels, so nesting costs it nothing.
    DelaySax sax;
    if (json::sax_parse(body, &sax, nlohmann::detail::input_format_t::json, /*strict=*/true) &&
        sax.is_delay) {
      if (!CheckDelay(sax.d, err)) return false;
      *out = std::move(sax.d);
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
        "frame body is JSON but not an object; expected {\"kind\":\"hello|stall|delay\",…}");
  }
  auto kind = j.find("kind");
  if (kind == j.end() || !kind->is_string()) {
    return Fail(err, RejectReason::kUnknownKind,
                "frame body has no string \"kind\"; accepted kinds: hello, stall, delay");
  }
  const std::string& k = kind->get_ref<const std::string&>();
  if (k == "hello") {
    Hello h;
    if (!DecodeHello(j, &h, err)) return false;
    *out = std::move(h);
    return true;
  }
  if (k == "stall") {
    auto f = StallFromJson(j);
    if (!f.ok()) return Fail(err, RejectReason::kBadField, "stall: " + f.status().message());
    if (!CheckStall(*f, err)) return false;
    *out = std::move(*f);
    return true;
  }
  if (k == "delay") {
    auto f = DelayFromJson(j);
    if (!f.ok()) return Fail(err, RejectReason::kBadField, "delay: " + f.status().message());
    if (!CheckDelay(*f, err)) return false;
    *out = std::move(*f);
    return true;
  }
  return Fail(err, RejectReason::kUnknownKind,
              "unknown kind \"" + k.substr(0, 32) + "\"; accepted kinds: hello, stall, delay");
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
  if (avail < kHeaderSize + len) return Result::kNeedMore;
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
