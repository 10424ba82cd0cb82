#include "registry.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "stallwatch/common/finding_json.h"
#include "stallwatch/common/histogram.h"
#include "stallwatch/common/log_text.h"

namespace stallwatch::daemon {

constexpr size_t kMaxExpiriesPerSweep = 200;

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
  // Compare in integer nanoseconds: bounds are decimal seconds, rounded to the nearest ns.
  // Converted once per call, not once per agent bucket (this runs for every delay window).
  std::vector<uint64_t> bounds_ns(bounds_s.size());
  for (size_t b = 0; b < bounds_s.size(); ++b) {
    bounds_ns[b] = static_cast<uint64_t>(std::llround(bounds_s[b] * 1e9));
  }
  for (const auto& [index, count] : sparse) {
    if (index >= kHistBuckets || count == 0) {
      continue;
    }
    const uint64_t largest_ns = HistBucketUpper(index) - 1;
    size_t b = 0;
    while (b < bounds_ns.size() && bounds_ns[b] < largest_ns) {
      ++b;
    }
    out[b] += static_cast<double>(count);
  }
  return out;
}

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

  // The exposition of this process's series is cached per family: `text[f]` is what
  // TextSerializer writes for the family's series of this process, without the family's
  // # HELP / # TYPE lines (written once per scrape for all processes). A family is serialized
  // again only after one of its series changed (its `dirty` bit): a scrape re-serializes what
  // changed since the last one, not every series of every process.
  enum FamilyId : unsigned {
    kDelay,
    kIteration,
    kUtilization,
    kStalls,
    kStallDuration,
    kOngoing,
    kStackSamples,
    kSuppressed,
    kDropped,
    kFamilyCount
  };
  static constexpr unsigned kAllDirty = (1u << kFamilyCount) - 1;
  unsigned dirty = kAllDirty;
  std::shared_ptr<const char> block;  // the texts of all families, one after the other
  std::array<std::string_view, kFamilyCount> text;  // into `block`
  void Touch(FamilyId f) { dirty |= 1u << f; }

  prometheus::Collectable& family(unsigned f) {
    switch (f) {
      case kDelay:
        return delay;
      case kIteration:
        return iteration;
      case kUtilization:
        return utilization;
      case kStalls:
        return stalls;
      case kStallDuration:
        return stall_duration;
      case kOngoing:
        return ongoing;
      case kStackSamples:
        return stack_samples;
      case kSuppressed:
        return suppressed;
      default:
        return dropped;
    }
  }
  const std::string& name(unsigned f) const {
    switch (f) {
      case kDelay:
        return delay.GetName();
      case kIteration:
        return iteration.GetName();
      case kUtilization:
        return utilization.GetName();
      case kStalls:
        return stalls.GetName();
      case kStallDuration:
        return stall_duration.GetName();
      case kOngoing:
        return ongoing.GetName();
      case kStackSamples:
        return stack_samples.GetName();
      case kSuppressed:
        return suppressed.GetName();
      default:
        return dropped.GetName();
    }
  }
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
  prometheus::Family<prometheus::Counter>& stacks_evicted_family =
      prometheus::BuildCounter()
          .Name("stallwatch_daemon_stacks_evicted_total")
          .Help(
              "Merged stacks removed from the daemon's stack table to make room (least "
              "recently sampled first; --max-stacks, --max-stacks-per-service)")
          .Register(registry);
  prometheus::Counter& stacks_evicted = stacks_evicted_family.Add({});
  prometheus::Family<prometheus::Counter>& procs_evicted_family =
      prometheus::BuildCounter()
          .Name("stallwatch_daemon_processes_evicted_total")
          .Help(
              "Gone processes whose series were removed before --expire-after to make room "
              "for new ones (--max-processes, --max-loops)")
          .Register(registry);
  prometheus::Counter& procs_evicted = procs_evicted_family.Add({});

  Metrics() {
    for (RejectReason r : wire::kAllRejectReasons) {
      rejected[r] = &rejected_family.Add({{"reason", wire::RejectReasonName(r)}});
    }
  }
};

// One loop's series. Every change goes through a method that marks the family dirty in the
// process's text cache (ProcMetrics::Touch).
struct Registry::LoopSeries {
  using F = ProcMetrics::FamilyId;
  ProcMetrics* m = nullptr;
  const LoopKey* key = nullptr;  // of the loop's entry in loops_ (stable: std::map)
  prometheus::Histogram* delay = nullptr;
  prometheus::Histogram* iteration = nullptr;
  prometheus::Histogram* stall_duration = nullptr;
  prometheus::Gauge* utilization = nullptr;
  prometheus::Gauge* ongoing = nullptr;
  prometheus::Counter* stack_samples = nullptr;
  prometheus::Counter* suppressed = nullptr;
  // By StallClass; created on first use (the four real classes at once, see the constructor).
  std::array<prometheus::Counter*, 5> stalls{};

