// The Registry's JSON API (registry.h): /api/v1/loops (LoopsJson) and /api/v1/stalls
// (StallsJson), findings in the finding format of common/finding_json.h, an ongoing stall's
// duration being its age now (StallJsonAt). /api/v1/stacks is the stack store's
// (stack_store.cc).
//
// Threading: as the Registry, the daemon's loop thread only; nothing here locks.
#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "registry.h"
#include "stallwatch/common/finding_json.h"

namespace stallwatch::daemon {

using nlohmann::json;

json Registry::StallJsonAt(const StallFinding& f, Now now) const {
  json j = ToJson(f);
  if (f.ongoing) {
    j["duration_s"] = std::max(f.duration_s, static_cast<double>(now.unix_ns - f.start_ns) / 1e9);
  }
  return j;
}

void Registry::EachLoopJson(Now now, const std::function<void(json&&)>& f) const {
  std::set<ProcKey> silent_procs;
  for (const auto& [id, c] : conns_) {
    if (c.hello && c.silent) {
      silent_procs.emplace(c.hello->service, c.hello->pid);
    }
  }
  for (const auto& [key, l] : loops_) {
    const auto& [service, pid, loop] = key;
    const auto p = procs_.find(ProcKey{service, pid});
    const bool silent = silent_procs.count(ProcKey{service, pid}) > 0;
    json j{{"service", service},
           {"pid", pid},
           {"process", p != procs_.end() ? p->second.slot : 0},
           {"loop", loop},
           {"host", p != procs_.end() ? p->second.host : ""},
           {"executable", p != procs_.end() ? p->second.executable : ""},
           {"agent_version", p != procs_.end() ? p->second.agent_version : ""},
           {"connected", p != procs_.end() && p->second.connections > 0},
           {"silent", silent},
           {"stalls_total", l.counted_stalls},
           {"last_seen_ns", l.last_seen_unix_ns},
           // What the loop is, as its latest delay window says: "" before the first window
           // (and from agents that predate the fields).
           {"kind", l.last_window ? l.last_window->loop_kind : ""},
           {"runtime", l.last_window ? l.last_window->runtime : ""}};
    j["last_window"] = l.last_window ? ToJson(*l.last_window) : json(nullptr);
    j["ongoing"] = l.ongoing ? StallJsonAt(*l.ongoing, now) : json(nullptr);
    f(std::move(j));
  }
}

json Registry::LoopsJson(Now now) const {
  json loops = json::array();
  EachLoopJson(now, [&](json&& j) { loops.push_back(std::move(j)); });
  return json{{"loops", std::move(loops)}};
}

std::string Registry::LoopsJsonText(Now now) const {
  // As LoopsJson(now).dump() + "\n", but one loop's values at a time: the whole document as
  // JSON values is ~5 KiB per loop (20 MiB with 4000 loops, the daemon's peak memory), its
  // text ~0.6 KiB per loop.
  std::string out;
  out.reserve(loops_.size() * 700 + 64);  // ~650 bytes a loop: no doubling copies on the way
  out = "{\"loops\":[";
  bool first = true;
  EachLoopJson(now, [&](json&& j) {
    if (!first) {
      out += ',';
    }
    first = false;
    out += j.dump(-1, ' ', false, json::error_handler_t::replace);
  });
  out += "]}\n";
  return out;
}

json Registry::StallsJson(const StallQuery& q, Now now) const {
  std::vector<const StallFinding*> all;
  if (!q.ongoing.has_value() || *q.ongoing) {
    for (const auto& [key, l] : loops_) {
      if (l.ongoing) {
        all.push_back(&*l.ongoing);
      }
    }
  }
  if (!q.ongoing.has_value() || !*q.ongoing) {
    for (const auto& [f, bytes] : recent_) {
      all.push_back(&f);
    }
  }
  std::erase_if(all, [&](const StallFinding* f) {
    return (q.service && f->service != *q.service) || (q.pid && f->pid != *q.pid) ||
           (q.loop && f->loop != *q.loop) || (q.stall_id && f->stall_id != *q.stall_id);
  });
  // Newest first: ongoing stalls lead (they started last or are still the news).
  std::stable_sort(all.begin(), all.end(), [](const StallFinding* a, const StallFinding* b) {
    if (a->ongoing != b->ongoing) {
      return a->ongoing;
    }
    return a->start_ns > b->start_ns;
  });
  json stalls = json::array();
  for (size_t i = 0; i < all.size() && i < q.limit; ++i) {
    stalls.push_back(StallJsonAt(*all[i], now));
  }
  return json{{"stalls", std::move(stalls)}};
}

}  // namespace stallwatch::daemon
