// The model of the Registry (registry.h): agent connections, processes (service, pid) and their
// loops, the process slots of each service, the findings applied to them (Apply, ApplyStall,
// ApplyDelay), the sweep (expiry, silent agents, ongoing-stall ages) and the eviction of gone
// processes at the limits. The series it updates live in metrics_exporter.cc, the merged stacks
// in stack_store.cc, the API's JSON in api_json.cc.
//
// Threading: as the Registry, the daemon's loop thread only; nothing here locks.
#include "registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <utility>

#include "stallwatch/common/log_text.h"

namespace stallwatch::daemon {

constexpr size_t kMaxExpiriesPerSweep = 200;

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

Registry::Registry(RegistryOptions options) : options_(options), metrics_(NewMetrics()) {}

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
          SetOngoing(l, 0);
        }
      }
      spdlog::info("agent {} pid {} disconnected ({}); its series expire in {}s",
                   EscapeForLog(key.first), key.second, EscapeForLog(it->second.peer),
                   std::chrono::duration_cast<std::chrono::seconds>(options_.expire_after).count());
    }
  }
  conns_.erase(it);
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
  AddLoopSeries(entry->first, entry->second, proc->second);
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
      // A new process: it takes the lowest slot of its service that no connected process holds.
      const std::optional<uint32_t> slot = FreeSlot(h->service);
      if (!slot) {
        return DecodeError{RejectReason::kLimit,
                           "service " + EscapeForLog(h->service) + " has " +
                               std::to_string(options_.max_processes_per_service) +
                               " connected processes (--max-processes-per-service); connection "
                               "of pid " +
                               std::to_string(h->pid) + " closed",
                           true};
      }
      const auto held = slots_.find(h->service);
      const int64_t gone_pid =
          held != slots_.end() && *slot < held->second.size() ? held->second[*slot] : 0;
      if (gone_pid != 0) {
        // The slot's gone process makes room: its series are replaced by the newcomer's.
        spdlog::info("agent {} pid {} takes process slot {} of pid {}, gone: its series restart",
                     EscapeForLog(h->service), h->pid, *slot, gone_pid);
        RemoveProc(ProcKey{h->service, gone_pid});
      } else {
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
      procs_[key].slot = *slot;
      HoldSlot(key, *slot);
    }
    const auto entry = procs_.try_emplace(key).first;  // its key outlives `key`: series keep it
    Proc& p = entry->second;
    if (!c.hello) {
      ++p.connections;
    }
    p.gone_since_mono_ns = 0;
    const bool info_changed = p.host != h->host || p.executable != h->executable ||
                              p.agent_version != h->agent_version ||
                              p.start_time_ns != h->start_time_ns;
    p.host = h->host;
    p.start_time_ns = h->start_time_ns;
    p.executable = h->executable;
    p.agent_version = h->agent_version;
    if (!p.metrics) {
      AddProcSeries(entry->first, p);
    } else if (info_changed) {
      SetProcInfo(p);
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
      spdlog::info(
          "agent {} pid {} connected from {} (process slot {}, host {}, {}, agent {}, {} loops)",
          EscapeForLog(c.hello->service), c.hello->pid, EscapeForLog(c.peer), p.slot,
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
  if (auto* calls = std::get_if<CallsFinding>(&m)) {
    if (auto e = identity(calls->service, calls->pid)) {
      return e;
    }
    Loop* l = FindOrAddLoop(calls->service, calls->pid, calls->loop, &err);
    if (!l) {
      return err;
    }
    l->last_seen_unix_ns = now.unix_ns;
    ApplyCalls(std::move(*calls), *l);
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
  CountProcEvicted();
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
    SetOngoing(l, 0);
  }
  AddStalls(l, f.stall_class, 1);
  ++l.counted_stalls;
  ObserveStall(l, f);
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
  ObserveWindow(l, d);
  // The agent's counters are cumulative per loop: export their increase.
  if (d.stack_samples_total > l.last_stack_samples) {
    AddStackSamples(l, d.stack_samples_total - l.last_stack_samples);
    l.last_stack_samples = d.stack_samples_total;
  }
  if (d.reports_suppressed_total > l.last_suppressed) {
    AddSuppressed(l, d.reports_suppressed_total - l.last_suppressed);
    l.last_suppressed = d.reports_suppressed_total;
  }
  // Stalls whose closing finding never arrived (dropped by the agent's queue while the daemon
  // was away) still count: the agent's own counter is never rate-limited.
  if (d.stalls_total > l.counted_stalls) {
    AddStalls(l, StallClass::kUnknown, d.stalls_total - l.counted_stalls);
    l.counted_stalls = d.stalls_total;
  }
  auto p = procs_.find(ProcKey{d.service, d.pid});
  if (p != procs_.end() && d.findings_dropped_total > p->second.last_dropped) {
    AddDropped(p->second, d.findings_dropped_total - p->second.last_dropped);
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
    if (it->second.calls) {
      call_sites_ -= it->second.calls->sites.size();
    }
    it = loops_.erase(it);
  }
  ReleaseSlot(key, p->second.slot);
  procs_.erase(p);
}

std::optional<uint32_t> Registry::FreeSlot(const std::string& service) const {
  auto s = slots_.find(service);
  if (s == slots_.end()) {
    return options_.max_processes_per_service > 0 ? std::optional<uint32_t>(0) : std::nullopt;
  }
  const std::vector<int64_t>& held = s->second;
  for (size_t i = 0; i < held.size(); ++i) {
    if (held[i] == 0) {
      return static_cast<uint32_t>(i);
    }
    auto p = procs_.find(ProcKey{service, held[i]});
    if (p == procs_.end() || p->second.connections == 0) {
      return static_cast<uint32_t>(i);
    }
  }
  if (held.size() < options_.max_processes_per_service) {
    return static_cast<uint32_t>(held.size());
  }
  return std::nullopt;
}

void Registry::HoldSlot(const ProcKey& key, uint32_t slot) {
  std::vector<int64_t>& held = slots_[key.first];
  if (held.size() <= slot) {
    held.resize(size_t{slot} + 1, 0);
  }
  held[slot] = key.second;
}

void Registry::ReleaseSlot(const ProcKey& key, uint32_t slot) {
  auto s = slots_.find(key.first);
  if (s == slots_.end()) {
    return;
  }
  std::vector<int64_t>& held = s->second;
  if (slot < held.size() && held[slot] == key.second) {
    held[slot] = 0;
  }
  while (!held.empty() && held.back() == 0) {
    held.pop_back();
  }
  if (held.empty()) {
    slots_.erase(s);
  }
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
    SetOngoing(l, l.ongoing ? std::max(l.ongoing->duration_s,
                                       static_cast<double>(now.unix_ns - l.ongoing->start_ns) / 1e9)
                            : 0.0);
  }
  SetAgentGauges();
}

}  // namespace stallwatch::daemon