  LoopSeries(ProcMetrics* metrics, const LoopKey* k) : m(metrics), key(k) {
    const prometheus::Labels labels = Labels();
    delay = &m->delay.Add(labels, DelayBucketsSeconds());
    iteration = &m->iteration.Add(labels, IterationBucketsSeconds());
    stall_duration = &m->stall_duration.Add(labels, StallBucketsSeconds());
    utilization = &m->utilization.Add(labels);
    ongoing = &m->ongoing.Add(labels);
    stack_samples = &m->stack_samples.Add(labels);
    suppressed = &m->suppressed.Add(labels);
    m->dirty = ProcMetrics::kAllDirty;
    // The four classes exist from the start so rate() sees the first stall of each.
    for (StallClass c :
         {StallClass::kCpu, StallClass::kBlocked, StallClass::kStarved, StallClass::kSuspended}) {
      Stalls(c);
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
    for (prometheus::Counter* c : stalls) {
      if (c) {
        m->stalls.Remove(c);
      }
    }
    m->dirty = ProcMetrics::kAllDirty;
  }
  void ObserveWindow(const DelayFinding& d) {
    delay->ObserveMultiple(internal::Rebucket(d.delay_buckets, DelayBucketsSeconds()), d.sum_s);
    iteration->ObserveMultiple(internal::Rebucket(d.iteration_buckets, IterationBucketsSeconds()),
                               d.iteration_sum_s);
    utilization->Set(d.utilization);
    m->Touch(F::kDelay);
    m->Touch(F::kIteration);
    m->Touch(F::kUtilization);
  }
  void AddStackSamples(double n) {
    stack_samples->Increment(n);
    m->Touch(F::kStackSamples);
  }
  void AddSuppressed(double n) {
    suppressed->Increment(n);
    m->Touch(F::kSuppressed);
  }
  void AddStalls(StallClass cls, double n) {
    Stalls(cls).Increment(n);
    m->Touch(F::kStalls);
  }
  void ObserveStall(double duration_s) {
    stall_duration->Observe(duration_s);
    m->Touch(F::kStallDuration);
  }
  void SetOngoing(double age_s) {
    if (ongoing->Value() == age_s) {
      return;  // the sweep sets every loop's gauge each second
    }
    ongoing->Set(age_s);
    m->Touch(F::kOngoing);
  }

 private:
  // Built when a series is added, not kept: thousands of loops.
  prometheus::Labels Labels() const {
    return {{"service", std::get<0>(*key)},
            {"pid", std::to_string(std::get<1>(*key))},
            {"loop", std::get<2>(*key)}};
  }
  prometheus::Counter& Stalls(StallClass cls) {
    prometheus::Counter*& c = stalls.at(static_cast<size_t>(cls));
    if (c) {
      return *c;
    }
    prometheus::Labels l = Labels();
    l["class"] = StallClassName(cls);
    c = &m->stalls.Add(l);
    m->Touch(F::kStalls);
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
  if (it == conns_.end()) {
    return;
  }
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
          l.series->SetOngoing(0);
        }
      }
      spdlog::info("agent {} pid {} disconnected ({}); its series expire in {}s",
                   EscapeForLog(key.first), key.second, EscapeForLog(it->second.peer),
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
  for (const auto& [id, c] : conns_) {
    n += c.silent ? 1 : 0;
  }
  return n;
}

Registry::Loop* Registry::FindOrAddLoop(const std::string& service, int64_t pid,
                                        const std::string& loop, DecodeError* err) {
  const LoopKey key{service, pid, loop};
  auto it = loops_.find(key);
  if (it != loops_.end()) {
    return &it->second;
  }
  size_t n = 0;
  for (auto l = loops_.lower_bound(LoopKey{service, pid, ""});
       l != loops_.end() && std::get<0>(l->first) == service && std::get<1>(l->first) == pid; ++l) {
    ++n;
  }
  if (n >= options_.max_loops_per_process) {
    *err = DecodeError{RejectReason::kLimit,
                       "agent " + EscapeForLog(service) + " pid " + std::to_string(pid) +
                           " reports more than " + std::to_string(options_.max_loops_per_process) +
                           " loops; further loops are ignored (--max-loops-per-process)",
                       false};
    return nullptr;
  }
  while (loops_.size() >= options_.max_loops && EvictGoneProc()) {
  }
  if (loops_.size() >= options_.max_loops) {
    *err = DecodeError{RejectReason::kLimit,
                       "the daemon holds " + std::to_string(loops_.size()) +
                           " loops (--max-loops); loop " + EscapeForLog(loop) + " of " +
                           EscapeForLog(service) + " pid " + std::to_string(pid) + " is ignored",
                       false};
    return nullptr;
  }
  auto proc = procs_.find(ProcKey{service, pid});
  if (proc == procs_.end() || !proc->second.metrics) {
    *err = DecodeError{RejectReason::kNoHello, "a loop of an agent that sent no hello", false};
    return nullptr;
  }
  auto [entry, added] = loops_.try_emplace(key);
  entry->second.series = std::make_unique<LoopSeries>(proc->second.metrics.get(), &entry->first);
  return &entry->second;
}

std::optional<DecodeError> Registry::Apply(ConnId id, wire::Message&& m, Now now) {
  auto cit = conns_.find(id);
  if (cit == conns_.end()) {
    return DecodeError{RejectReason::kNoHello, "unknown connection", false};
  }
  Conn& c = cit->second;
  c.last_frame_mono_ns = now.mono_ns;
  if (c.silent) {
    c.silent = false;
    spdlog::info("agent {} pid {} is sending again",
                 c.hello ? EscapeForLog(c.hello->service) : std::string("?"),
                 c.hello ? c.hello->pid : 0);
  }
  if (auto* h = std::get_if<wire::Hello>(&m)) {
    if (c.hello && (c.hello->service != h->service || c.hello->pid != h->pid)) {
      return DecodeError{RejectReason::kIdentityMismatch,
                         "a second hello on one connection must repeat the first identity (" +
                             EscapeForLog(c.hello->service) + ", pid " +
                             std::to_string(c.hello->pid) + ")",
                         false};
    }
    const ProcKey key{h->service, h->pid};
    if (!procs_.count(key)) {
      while (procs_.size() >= options_.max_processes && EvictGoneProc()) {
      }
      if (procs_.size() >= options_.max_processes) {
        return DecodeError{RejectReason::kLimit,
                           "the daemon holds " + std::to_string(procs_.size()) +
                               " connected processes (--max-processes); connection of " +
                               EscapeForLog(h->service) + " pid " + std::to_string(h->pid) +
                               " closed",
                           true};
      }
    }
    Proc& p = procs_[key];
    if (!c.hello) {
      ++p.connections;
    }
    p.gone_since_mono_ns = 0;
    p.host = h->host;
    p.executable = h->executable;
    p.agent_version = h->agent_version;
    if (!p.metrics) {
      p.metrics = std::make_shared<ProcMetrics>();
    }
    if (!p.dropped_counter) {
      p.dropped_counter =
          &p.metrics->dropped.Add({{"service", h->service}, {"pid", std::to_string(h->pid)}});
      p.metrics->Touch(ProcMetrics::kDropped);
    }
    const bool first = !c.hello;
    c.hello = std::move(*h);
    DecodeError err;
    for (const auto& loop : c.hello->loops) {
      if (!FindOrAddLoop(c.hello->service, c.hello->pid, loop, &err)) {
        return err;
      }
    }
    if (first) {
      spdlog::info("agent {} pid {} connected from {} (host {}, {}, agent {}, {} loops)",
                   EscapeForLog(c.hello->service), c.hello->pid, EscapeForLog(c.peer),
                   EscapeForLog(p.host), EscapeForLog(p.executable), EscapeForLog(p.agent_version),
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
    if (service == c.hello->service && pid == c.hello->pid) {
      return std::nullopt;
    }
    return DecodeError{RejectReason::kIdentityMismatch,
                       "finding of " + EscapeForLog(service) + " pid " + std::to_string(pid) +
                           " on the connection of " + EscapeForLog(c.hello->service) + " pid " +
                           std::to_string(c.hello->pid) + "; a connection carries one process",
                       false};
  };
  DecodeError err;
  if (auto* s = std::get_if<StallFinding>(&m)) {
    if (auto e = identity(s->service, s->pid)) {
      return e;
    }
    Loop* l = FindOrAddLoop(s->service, s->pid, s->loop, &err);
    if (!l) {
      return err;
    }
    ApplyStall(c, std::move(*s), *l, now);
    return std::nullopt;
  }
  auto& d = std::get<DelayFinding>(m);
  if (auto e = identity(d.service, d.pid)) {
    return e;
  }
  Loop* l = FindOrAddLoop(d.service, d.pid, d.loop, &err);
  if (!l) {
    return err;
  }
  ApplyDelay(c, std::move(d), *l, now);
  return std::nullopt;
}

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
  metrics_->stacks_evicted.Increment();
}

bool Registry::EvictGoneProc() {
  auto oldest = procs_.end();
  for (auto it = procs_.begin(); it != procs_.end(); ++it) {
    const Proc& p = it->second;
    if (p.connections != 0 || p.gone_since_mono_ns == 0) {
      continue;
    }
    if (oldest == procs_.end() || p.gone_since_mono_ns < oldest->second.gone_since_mono_ns) {
      oldest = it;
    }
  }
  if (oldest == procs_.end()) {
    return false;
  }
  // One line per 10 s at most (eviction_log_limit_): a churn of short-lived agents would
  // otherwise flood the log. The line counts this eviction and those not logged before it.
  if (eviction_log_limit_.Allow(Now::FromClocks().mono_ns)) {
    spdlog::warn(
        "{} gone process(es) removed before --expire-after to make room (latest: {} pid {}); "
        "limits --max-processes {}, --max-loops {}",
        eviction_log_limit_.TakeSuppressed() + 1, EscapeForLog(oldest->first.first),
        oldest->first.second, options_.max_processes, options_.max_loops);
  }
  metrics_->procs_evicted.Increment();
  RemoveProc(ProcKey(oldest->first));
  return true;
}

void Registry::ApplyStall(const Conn&, StallFinding&& f, Loop& l, Now now) {
  l.last_seen_unix_ns = now.unix_ns;
  const StallFinding* before =
      l.ongoing && l.ongoing->stall_id == f.stall_id ? &*l.ongoing : nullptr;
  if (f.ongoing) {
    if (f.stall_id <= l.max_closed_id && l.max_closed_id != 0) {
      return;  // stale update
    }
    MergeStacks(f.service, before, f);
    internal::TrimForStorage(&f);
    l.ongoing = std::make_unique<StallFinding>(std::move(f));
    return;
  }
  if (f.stall_id != 0 && f.stall_id <= l.max_closed_id) {
    return;  // already counted
  }
  MergeStacks(f.service, before, f);
  l.max_closed_id = std::max(l.max_closed_id, f.stall_id);
  if (l.ongoing && l.ongoing->stall_id <= f.stall_id) {
    l.ongoing.reset();
    l.series->SetOngoing(0);
  }
  l.series->AddStalls(f.stall_class, 1);
  ++l.counted_stalls;
  l.series->ObserveStall(f.duration_s);
  if (options_.max_recent_stalls == 0) {
    return;
  }
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
  s.ObserveWindow(d);
  // The agent's counters are cumulative per loop: export their increase.
  if (d.stack_samples_total > l.last_stack_samples) {
    s.AddStackSamples(static_cast<double>(d.stack_samples_total - l.last_stack_samples));
    l.last_stack_samples = d.stack_samples_total;
  }
  if (d.reports_suppressed_total > l.last_suppressed) {
    s.AddSuppressed(static_cast<double>(d.reports_suppressed_total - l.last_suppressed));
    l.last_suppressed = d.reports_suppressed_total;
  }
  // Stalls whose closing finding never arrived (dropped by the agent's queue while the daemon
  // was away) still count: the agent's own counter is never rate-limited.
  if (d.stalls_total > l.counted_stalls) {
    s.AddStalls(StallClass::kUnknown, static_cast<double>(d.stalls_total - l.counted_stalls));
    l.counted_stalls = d.stalls_total;
  }
  auto p = procs_.find(ProcKey{d.service, d.pid});
  if (p != procs_.end() && d.findings_dropped_total > p->second.last_dropped) {
    p->second.dropped_counter->Increment(
        static_cast<double>(d.findings_dropped_total - p->second.last_dropped));
    p->second.metrics->Touch(ProcMetrics::kDropped);
    p->second.last_dropped = d.findings_dropped_total;
  }
  // Kept for /api/v1/loops without its buckets, and without their allocations (thousands of
  // loops keep one window each).
  SparseHistogram().swap(d.delay_buckets);
  SparseHistogram().swap(d.iteration_buckets);
  l.last_window = std::move(d);
}

void Registry::RemoveProc(const ProcKey& key) {
  auto p = procs_.find(key);
  if (p == procs_.end()) {
    return;
  }
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
  if (expired.size() > kMaxExpiriesPerSweep) {
    expired.resize(kMaxExpiriesPerSweep);
  }
  for (const auto& key : expired) {
    spdlog::info("agent {} pid {} gone for {}s: series removed", EscapeForLog(key.first),
                 key.second,
                 std::chrono::duration_cast<std::chrono::seconds>(options_.expire_after).count());
    RemoveProc(key);
  }
  for (auto& [id, c] : conns_) {
    if (!c.silent && now.mono_ns - c.last_frame_mono_ns >= options_.silent_after.count()) {
      c.silent = true;
      spdlog::warn(
          "agent {} pid {} ({}) is connected but sent nothing for {:.1f}s: process frozen, "
          "stopped or its agent stuck",
          c.hello ? EscapeForLog(c.hello->service) : std::string("(no hello)"),
          c.hello ? c.hello->pid : 0, EscapeForLog(c.peer),
          static_cast<double>(now.mono_ns - c.last_frame_mono_ns) / 1e9);
    }
  }
  for (auto& [key, l] : loops_) {
    l.series->SetOngoing(
        l.ongoing ? std::max(l.ongoing->duration_s,
                             static_cast<double>(now.unix_ns - l.ongoing->start_ns) / 1e9)
                  : 0.0);
  }
  metrics_->agents.Set(static_cast<double>(conns_.size()));
  metrics_->silent.Set(static_cast<double>(silent_agents()));
}

namespace {

// A streambuf that appends to a std::string. xsputn appends whole tokens: std::streambuf's
// default copies through the put area, which costs more than the append for TextSerializer's
// many one-character writes.
class StringSink : public std::streambuf {
 public:
  explicit StringSink(std::string* out) : out_(out) {}

 protected:
  int_type overflow(int_type ch) override {
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      out_->push_back(traits_type::to_char_type(ch));
    }
    return traits_type::not_eof(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    out_->append(s, static_cast<size_t>(n));
    return n;
  }

 private:
  std::string* out_;
};

void Serialize(const std::vector<prometheus::MetricFamily>& families, std::string* out) {
  StringSink sink(out);
  std::ostream os(&sink);  // a fresh stream: the serializer sees default formatting state
  prometheus::TextSerializer().Serialize(os, families);
}

// A process's cached text, in pages of its own (mmap) once it is a few pages long. Blocks are
// replaced whenever a process's series change; in the malloc heap, interleaved with ingest's
// short-lived allocations, they left ~15 MiB free but resident after a few rounds of scrapes
// of 1000 agents, which munmap cannot.
std::shared_ptr<char> NewTextBlock(size_t size) {
  constexpr size_t kMapAtLeast = 8192;
  if (size >= kMapAtLeast) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      return std::shared_ptr<char>(static_cast<char*>(p), [size](char* q) { ::munmap(q, size); });
    }
  }
  return std::shared_ptr<char>(new char[std::max<size_t>(size, 1)], std::default_delete<char[]>());
}

}  // namespace

