#include "stallwatch/common/finding_json.h"

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

namespace stallwatch {

using nlohmann::json;

const char* StallClassName(StallClass c) {
  switch (c) {
    case StallClass::kCpu:
      return "cpu";
    case StallClass::kBlocked:
      return "blocked";
    case StallClass::kStarved:
      return "starved";
    case StallClass::kSuspended:
      return "suspended";
    case StallClass::kUnknown:
      return "unknown";
  }
  return "unknown";
}

bool ParseStallClass(const std::string& s, StallClass* out) {
  for (StallClass c : {StallClass::kCpu, StallClass::kBlocked, StallClass::kStarved,
                       StallClass::kSuspended, StallClass::kUnknown}) {
    if (s == StallClassName(c)) {
      *out = c;
      return true;
    }
  }
  return false;
}

json ToJson(const Frame& f) {
  return json{{"function", f.function},
              {"module", f.module},
              {"offset", f.offset},
              {"file", f.file},
              {"line", f.line}};
}

json ToJson(const Stack& s) {
  json frames = json::array();
  for (const auto& f : s.frames) frames.push_back(ToJson(f));
  return json{{"samples", s.samples}, {"method", s.method}, {"frames", std::move(frames)}};
}

json ToJson(const StallFinding& f) {
  json stacks = json::array();
  for (const auto& s : f.stacks) stacks.push_back(ToJson(s));
  return json{{"kind", "stall"},
              {"schema_version", kFindingSchemaVersion},
              {"service", f.service},
              {"pid", f.pid},
              {"loop", f.loop},
              {"stall_id", f.stall_id},
              {"start_ns", f.start_ns},
              {"duration_s", f.duration_s},
              {"ongoing", f.ongoing},
              {"estimated", f.estimated},
              {"class", StallClassName(f.stall_class)},
              {"syscall", f.syscall},
              {"fd_target", f.fd_target},
              {"cpu_ratio", f.cpu_ratio},
              {"wait_ratio", f.wait_ratio},
              {"hint", f.hint},
              {"stacks", std::move(stacks)},
              {"samples_failed", f.samples_failed},
              {"reports_suppressed", f.reports_suppressed},
              {"sampling_note", f.sampling_note}};
}

static json SparseToJson(const SparseHistogram& h) {
  json a = json::array();
  for (const auto& [i, n] : h) a.push_back(json::array({i, n}));
  return a;
}

json ToJson(const DelayFinding& f, JsonOptions options) {
  json j{{"kind", "delay"},
         {"schema_version", kFindingSchemaVersion},
         {"service", f.service},
         {"pid", f.pid},
         {"loop", f.loop},
         {"end_ns", f.end_ns},
         {"window_s", f.window_s},
         {"count", f.count},
         {"p50_s", f.p50_s},
         {"p90_s", f.p90_s},
         {"p99_s", f.p99_s},
         {"p999_s", f.p999_s},
         {"max_s", f.max_s},
         {"sum_s", f.sum_s},
         {"utilization", f.utilization},
         {"utilization_estimated", f.utilization_estimated},
         {"boundary_source", f.boundary_source},
         {"iterations", f.iterations},
         {"iteration_sum_s", f.iteration_sum_s},
         {"stalls_total", f.stalls_total},
         {"stack_samples_total", f.stack_samples_total},
         {"reports_suppressed_total", f.reports_suppressed_total},
         {"findings_dropped_total", f.findings_dropped_total}};
  if (options.include_buckets) {
    j["delay_buckets"] = SparseToJson(f.delay_buckets);
    j["iteration_buckets"] = SparseToJson(f.iteration_buckets);
  }
  return j;
}

std::string ToJsonLine(const StallFinding& f) {
  return ToJson(f).dump(-1, ' ', false, json::error_handler_t::replace);
}
std::string ToJsonLine(const DelayFinding& f, JsonOptions o) {
  return ToJson(f, o).dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// Reads j[key] into out when present and of the right type; records a type error otherwise.
template <typename T>
bool Get(const json& j, const char* key, T* out, std::string* err) {
  auto it = j.find(key);
  if (it == j.end()) return true;  // optional: defaults stay
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // Integer fields take integers in range only: converting a float such as 1e300 to an
    // integer is undefined behaviour, and a silently wrapped or truncated count is a lie.
    using Limits = std::numeric_limits<T>;
    bool in_range = false;
    if (it->is_number_unsigned()) {
      in_range = it->get<uint64_t>() <= static_cast<uint64_t>(Limits::max());
    } else if (it->is_number_integer()) {  // negative
      in_range = std::is_signed_v<T> && it->get<int64_t>() >= static_cast<int64_t>(Limits::min());
    }
    if (!in_range) {
      *err = std::string("field '") + key + "' has the wrong type or is out of range";
      return false;
    }
  }
  try {
    *out = it->get<T>();
    return true;
  } catch (const json::exception&) {
    *err = std::string("field '") + key + "' has the wrong type";
    return false;
  }
}

bool GetSparse(const json& j, const char* key, SparseHistogram* out, std::string* err) {
  auto it = j.find(key);
  if (it == j.end()) return true;
  if (!it->is_array()) {
    *err = std::string("field '") + key + "' must be an array of [index, count]";
    return false;
  }
  for (const auto& e : *it) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() ||
        !e[1].is_number_unsigned()) {
      *err = std::string("field '") + key + "' must be an array of [index, count]";
      return false;
    }
    if (e[0].get<uint64_t>() > UINT32_MAX) {
      *err = std::string("field '") + key + "' has a bucket index out of range";
      return false;
    }
    out->emplace_back(static_cast<uint32_t>(e[0].get<uint64_t>()), e[1].get<uint64_t>());
  }
  return true;
}

}  // namespace

