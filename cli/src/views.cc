#include "views.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "experiment.h"
#include "report.h"
#include "stallwatch/common/finding_json.h"

namespace stallwatch::cli {

using nlohmann::json;

namespace {

StatusOr<json> ParseJson(const std::string& body, const char* what) {
  try {
    return json::parse(body);
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("the daemon's ") + what +
                                " answer is not JSON: " + e.what());
  }
}

// The array under `key`, or the body itself when it is an array.
StatusOr<json> ArrayOf(const json& j, const char* key) {
  if (j.is_array()) return j;
  if (j.is_object() && j.contains(key) && j[key].is_array()) return j[key];
  return InvalidArgumentError(std::string("expected {\"") + key + "\":[…]} from the daemon");
}

std::string LocalTime(int64_t unix_ns) {
  const time_t t = static_cast<time_t>(unix_ns / 1'000'000'000);
  tm tm_local{};
  localtime_r(&t, &tm_local);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm_local);
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03d", static_cast<int>(unix_ns / 1'000'000 % 1000));
  return std::string(buf) + ms;
}

std::string FrameText(const Frame& f) {
  std::string name = f.function;
  const size_t slash = f.module.rfind('/');
  const std::string module = slash == std::string::npos ? f.module : f.module.substr(slash + 1);
  char off[32];
  std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(f.offset));
  if (name.empty()) name = "??";
  std::string out = name + "  (" + module + off + ")";
  if (!f.file.empty()) {
    const size_t fs = f.file.rfind('/');
    out += "  " + (fs == std::string::npos ? f.file : f.file.substr(fs + 1)) + ":" +
           std::to_string(f.line);
  }
  return out;
}

std::string Cut(std::string s, size_t width) {
  if (s.size() > width) s = s.substr(0, width > 1 ? width - 1 : 0) + "~";
  return s;
}

}  // namespace

StatusOr<std::vector<StallFinding>> ParseStallsBody(const std::string& body) {
  auto j = ParseJson(body, "stalls");
  if (!j.ok()) return j.status();
  auto arr = ArrayOf(*j, "stalls");
  if (!arr.ok()) return arr.status();
  std::vector<StallFinding> out;
  for (const json& item : *arr) {
    if (!item.is_object() || item.value("kind", "stall") != "stall") {
      return InvalidArgumentError("expected stall findings from the daemon, got " +
                                  item.dump().substr(0, 80));
    }
    auto f = StallFromJson(item);
    if (!f.ok()) return InvalidArgumentError("bad stall from the daemon: " + f.status().message());
    out.push_back(std::move(*f));
  }
  return out;
}

std::vector<StallFinding> FilterStalls(std::vector<StallFinding> stalls, const StallFilter& f) {
  std::erase_if(stalls, [&](const StallFinding& s) {
    return (!f.service.empty() && s.service != f.service) ||
           (!f.loop.empty() && s.loop != f.loop) || (f.since_ns != 0 && s.start_ns < f.since_ns) ||
           (f.ongoing.has_value() && s.ongoing != *f.ongoing);
  });
  return stalls;
}