void Registry::UpdateAges(Now now) {
  // Ages of ongoing stalls move between sweeps too.
  for (auto& [key, l] : loops_) {
    if (l.ongoing) {
      l.series->SetOngoing(std::max(l.ongoing->duration_s,
                                    static_cast<double>(now.unix_ns - l.ongoing->start_ns) / 1e9));
    }
  }
  metrics_->agents.Set(static_cast<double>(conns_.size()));
  metrics_->silent.Set(static_cast<double>(silent_agents()));
}

bool Registry::RefreshText(ProcMetrics& m) {
  if (family_order_.empty()) {
    // The order prometheus::Registry::Collect gives (by type, then registration): the order the
    // exposition has always had.
    for (const auto& fam : m.registry.Collect()) {
      for (unsigned f = 0; f < ProcMetrics::kFamilyCount; ++f) {
        if (m.name(f) == fam.name) {
          family_order_.push_back(f);
        }
      }
    }
    family_headers_.resize(ProcMetrics::kFamilyCount);
    if (family_order_.size() != ProcMetrics::kFamilyCount) {
      return false;
    }
  }
  std::array<std::string, ProcMetrics::kFamilyCount> fresh;
  std::array<std::string_view, ProcMetrics::kFamilyCount> texts = m.text;
  size_t total = 0;
  for (unsigned f = 0; f < ProcMetrics::kFamilyCount; ++f) {
    if (m.dirty & (1u << f)) {
      const std::vector<prometheus::MetricFamily> fams = m.family(f).Collect();
      if (fams.size() != 1) {
        return false;
      }
      TextPiece& header = family_headers_[f];
      if (!header.owner) {
        auto h = std::make_shared<std::string>();
        Serialize({prometheus::MetricFamily{fams[0].name, fams[0].help, fams[0].type, {}}},
                  h.get());
        header = TextPiece{h, *h};
      }
      Serialize(fams, &fresh[f]);
      // The serializer writes a family as its header lines followed by one block per series:
      // keep the series, the header is written once for all processes.
      if (!std::string_view(fresh[f]).starts_with(header.text)) {
        return false;
      }
      texts[f] = std::string_view(fresh[f]).substr(header.text.size());
    }
    total += texts[f].size();
  }
  std::shared_ptr<char> block = NewTextBlock(total);
  char* at = block.get();
  for (unsigned f = 0; f < ProcMetrics::kFamilyCount; ++f) {
    if (!texts[f].empty()) {
      std::memcpy(at, texts[f].data(), texts[f].size());
    }
    m.text[f] = std::string_view(at, texts[f].size());
    at += texts[f].size();
  }
  m.block = std::move(block);
  m.dirty = 0;
  return true;
}

