// The Registry's blocking-call ledger (registry.h): the calls findings of each loop summed by
// call site (ApplyCalls) for /api/v1/calls (CallsJson), and by call into the series
// stallwatch_blocking_calls_total and stallwatch_blocking_call_seconds (metrics_exporter.cc).
// Sites are bounded per loop and in all (RegistryOptions::max_call_sites*); the calls of a site
// with no room still count in the series.
//
// Threading: as the Registry, the daemon's loop thread only; nothing here locks.
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "registry.h"
#include "stallwatch/common/blocking_calls.h"
#include "stallwatch/common/finding_json.h"

namespace stallwatch::daemon {

using nlohmann::json;

namespace {

constexpr double kNsPerSecond = 1e9;
// What is kept of a site's names (as TrimForStorage keeps of a stall's frames).
constexpr size_t kMaxSiteNameBytes = 512;

std::string Cut(const std::string& s) {
  return s.size() <= kMaxSiteNameBytes ? s : s.substr(0, kMaxSiteNameBytes);
}

// Adds `add` into the sorted sparse histogram `into`.
void MergeBuckets(const SparseHistogram& add, SparseHistogram* into) {
  for (const auto& [index, count] : add) {
    auto it = std::lower_bound(into->begin(), into->end(), index,
                               [](const auto& e, uint32_t i) { return e.first < i; });
    if (it != into->end() && it->first == index) {
      it->second += count;
    } else {
      into->emplace(it, index, count);
    }
  }
}

// The 99th percentile of a site's calls: the middle of the bucket that holds it, at most the
// largest call seen.
double P99Seconds(const CallSite& s) {
  uint64_t n = 0;
  for (const auto& e : s.buckets) {
    n += e.second;
  }
  if (n == 0) {
    return s.max_s;
  }
  const auto rank = static_cast<uint64_t>(0.99 * static_cast<double>(n));
  uint64_t below = 0;
  for (const auto& [index, count] : s.buckets) {
    below += count;
    if (below > rank) {
      const auto b = static_cast<int>(index);
      const uint64_t lo = CallBucketLowerNs(b);
      const uint64_t hi = CallBucketUpperNs(b);
      const double mid = hi == UINT64_MAX ? static_cast<double>(lo)
                                          : (static_cast<double>(lo) + static_cast<double>(hi)) / 2;
      return std::min(mid / kNsPerSecond, s.max_s);
    }
  }
  return s.max_s;
}

}  // namespace

void Registry::ApplyCalls(CallsFinding&& f, Loop& l) {
  const auto window_ns = static_cast<int64_t>(f.window_s * kNsPerSecond);
  if (!l.calls) {
    l.calls = std::make_unique<LoopCalls>();
    l.calls->first_ns = f.end_ns - window_ns;
  }
  LoopCalls& lc = *l.calls;
  lc.agent_overflow += f.overflow;
  // The series: one observation per call a window, its sites summed.
  std::map<int, std::pair<uint64_t, double>> by_call;
  std::map<int, SparseHistogram> call_buckets;
  uint64_t not_kept = 0;
  for (auto& c : f.calls) {
    const int call = BlockingCallIndex(c.call);  // the decoder accepted only listed calls
    if (call < 0) {
      continue;
    }
    auto& [count, sum] = by_call[call];
    count += c.count;
    sum += c.total_s;
    MergeBuckets(c.buckets, &call_buckets[call]);
    CallSiteKey key{call, Cut(c.site.function), Cut(c.site.file), c.site.line, Cut(c.site.module)};
    auto it = lc.sites.find(key);
    if (it == lc.sites.end()) {
      if (lc.sites.size() >= options_.max_call_sites_per_loop ||
          call_sites_ >= options_.max_call_sites) {
        lc.sites_not_kept += c.count;
        not_kept += c.count;
        continue;
      }
      it = lc.sites.emplace(std::move(key), CallSite{}).first;
      it->second.first_ns = f.end_ns - window_ns;
      it->second.kind = Cut(c.site.kind);
      ++call_sites_;
    }
    CallSite& s = it->second;
    s.count += c.count;
    s.total_s += c.total_s;
    s.max_s = std::max(s.max_s, c.max_s);
    s.last_ns = std::max(s.last_ns, f.end_ns);
    MergeBuckets(c.buckets, &s.buckets);
  }
  for (const auto& [call, cs] : by_call) {
    ObserveCalls(l, call, cs.first, cs.second, call_buckets[call]);
  }
  if (not_kept > 0) {
    CountCallSitesNotKept(not_kept);
  }
}

json Registry::CallsJson(const CallQuery& q, Now now) const {
  struct Row {
    const LoopKey* loop;
    const CallSiteKey* key;
    const CallSite* site;
    const LoopCalls* calls;
  };
  std::vector<Row> rows;
  uint64_t overflow = 0, not_kept = 0;
  for (const auto& [lkey, l] : loops_) {
    const auto& [service, pid, loop] = lkey;
    if (!l.calls || (q.service && *q.service != service) || (q.pid && *q.pid != pid) ||
        (q.loop && *q.loop != loop)) {
      continue;
    }
    overflow += l.calls->agent_overflow;
    not_kept += l.calls->sites_not_kept;
    for (const auto& [skey, site] : l.calls->sites) {
      const auto& info = kBlockingCalls[static_cast<size_t>(std::get<0>(skey))];
      if ((q.call && *q.call != info.name) || (q.family && *q.family != info.family)) {
        continue;
      }
      rows.push_back(Row{&lkey, &skey, &site, l.calls.get()});
    }
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.site->total_s != b.site->total_s ? a.site->total_s > b.site->total_s : *a.key < *b.key;
  });
  json out = json::array();
  for (size_t i = 0; i < rows.size() && i < q.limit; ++i) {
    const Row& r = rows[i];
    const auto& [service, pid, loop] = *r.loop;
    const auto& [call, function, file, line, module] = *r.key;
    const auto& info = kBlockingCalls[static_cast<size_t>(call)];
    const auto p = procs_.find(ProcKey{service, pid});
    Frame site;
    site.function = function;
    site.file = file;
    site.line = line;
    site.module = module;
    const CallSite& s = *r.site;
    if (!s.kind.empty()) {
      site.kind = s.kind;
    }
    out.push_back(json{
        {"service", service},
        {"pid", pid},
        {"process", p != procs_.end() ? p->second.slot : 0},
        {"loop", loop},
        {"call", info.name},
        {"family", info.family},
        {"site", ToJson(site)},
        {"count", s.count},
        {"total_s", s.total_s},
        {"mean_s", s.count > 0 ? s.total_s / static_cast<double>(s.count) : 0.0},
        {"p99_s", P99Seconds(s)},
        {"max_s", s.max_s},
        {"first_ns", s.first_ns},
        {"last_ns", s.last_ns},
        // The time the loop's ledger has been watched: the span the figures add up over.
        {"observed_s",
         std::max(0.0, static_cast<double>(now.unix_ns - r.calls->first_ns) / kNsPerSecond)},
    });
  }
  return json{{"calls", std::move(out)},
              {"sites", rows.size()},
              {"overflow", overflow},
              {"sites_not_kept", not_kept}};
}

}  // namespace stallwatch::daemon
