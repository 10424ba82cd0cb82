#include "registry.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "stallwatch/common/finding_json.h"
#include "stallwatch/common/histogram.h"

namespace stallwatch::daemon {

constexpr size_t kMaxExpiriesPerSweep = 200;

namespace {
// An agent-chosen name inside a rejection message: control characters escaped, so that the
// message (logged, one line per rejected frame) stays one line. Names are at most
// wire::kMaxNameBytes long.
std::string Shown(const std::string& name) {
  std::string out;
  for (const char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", c);
      out += b;
    } else {
      out.push_back(ch);
    }
  }
  return out;
}
}  // namespace

using nlohmann::json;
using wire::DecodeError;
using wire::RejectReason;

Now Now::FromClocks() {
  Now n;
  n.mono_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now().time_since_epoch())
                  .count();
  n.unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  return n;
}

const std::vector<double>& DelayBucketsSeconds() {
  // Sub-millisecond resolution where a healthy loop lives (a timerfd probe's noise floor is
  // ~0.1 ms), then the conventional steps up to the seconds of a bad stall.
  static const std::vector<double> b = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                        0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};
  return b;
}

const std::vector<double>& IterationBucketsSeconds() {
  // Busy periods: coarser, it is their tail that matters.
  static const std::vector<double> b = {0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5};
  return b;
}

const std::vector<double>& StallBucketsSeconds() {
  static const std::vector<double> b = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return b;
}