bool Registry::Refresh(ProcMetrics& m) {
  if (!text_cache_ok_ || !m.dirty) {
    return text_cache_ok_;
  }
  if (!RefreshText(m)) {
    text_cache_ok_ = false;
    spdlog::error(
        "prometheus-cpp's TextSerializer wrote a family in an unexpected layout: /metrics "
        "serializes every series at each scrape from now on");
  }
  return text_cache_ok_;
}

bool Registry::PrepareMetrics(std::chrono::nanoseconds budget) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (auto& [key, p] : procs_) {
    if (!text_cache_ok_) {
      return false;
    }
    if (!p.metrics || !p.metrics->dirty) {
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return true;
    }
    Refresh(*p.metrics);
  }
  return false;
}

void Registry::MetricsPieces(Now now, std::vector<TextPiece>* out) {
  UpdateAges(now);
  for (auto& [key, p] : procs_) {
    if (p.metrics && !Refresh(*p.metrics)) {
      break;
    }
  }
  if (!text_cache_ok_) {
    std::ostringstream os;
    WriteUncached(os);
    auto text = std::make_shared<const std::string>(std::move(os).str());
    out->push_back(TextPiece{text, *text});
    return;
  }
  const bool any = std::any_of(procs_.begin(), procs_.end(),
                               [](const auto& kv) { return kv.second.metrics != nullptr; });
  if (any) {
    for (unsigned f : family_order_) {
      out->push_back(family_headers_[f]);
      for (const auto& [key, p] : procs_) {
        if (p.metrics && !p.metrics->text[f].empty()) {
          out->push_back(TextPiece{p.metrics->block, p.metrics->text[f]});
        }
      }
    }
  }
  // The daemon's own few series change at every scrape: serialized each time.
  auto own = std::make_shared<std::string>();
  Serialize(metrics_->registry.Collect(), own.get());
  out->push_back(TextPiece{own, *own});
}

void Registry::WriteMetrics(std::ostream& out, Now now) {
  std::vector<TextPiece> pieces;
  MetricsPieces(now, &pieces);
  for (const auto& p : pieces) {
    out.write(p.text.data(), static_cast<std::streamsize>(p.text.size()));
  }
}

std::string Registry::MetricsText(Now now) {
  std::ostringstream out;
  WriteMetrics(out, now);
  return std::move(out).str();
}

std::string Registry::MetricsTextUncachedForTest(Now now) {
  UpdateAges(now);
  std::ostringstream out;
  WriteUncached(out);
  return std::move(out).str();
}

void Registry::WriteUncached(std::ostream& out) {
  std::vector<prometheus::MetricFamily> families;
  std::map<std::string, size_t> index;
  for (const auto& [key, p] : procs_) {
    if (!p.metrics) {
      continue;
    }
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
  for (auto& f : metrics_->registry.Collect()) {
    families.push_back(std::move(f));
  }
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
    if (c.hello && c.silent) {
      silent_procs.emplace(c.hello->service, c.hello->pid);
    }
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
  if (q.service) {
    std::erase_if(all, [&](const StallFinding* f) { return f->service != *q.service; });
  }
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
