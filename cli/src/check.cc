#include "check.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>
#include <utility>

#include "stallwatch/common/blocking_calls.h"
#include "stallwatch/common/duration.h"
#include "stallwatch/common/finding_json.h"

namespace stallwatch::cli {
namespace {

using nlohmann::json;

constexpr const char* kWatchdogEnv = "STALLWATCH_WATCHDOG";

std::string AcceptedNames() {
  std::string out;
  for (const auto& n : ForbiddableNames()) {
    out += out.empty() ? "" : ",";
    out += n;
  }
  return out;
}

// "12.3ms" style for seconds.
std::string Millis(double s) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3gms", s * 1e3);
  return buf;
}

std::string Where(const Frame& f) {
  std::string out = f.function.empty() ? "?" : f.function;
  if (!f.file.empty()) {
    out += " (" + f.file + ":" + std::to_string(f.line) + ")";
  } else if (!f.module.empty()) {
    char off[32];
    std::snprintf(off, sizeof(off), "+0x%llx", static_cast<unsigned long long>(f.offset));
    out += " (" + f.module + off + ")";
  }
  return out;
}

json FrameJson(const Frame& f) { return ToJson(f); }

// Whether a module is the C library itself (libc.so.6, and libpthread/ld.so beside it).
bool IsLibc(const std::string& module) {
  const std::string base = module.substr(module.rfind('/') + 1);
  return base.rfind("libc.so", 0) == 0 || base.rfind("libc-", 0) == 0 ||
         base.rfind("libpthread", 0) == 0 || base.rfind("ld-linux", 0) == 0;
}

}  // namespace

std::vector<std::string> ForbiddableNames() {
  std::vector<std::string> names;
  names.reserve(kBlockingCalls.size() + kBlockingCallFamilies.size());
  for (const auto& c : kBlockingCalls) {
    names.emplace_back(c.name);
  }
  for (const auto& f : kBlockingCallFamilies) {
    if (std::find(names.begin(), names.end(), f) == names.end()) {
      names.emplace_back(f);
    }
  }
  return names;
}

StatusOr<std::set<std::string>> ParseForbidList(std::string_view text) {
  std::set<std::string> out;
  const std::vector<std::string> accepted = ForbiddableNames();
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string_view item =
        text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (item.empty()) {
      return InvalidArgumentError("'" + std::string(text) +
                                  "' has an empty name; expected a comma-separated list of " +
                                  AcceptedNames());
    }
    if (std::find(accepted.begin(), accepted.end(), item) == accepted.end()) {
      return InvalidArgumentError("unknown call '" + std::string(item) +
                                  "'; expected a comma-separated list of " + AcceptedNames());
    }
    out.emplace(item);
    if (comma == std::string_view::npos) {
      break;
    }
    pos = comma + 1;
  }
  return out;
}

bool IsForbidden(const std::set<std::string>& forbid, const std::string& call) {
  if (forbid.count(call) != 0) {
    return true;
  }
  for (const auto& c : kBlockingCalls) {
    if (c.name == call) {
      return forbid.count(std::string(c.family)) != 0;
    }
  }
  return false;
}

CheckReport Evaluate(const std::vector<std::string>& lines, const CheckCriteria& criteria) {
  CheckReport r;
  const double max_stall_s = std::chrono::duration<double>(criteria.max_stall).count();
  const double max_blocking_s =
      criteria.max_blocking ? std::chrono::duration<double>(*criteria.max_blocking).count() : -1;
  // Calls summed by (loop, call, site); a stall kept by (loop, id) in its last (final) report.
  using SiteKey = std::tuple<std::string, std::string, std::string, uint64_t>;
  std::map<SiteKey, CallOffence> sites;
  std::map<std::pair<std::string, uint64_t>, StallFinding> stalls;
  std::set<std::string> loops;
  for (const auto& line : lines) {
    if (line.empty()) {
      continue;
    }
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string()) {
      ++r.lines_unreadable;
      continue;
    }
    const std::string kind = j["kind"].get<std::string>();
    if (kind == "calls") {
      auto c = CallsFromJson(j);
      if (!c.ok()) {
        ++r.lines_unreadable;
        continue;
      }
      loops.insert(c->loop);
      for (const auto& e : c->calls) {
        CallOffence& o = sites[{c->loop, e.call, e.site.module, e.site.offset}];
        o.loop = c->loop;
        o.call = e.call;
        o.site = e.site;
        o.count += e.count;
        o.total_s += e.total_s;
        o.max_s = std::max(o.max_s, e.max_s);
      }
    } else if (kind == "stall") {
      auto s = StallFromJson(j);
      if (!s.ok()) {
        ++r.lines_unreadable;
        continue;
      }
      loops.insert(s->loop);
      StallFinding& kept = stalls[{s->loop, s->stall_id}];
      // The closed report is the last one; keep stacks from an earlier report if it has none.
      std::vector<Stack> stacks = kept.stacks;
      kept = std::move(*s);
      if (kept.stacks.empty()) {
        kept.stacks = std::move(stacks);
      }
    } else if (kind == "delay") {
      if (auto l = j.find("loop"); l != j.end() && l->is_string()) {
        loops.insert(l->get<std::string>());
      }
    }
  }
  for (auto& [key, o] : sites) {
    if (IsForbidden(criteria.forbid, o.call)) {
      o.reason = "forbidden";
    } else if (max_blocking_s >= 0 && o.max_s > max_blocking_s) {
      o.reason = "longer than " + FormatDuration(*criteria.max_blocking);
    } else {
      continue;
    }
    r.calls.push_back(o);
  }
  std::sort(r.calls.begin(), r.calls.end(),
            [](const CallOffence& a, const CallOffence& b) { return a.total_s > b.total_s; });
  for (const auto& [key, s] : stalls) {
    if (s.duration_s <= max_stall_s) {
      continue;
    }
    StallOffence o;
    o.loop = s.loop;
    o.duration_s = s.duration_s;
    o.stall_class = StallClassName(s.stall_class);
    o.syscall = s.syscall;
    if (!s.stacks.empty()) {
      // The most sampled stack.
      const Stack* top = &s.stacks.front();
      for (const auto& st : s.stacks) {
        if (st.samples > top->samples) {
          top = &st;
        }
      }
      // From the first frame outside libc (the syscall's wrappers say less than their caller),
      // unless the stack is libc's alone.
      size_t first = 0;
      while (first < top->frames.size() && IsLibc(top->frames[first].module)) {
        ++first;
      }
      if (first == top->frames.size()) {
        first = 0;
      }
      for (size_t i = first; i < top->frames.size() && o.top_frames.size() < kTopFrames; ++i) {
        o.top_frames.push_back(top->frames[i]);
      }
    }
    r.stalls.push_back(std::move(o));
  }
  r.loops_seen = loops.size();
  return r;
}

