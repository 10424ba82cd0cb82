// The Registry's stall stack store (registry.h): what the daemon keeps of a stall
// (TrimForStorage), the merged stacks of every stall sampled, keyed by their folded form
// (FoldedStack, MergeStacks), bounded in count, per service and in bytes, the least recently
// sampled evicted first (TouchStack, EvictStack); and their views for /api/v1/stacks
// (StacksJson, StacksFolded).
//
// Threading: as the Registry, the daemon's loop thread only; nothing here locks.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

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
  for (const auto& s : after.stacks) {
    const std::string key = internal::FoldedStack(service, s);
    const uint64_t old = seen.count(key) ? seen[key] : 0;
    if (s.samples <= old) {
      continue;
    }
    const uint64_t add = s.samples - old;
    auto it = stacks_.find(key);
    if (it == stacks_.end()) {
      StallFinding holder;
      holder.stacks.push_back(s);
      const size_t bytes = internal::TrimForStorage(&holder) + key.size();
      if (options_.max_stacks == 0 || options_.max_stacks_per_service == 0 ||
          bytes > options_.max_stacks_bytes) {
        stacks_overflow_ += add;
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
      it = stacks_.emplace(key, StackAgg{service, std::move(holder.stacks[0]), 0, bytes}).first;
      it->second.stack.samples = 0;
    }
    it->second.stack.samples += add;
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

}  // namespace stallwatch::daemon
