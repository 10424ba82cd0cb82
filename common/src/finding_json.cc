#include "stallwatch/common/finding_json.h"

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>
#include <type_traits>

#include "stallwatch/common/finding_fields.h"

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
  return json{{"function", f.function}, {"module", f.module}, {"offset", f.offset},
              {"file", f.file},         {"line", f.line},     {"kind", f.kind}};
}

json ToJson(const Stack& s) {
  json frames = json::array();
  for (const auto& f : s.frames) {
    frames.push_back(ToJson(f));
  }
  return json{{"samples", s.samples}, {"method", s.method}, {"frames", std::move(frames)}};
}

static json SparseToJson(const SparseHistogram& h) {
  json a = json::array();
  for (const auto& [i, n] : h) {
    a.push_back(json::array({i, n}));
  }
  return a;
}

namespace {

// Writes every field of `table` from `f` into the object `j`.
template <typename Table, typename Struct>
void PutFields(const Table& table, const Struct& f, bool include_buckets, json* j) {
  ForEachField(table, [&](const auto& field) {
    using T = typename std::decay_t<decltype(field)>::Type;
    const T& v = f.*field.member;
    if constexpr (std::is_same_v<T, SparseHistogram>) {
      if (include_buckets) {
        (*j)[std::string(field.name)] = SparseToJson(v);
      }
    } else if constexpr (std::is_same_v<T, StallClass>) {
      (*j)[std::string(field.name)] = StallClassName(v);
    } else {
      (*j)[std::string(field.name)] = v;
    }
  });
}

}  // namespace

json ToJson(const StallFinding& f) {
  json stacks = json::array();
  for (const auto& s : f.stacks) {
    stacks.push_back(ToJson(s));
  }
  json j{{"kind", "stall"}, {"schema_version", kFindingSchemaVersion}};
  PutFields(kStallFields, f, /*include_buckets=*/false, &j);
  j["stacks"] = std::move(stacks);
  return j;
}

json ToJson(const DelayFinding& f, JsonOptions options) {
  json j{{"kind", "delay"}, {"schema_version", kFindingSchemaVersion}};
  PutFields(kDelayFields, f, options.include_buckets, &j);
  return j;
}

json ToJson(const CallsFinding& f) {
  json calls = json::array();
  for (const auto& c : f.calls) {
    json e = json::object();
    PutFields(kCallSiteFields, c, /*include_buckets=*/true, &e);
    e["site"] = ToJson(c.site);
    calls.push_back(std::move(e));
  }
  json j{{"kind", "calls"}, {"schema_version", kFindingSchemaVersion}};
  PutFields(kCallsFields, f, /*include_buckets=*/false, &j);
  j["calls"] = std::move(calls);
  return j;
}

std::string ToJsonLine(const StallFinding& f) {
  return ToJson(f).dump(-1, ' ', false, json::error_handler_t::replace);
}
std::string ToJsonLine(const DelayFinding& f, JsonOptions o) {
  return ToJson(f, o).dump(-1, ' ', false, json::error_handler_t::replace);
}
std::string ToJsonLine(const CallsFinding& f) {
  return ToJson(f).dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// Reads j[key] into out when present and of the right type; records a type error otherwise.
template <typename T>
bool Get(const json& j, std::string_view key, T* out, std::string* err) {
  auto it = j.find(key);
  if (it == j.end()) {
    return true;  // optional: defaults stay
  }
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
      *err = "field '" + std::string(key) + "' has the wrong type or is out of range";
      return false;
    }
  }
  try {
    *out = it->get<T>();
    return true;
  } catch (const json::exception&) {
    *err = "field '" + std::string(key) + "' has the wrong type";
    return false;
  }
}

bool Get(const json& j, std::string_view key, SparseHistogram* out, std::string* err) {
  auto it = j.find(key);
  if (it == j.end()) {
    return true;
  }
  if (!it->is_array()) {
    *err = "field '" + std::string(key) + "' must be an array of [index, count]";
    return false;
  }
  for (const auto& e : *it) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() ||
        !e[1].is_number_unsigned()) {
      *err = "field '" + std::string(key) + "' must be an array of [index, count]";
      return false;
    }
    if (e[0].get<uint64_t>() > UINT32_MAX) {
      *err = "field '" + std::string(key) + "' has a bucket index out of range";
      return false;
    }
    out->emplace_back(static_cast<uint32_t>(e[0].get<uint64_t>()), e[1].get<uint64_t>());
  }
  return true;
}

