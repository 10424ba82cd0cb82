#include "top.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "report.h"
#include "stallwatch/common/finding_json.h"
#include "view_text.h"

namespace stallwatch::cli {

using internal::ArrayOf;
using internal::Cut;
using internal::CutLeft;
using internal::KeyOf;
using internal::kMinuteNs;
using internal::Pad;
using internal::ParseJson;
using nlohmann::json;

void StallRate::Add(const LoopKey& key, int64_t now_ns, uint64_t stalls_total) {
  auto& q = samples_[key];
  if (!q.empty() && stalls_total < q.back().second) {
    q.clear();  // a restarted counter
  }
  q.emplace_back(now_ns, stalls_total);
  // Keep one sample at or before a minute ago as the baseline.
  while (q.size() > 2 && q[1].first <= now_ns - kMinuteNs) {
    q.pop_front();
  }
}

std::optional<uint64_t> StallRate::LastMinute(const LoopKey& key) const {
  auto it = samples_.find(key);
  if (it == samples_.end() || it->second.size() < 2) {
    return std::nullopt;
  }
  const auto& [t0, n0] = it->second.front();
  const auto& [t1, n1] = it->second.back();
  const double span_ns = static_cast<double>(t1 - t0);
  const uint64_t delta = n1 - n0;
  // A baseline older than a minute (long refresh intervals): scale to one minute.
  if (span_ns > static_cast<double>(kMinuteNs)) {
    return static_cast<uint64_t>(std::llround(static_cast<double>(delta) * kMinuteNs / span_ns));
  }
  return delta;
}

void StallRate::Retain(const std::set<LoopKey>& keys) {
  std::erase_if(samples_, [&](const auto& kv) { return keys.count(kv.first) == 0; });
}

StatusOr<std::vector<LoopRow>> ParseLoopsBody(const std::string& loops_body,
                                              const std::vector<StallFinding>& recent_stalls,
                                              int64_t now_ns, StallRate* rate,
                                              KnownTopFrames* known_out) {
  auto j = ParseJson(loops_body, "loops");
  if (!j.ok()) {
    return j.status();
  }
  auto arr = ArrayOf(*j, "loops");
  if (!arr.ok()) {
    return arr.status();
  }
  KnownTopFrames local;
  KnownTopFrames& known = known_out != nullptr ? *known_out : local;
  LearnTopFrames(recent_stalls, &known);
  // The latest stall of each loop gives its top frame when none is ongoing; stalls that started
  // within the last minute give its rate.
  std::map<LoopKey, const StallFinding*> latest;
  std::map<LoopKey, uint64_t> last_minute;
  for (const StallFinding& s : recent_stalls) {
    const LoopKey k = KeyOf(s);
    auto it = latest.find(k);
    if (it == latest.end() || it->second->start_ns < s.start_ns) {
      latest[k] = &s;
    }
    if (s.start_ns >= now_ns - kMinuteNs) {
      ++last_minute[k];
    }
  }
  auto top_of = [&](const StallFinding& s, LoopRow* r) {
    r->top_frame = StallTopFrame(s);
    if (r->top_frame.empty()) {
      r->top_frame = EarlierTopFrame(s, known);
      r->top_frame_earlier = !r->top_frame.empty();
    }
  };
  std::vector<LoopRow> rows;
  std::set<LoopKey> keys;
  try {
    for (const json& l : *arr) {
      LoopRow r;
      r.service = l.value("service", "");
      r.pid = l.value("pid", int64_t{0});
      r.loop = l.value("loop", "");
      r.connected = l.value("connected", true);
      r.silent = l.value("silent", false);
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
      keys.insert(key);
      if (l.contains("ongoing") && l["ongoing"].is_object()) {
        auto s = StallFromJson(l["ongoing"]);
        if (s.ok()) {
          r.ongoing_s = s->duration_s;
          r.ongoing_class = StallClassName(s->stall_class);
          LearnTopFrames({*s}, &known);
          top_of(*s, &r);
        }
      }
      if (r.top_frame.empty()) {
        if (auto it = latest.find(key); it != latest.end()) {
          top_of(*it->second, &r);
        }
      }
      if (r.top_frame.empty()) {
        if (auto it = known.find(key); it != known.end()) {
          r.top_frame = it->second.second;
        }
      }
      std::optional<uint64_t> counted;
      if (rate != nullptr) {
        rate->Add(key, now_ns, r.stalls_total);
        counted = rate->LastMinute(key);
      }
      if (auto it = last_minute.find(key); it != last_minute.end()) {
        counted = std::max(counted.value_or(0), it->second);
      } else if (!counted.has_value() && !recent_stalls.empty()) {
        counted = 0;  // the recent stalls say: none in the last minute
      }
      r.stalls_per_min = counted;
      rows.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("bad loop from the daemon: ") + e.what());
  }
  if (rate != nullptr) {
    rate->Retain(keys);
  }
  // Live processes first; among them loops stalled right now, then by p99.
  std::stable_sort(rows.begin(), rows.end(), [](const LoopRow& a, const LoopRow& b) {
    if (a.connected != b.connected) {
      return a.connected;
    }
    if ((a.ongoing_s > 0) != (b.ongoing_s > 0)) {
      return a.ongoing_s > 0;
    }
    return a.p99_s > b.p99_s;
  });
  return rows;
}

std::string FormatTop(const std::vector<LoopRow>& rows, const std::string& source, size_t width) {
  width = std::max<size_t>(width, 40);
  size_t ongoing = 0, gone = 0;
  for (const auto& r : rows) {
    ongoing += r.ongoing_s > 0 ? 1 : 0;
    gone += r.connected ? 0 : 1;
  }
  std::string out = "stallwatch top — " + source + " — " + std::to_string(rows.size()) + " loop" +
                    (rows.size() == 1 ? "" : "s") +
                    (gone > 0 ? " (" + std::to_string(gone) + " gone)" : "") + ", " +
                    std::to_string(ongoing) + " stalled now";
  out = Cut(out, width) + "\n";
  // Cells of every row; the widths follow the contents.
  enum Col { kService, kLoop, kPid, kP50, kP99, kMax, kUtil, kRate, kNow, kCols };
  static const char* const kTitles[kCols] = {"SERVICE", "LOOP", "PID",        "P50",    "P99",
                                             "MAX",     "UTIL", "STALLS/MIN", "STALLED"};
  static const bool kRight[kCols] = {false, false, true, true, true, true, true, true, false};
  std::vector<std::array<std::string, kCols>> cells;
  std::vector<std::string> frames;
  for (const LoopRow& r : rows) {
    std::array<std::string, kCols> c;
    c[kService] = r.service;
    c[kLoop] = r.loop;
    c[kPid] = std::to_string(r.pid);
    c[kP50] = r.has_window ? HumanSeconds(r.p50_s) : "-";
    c[kP99] = r.has_window ? HumanSeconds(r.p99_s) : "-";
    c[kMax] = r.has_window ? HumanSeconds(r.max_s) : "-";
    char util[16];
    std::snprintf(util, sizeof util, "%.0f%%", r.utilization * 100);
    c[kUtil] = r.has_window ? util : "-";
    c[kRate] = r.stalls_per_min.has_value() ? std::to_string(*r.stalls_per_min) : "-";
    c[kNow] = !r.connected      ? "gone"
              : r.ongoing_s > 0 ? HumanSeconds(r.ongoing_s) + " " + r.ongoing_class
              : r.silent        ? "silent"
                                : "-";
    cells.push_back(std::move(c));
    frames.push_back(
        r.top_frame.empty() ? "" : (r.top_frame_earlier ? "as before: " : "") + r.top_frame);
  }
  std::array<size_t, kCols> need{};
  for (int i = 0; i < kCols; ++i) {
    need[i] = DisplayWidth(kTitles[i]);
    for (const auto& c : cells) {
      need[i] = std::max(need[i], DisplayWidth(c[i]));
    }
  }
  size_t frame_need = DisplayWidth("TOP FRAME");
  for (const auto& f : frames) {
    frame_need = std::max(frame_need, DisplayWidth(f));
  }
  std::array<bool, kCols> on{};
  on.fill(true);
  auto row_width = [&](const std::array<size_t, kCols>& w) {
    size_t total = 0, n = 0;
    for (int i = 0; i < kCols; ++i) {
      if (!on[i]) {
        continue;
      }
      total += w[i];
      ++n;
    }
    return total + (n - 1);  // one space between columns
  };
  std::array<size_t, kCols> w = need;
  // The frame goes on the row when it fits there whole (or nearly); else on a line of its own.
  constexpr size_t kFrameGap = 2;
  constexpr size_t kMinInlineFrame = 40;
  const bool inline_frame =
      row_width(w) + kFrameGap + std::min(frame_need, kMinInlineFrame) <= width;
  if (!inline_frame) {
    // Make room: drop P50, then MAX (then UTIL and PID on very narrow terminals), then shorten
    // the names, sharing what is left.
    for (Col drop : {kP50, kMax, kUtil, kPid}) {
      if (row_width(w) <= width) {
        break;
      }
      on[drop] = false;
    }
    if (row_width(w) > width) {
      const size_t fixed = row_width(w) - w[kService] - w[kLoop];
      const size_t left = width > fixed + 8 ? width - fixed : 8;  // for both names
      const size_t half = left / 2;
      if (need[kService] <= half) {
        w[kLoop] = left - need[kService];
      } else if (need[kLoop] <= half) {
        w[kService] = left - need[kLoop];
      } else {
        w[kService] = half;
        w[kLoop] = left - half;
      }
    }
  }
  const size_t frame_col = row_width(w) + kFrameGap;
  auto line = [&](const std::array<std::string, kCols>& c, const std::string& frame) {
    std::string l;
    for (int i = 0; i < kCols; ++i) {
      if (!on[i]) {
        continue;
      }
      if (!l.empty()) {
        l += ' ';
      }
      l += Pad(Cut(c[i], w[i]), w[i], kRight[i]);
    }
    if (inline_frame && !frame.empty()) {
      l += std::string(kFrameGap, ' ') +
           (frame == "TOP FRAME" ? frame
                                 : CutLeft(frame, width > frame_col ? width - frame_col : 1));
    }
    while (!l.empty() && l.back() == ' ') {
      l.pop_back();
    }
    return Cut(l, width);
  };
  std::array<std::string, kCols> titles;
  for (int i = 0; i < kCols; ++i) {
    titles[i] = kTitles[i];
  }
  out += line(titles, inline_frame ? "TOP FRAME" : "") + "\n";
  if (rows.empty()) {
    out += "(no loops reported yet)\n";
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    out += line(cells[i], frames[i]) + "\n";
    if (!inline_frame && !frames[i].empty()) {
      const std::string lead = "  ↳ ";
      out += lead + CutLeft(frames[i], width - DisplayWidth(lead)) + "\n";
    }
  }
  return out;
}

}  // namespace stallwatch::cli