std::string FormatCheckText(const CheckReport& r, const CheckCriteria& criteria) {
  std::string out;
  if (r.clean()) {
    out += "stallwatch check: clean: " + std::to_string(r.loops_seen) +
           " watched loop(s), no stall over " + FormatDuration(criteria.max_stall) +
           ", no forbidden or too long blocking call\n";
    return out;
  }
  out += "stallwatch check: FAILED: " + std::to_string(r.calls.size()) +
         " offending call site(s), " + std::to_string(r.stalls.size()) + " stall(s) over " +
         FormatDuration(criteria.max_stall) + "\n";
  for (const auto& c : r.calls) {
    out += "  " + c.call + " from " + Where(c.site) + " on loop " + c.loop + ": " +
           std::to_string(c.count) + " calls, max " + Millis(c.max_s) + ", total " +
           Millis(c.total_s) + " (" + c.reason + ")\n";
  }
  for (const auto& s : r.stalls) {
    out += "  stall of " + Millis(s.duration_s) + " on loop " + s.loop + " (" + s.stall_class +
           (s.syscall.empty() ? "" : ", in " + s.syscall) + ")\n";
    for (const auto& f : s.top_frames) {
      out += "      at " + Where(f) + "\n";
    }
  }
  return out;
}

std::string FormatCheckJson(const CheckReport& r, const CheckCriteria& criteria, int program_exit) {
  json calls = json::array();
  for (const auto& c : r.calls) {
    calls.push_back({{"loop", c.loop},
                     {"call", c.call},
                     {"site", FrameJson(c.site)},
                     {"count", c.count},
                     {"total_s", c.total_s},
                     {"max_s", c.max_s},
                     {"reason", c.reason}});
  }
  json stalls = json::array();
  for (const auto& s : r.stalls) {
    json frames = json::array();
    for (const auto& f : s.top_frames) {
      frames.push_back(FrameJson(f));
    }
    stalls.push_back({{"loop", s.loop},
                      {"duration_s", s.duration_s},
                      {"class", s.stall_class},
                      {"syscall", s.syscall},
                      {"frames", std::move(frames)}});
  }
  json forbid = json::array();
  for (const auto& f : criteria.forbid) {
    forbid.push_back(f);
  }
  json j{{"ok", r.clean()},
         {"program_exit", program_exit},
         {"loops", r.loops_seen},
         {"max_stall_s", std::chrono::duration<double>(criteria.max_stall).count()},
         {"forbid", std::move(forbid)},
         {"calls", std::move(calls)},
         {"stalls", std::move(stalls)}};
  if (criteria.max_blocking) {
    j["max_blocking_s"] = std::chrono::duration<double>(*criteria.max_blocking).count();
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

int RunCheck(const CheckOptions& opts, const std::vector<std::string>& command) {
  char dir_template[] = "/tmp/stallwatch-check-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    std::fprintf(stderr, "stallwatch check: cannot create a folder in /tmp for the findings\n");
    return 2;
  }
  const std::string dir = dir_template;
  const std::string path = dir + "/findings.jsonl";
  RunOptions run = opts.run;
  run.endpoint = "file:" + path;
  run.threshold = FormatDuration(opts.criteria.max_stall);
  if (run.service.empty() && !command.empty()) {
    run.service = command[0].substr(command[0].rfind('/') + 1);
  }
  // The watchdog as a thread of the program: its last findings are written before the program
  // exits (a watchdog process, the default for single-threaded programs, may still be writing
  // them when the program's exit status arrives here).
  if (const char* w = std::getenv(kWatchdogEnv); w == nullptr || *w == '\0') {
    setenv(kWatchdogEnv, "thread", 1);
  }
  const int program_exit = RunUnderShim(run, command);
  if (program_exit == 127) {
    unlink(path.c_str());
    rmdir(dir.c_str());
    return 127;  // RunUnderShim said why
  }
  std::vector<std::string> lines;
  {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      lines.push_back(std::move(line));
    }
  }
  unlink(path.c_str());
  rmdir(dir.c_str());
  const CheckReport r = Evaluate(lines, opts.criteria);
  const std::string out = opts.json ? FormatCheckJson(r, opts.criteria, program_exit)
                                    : FormatCheckText(r, opts.criteria);
  std::fputs(out.c_str(), stdout);
  if (opts.exit_status && program_exit != 0) {
    return program_exit;
  }
  return r.clean() ? 0 : kCheckFailedExit;
}

}  // namespace stallwatch::cli