std::string FormatStalls(const std::vector<StallFinding>& stalls, const StallsFormat& format) {
  if (stalls.empty()) return "no stalls\n";
  std::string out;
  for (const StallFinding& s : stalls) {
    char head[512];
    std::snprintf(head, sizeof head, "%s  %s pid %lld loop %s  %s %s%s  %s\n",
                  LocalTime(s.start_ns).c_str(), s.service.c_str(), static_cast<long long>(s.pid),
                  s.loop.c_str(), s.ongoing ? "ONGOING for" : "stalled",
                  HumanSeconds(s.duration_s).c_str(), s.estimated ? " (estimated)" : "",
                  StallClassName(s.stall_class));
    out += head;
    std::string detail;
    if (!s.syscall.empty()) detail += "in " + s.syscall + "()";
    if (!s.fd_target.empty()) detail += (detail.empty() ? "on " : " on ") + s.fd_target;
    char ratio[64];
    std::snprintf(ratio, sizeof ratio, "cpu %.0f%%", s.cpu_ratio * 100);
    detail += (detail.empty() ? "" : ", ") + std::string(ratio);
    out += "  " + detail + "\n";
    if (!s.hint.empty()) out += "  hint: " + s.hint + "\n";
    if (format.stacks) {
      size_t shown = 0;
      for (const Stack& st : s.stacks) {
        if (shown++ == format.max_stacks) {
          out += "  … " + std::to_string(s.stacks.size() - format.max_stacks) + " more stacks\n";
          break;
        }
        out += "  stack (" + std::to_string(st.samples) + " sample" + (st.samples == 1 ? "" : "s") +
               (st.method.empty() ? "" : ", " + st.method) + "):\n";
        for (size_t i = 0; i < st.frames.size() && i < format.max_frames; ++i) {
          out += "    " + FrameText(st.frames[i]) + "\n";
        }
        if (st.frames.size() > format.max_frames) {
          out += "    … " + std::to_string(st.frames.size() - format.max_frames) + " more frames\n";
        }
      }
      if (s.stacks.empty() && !s.sampling_note.empty()) {
        out += "  no stacks: " + s.sampling_note + "\n";
      }
    }
    out += "\n";
  }
  return out;
}

StatusOr<std::string> FormatStacksBody(const std::string& body, size_t max_frames) {
  auto j = ParseJson(body, "stacks");
  if (!j.ok()) return j.status();
  auto arr = ArrayOf(*j, "stacks");
  if (!arr.ok()) return arr.status();
  struct Item {
    std::string service;
    Stack stack;
  };
  std::vector<Item> items;
  uint64_t total = 0;
  for (const json& s : *arr) {
    Item it;
    it.service = s.value("service", "");
    it.stack.samples = s.value("samples", uint64_t{0});
    it.stack.method = s.value("method", "");
    if (s.contains("frames") && s["frames"].is_array()) {
      for (const json& f : s["frames"]) {
        Frame fr;
        fr.function = f.value("function", "");
        fr.module = f.value("module", "");
        fr.offset = f.value("offset", uint64_t{0});
        fr.file = f.value("file", "");
        fr.line = f.value("line", 0);
        it.stack.frames.push_back(std::move(fr));
      }
    }
    total += it.stack.samples;
    items.push_back(std::move(it));
  }
  if (items.empty()) return std::string("no stacks\n");
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.stack.samples > b.stack.samples; });
  std::string out;
  for (const Item& it : items) {
    char head[256];
    std::snprintf(head, sizeof head, "%llu samples (%.1f%%)  %s  top: %s\n",
                  static_cast<unsigned long long>(it.stack.samples),
                  total > 0 ? 100.0 * static_cast<double>(it.stack.samples) / total : 0.0,
                  it.service.c_str(), TopBlockingFrame(it.stack).c_str());
    out += head;
    for (size_t i = 0; i < it.stack.frames.size() && i < max_frames; ++i) {
      out += "    " + FrameText(it.stack.frames[i]) + "\n";
    }
    out += "\n";
  }
  return out;
}

