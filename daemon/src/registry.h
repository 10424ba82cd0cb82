#pragma once
// The daemon's view of every agent on the host: connections, processes (service, pid), loops
// (service, pid, loop), recent stalls, merged stacks, and the Prometheus series built from them.
// Series are labelled with a process's slot in its service (`process`, see RegistryOptions::
// max_processes_per_service), not its pid, so that a restarted process continues the series of
// the one it replaces; the pid is a label of stallwatch_process_info only.
//
// One class, defined across four files, each holding one responsibility:
//   registry.cc          the model: connections, processes, loops, findings applied, sweep,
//                        eviction of gone processes
//   stack_store.cc       the merged stall stacks (/api/v1/stacks) and what is kept of a stall;
//                        the per-stall stack records of filtered queries (stack_records.h) and
//                        the pprof profile (pprof.h) are fed and read from there
//   metrics_exporter.cc  the Prometheus series and their text cache (/metrics); the only file of
//                        the daemon that includes prometheus-cpp
//   api_json.cc          the JSON of /api/v1/loops and /api/v1/stalls
//   call_store.cc        the blocking-call ledger of each loop (calls findings, /api/v1/calls)
//
// Threading: not thread-safe; every method is called on the daemon's loop thread. Time comes in
// as arguments (monotonic for timeouts, Unix for stall ages), so the logic runs without sleeps.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "stack_records.h"
#include "stallwatch/common/defaults.h"
#include "stallwatch/common/log_text.h"
#include "stallwatch/findings.h"
#include "stallwatch/status.h"
#include "stallwatch/wire/codec.h"

namespace stallwatch::daemon {

struct RegistryOptions {
  // A process's series are removed this long after its last connection closed.
  std::chrono::nanoseconds expire_after = defaults::kSeriesExpiry;
  // A connected agent that sends nothing for this long is reported silent (frozen process).
  // Agents send a delay window every report interval (10 s by default).
  std::chrono::nanoseconds silent_after = std::chrono::seconds(35);
  size_t max_loops_per_process = 64;
  // Loops and processes kept in all (their series are most of the daemon's memory, ~9 KiB per
  // loop). At a limit, the process gone the longest is removed early (counted in
  // stallwatch_daemon_processes_evicted_total); when none is gone, the new one is refused
  // (reason="limit").
  size_t max_loops = 16384;
  size_t max_processes = 8192;
  // Process slots per service: the values "0" … "N-1" of the `process` label. A process of a
  // service, at its hello, takes the lowest slot not held by a connected process of that
  // service; a gone process (connection closed, series not yet expired) holding that slot is
  // removed then, its series replaced by the newcomer's (a counter reset, which rate() handles).
  // Two connected processes never share a slot. With all N slots held by connected processes,
  // a further process is refused (reason="limit", the connection closed).
  size_t max_processes_per_service = 64;
  size_t max_recent_stalls = 1000;
  // What is kept of a stall for the API (the metrics need none of it): its 16 largest stacks,
  // 64 frames each, strings cut at 512 bytes; recent stalls together at most this many bytes.
  size_t max_recent_bytes = 32 << 20;
  // Merged stacks kept for /api/v1/stacks, in all and per service. When full, the least
  // recently sampled stack (of the same service when that service is at its share) is evicted,
  // counted in stallwatch_daemon_stacks_evicted_total; its samples in samples_not_kept.
  size_t max_stacks = 4096;
  size_t max_stacks_per_service = 1024;
  size_t max_stacks_bytes = 32 << 20;
  // Per-stall stack records for filtered /api/v1/stacks queries (stack_records.h): what each
  // report of a stall added to each stack, oldest dropped first (their samples in
  // samples_not_kept of a filtered reply). A record is ~150 bytes plus its names; each distinct
  // stack is counted once, as in the merged table.
  size_t max_stack_records = 50000;
  size_t max_stack_records_bytes = 16 << 20;
  // Call sites of the blocking-call ledger kept for /api/v1/calls (call_store.cc), per loop and
  // in all. A site beyond either is not kept (its calls still count in the series), counted in
  // stallwatch_daemon_call_sites_not_kept_total and in the loop's `sites_not_kept`. A site is
  // ~200 bytes plus its names and buckets.
  size_t max_call_sites_per_loop = 128;
  size_t max_call_sites = 16384;
};

struct Now {
  int64_t mono_ns = 0;  // steady clock
  int64_t unix_ns = 0;  // wall clock, the unit of finding timestamps
  static Now FromClocks();
};

struct StallQuery {
  size_t limit = 100;
  std::optional<std::string> service;
  std::optional<bool> ongoing;
  // One process, loop or stall (a stall id is unique per pid and loop): the web UI's stall page.
  std::optional<int64_t> pid;
  std::optional<std::string> loop;
  std::optional<uint64_t> stall_id;
};

// /api/v1/calls: the call sites of the loops the filters select, most total time first.
struct CallQuery {
  size_t limit = 100;
  std::optional<std::string> service;
  std::optional<int64_t> pid;
  std::optional<std::string> loop;
  std::optional<std::string> call;    // a name of kBlockingCalls
  std::optional<std::string> family;  // a name of kBlockingCallFamilies
};

// Prometheus bucket boundaries (seconds) of the exported histograms (metrics_exporter.cc).
const std::vector<double>& DelayBucketsSeconds();
const std::vector<double>& IterationBucketsSeconds();
const std::vector<double>& StallBucketsSeconds();
// stallwatch_blocking_call_seconds: powers of 4 ns from 2^10 ns (1.024 µs) to 2^34 ns (17.2 s),
// boundaries of the ledger's buckets, so the re-bucketing is exact.
const std::vector<double>& BlockingCallBucketsSeconds();

namespace internal {
// Re-buckets a sparse histogram of the agent's log-linear layout into Prometheus buckets:
// returns per-bucket increments (bounds.size() + 1 entries, the last is +Inf). An agent bucket
// [lower, upper) counts in the first Prometheus bucket whose bound is ≥ its largest value
// (upper − 1 ns), so a `le` bucket never holds a value above its bound; an agent bucket that
// straddles a bound (it is narrower than 1/128 of the bound) counts in the next bucket up.
// (metrics_exporter.cc)
std::vector<double> Rebucket(const SparseHistogram& sparse, const std::vector<double>& bounds_s);
// The same for a call site's buckets (the ledger's layout, blocking_calls.h).
std::vector<double> RebucketCalls(const SparseHistogram& sparse,
                                  const std::vector<double>& bounds_s);
// stack_store.cc:
// Bounds what the daemon keeps of a finding (see RegistryOptions); returns its approximate size.
size_t TrimForStorage(StallFinding* f);
// "service;outermost;…;innermost" (frames innermost first in the model).
std::string FoldedStack(const std::string& service, const Stack& s);
}  // namespace internal

// The blocking-call ledger of one loop, summed over its calls findings (call_store.cc).
struct CallSite {
  uint64_t count = 0;
  double total_s = 0;
  double max_s = 0;
  SparseHistogram buckets;  // by index, cumulative
  int64_t first_ns = 0;     // Unix ns: the start of the first window with calls here
  int64_t last_ns = 0;      // the end of the last one
  std::string kind;         // the frame's kind: "native" or "python" (a Python caller)
};
// (call index in kBlockingCalls, function, file, line, module)
using CallSiteKey = std::tuple<int, std::string, std::string, int64_t, std::string>;
struct LoopCalls {
  std::map<CallSiteKey, CallSite> sites;
  int64_t first_ns = 0;         // Unix ns: the start of the loop's first calls window
  uint64_t agent_overflow = 0;  // calls the agent's table had no room for
  uint64_t sites_not_kept = 0;  // calls of sites the daemon had no room for
};
class Registry {
 public:
  using ConnId = uint64_t;

