#include "stack_records.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "registry.h"

namespace stallwatch::daemon {

StackRecords::StackRecords(size_t max_records, size_t max_bytes)
    : max_records_(max_records), max_bytes_(max_bytes) {}

void StackRecords::Add(const std::string& key, const Stack& stack, const std::string& service,
                       const std::string& loop, StallClass stall_class, int64_t from_ns,
                       int64_t to_ns, uint64_t samples, int64_t stall_ns) {
  const size_t record_bytes = sizeof(Record) + service.size() + loop.size();
  auto shape = shapes_.find(key);
  size_t shape_bytes = 0;
  Stack trimmed;
  if (shape == shapes_.end()) {
    StallFinding holder;
    holder.stacks.push_back(stack);
    shape_bytes = internal::TrimForStorage(&holder) + key.size();
    trimmed = std::move(holder.stacks[0]);
    trimmed.samples = 0;
  }
  if (max_records_ == 0 || record_bytes + shape_bytes > max_bytes_) {
    samples_not_kept_ += samples;
    complete_since_ns_ = std::max(complete_since_ns_, to_ns);
    return;
  }
  if (shape != shapes_.end()) {
    ++shape->second.refs;  // held: making room below cannot drop it with its last record
  }
  while (!records_.empty() &&
         (records_.size() >= max_records_ || bytes_ + record_bytes + shape_bytes > max_bytes_)) {
    DropOldest();
  }
  if (shape == shapes_.end()) {
    shape = shapes_.emplace(key, Shape{std::move(trimmed), shape_bytes, 1}).first;
    bytes_ += shape_bytes;
  }
  bytes_ += record_bytes;
  records_.push_back(
      Record{shape, service, loop, stall_class, from_ns, to_ns, samples, stall_ns, record_bytes});
}

void StackRecords::DropOldest() {
  Record& r = records_.front();
  samples_not_kept_ += r.samples;
  complete_since_ns_ = std::max(complete_since_ns_, r.to_ns);
  bytes_ -= r.bytes;
  if (--r.shape->second.refs == 0) {
    bytes_ -= r.shape->second.bytes;
    shapes_.erase(r.shape);
  }
  records_.pop_front();
}

std::vector<StackTotal> StackRecords::Select(const StackQuery& q, int64_t now_unix_ns,
                                             bool by_loop_and_class) const {
  const std::optional<int64_t> since =
      q.since ? std::optional<int64_t>(q.since->At(now_unix_ns)) : std::nullopt;
  const std::optional<int64_t> until =
      q.until ? std::optional<int64_t>(q.until->At(now_unix_ns)) : std::nullopt;
  using Key = std::tuple<const std::string*, std::string, StallClass>;
  auto less = [](const Key& a, const Key& b) {
    return std::tie(*std::get<0>(a), std::get<1>(a), std::get<2>(a)) <
           std::tie(*std::get<0>(b), std::get<1>(b), std::get<2>(b));
  };
  std::map<Key, StackTotal, decltype(less)> totals(less);
  for (const Record& r : records_) {
    if ((q.service && r.service != *q.service) || (q.loop && r.loop != *q.loop) ||
        (q.stall_class && r.stall_class != *q.stall_class) || (since && r.to_ns < *since) ||
        (until && r.from_ns > *until)) {
      continue;
    }
    Key key{&r.shape->first, by_loop_and_class ? r.loop : std::string(),
            by_loop_and_class ? r.stall_class : StallClass::kUnknown};
    auto [it, added] = totals.try_emplace(std::move(key));
    StackTotal& t = it->second;
    if (added) {
      t.service = r.service;
      if (by_loop_and_class) {
        t.loop = r.loop;
        t.stall_class = StallClassName(r.stall_class);
      }
      t.stack = &r.shape->second.stack;
    }
    t.samples += r.samples;
    t.stall_ns += r.stall_ns;
  }
  std::vector<StackTotal> out;
  out.reserve(totals.size());
  for (auto& [key, t] : totals) {
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace stallwatch::daemon
