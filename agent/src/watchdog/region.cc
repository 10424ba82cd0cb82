#include "watchdog/region.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "stallwatch/common/finding_json.h"

namespace stallwatch::internal {

namespace {
// A fence between the sequence number and the bytes of a SharedText. TSan does not support
// fences (and the watchdog process is not used under TSan): an RMW stands in there.
inline void Fence(std::memory_order order) {
#if defined(__SANITIZE_THREAD__)
  static std::atomic<int> dummy{0};
  dummy.fetch_add(0, order);
#else
  std::atomic_thread_fence(order);
#endif
}
}  // namespace

void PublishText(SharedText* t, const std::string& text) {
  const size_t n = std::min(text.size(), kSnapshotBytes);
  const uint64_t s = t->seq.load(std::memory_order_relaxed);
  t->seq.store(s + 1, std::memory_order_relaxed);
  Fence(std::memory_order_release);
  std::memcpy(t->bytes, text.data(), n);
  t->len.store(static_cast<uint32_t>(n), std::memory_order_relaxed);
  t->seq.store(s + 2, std::memory_order_release);
}

std::string ReadText(const SharedText& t) {
  std::string out;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const uint64_t s1 = t.seq.load(std::memory_order_acquire);
    if (s1 & 1) {
      sched_yield();
      continue;
    }
    const uint32_t n = std::min<uint32_t>(t.len.load(std::memory_order_relaxed), kSnapshotBytes);
    out.assign(t.bytes, n);
    Fence(std::memory_order_acquire);
    if (t.seq.load(std::memory_order_relaxed) == s1) {
      return out;
    }
  }
  return std::string();
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void FutexWait(std::atomic<uint32_t>* word, uint32_t seen, int64_t timeout_ns) {
  timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000),
              static_cast<long>(timeout_ns % 1'000'000'000)};
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

void Bump(std::atomic<uint32_t>* word) {
  word->fetch_add(1, std::memory_order_release);
  FutexWakeAll(word);
}

void SnapshotWriter::Publish(const agent::internal::PublishedSnapshot& snap, SharedText* out) {
  nlohmann::json j;
  // The snapshot's recent stalls, oldest first: the texts kept from the last publish, and a
  // place for each stall not serialized yet (`fresh`: where, and a copy made under the lock).
  std::deque<std::pair<uint64_t, std::string>> texts;
  std::vector<std::pair<size_t, StallFinding>> fresh;
  {
    std::lock_guard<std::mutex> lock(snap.mu);
    j["name"] = snap.name;
    if (snap.ongoing) {
      j["ongoing"] = ToJson(*snap.ongoing);
    }
    if (snap.last_window) {
      j["last_window"] = ToJson(*snap.last_window);
    }
    size_t kept = 0;  // recent_ and snap.recent are both in closing order
    for (const StallFinding& f : snap.recent) {
      while (kept < recent_.size() && recent_[kept].first != f.stall_id) {
        ++kept;
      }
      if (kept < recent_.size()) {
        texts.emplace_back(f.stall_id, std::move(recent_[kept++].second));
      } else {
        fresh.emplace_back(texts.size(), f);
        texts.emplace_back(f.stall_id, std::string());
      }
    }
  }
  for (const auto& [at, f] : fresh) {
    texts[at].second = ToJson(f).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  recent_ = std::move(texts);

  // {"name":…,…,"recent":[oldest,…,newest]}: the head without its closing brace, then the array.
  std::string head = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  head.pop_back();
  static constexpr std::string_view kRecentKey = ",\"recent\":[";
  size_t first = 0;  // the oldest stall that fits
  size_t size = head.size() + kRecentKey.size() + 2;
  for (const auto& t : recent_) {
    size += t.second.size() + 1;
  }
  while (size > kSnapshotBytes && first < recent_.size()) {
    size -= recent_[first++].second.size() + 1;
  }
  if (size > kSnapshotBytes) {
    return;
  }
  std::string text = std::move(head);
  text.reserve(size);
  text += kRecentKey;
  for (size_t i = first; i < recent_.size(); ++i) {
    if (i > first) {
      text += ',';
    }
    text += recent_[i].second;
  }
  text += "]}";
  PublishText(out, text);
}

void PublishSnapshot(const agent::internal::PublishedSnapshot& snap, SharedText* out) {
  SnapshotWriter().Publish(snap, out);
}

void PullSnapshot(const SharedText& shared, agent::internal::PublishedSnapshot* snap) {
  const std::string text = ReadText(shared);
  if (text.empty()) {
    return;
  }
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return;
  }
  std::deque<StallFinding> recent;
  if (auto it = j.find("recent"); it != j.end() && it->is_array()) {
    for (const auto& e : *it) {
      if (auto f = StallFromJson(e); f.ok()) {
        recent.push_back(std::move(*f));
      }
    }
  }
  std::optional<StallFinding> ongoing;
  if (auto it = j.find("ongoing"); it != j.end()) {
    if (auto f = StallFromJson(*it); f.ok()) {
      ongoing = std::move(*f);
    }
  }
  std::optional<DelayFinding> window;
  if (auto it = j.find("last_window"); it != j.end()) {
    if (auto d = DelayFromJson(*it); d.ok()) {
      window = std::move(*d);
    }
  }
  std::lock_guard<std::mutex> lock(snap->mu);
  if (auto it = j.find("name"); it != j.end() && it->is_string()) {
    snap->name = it->get<std::string>();
  }
  snap->recent = std::move(recent);
  snap->ongoing = std::move(ongoing);
  snap->last_window = std::move(window);
}

}  // namespace stallwatch::internal
