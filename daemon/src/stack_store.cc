// The Registry's stall stack store (registry.h): what the daemon keeps of a stall
// (TrimForStorage), the merged stacks of every stall sampled, keyed by their folded form
// (FoldedStack, MergeStacks), bounded in count, per service and in bytes, the least recently
// sampled evicted first (TouchStack, EvictStack); and their views for /api/v1/stacks
// (StacksJson, StacksFolded).
//
// Threading: as the Registry, the daemon's loop thread only; nothing here locks.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "pprof.h"
#include "registry.h"
#include "stallwatch/common/finding_json.h"

namespace stallwatch::daemon {

using nlohmann::json;

namespace internal {

size_t TrimForStorage(StallFinding* f) {
  constexpr size_t kStacks = 16, kFrames = 64, kString = 512;
  auto cut = [&](std::string& str) {
    if (str.size() > kString) {
      str.resize(kString);
    }
    return str.size();
  };
  if (f->stacks.size() > kStacks) {
    std::stable_sort(f->stacks.begin(), f->stacks.end(),
                     [](const Stack& a, const Stack& b) { return a.samples > b.samples; });
    f->stacks.resize(kStacks);
  }
  size_t bytes = sizeof(StallFinding) + cut(f->service) + cut(f->loop) + cut(f->syscall) +
                 cut(f->fd_target) + cut(f->hint) + cut(f->sampling_note);
  for (auto& s : f->stacks) {
    if (s.frames.size() > kFrames) {
      s.frames.resize(kFrames);
    }
    bytes += sizeof(Stack) + cut(s.method);
    for (auto& fr : s.frames) {
      bytes += sizeof(Frame) + cut(fr.function) + cut(fr.module) + cut(fr.file);
    }
  }
  return bytes;
}

std::string FoldedStack(const std::string& service, const Stack& s) {
  std::string out = service;
  for (auto it = s.frames.rbegin(); it != s.frames.rend(); ++it) {
    out.push_back(';');
    std::string name = it->function;
    if (name.empty()) {
      const size_t slash = it->module.rfind('/');
      char off[32];
      std::snprintf(off, sizeof(off), "+0x%llx", static_cast<unsigned long long>(it->offset));
      name = (slash == std::string::npos ? it->module : it->module.substr(slash + 1)) + off;
    }
    // ';' and ' ' separate frames and the count in the folded format.
    std::replace(name.begin(), name.end(), ';', ':');
    std::replace(name.begin(), name.end(), ' ', '_');
    out += name;
  }
  return out;
}

}  // namespace internal

void Registry::MergeStacks(const std::string& service, const StallFinding* before,
                           const StallFinding& after) {
  // Stall updates carry the stall's stacks so far: merge only the new samples.
  std::map<std::string, uint64_t> seen;
  if (before) {
    for (const auto& s : before->stacks) {
      seen[internal::FoldedStack(service, s)] += s.samples;
    }
  }
  struct Added {
    std::string key;
    const Stack* stack;
    uint64_t samples;
    int64_t stall_ns;
  };
  std::vector<Added> added;
  uint64_t added_samples = 0, all_samples = 0;
  for (const auto& s : after.stacks) {
    std::string key = internal::FoldedStack(service, s);
    const uint64_t old = seen.count(key) ? seen[key] : 0;
    all_samples += s.samples;
    if (s.samples <= old) {
      continue;
    }
    added_samples += s.samples - old;
    added.push_back(Added{std::move(key), &s, s.samples - old, 0});
  }
  // The stall time this report adds, and the span it covers: from the previous report's end
  // (or the stall's start) to this one's. That time is shared by the samples this report adds,
  // in proportion; a report that adds time but no samples (a closing one, say) shares it among
  // the stall's stacks by their samples so far. Summed over its stacks, a stall's time is its
  // duration (docs/daemon.md, stall_time).
  auto end_of = [](const StallFinding& f) {
    return f.start_ns + static_cast<int64_t>(std::llround(std::max(0.0, f.duration_s) * 1e9));
  };
  const int64_t to_ns = end_of(after);
  const int64_t from_ns = before ? std::min(end_of(*before), to_ns) : after.start_ns;
  const int64_t time_ns = to_ns - from_ns;
  if (added.empty() && time_ns > 0 && all_samples > 0) {
    for (const auto& s : after.stacks) {
      if (s.samples > 0) {
        added.push_back(Added{internal::FoldedStack(service, s), &s, 0, 0});
      }
    }
  }
  const double total = static_cast<double>(added_samples > 0 ? added_samples : all_samples);
  for (Added& a : added) {
    const double share = static_cast<double>(added_samples > 0 ? a.samples : a.stack->samples);
    a.stall_ns = total > 0 ? std::llround(static_cast<double>(time_ns) * share / total) : 0;
    stack_records_.Add(a.key, *a.stack, service, after.loop, after.stall_class, from_ns, to_ns,
                       a.samples, a.stall_ns);
  }

  for (Added& a : added) {
    auto it = stacks_.find(a.key);
    if (a.samples == 0) {
      if (it != stacks_.end()) {
        it->second.stall_ns += a.stall_ns;  // time only: not a new sample, the LRU order stays
      }
      continue;
    }
    if (it == stacks_.end()) {
      StallFinding holder;
      holder.stacks.push_back(*a.stack);
      const size_t bytes = internal::TrimForStorage(&holder) + a.key.size();
      if (options_.max_stacks == 0 || options_.max_stacks_per_service == 0 ||
          bytes > options_.max_stacks_bytes) {
        stacks_overflow_ += a.samples;
        continue;
      }
      // Room first within the service's share (one service's churn cannot push out the
      // others), then within the table.
      for (;;) {
        auto mine = service_stacks_.find(service);
        if (mine == service_stacks_.end() ||
            mine->second.size() < options_.max_stacks_per_service) {
          break;
        }
        EvictStack(mine->second.begin()->second);
      }
      while (!stacks_lru_.empty() && (stacks_.size() >= options_.max_stacks ||
                                      stacks_bytes_ + bytes > options_.max_stacks_bytes)) {
        EvictStack(stacks_lru_.begin()->second);
      }
      stacks_bytes_ += bytes;
      it = stacks_.emplace(a.key, StackAgg{service, std::move(holder.stacks[0]), 0, bytes}).first;
      it->second.stack.samples = 0;
    }
    it->second.stack.samples += a.samples;
    it->second.stall_ns += a.stall_ns;
    TouchStack(it);
  }
}

void Registry::TouchStack(StackMap::iterator it) {
  StackAgg& a = it->second;
  auto& mine = service_stacks_[a.service];
  if (a.seq != 0) {
    stacks_lru_.erase(a.seq);
    mine.erase(a.seq);
  }
  a.seq = ++stack_seq_;
  stacks_lru_.emplace(a.seq, it);
  mine.emplace(a.seq, it);
}

void Registry::EvictStack(StackMap::iterator it) {
  StackAgg& a = it->second;
  stacks_overflow_ += a.stack.samples;
  stacks_bytes_ -= a.bytes;
  stacks_lru_.erase(a.seq);
  if (auto mine = service_stacks_.find(a.service); mine != service_stacks_.end()) {
    mine->second.erase(a.seq);
    if (mine->second.empty()) {
      service_stacks_.erase(mine);
    }
  }
  stacks_.erase(it);
  CountStackEvicted();
}

json Registry::StacksJson() const {
  std::vector<const StackAgg*> v;
  for (const auto& [k, s] : stacks_) {
    v.push_back(&s);
  }
  std::stable_sort(v.begin(), v.end(), [](const StackAgg* a, const StackAgg* b) {
    return a->stack.samples > b->stack.samples;
  });
  json stacks = json::array();
  for (const auto* s : v) {
    json j = ToJson(s->stack);
    j["service"] = s->service;
    stacks.push_back(std::move(j));
  }
  return json{{"stacks", std::move(stacks)}, {"samples_not_kept", stacks_overflow_}};
}

std::string Registry::StacksFolded() const {
  std::string out;
  for (const auto& [key, s] : stacks_) {
    out += key;
    out.push_back(' ');
    out += std::to_string(s.stack.samples);
    out.push_back('\n');
  }
  return out;
}

namespace {

// The filters of a query as `go tool pprof -comments` shows them.
std::string DescribeQuery(const StackQuery& q, Now now) {
  std::string out;
  auto add = [&](const char* name, const std::string& value) {
    out += out.empty() ? "" : " ";
    out += name;
    out += '=';
    out += value;
  };
  if (q.service) {
    add("service", *q.service);
  }
  if (q.loop) {
    add("loop", *q.loop);
  }
  if (q.stall_class) {
    add("class", StallClassName(*q.stall_class));
  }
  if (q.since) {
    add("since_ns", std::to_string(q.since->At(now.unix_ns)));
  }
  if (q.until) {
    add("until_ns", std::to_string(q.until->At(now.unix_ns)));
  }
  return out;
}

}  // namespace

json Registry::StacksJson(const StackQuery& q, Now now) const {
  if (!q.filtered()) {
    return StacksJson();
  }
  std::vector<StackTotal> totals = stack_records_.Select(q, now.unix_ns, false);
  std::stable_sort(totals.begin(), totals.end(),
                   [](const StackTotal& a, const StackTotal& b) { return a.samples > b.samples; });
  json stacks = json::array();
  for (const StackTotal& t : totals) {
    if (t.samples == 0) {
      continue;  // stall time only (a closing report): no sample of it was selected
    }
    Stack s = *t.stack;
    s.samples = t.samples;
    json j = ToJson(s);
    j["service"] = t.service;
    stacks.push_back(std::move(j));
  }
  return json{{"stacks", std::move(stacks)},
              {"samples_not_kept", stack_records_.samples_not_kept()},
              {"complete_since_ns", stack_records_.complete_since_ns()}};
}

std::string Registry::StacksFolded(const StackQuery& q, Now now) const {
  if (!q.filtered()) {
    return StacksFolded();
  }
  std::string out;
  for (const StackTotal& t : stack_records_.Select(q, now.unix_ns, false)) {
    if (t.samples == 0) {
      continue;
    }
    out += internal::FoldedStack(t.service, *t.stack);
    out.push_back(' ');
    out += std::to_string(t.samples);
    out.push_back('\n');
  }
  return out;
}

StatusOr<std::string> Registry::StacksPprof(const StackQuery& q, Now now) const {
  PprofOptions o;
  o.comments.push_back("stallwatchd stall stacks");
  std::vector<StackTotal> totals;
  if (!q.filtered()) {
    o.comments.push_back("every stack since the daemon started (merged table)");
    for (const auto& [key, a] : stacks_) {
      totals.push_back(StackTotal{a.service, "", "", &a.stack, a.stack.samples, a.stall_ns});
    }
  } else {
    o.comments.push_back("stack records where " + DescribeQuery(q, now));
    totals = stack_records_.Select(q, now.unix_ns, true);
    if (q.since) {
      o.time_ns = q.since->At(now.unix_ns);
      const int64_t until = q.until ? q.until->At(now.unix_ns) : now.unix_ns;
      o.duration_ns = std::max<int64_t>(0, until - o.time_ns);
    }
  }
  return EncodePprof(totals, o);
}

}  // namespace stallwatch::daemon