  explicit Registry(RegistryOptions options = {});
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // A connection was accepted / closed.
  ConnId Connect(std::string peer, Now now);
  void Disconnect(ConnId id, Now now);
  // Applies one decoded message. Returns the rejection when the message is refused by the
  // daemon's state (no hello, identity mismatch, limits); the caller counts it via Reject().
  std::optional<wire::DecodeError> Apply(ConnId id, wire::Message&& m, Now now);
  // Counts a rejected frame (a series only: metrics_exporter.cc).
  void Reject(wire::RejectReason reason);
  // Counts an HTTP request refused with a one-line error: no such path (404), or a bad query
  // (400). A series only (stallwatch_daemon_http_requests_rejected_total{reason}).
  void RejectRequest(bool not_found);
  // Expires gone processes, notices silent agents, moves ongoing-stall ages. Call every second.
  void Sweep(Now now);
  // Serializes the text of processes whose series changed, ahead of the next scrape, for about
  // `budget` of the caller's time; returns false once nothing is left to serialize (but the
  // processes whose text a reply is still sending: they wait for the reply or the next scrape).
  // Called between scrapes (agents report at different times), it leaves a scrape only what
  // changed since the last call, instead of every process that reported since the last scrape.
  bool PrepareMetrics(std::chrono::nanoseconds budget);