// "class": one of the names of StallClassName.
bool Get(const json& j, std::string_view key, StallClass* out, std::string* err) {
  std::string name = StallClassName(*out);
  if (!Get(j, key, &name, err)) {
    return false;
  }
  if (!ParseStallClass(name, out)) {
    *err = "field '" + std::string(key) + "' must be cpu, blocked, starved, suspended or unknown";
    return false;
  }
  return true;
}

// Reads every field of `table` present in `j` into *f; stops at the first bad one.
template <typename Table, typename Struct>
bool GetFields(const Table& table, const json& j, Struct* f, std::string* err) {
  return AllFields(table,
                   [&](const auto& field) { return Get(j, field.name, &(f->*field.member), err); });
}

}  // namespace

StatusOr<StallFinding> StallFromJson(const json& j) {
  if (!j.is_object()) {
    return InvalidArgumentError("stall finding must be a JSON object");
  }
  StallFinding f;
  std::string err;
  if (!GetFields(kStallFields, j, &f, &err)) {
    return InvalidArgumentError(err);
  }
  if (auto it = j.find("stacks"); it != j.end()) {
    if (!it->is_array()) {
      return InvalidArgumentError("field 'stacks' must be an array");
    }
    for (const auto& sj : *it) {
      if (!sj.is_object()) {
        return InvalidArgumentError("each stack must be an object");
      }
      Stack s;
      if (!Get(sj, "samples", &s.samples, &err) || !Get(sj, "method", &s.method, &err)) {
        return InvalidArgumentError(err);
      }
      if (auto fit = sj.find("frames"); fit != sj.end()) {
        if (!fit->is_array()) {
          return InvalidArgumentError("field 'frames' must be an array");
        }
        for (const auto& fj : *fit) {
          if (!fj.is_object()) {
            return InvalidArgumentError("each frame must be an object");
          }
          Frame fr;
          if (!Get(fj, "function", &fr.function, &err) || !Get(fj, "module", &fr.module, &err) ||
              !Get(fj, "offset", &fr.offset, &err) || !Get(fj, "file", &fr.file, &err) ||
              !Get(fj, "line", &fr.line, &err)) {
            return InvalidArgumentError(err);
          }
          // Absent in schema 1 (every frame native then).
          if (auto kit = fj.find("kind"); kit != fj.end()) {
            if (!kit->is_string() || (*kit != "native" && *kit != "python" && *kit != "jit")) {
              return InvalidArgumentError(
                  "field 'kind' of a frame must be \"native\", \"python\" or \"jit\"");
            }
            fr.kind = kit->get<std::string>();
          }
          s.frames.push_back(std::move(fr));
        }
      }
      f.stacks.push_back(std::move(s));
    }
  }
  return f;
}

StatusOr<CallsFinding> CallsFromJson(const json& j) {
  if (!j.is_object()) {
    return InvalidArgumentError("calls finding must be a JSON object");
  }
  CallsFinding f;
  std::string err;
  if (!GetFields(kCallsFields, j, &f, &err)) {
    return InvalidArgumentError(err);
  }
  if (auto it = j.find("calls"); it != j.end()) {
    if (!it->is_array()) {
      return InvalidArgumentError("field 'calls' must be an array");
    }
    for (const auto& cj : *it) {
      if (!cj.is_object()) {
        return InvalidArgumentError("each entry of 'calls' must be an object");
      }
      CallSiteStats c;
      if (!GetFields(kCallSiteFields, cj, &c, &err)) {
        return InvalidArgumentError(err);
      }
      if (auto sit = cj.find("site"); sit != cj.end()) {
        if (!sit->is_object()) {
          return InvalidArgumentError("field 'site' must be an object");
        }
        Frame& fr = c.site;
        if (!Get(*sit, "function", &fr.function, &err) || !Get(*sit, "module", &fr.module, &err) ||
            !Get(*sit, "offset", &fr.offset, &err) || !Get(*sit, "file", &fr.file, &err) ||
            !Get(*sit, "line", &fr.line, &err) || !Get(*sit, "kind", &fr.kind, &err)) {
          return InvalidArgumentError(err);
        }
      }
      f.calls.push_back(std::move(c));
    }
  }
  return f;
}

StatusOr<DelayFinding> DelayFromJson(const json& j) {
  if (!j.is_object()) {
    return InvalidArgumentError("delay finding must be a JSON object");
  }
  DelayFinding f;
  std::string err;
  if (!GetFields(kDelayFields, j, &f, &err)) {
    return InvalidArgumentError(err);
  }
  return f;
}

}  // namespace stallwatch