StatusOr<std::vector<LoopRow>> ParseLoopsBody(const std::string& loops_body,
                                              const std::vector<StallFinding>& recent_stalls,
                                              const std::map<LoopKey, uint64_t>& previous,
                                              double interval_s) {
  auto j = ParseJson(loops_body, "loops");
  if (!j.ok()) return j.status();
  auto arr = ArrayOf(*j, "loops");
  if (!arr.ok()) return arr.status();
  // The latest stall of each loop gives its top frame when none is ongoing.
  std::map<LoopKey, const StallFinding*> latest;
  for (const StallFinding& s : recent_stalls) {
    const LoopKey k{s.service, s.pid, s.loop};
    auto it = latest.find(k);
    if (it == latest.end() || it->second->start_ns < s.start_ns) latest[k] = &s;
  }
  auto top_of = [](const StallFinding& s) {
    std::string best;
    uint64_t most = 0;
    for (const Stack& st : s.stacks) {
      const std::string t = TopBlockingFrame(st);
      if (!t.empty() && st.samples >= most) {
        most = st.samples;
        best = t;
      }
    }
    return best;
  };
  std::vector<LoopRow> rows;
  try {
    for (const json& l : *arr) {
      LoopRow r;
      r.service = l.value("service", "");
      r.pid = l.value("pid", int64_t{0});
      r.loop = l.value("loop", "");
      r.connected = l.value("connected", true);
      r.stalls_total = l.value("stalls_total", uint64_t{0});
      if (l.contains("last_window") && l["last_window"].is_object()) {
        const json& w = l["last_window"];
        r.has_window = true;
        r.p50_s = w.value("p50_s", 0.0);
        r.p99_s = w.value("p99_s", 0.0);
        r.max_s = w.value("max_s", 0.0);
        r.utilization = w.value("utilization", 0.0);
        r.stalls_total = std::max(r.stalls_total, w.value("stalls_total", uint64_t{0}));
      }
      const LoopKey key{r.service, r.pid, r.loop};
      if (l.contains("ongoing") && l["ongoing"].is_object()) {
        auto s = StallFromJson(l["ongoing"]);
        if (s.ok()) {
          r.ongoing_s = s->duration_s;
          r.ongoing_class = StallClassName(s->stall_class);
          r.top_frame = top_of(*s);
        }
      }
      if (r.top_frame.empty()) {
        if (auto it = latest.find(key); it != latest.end()) r.top_frame = top_of(*it->second);
      }
      if (auto it = previous.find(key);
          it != previous.end() && interval_s > 0 && r.stalls_total >= it->second) {
        r.stalls_per_s = static_cast<double>(r.stalls_total - it->second) / interval_s;
      }
      rows.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("bad loop from the daemon: ") + e.what());
  }
  // Loops stalled right now first, then by p99.
  std::stable_sort(rows.begin(), rows.end(), [](const LoopRow& a, const LoopRow& b) {
    if ((a.ongoing_s > 0) != (b.ongoing_s > 0)) return a.ongoing_s > 0;
    return a.p99_s > b.p99_s;
  });
  return rows;
}

std::string FormatTop(const std::vector<LoopRow>& rows, const std::string& source, size_t width) {
  std::string out;
  char buf[512];
  size_t ongoing = 0;
  for (const auto& r : rows) ongoing += r.ongoing_s > 0 ? 1 : 0;
  std::snprintf(buf, sizeof buf, "stallwatch top — %s — %zu loop%s, %zu stalled now",
                source.c_str(), rows.size(), rows.size() == 1 ? "" : "s", ongoing);
  out += Cut(buf, width) + "\n";
  std::snprintf(buf, sizeof buf, "%-16s %7s %-12s %8s %8s %8s %5s %8s %12s  %s", "SERVICE", "PID",
                "LOOP", "P50", "P99", "MAX", "UTIL", "STALLS/S", "STALLED FOR", "TOP FRAME");
  out += Cut(buf, width) + "\n";
  if (rows.empty()) out += "(no loops reported yet)\n";
  for (const auto& r : rows) {
    const std::string stalled =
        r.ongoing_s > 0 ? HumanSeconds(r.ongoing_s) + " " + r.ongoing_class : "-";
    std::snprintf(buf, sizeof buf, "%-16s %7lld %-12s %8s %8s %8s %4.0f%% %8.2f %12s  %s",
                  Cut(r.service, 16).c_str(), static_cast<long long>(r.pid),
                  Cut(r.loop, 12).c_str(), r.has_window ? HumanSeconds(r.p50_s).c_str() : "-",
                  r.has_window ? HumanSeconds(r.p99_s).c_str() : "-",
                  r.has_window ? HumanSeconds(r.max_s).c_str() : "-", r.utilization * 100,
                  r.stalls_per_s, stalled.c_str(), r.top_frame.empty() ? "-" : r.top_frame.c_str());
    out += Cut(buf, width) + "\n";
  }
  return out;
}

}  // namespace stallwatch::cli