  // A piece of the exposition text, shared with the registry's cache: `owner` keeps `text`
  // alive after the registry has moved on (until a socket has sent it, say).
  struct TextPiece {
    std::shared_ptr<const void> owner;
    std::string_view text;
  };
  // The exposition of every series, as pieces in order: the Prometheus text format
  // (prometheus-cpp's TextSerializer), or OpenMetrics 1.0 — the same series in the same text,
  // OpenMetrics' # TYPE / # HELP lines, the buckets of stallwatch_stall_duration_seconds with an
  // exemplar naming the latest stall each holds ({pid, stall_id}: with the series' service and
  // loop, what /api/v1/stalls and the web UI's stall page resolve), and # EOF. A process's series
  // are serialized again only when they changed since the last call; unchanged ones are shared
  // from the cache, not copied (with thousands of loops the text is tens of MiB).
  enum class Format { kText, kOpenMetrics };
  void MetricsPieces(Now now, std::vector<TextPiece>* out, Format format = Format::kText);
  // The same text, written to `out` / returned as one string.
  void WriteMetrics(std::ostream& out, Now now, Format format = Format::kText);
  std::string MetricsText(Now now, Format format = Format::kText);
  // Every series collected and serialized afresh, without the cache: what MetricsText equals.
  std::string MetricsTextUncachedForTest(Now now);
  nlohmann::json LoopsJson(Now now) const;  // api_json.cc
  // The text of LoopsJson(now) and a newline, built one loop at a time: thousands of loops as
  // JSON values are the daemon's largest transient memory (api_json.cc).
  std::string LoopsJsonText(Now now) const;
  nlohmann::json StallsJson(const StallQuery& q, Now now) const;  // api_json.cc
  nlohmann::json StacksJson() const;                              // stack_store.cc
  std::string StacksFolded() const;                               // stack_store.cc
  // /api/v1/stacks with a query (stack_store.cc): without filters the merged table as above;
  // with any, the stack records the query selects. The pprof profile is gzipped profile.proto.
  nlohmann::json StacksJson(const StackQuery& q, Now now) const;
  std::string StacksFolded(const StackQuery& q, Now now) const;
  StatusOr<std::string> StacksPprof(const StackQuery& q, Now now) const;
  // /api/v1/calls (call_store.cc).
  nlohmann::json CallsJson(const CallQuery& q, Now now) const;

  size_t connections() const { return conns_.size(); }
  // False once the exposition's text cache was given up (an unexpected serializer layout).
  bool text_cache_ok() const { return text_cache_ok_; }
  size_t loops() const { return loops_.size(); }
  size_t silent_agents() const;
  uint64_t rejected(wire::RejectReason reason) const;
  uint64_t requests_rejected(bool not_found) const;

 private:
  // Complete in metrics_exporter.cc only, as is their deleter.
  struct Metrics;      // the daemon's own series
  struct ProcMetrics;  // one process's series, in a registry of their own, and their text cache
  struct LoopSeries;   // one loop's series
  struct SeriesDeleter {
    void operator()(Metrics* m) const;
    void operator()(LoopSeries* s) const;
  };
  using ProcKey = std::pair<std::string, int64_t>;                // service, pid
  using LoopKey = std::tuple<std::string, int64_t, std::string>;  // service, pid, loop

  struct Conn {
    std::string peer;
    std::optional<wire::Hello> hello;
    int64_t last_frame_mono_ns = 0;
    bool silent = false;
  };
  struct Proc {
    std::string host, executable, agent_version;
    int64_t start_time_ns = 0;  // the hello's; 0 when the agent did not say
    uint32_t slot = 0;          // the `process` label; slots_[service][slot] is this process's pid
    int connections = 0;
    int64_t gone_since_mono_ns = 0;  // 0 while connected
    uint64_t last_dropped = 0;
    std::shared_ptr<ProcMetrics> metrics;  // null until the hello
  };
  struct Loop {
    int64_t last_seen_unix_ns = 0;
    std::optional<DelayFinding> last_window;  // buckets cleared
    std::unique_ptr<StallFinding> ongoing;    // on the heap: most loops have none
    uint64_t max_closed_id = 0;
    uint64_t counted_stalls = 0;
    uint64_t last_stack_samples = 0, last_suppressed = 0;
    std::unique_ptr<LoopSeries, SeriesDeleter> series;
    std::unique_ptr<LoopCalls> calls;  // on the heap: most loops make no blocking call
  };
  struct StackAgg {
    std::string service;
    Stack stack;       // samples = merged count
    uint64_t seq = 0;  // order of the last update (least recently sampled evicted first)
    size_t bytes = 0;
    int64_t stall_ns = 0;  // its share of stall time (MergeStacks)
  };
  using StackMap = std::map<std::string, StackAgg>;  // by folded stack