namespace internal {

std::vector<double> Rebucket(const SparseHistogram& sparse, const std::vector<double>& bounds_s) {
  std::vector<double> out(bounds_s.size() + 1, 0.0);
  for (const auto& [index, count] : sparse) {
    if (index >= kHistBuckets || count == 0) continue;
    const uint64_t largest_ns = HistBucketUpper(index) - 1;
    // Compare in integer nanoseconds: bounds are decimal seconds, rounded to the nearest ns.
    size_t b = 0;
    while (b < bounds_s.size() &&
           static_cast<uint64_t>(std::llround(bounds_s[b] * 1e9)) < largest_ns) {
      ++b;
    }
    out[b] += static_cast<double>(count);
  }
  return out;
}

size_t TrimForStorage(StallFinding* f) {
  constexpr size_t kStacks = 16, kFrames = 64, kString = 512;
  auto cut = [&](std::string& str) {
    if (str.size() > kString) str.resize(kString);
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
    if (s.frames.size() > kFrames) s.frames.resize(kFrames);
    bytes += sizeof(Stack) + cut(s.method);
    for (auto& fr : s.frames)
      bytes += sizeof(Frame) + cut(fr.function) + cut(fr.module) + cut(fr.file);
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

// The series of one process (service, pid) live in a registry of their own: prometheus-cpp's
// Family::Remove scans the whole family, so with every process in one registry, expiring
// 1000 agents × 4 loops would cost seconds of the daemon's loop; per process, a departure
// costs only its own series. /metrics merges the registries' families by name.
struct Registry::ProcMetrics {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Histogram>& delay =
      prometheus::BuildHistogram()
          .Name("stallwatch_loop_delay_seconds")
          .Help("Lateness of the agent's probe timer: how long ready work waited for the loop")
          .Register(registry);
  prometheus::Family<prometheus::Histogram>& iteration =
      prometheus::BuildHistogram()
          .Name("stallwatch_loop_iteration_seconds")
          .Help(
              "Busy periods of the loop: from returning from the wait for events to the next wait")
          .Register(registry);
  prometheus::Family<prometheus::Gauge>& utilization =
      prometheus::BuildGauge()
          .Name("stallwatch_loop_utilization_ratio")
          .Help("Fraction of the last report window the loop spent busy (not waiting for events)")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& stalls =
      prometheus::BuildCounter()
          .Name("stallwatch_stalls_total")
          .Help(
              "Stalls closed, by class (cpu, blocked, starved, suspended; unknown when only the "
              "agent's counter says so)")
          .Register(registry);
  prometheus::Family<prometheus::Histogram>& stall_duration =
      prometheus::BuildHistogram()
          .Name("stallwatch_stall_duration_seconds")
          .Help("Exact duration of closed stalls")
          .Register(registry);
  prometheus::Family<prometheus::Gauge>& ongoing =
      prometheus::BuildGauge()
          .Name("stallwatch_stall_ongoing_seconds")
          .Help("Age of the loop's current stall; 0 when the loop is making progress")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& stack_samples =
      prometheus::BuildCounter()
          .Name("stallwatch_stack_samples_total")
          .Help("Stacks sampled by the agent during stalls")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& suppressed =
      prometheus::BuildCounter()
          .Name("stallwatch_reports_suppressed_total")
          .Help("Stack reports suppressed by the agent's rate limit")
          .Register(registry);
  prometheus::Family<prometheus::Counter>& dropped =
      prometheus::BuildCounter()
          .Name("stallwatch_agent_findings_dropped_total")
          .Help(
              "Findings the agent dropped from its bounded queue while the daemon was away "
              "(per process)")
          .Register(registry);
};

struct Registry::Metrics {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Gauge>& agents_family = prometheus::BuildGauge()
                                                             .Name("stallwatch_agents_connected")
                                                             .Help("Agent connections open now")
                                                             .Register(registry);
  prometheus::Gauge& agents = agents_family.Add({});
  prometheus::Family<prometheus::Gauge>& silent_family =
      prometheus::BuildGauge()
          .Name("stallwatch_agents_silent")
          .Help("Connected agents that sent nothing for longer than --silent-after (frozen?)")
          .Register(registry);
  prometheus::Gauge& silent = silent_family.Add({});
  prometheus::Family<prometheus::Counter>& rejected_family =
      prometheus::BuildCounter()
          .Name("stallwatch_daemon_frames_rejected_total")
          .Help("Frames from agents the daemon refused, by reason (docs/protocol.md)")
          .Register(registry);
  std::map<RejectReason, prometheus::Counter*> rejected;

  Metrics() {
    for (RejectReason r : wire::kAllRejectReasons) {
      rejected[r] = &rejected_family.Add({{"reason", wire::RejectReasonName(r)}});
    }
  }
};

struct Registry::LoopSeries {
  ProcMetrics* m = nullptr;
  prometheus::Labels labels;
  prometheus::Histogram* delay = nullptr;
  prometheus::Histogram* iteration = nullptr;
  prometheus::Histogram* stall_duration = nullptr;
  prometheus::Gauge* utilization = nullptr;
  prometheus::Gauge* ongoing = nullptr;
  prometheus::Counter* stack_samples = nullptr;
  prometheus::Counter* suppressed = nullptr;
  std::map<std::string, prometheus::Counter*> stalls;  // by class

  LoopSeries(ProcMetrics* metrics, prometheus::Labels l) : m(metrics), labels(std::move(l)) {
    delay = &m->delay.Add(labels, DelayBucketsSeconds());
    iteration = &m->iteration.Add(labels, IterationBucketsSeconds());
    stall_duration = &m->stall_duration.Add(labels, StallBucketsSeconds());
    utilization = &m->utilization.Add(labels);
    ongoing = &m->ongoing.Add(labels);
    stack_samples = &m->stack_samples.Add(labels);
    suppressed = &m->suppressed.Add(labels);
    // The four classes exist from the start so rate() sees the first stall of each.
    for (StallClass c :
         {StallClass::kCpu, StallClass::kBlocked, StallClass::kStarved, StallClass::kSuspended}) {
      Stalls(StallClassName(c));
    }
  }
  ~LoopSeries() {
    m->delay.Remove(delay);
    m->iteration.Remove(iteration);
    m->stall_duration.Remove(stall_duration);
    m->utilization.Remove(utilization);
    m->ongoing.Remove(ongoing);
    m->stack_samples.Remove(stack_samples);
    m->suppressed.Remove(suppressed);
    for (auto& [cls, c] : stalls) m->stalls.Remove(c);
  }
  prometheus::Counter& Stalls(const std::string& cls) {
    auto it = stalls.find(cls);
    if (it != stalls.end()) return *it->second;
    prometheus::Labels l = labels;
    l["class"] = cls;
    auto* c = &m->stalls.Add(l);
    stalls[cls] = c;
    return *c;
  }
};

Registry::Registry(RegistryOptions options)
    : options_(options), metrics_(std::make_unique<Metrics>()) {}

Registry::~Registry() {
  loops_.clear();  // series before their process's registry
  procs_.clear();
}

Registry::ConnId Registry::Connect(std::string peer, Now now) {
  const ConnId id = next_conn_++;
  conns_[id] = Conn{std::move(peer), std::nullopt, now.mono_ns, false};
  return id;
}

void Registry::Disconnect(ConnId id, Now now) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  if (it->second.hello) {
    const ProcKey key{it->second.hello->service, it->second.hello->pid};
    auto p = procs_.find(key);
    if (p != procs_.end() && --p->second.connections <= 0) {
      p->second.connections = 0;
      p->second.gone_since_mono_ns = now.mono_ns;
      // A process that went away has no stall going on that anyone can observe any more.
      for (auto& [lk, l] : loops_) {
        if (std::get<0>(lk) == key.first && std::get<1>(lk) == key.second) {
          l.ongoing.reset();
          l.series->ongoing->Set(0);
        }
      }
      spdlog::info("agent {} pid {} disconnected ({}); its series expire in {}s", key.first,
                   key.second, it->second.peer,
                   std::chrono::duration_cast<std::chrono::seconds>(options_.expire_after).count());
    }
  }
  conns_.erase(it);
}

void Registry::Reject(RejectReason reason) { metrics_->rejected.at(reason)->Increment(); }

uint64_t Registry::rejected(RejectReason reason) const {
  return static_cast<uint64_t>(metrics_->rejected.at(reason)->Value());
}

size_t Registry::silent_agents() const {
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += c.silent ? 1 : 0;
  return n;
}

Registry::Loop* Registry::FindOrAddLoop(const std::string& service, int64_t pid,
                                        const std::string& loop, DecodeError* err) {
  const LoopKey key{service, pid, loop};
  auto it = loops_.find(key);
  if (it != loops_.end()) return &it->second;
  size_t n = 0;
  for (auto l = loops_.lower_bound(LoopKey{service, pid, ""});
       l != loops_.end() && std::get<0>(l->first) == service && std::get<1>(l->first) == pid; ++l) {
    ++n;
  }
  if (n >= options_.max_loops_per_process) {
    *err = DecodeError{RejectReason::kLimit,
                       "agent " + Shown(service) + " pid " + std::to_string(pid) +
                           " reports more than " + std::to_string(options_.max_loops_per_process) +
                           " loops; further loops are ignored",
                       false};
    return nullptr;
  }
  auto proc = procs_.find(ProcKey{service, pid});
  if (proc == procs_.end() || !proc->second.metrics) {
    *err = DecodeError{RejectReason::kNoHello, "a loop of an agent that sent no hello", false};
    return nullptr;
  }
  Loop& l = loops_[key];
  l.series = std::make_unique<LoopSeries>(
      proc->second.metrics.get(),
      prometheus::Labels{{"service", service}, {"pid", std::to_string(pid)}, {"loop", loop}});
  return &l;
}

std::optional<DecodeError> Registry::Apply(ConnId id, wire::Message&& m, Now now) {
  auto cit = conns_.find(id);
  if (cit == conns_.end()) return DecodeError{RejectReason::kNoHello, "unknown connection", false};
  Conn& c = cit->second;
  c.last_frame_mono_ns = now.mono_ns;
  if (c.silent) {
    c.silent = false;
    spdlog::info("agent {} pid {} is sending again", c.hello ? c.hello->service : "?",
                 c.hello ? c.hello->pid : 0);
  }
  if (auto* h = std::get_if<wire::Hello>(&m)) {
    if (c.hello && (c.hello->service != h->service || c.hello->pid != h->pid)) {
      return DecodeError{RejectReason::kIdentityMismatch,
                         "a second hello on one connection must repeat the first identity (" +
                             Shown(c.hello->service) + ", pid " + std::to_string(c.hello->pid) +
                             ")",
                         false};
    }
    const ProcKey key{h->service, h->pid};
    Proc& p = procs_[key];
    if (!c.hello) ++p.connections;
    p.gone_since_mono_ns = 0;
    p.host = h->host;
    p.executable = h->executable;
    p.agent_version = h->agent_version;
    if (!p.metrics) p.metrics = std::make_shared<ProcMetrics>();
    if (!p.dropped_counter) {
      p.dropped_counter =
          &p.metrics->dropped.Add({{"service", h->service}, {"pid", std::to_string(h->pid)}});
    }
    const bool first = !c.hello;
    c.hello = std::move(*h);
    DecodeError err;
    for (const auto& loop : c.hello->loops) {
      if (!FindOrAddLoop(c.hello->service, c.hello->pid, loop, &err)) return err;
    }
    if (first) {
      spdlog::info("agent {} pid {} connected from {} (host {}, {}, agent {}, {} loops)",
                   c.hello->service, c.hello->pid, c.peer, p.host, p.executable, p.agent_version,
                   c.hello->loops.size());
    }
    return std::nullopt;
  }
  if (!c.hello) {
    return DecodeError{RejectReason::kNoHello,
                       "a finding arrived before the hello; the first frame must be "
                       "{\"kind\":\"hello\",\"service\":…,\"pid\":…}",
                       false};
  }
  auto identity = [&](const std::string& service, int64_t pid) -> std::optional<DecodeError> {
    if (service == c.hello->service && pid == c.hello->pid) return std::nullopt;
    return DecodeError{RejectReason::kIdentityMismatch,
                       "finding of " + Shown(service) + " pid " + std::to_string(pid) +
                           " on the connection of " + Shown(c.hello->service) + " pid " +
                           std::to_string(c.hello->pid) + "; a connection carries one process",
                       false};
  };
  DecodeError err;
  if (auto* s = std::get_if<StallFinding>(&m)) {
    if (auto e = identity(s->service, s->pid)) return e;
    Loop* l = FindOrAddLoop(s->service, s->pid, s->loop, &err);
    if (!l) return err;
    ApplyStall(c, std::move(*s), *l, now);
    return std::nullopt;
  }
  auto& d = std::get<DelayFinding>(m);
  if (auto e = identity(d.service, d.pid)) return e;
  Loop* l = FindOrAddLoop(d.service, d.pid, d.loop, &err);
  if (!l) return err;
  ApplyDelay(c, std::move(d), *l, now);
  return std::nullopt;
}

void Registry::MergeStacks(const std::string& service, const StallFinding* before,
                           const StallFinding& after) {
  // Stall updates carry the stall's stacks so far: merge only the new samples.
  std::map<std::string, uint64_t> seen;
  if (before) {
    for (const auto& s : before->stacks) seen[internal::FoldedStack(service, s)] += s.samples;
  }
  for (const auto& s : after.stacks) {
    const std::string key = internal::FoldedStack(service, s);
    const uint64_t old = seen.count(key) ? seen[key] : 0;
    if (s.samples <= old) continue;
    const uint64_t add = s.samples - old;
    auto it = stacks_.find(key);
    if (it == stacks_.end()) {
      StallFinding holder;
      holder.stacks.push_back(s);
      const size_t bytes = internal::TrimForStorage(&holder) + key.size();
      if (stacks_.size() >= options_.max_stacks ||
          stacks_bytes_ + bytes > options_.max_stacks_bytes) {
        stacks_overflow_ += add;
        continue;
      }
      stacks_bytes_ += bytes;
      it = stacks_.emplace(key, StackAgg{service, std::move(holder.stacks[0])}).first;
      it->second.stack.samples = 0;
    }
    it->second.stack.samples += add;
  }
}

void Registry::ApplyStall(const Conn&, StallFinding&& f, Loop& l, Now now) {
  l.last_seen_unix_ns = now.unix_ns;
  const StallFinding* before =
      l.ongoing && l.ongoing->stall_id == f.stall_id ? &*l.ongoing : nullptr;
  if (f.ongoing) {
    if (f.stall_id <= l.max_closed_id && l.max_closed_id != 0) return;  // stale update
    MergeStacks(f.service, before, f);
    internal::TrimForStorage(&f);
    l.ongoing = std::move(f);
    return;
  }
  if (f.stall_id != 0 && f.stall_id <= l.max_closed_id) return;  // already counted
  MergeStacks(f.service, before, f);
  l.max_closed_id = std::max(l.max_closed_id, f.stall_id);
  if (l.ongoing && l.ongoing->stall_id <= f.stall_id) {
    l.ongoing.reset();
    l.series->ongoing->Set(0);
  }
  l.series->Stalls(StallClassName(f.stall_class)).Increment();
  ++l.counted_stalls;
  l.series->stall_duration->Observe(f.duration_s);
  if (options_.max_recent_stalls == 0) return;
  const size_t bytes = internal::TrimForStorage(&f);
  recent_.emplace_back(std::move(f), bytes);
  recent_bytes_ += bytes;
  while (!recent_.empty() && (recent_.size() > options_.max_recent_stalls ||
                              recent_bytes_ > options_.max_recent_bytes)) {
    recent_bytes_ -= recent_.front().second;
    recent_.pop_front();
  }
}

void Registry::ApplyDelay(const Conn&, DelayFinding&& d, Loop& l, Now now) {
  l.last_seen_unix_ns = now.unix_ns;
  LoopSeries& s = *l.series;
  s.delay->ObserveMultiple(internal::Rebucket(d.delay_buckets, DelayBucketsSeconds()), d.sum_s);
  s.iteration->ObserveMultiple(internal::Rebucket(d.iteration_buckets, IterationBucketsSeconds()),
                               d.iteration_sum_s);
  s.utilization->Set(d.utilization);
  // The agent's counters are cumulative per loop: export their increase.
  if (d.stack_samples_total > l.last_stack_samples) {
    s.stack_samples->Increment(static_cast<double>(d.stack_samples_total - l.last_stack_samples));
    l.last_stack_samples = d.stack_samples_total;
  }
  if (d.reports_suppressed_total > l.last_suppressed) {
    s.suppressed->Increment(static_cast<double>(d.reports_suppressed_total - l.last_suppressed));
    l.last_suppressed = d.reports_suppressed_total;
  }
  // Stalls whose closing finding never arrived (dropped by the agent's queue while the daemon
  // was away) still count: the agent's own counter is never rate-limited.
  if (d.stalls_total > l.counted_stalls) {
    s.Stalls(StallClassName(StallClass::kUnknown))
        .Increment(static_cast<double>(d.stalls_total - l.counted_stalls));
    l.counted_stalls = d.stalls_total;
  }
  auto p = procs_.find(ProcKey{d.service, d.pid});
  if (p != procs_.end() && d.findings_dropped_total > p->second.last_dropped) {
    p->second.dropped_counter->Increment(
        static_cast<double>(d.findings_dropped_total - p->second.last_dropped));
    p->second.last_dropped = d.findings_dropped_total;
  }
  d.delay_buckets.clear();
  d.iteration_buckets.clear();
  l.last_window = std::move(d);
}

void Registry::RemoveProc(const ProcKey& key) {
  auto p = procs_.find(key);
  if (p == procs_.end()) return;
  for (auto it = loops_.lower_bound(LoopKey{key.first, key.second, ""});
       it != loops_.end() && std::get<0>(it->first) == key.first &&
       std::get<1>(it->first) == key.second;) {
    it = loops_.erase(it);
  }
  procs_.erase(p);
}

void Registry::Sweep(Now now) {
  std::vector<ProcKey> expired;
  for (const auto& [key, p] : procs_) {
    if (p.connections == 0 && p.gone_since_mono_ns != 0 &&
        now.mono_ns - p.gone_since_mono_ns >= options_.expire_after.count()) {
      expired.push_back(key);
    }
  }
  // A mass departure is spread over sweeps so that no sweep holds the loop for long.
  if (expired.size() > kMaxExpiriesPerSweep) expired.resize(kMaxExpiriesPerSweep);
  for (const auto& key : expired) {
    spdlog::info("agent {} pid {} gone for {}s: series removed", key.first, key.second,
                 std::chrono::duration_cast<std::chrono::seconds>(options_.expire_after).count());
    RemoveProc(key);
  }
  for (auto& [id, c] : conns_) {
    if (!c.silent && now.mono_ns - c.last_frame_mono_ns >= options_.silent_after.count()) {
      c.silent = true;
      spdlog::warn(
          "agent {} pid {} ({}) is connected but sent nothing for {:.1f}s: process frozen, "
          "stopped or its agent stuck",
          c.hello ? c.hello->service : "(no hello)", c.hello ? c.hello->pid : 0, c.peer,
          static_cast<double>(now.mono_ns - c.last_frame_mono_ns) / 1e9);
    }
  }
  for (auto& [key, l] : loops_) {
    l.series->ongoing->Set(
        l.ongoing ? std::max(l.ongoing->duration_s,
                             static_cast<double>(now.unix_ns - l.ongoing->start_ns) / 1e9)
                  : 0.0);
  }
  metrics_->agents.Set(static_cast<double>(conns_.size()));
  metrics_->silent.Set(static_cast<double>(silent_agents()));
}

std::string Registry::MetricsText(Now now) {
  std::ostringstream out;
  WriteMetrics(out, now);
  return out.str();
}

void Registry::WriteMetrics(std::ostream& out, Now now) {
  // Ages of ongoing stalls move between sweeps too.
  for (auto& [key, l] : loops_) {
    if (l.ongoing) {
      l.series->ongoing->Set(std::max(
          l.ongoing->duration_s, static_cast<double>(now.unix_ns - l.ongoing->start_ns) / 1e9));
    }
  }
  metrics_->agents.Set(static_cast<double>(conns_.size()));
  metrics_->silent.Set(static_cast<double>(silent_agents()));
  std::vector<prometheus::MetricFamily> families;
  std::map<std::string, size_t> index;
  for (const auto& [key, p] : procs_) {
    if (!p.metrics) continue;
    for (auto& f : p.metrics->registry.Collect()) {
      auto [it, added] = index.emplace(f.name, families.size());
      if (added) {
        families.push_back(std::move(f));
      } else {
        auto& into = families[it->second].metric;
        into.insert(into.end(), std::make_move_iterator(f.metric.begin()),
                    std::make_move_iterator(f.metric.end()));
      }
    }
  }
  for (auto& f : metrics_->registry.Collect()) families.push_back(std::move(f));
  prometheus::TextSerializer().Serialize(out, families);
}

json Registry::StallJsonAt(const StallFinding& f, Now now) const {
  json j = ToJson(f);
  if (f.ongoing) {
    j["duration_s"] = std::max(f.duration_s, static_cast<double>(now.unix_ns - f.start_ns) / 1e9);
  }
  return j;
}

json Registry::LoopsJson(Now now) const {
  std::set<ProcKey> silent_procs;
  for (const auto& [id, c] : conns_) {
    if (c.hello && c.silent) silent_procs.emplace(c.hello->service, c.hello->pid);
  }
  json loops = json::array();
  for (const auto& [key, l] : loops_) {
    const auto& [service, pid, loop] = key;
    const auto p = procs_.find(ProcKey{service, pid});
    const bool silent = silent_procs.count(ProcKey{service, pid}) > 0;
    json j{{"service", service},
           {"pid", pid},
           {"loop", loop},
           {"host", p != procs_.end() ? p->second.host : ""},
           {"executable", p != procs_.end() ? p->second.executable : ""},
           {"agent_version", p != procs_.end() ? p->second.agent_version : ""},
           {"connected", p != procs_.end() && p->second.connections > 0},
           {"silent", silent},
           {"stalls_total", l.counted_stalls},
           {"last_seen_ns", l.last_seen_unix_ns}};
    j["last_window"] = l.last_window ? ToJson(*l.last_window) : json(nullptr);
    j["ongoing"] = l.ongoing ? StallJsonAt(*l.ongoing, now) : json(nullptr);
    loops.push_back(std::move(j));
  }
  return json{{"loops", std::move(loops)}};
}

json Registry::StallsJson(const StallQuery& q, Now now) const {
  std::vector<const StallFinding*> all;
  if (!q.ongoing.has_value() || *q.ongoing) {
    for (const auto& [key, l] : loops_) {
      if (l.ongoing) all.push_back(&*l.ongoing);
    }
  }
  if (!q.ongoing.has_value() || !*q.ongoing) {
    for (const auto& [f, bytes] : recent_) all.push_back(&f);
  }
  if (q.service) {
    std::erase_if(all, [&](const StallFinding* f) { return f->service != *q.service; });
  }
  // Newest first: ongoing stalls lead (they started last or are still the news).
  std::stable_sort(all.begin(), all.end(), [](const StallFinding* a, const StallFinding* b) {
    if (a->ongoing != b->ongoing) return a->ongoing;
    return a->start_ns > b->start_ns;
  });
  json stalls = json::array();
  for (size_t i = 0; i < all.size() && i < q.limit; ++i)
    stalls.push_back(StallJsonAt(*all[i], now));
  return json{{"stalls", std::move(stalls)}};
}

json Registry::StacksJson() const {
  std::vector<const StackAgg*> v;
  for (const auto& [k, s] : stacks_) v.push_back(&s);
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