StatusOr<StallFinding> StallFromJson(const json& j) {
  if (!j.is_object()) return InvalidArgumentError("stall finding must be a JSON object");
  StallFinding f;
  std::string err, cls = "unknown";
  bool ok = Get(j, "service", &f.service, &err) && Get(j, "pid", &f.pid, &err) &&
            Get(j, "loop", &f.loop, &err) && Get(j, "stall_id", &f.stall_id, &err) &&
            Get(j, "start_ns", &f.start_ns, &err) && Get(j, "duration_s", &f.duration_s, &err) &&
            Get(j, "ongoing", &f.ongoing, &err) && Get(j, "estimated", &f.estimated, &err) &&
            Get(j, "class", &cls, &err) && Get(j, "syscall", &f.syscall, &err) &&
            Get(j, "fd_target", &f.fd_target, &err) && Get(j, "cpu_ratio", &f.cpu_ratio, &err) &&
            Get(j, "wait_ratio", &f.wait_ratio, &err) && Get(j, "hint", &f.hint, &err) &&
            Get(j, "samples_failed", &f.samples_failed, &err) &&
            Get(j, "reports_suppressed", &f.reports_suppressed, &err) &&
            Get(j, "sampling_note", &f.sampling_note, &err);
  if (!ok) return InvalidArgumentError(err);
  if (!ParseStallClass(cls, &f.stall_class)) {
    return InvalidArgumentError(
        "field 'class' must be cpu, blocked, starved, suspended or unknown");
  }
  if (auto it = j.find("stacks"); it != j.end()) {
    if (!it->is_array()) return InvalidArgumentError("field 'stacks' must be an array");
    for (const auto& sj : *it) {
      if (!sj.is_object()) return InvalidArgumentError("each stack must be an object");
      Stack s;
      if (!Get(sj, "samples", &s.samples, &err) || !Get(sj, "method", &s.method, &err)) {
        return InvalidArgumentError(err);
      }
      if (auto fit = sj.find("frames"); fit != sj.end()) {
        if (!fit->is_array()) return InvalidArgumentError("field 'frames' must be an array");
        for (const auto& fj : *fit) {
          if (!fj.is_object()) return InvalidArgumentError("each frame must be an object");
          Frame fr;
          if (!Get(fj, "function", &fr.function, &err) || !Get(fj, "module", &fr.module, &err) ||
              !Get(fj, "offset", &fr.offset, &err) || !Get(fj, "file", &fr.file, &err) ||
              !Get(fj, "line", &fr.line, &err)) {
            return InvalidArgumentError(err);
          }
          s.frames.push_back(std::move(fr));
        }
      }
      f.stacks.push_back(std::move(s));
    }
  }
  return f;
}

StatusOr<DelayFinding> DelayFromJson(const json& j) {
  if (!j.is_object()) return InvalidArgumentError("delay finding must be a JSON object");
  DelayFinding f;
  std::string err;
  bool ok = Get(j, "service", &f.service, &err) && Get(j, "pid", &f.pid, &err) &&
            Get(j, "loop", &f.loop, &err) && Get(j, "end_ns", &f.end_ns, &err) &&
            Get(j, "window_s", &f.window_s, &err) && Get(j, "count", &f.count, &err) &&
            Get(j, "p50_s", &f.p50_s, &err) && Get(j, "p90_s", &f.p90_s, &err) &&
            Get(j, "p99_s", &f.p99_s, &err) && Get(j, "p999_s", &f.p999_s, &err) &&
            Get(j, "max_s", &f.max_s, &err) && Get(j, "sum_s", &f.sum_s, &err) &&
            Get(j, "utilization", &f.utilization, &err) &&
            Get(j, "utilization_estimated", &f.utilization_estimated, &err) &&
            Get(j, "boundary_source", &f.boundary_source, &err) &&
            Get(j, "iterations", &f.iterations, &err) &&
            Get(j, "iteration_sum_s", &f.iteration_sum_s, &err) &&
            Get(j, "stalls_total", &f.stalls_total, &err) &&
            Get(j, "stack_samples_total", &f.stack_samples_total, &err) &&
            Get(j, "reports_suppressed_total", &f.reports_suppressed_total, &err) &&
            Get(j, "findings_dropped_total", &f.findings_dropped_total, &err) &&
            GetSparse(j, "delay_buckets", &f.delay_buckets, &err) &&
            GetSparse(j, "iteration_buckets", &f.iteration_buckets, &err);
  if (!ok) return InvalidArgumentError(err);
  return f;
}

}  // namespace stallwatch