  // The model (registry.cc).
  // Removes the process gone the longest (no connection left) to make room; false if none.
  bool EvictGoneProc();
  Loop* FindOrAddLoop(const std::string& service, int64_t pid, const std::string& loop,
                      wire::DecodeError* err);
  void ApplyStall(const Conn& c, StallFinding&& f, Loop& l, Now now);
  void ApplyDelay(const Conn& c, DelayFinding&& f, Loop& l, Now now);
  void ApplyCalls(CallsFinding&& f, Loop& l);  // call_store.cc
  void RemoveProc(const ProcKey& key);
  // Process slots (registry.cc): the lowest slot of `service` not held by a connected process,
  // or none when all max_processes_per_service slots are; holding and releasing one.
  std::optional<uint32_t> FreeSlot(const std::string& service) const;
  void HoldSlot(const ProcKey& key, uint32_t slot);
  void ReleaseSlot(const ProcKey& key, uint32_t slot);

  // The stack store (stack_store.cc).
  void MergeStacks(const std::string& service, const StallFinding* before,
                   const StallFinding& after);
  void TouchStack(StackMap::iterator it);
  void EvictStack(StackMap::iterator it);

  // The model's updates of its series (metrics_exporter.cc). Each goes through pointers the
  // process and the loop keep from their creation: no lookup and no allocation per finding.
  static std::unique_ptr<Metrics, SeriesDeleter> NewMetrics();
  // At the hello, once per process; `key` is the process's key in procs_ (kept).
  static void AddProcSeries(const ProcKey& key, Proc& p);
  static void SetProcInfo(Proc& p);  // stallwatch_process_info changed (a hello)
  static void AddLoopSeries(const LoopKey& key, Loop& l, const Proc& p);  // once per loop
  static void ObserveWindow(Loop& l, const DelayFinding& d);  // delay, busy periods, utilization
  static void AddStackSamples(Loop& l, uint64_t n);
  static void AddSuppressed(Loop& l, uint64_t n);
  static void AddStalls(Loop& l, StallClass cls, uint64_t n);
  static void ObserveStall(Loop& l, const StallFinding& f);  // a closed stall, its exemplar
  // One call's calls in a window: `call` indexes kBlockingCalls.
  static void ObserveCalls(Loop& l, int call, uint64_t count, double sum_s,
                           const SparseHistogram& buckets);
  void CountCallSitesNotKept(uint64_t n);
  static void SetOngoing(Loop& l, double age_s);
  static void AddDropped(Proc& p, uint64_t n);
  void CountStackEvicted();
  void CountProcEvicted();
  void SetAgentGauges();  // agents connected and silent

  // The exposition (metrics_exporter.cc).
  void UpdateAges(Now now);
  // Serializes the families of `m` marked dirty into its text cache; false when the serializer's
  // output does not have the expected layout (the cache is then given up).
  [[nodiscard]] bool RefreshText(ProcMetrics& m);
  bool Refresh(ProcMetrics& m);  // RefreshText when dirty; gives the cache up on failure
  void WriteUncached(std::ostream& out);
  static const std::vector<std::string>& ProcFamilyNames();  // in the exposition's order
  void WriteUncachedOpenMetrics(std::string* out);

  // The JSON API (api_json.cc).
  nlohmann::json StallJsonAt(const StallFinding& f, Now now) const;
  void EachLoopJson(Now now, const std::function<void(nlohmann::json&&)>& f) const;

  RegistryOptions options_;
  std::unique_ptr<Metrics, SeriesDeleter> metrics_;
  ConnId next_conn_ = 1;
  std::map<ConnId, Conn> conns_;
  std::map<ProcKey, Proc> procs_;
  std::map<LoopKey, Loop> loops_;
  // By service: the pid of the process (in procs_) holding each slot, 0 for a free slot (pids
  // are positive). No trailing free slots; a service without slots has no entry.
  std::map<std::string, std::vector<int64_t>> slots_;
  std::deque<std::pair<StallFinding, size_t>>
      recent_;  // closed stalls (and their size), oldest first
  size_t recent_bytes_ = 0;
  // Eviction warnings: one line per 10 s at most.
  LogRateLimit eviction_log_limit_{std::chrono::nanoseconds(std::chrono::seconds(10)).count()};
  // The stack store.
  StackMap stacks_;
  std::map<uint64_t, StackMap::iterator> stacks_lru_;  // by seq: least recently sampled first
  std::map<std::string, std::map<uint64_t, StackMap::iterator>>
      service_stacks_;  // same, per service
  uint64_t stack_seq_ = 0;
  size_t stacks_bytes_ = 0;
  uint64_t stacks_overflow_ = 0;
  size_t call_sites_ = 0;  // CallSite entries of every loop (max_call_sites)
  StackRecords stack_records_{options_.max_stack_records, options_.max_stack_records_bytes};
  // The exposition's text cache (see MetricsPieces): the # HELP / # TYPE lines.
  std::vector<TextPiece> family_headers_;     // by ProcMetrics::FamilyId
  std::vector<TextPiece> family_om_headers_;  // the same, OpenMetrics' lines
  bool text_cache_ok_ = true;
};

}  // namespace stallwatch::daemon
