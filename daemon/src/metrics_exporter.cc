// The Registry's Prometheus exporter (registry.h): the series of every process and loop, the
// daemon's own series, and the exposition of /metrics with its text cache, in the Prometheus
// text format or in OpenMetrics with the stall durations' exemplars. The only translation
// unit of the daemon that includes prometheus-cpp: the model (registry.cc) changes its series
// through the small member functions below, each a few stores through pointers kept in the
// process's and the loop's entries.
//
// Threading: as the Registry, the daemon's loop thread only; nothing here locks. A TextPiece
// handed out shares the ownership of its text: it stays valid after the cache has moved on.
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
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>

#include "registry.h"
#include "stallwatch/common/blocking_calls.h"
#include "stallwatch/common/histogram.h"

namespace stallwatch::daemon {

using wire::RejectReason;

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

const std::vector<double>& BlockingCallBucketsSeconds() {
  static const std::vector<double> b = [] {
    std::vector<double> v;
    for (int e = 10; e <= 34; e += 2) {
      v.push_back(static_cast<double>(uint64_t{1} << e) / 1e9);
    }
    return v;
  }();
  return b;
}

namespace internal {

std::vector<double> RebucketCalls(const SparseHistogram& sparse,
                                  const std::vector<double>& bounds_s) {
  std::vector<double> out(bounds_s.size() + 1, 0.0);
  std::vector<uint64_t> bounds_ns(bounds_s.size());
  for (size_t b = 0; b < bounds_s.size(); ++b) {
    bounds_ns[b] = static_cast<uint64_t>(std::llround(bounds_s[b] * 1e9));
  }
  for (const auto& [index, count] : sparse) {
    if (index >= static_cast<uint32_t>(kCallBuckets) || count == 0) {
      continue;
    }
    const uint64_t upper = CallBucketUpperNs(static_cast<int>(index));
    size_t b = bounds_ns.size();  // the last bucket: +Inf
    if (upper != UINT64_MAX) {
      b = 0;
      while (b < bounds_ns.size() && bounds_ns[b] < upper - 1) {
        ++b;
      }
    }
    out[b] += static_cast<double>(count);
  }
  return out;
}

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

}  // namespace internal

namespace {

// ---- OpenMetrics text (https://openmetrics.io, 1.0) ---------------------------------------------
// prometheus-cpp writes only the Prometheus text format. The OpenMetrics exposition reuses its
// sample lines (they are valid OpenMetrics as they are) and writes here what differs: the
// # TYPE / # HELP lines, the lines of series that carry exemplars, and the daemon's own few
// series. Numbers are written as TextSerializer writes them (%.16g: its precision is
// max_digits10 - 1), so a series has the same text — the same `le` values, hence the same
// series in Prometheus — whichever format a scrape asked for.

// Writes an exemplar after the sample line of histogram bucket `b` (" # {…} value ts"), or
// nothing.
using ExemplarWriter = std::function<void(size_t b, std::string* out)>;

void AppendNumber(double v, std::string* out) {
  if (std::isnan(v)) {
    *out += "NaN";
  } else if (std::isinf(v)) {
    *out += v < 0 ? "-Inf" : "+Inf";
  } else {
    std::array<char, 32> buf{};
    const int n = std::snprintf(buf.data(), buf.size(), "%.16g", v);
    out->append(buf.data(), static_cast<size_t>(std::max(n, 0)));
  }
}

// A label value or # HELP text: backslash, double quote and newline escaped.
void AppendEscaped(std::string_view s, std::string* out) {
  for (const char c : s) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '"') {
      *out += "\\\"";
    } else if (c == '\n') {
      *out += "\\n";
    } else {
      *out += c;
    }
  }
}

// name{labels[,extra="value"]} — the labels in the order given (prometheus-cpp's: by name), an
// extra label (le, quantile) last, as TextSerializer writes them.
void AppendSeriesName(std::string_view name, std::string_view suffix,
                      const std::vector<prometheus::ClientMetric::Label>& labels,
                      std::string_view extra_name, const std::string& extra_value,
                      std::string* out) {
  *out += name;
  *out += suffix;
  if (labels.empty() && extra_name.empty()) {
    return;
  }
  *out += '{';
  bool first = true;
  const auto label = [&](std::string_view n, std::string_view v) {
    if (!first) {
      *out += ',';
    }
    first = false;
    *out += n;
    *out += "=\"";
    AppendEscaped(v, out);
    *out += '"';
  };
  for (const auto& l : labels) {
    label(l.name, l.value);
  }
  if (!extra_name.empty()) {
    label(extra_name, extra_value);
  }
  *out += '}';
}

std::string NumberText(double v) {
  std::string s;
  AppendNumber(v, &s);
  return s;
}

// The # TYPE and # HELP lines of a family. A counter's family is named without its samples'
// `_total` suffix, as OpenMetrics requires; a counter not named …_total is declared `unknown`
// (its samples keep their name: renaming them would make new series in Prometheus).
std::string OpenMetricsHeader(const prometheus::MetricFamily& fam) {
  std::string name = fam.name;
  std::string_view type = "unknown";
  switch (fam.type) {
    case prometheus::MetricType::Counter:
      if (name.ends_with("_total") && name.size() > 6) {
        name.resize(name.size() - 6);
        type = "counter";
      }
      break;
    case prometheus::MetricType::Gauge:
      type = "gauge";
      break;
    case prometheus::MetricType::Histogram:
      type = "histogram";
      break;
    case prometheus::MetricType::Summary:
      type = "summary";
      break;
    case prometheus::MetricType::Untyped:
      break;
  }
  std::string out = "# TYPE " + name + " " + std::string(type) + "\n# HELP " + name + " ";
  AppendEscaped(fam.help, &out);
  out += '\n';
  return out;
}

// The sample lines of one series of `fam` (its # TYPE / # HELP lines apart). A histogram's
// buckets come first, then _count and _sum; `exemplar`, when given, follows each bucket's value.
void AppendOpenMetricsSeries(const prometheus::MetricFamily& fam, const prometheus::ClientMetric& m,
                             const ExemplarWriter* exemplar, std::string* out) {
  const auto& labels = m.label;
  const auto value_line = [&](std::string_view suffix, std::string_view extra_name,
                              const std::string& extra_value, const std::string& value) {
    AppendSeriesName(fam.name, suffix, labels, extra_name, extra_value, out);
    *out += ' ';
    *out += value;
  };
  const auto end_line = [&] {
    if (m.timestamp_ms != 0) {
      *out += ' ';
      AppendNumber(static_cast<double>(m.timestamp_ms) / 1000, out);
    }
    *out += '\n';
  };
  switch (fam.type) {
    case prometheus::MetricType::Counter:
      value_line("", "", "", NumberText(m.counter.value));
      end_line();
      break;
    case prometheus::MetricType::Gauge:
      value_line("", "", "", NumberText(m.gauge.value));
      end_line();
      break;
    case prometheus::MetricType::Untyped:
      value_line("", "", "", NumberText(m.untyped.value));
      end_line();
      break;
    case prometheus::MetricType::Summary:
      for (const auto& q : m.summary.quantile) {
        value_line("", "quantile", NumberText(q.quantile), NumberText(q.value));
        end_line();
      }
      value_line("_sum", "", "", NumberText(m.summary.sample_sum));
      end_line();
      value_line("_count", "", "", std::to_string(m.summary.sample_count));
      end_line();
      break;
    case prometheus::MetricType::Histogram: {
      const auto& h = m.histogram;
      bool inf = false;
      for (size_t b = 0; b < h.bucket.size(); ++b) {
        inf = std::isinf(h.bucket[b].upper_bound);
        value_line("_bucket", "le", NumberText(h.bucket[b].upper_bound),
                   std::to_string(h.bucket[b].cumulative_count));
        if (exemplar) {
          (*exemplar)(b, out);
        }
        end_line();
      }
      if (!inf) {
        value_line("_bucket", "le", "+Inf", std::to_string(h.sample_count));
        if (exemplar) {
          (*exemplar)(h.bucket.size(), out);
        }
        end_line();
      }
      value_line("_count", "", "", std::to_string(h.sample_count));
      end_line();
      value_line("_sum", "", "", NumberText(h.sample_sum));
      end_line();
      break;
    }
  }
}

void AppendOpenMetrics(const std::vector<prometheus::MetricFamily>& families, std::string* out) {
  for (const auto& fam : families) {
    *out += OpenMetricsHeader(fam);
    for (const auto& m : fam.metric) {
      AppendOpenMetricsSeries(fam, m, nullptr, out);
    }
  }
}

constexpr std::string_view kOpenMetricsEof = "# EOF\n";

}  // namespace

// The latest closed stall counted in one bucket of a loop's stall duration histogram: the
// bucket's exemplar. stall_id 0: none yet.
struct StallExemplar {
  uint64_t stall_id = 0;
  double duration_s = 0;
  int64_t end_unix_ns = 0;
};

// The series of one process (service, pid) live in a registry of their own, labelled with the
// process's slot in its service (`process`), not its pid: prometheus-cpp's
// Family::Remove scans the whole family, so with every process in one registry, expiring
// 1000 agents × 4 loops would cost seconds of the daemon's loop; per process, a departure
// costs only its own series. /metrics merges the registries' families by name.
struct Registry::ProcMetrics {
  std::string process;  // the `process` label: the slot's number
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
  prometheus::Family<prometheus::Counter>& blocking_calls =
      prometheus::BuildCounter()
          .Name("stallwatch_blocking_calls_total")
          .Help(
              "Calls of known-blocking functions made on the loop's thread, by call (the "
              "blocking-call ledger; call sites in /api/v1/calls)")
          .Register(registry);
  prometheus::Family<prometheus::Histogram>& blocking_call_seconds =
      prometheus::BuildHistogram()
          .Name("stallwatch_blocking_call_seconds")
          .Help("Duration of the loop thread's calls of known-blocking functions, by call")
          .Register(registry);
  prometheus::Counter* dropped_series = nullptr;  // the process's one series of `dropped`
  // stallwatch_process_info is no prometheus-cpp family: its one series is written from the
  // process's entry, which holds every label already. A family of its own in each process's
  // registry cost ~1.4 KiB per process (1.4 MiB of the daemon's 64 with 1000 processes).
  const ProcKey* key = nullptr;  // of the process's entry in procs_ (stable: std::map)
  const Proc* proc = nullptr;
  // A loop of the process has had a closed stall: its stall durations carry exemplars in the
  // OpenMetrics exposition (written at each such scrape, not taken from the text cache).
  bool has_exemplars = false;
  // Whole Unix seconds, the resolution of the boot time the agent's figure rests on ("" when
  // unknown — an older agent —: Prometheus drops an empty label). With the pid, one process
  // across pid reuse.
  static std::string StartTimeLabel(int64_t start_time_ns) {
    return start_time_ns > 0 ? std::to_string(start_time_ns / 1'000'000'000) : std::string();
  }
  static const std::string& InfoName() {
    static const std::string name = "stallwatch_process_info";
    return name;
  }
  prometheus::MetricFamily InfoFamily() const {
    prometheus::MetricFamily fam;
    fam.name = InfoName();
    fam.help =
        "1 for each process the daemon holds (connected, or gone and not yet expired nor "
        "replaced): the pid, executable and start time (Unix seconds) behind its process slot";
    fam.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric m;
    // By name, as prometheus-cpp's families order labels.
    m.label = {{"agent_version", proc->agent_version},
               {"executable", proc->executable},
               {"host", proc->host},
               {"pid", std::to_string(key->second)},
               {"process", process},
               {"service", key->first},
               {"start_time", StartTimeLabel(proc->start_time_ns)}};
    m.gauge.value = 1;
    fam.metric.push_back(std::move(m));
    return fam;
  }

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
    kBlockingCalls,
    kBlockingCallSeconds,
    kInfo,
    kFamilyCount
  };
  static constexpr unsigned kAllDirty = (1u << kFamilyCount) - 1;
  unsigned dirty = kAllDirty;
  std::shared_ptr<const char> block;  // the texts of all families, one after the other
  std::array<std::string_view, kFamilyCount> text;  // into `block`
  void Touch(FamilyId f) { dirty |= 1u << f; }

  // What a scrape shows of family `f` for this process.
  std::vector<prometheus::MetricFamily> Collect(unsigned f) {
    if (f == kInfo) {
      return {InfoFamily()};
    }
    return family(f).Collect();
  }
  // Every family of this process, in the exposition's order.
  std::vector<prometheus::MetricFamily> CollectAll() {
    std::vector<prometheus::MetricFamily> all = registry.Collect();
    all.push_back(InfoFamily());
    return all;
  }

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
      case kBlockingCalls:
        return blocking_calls;
      case kBlockingCallSeconds:
        return blocking_call_seconds;
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
      case kDropped:
        return dropped.GetName();
      case kBlockingCalls:
        return blocking_calls.GetName();
      case kBlockingCallSeconds:
        return blocking_call_seconds.GetName();
      default:
        return InfoName();
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
  prometheus::Family<prometheus::Counter>& http_rejected_family =
      prometheus::BuildCounter()
          .Name("stallwatch_daemon_http_requests_rejected_total")
          .Help(
              "HTTP requests the daemon answered with a one-line error: not_found (no such "
              "path, 404) or bad_query (a parameter or value it does not accept, 400)")
          .Register(registry);
  prometheus::Counter& http_not_found = http_rejected_family.Add({{"reason", "not_found"}});
  prometheus::Counter& http_bad_query = http_rejected_family.Add({{"reason", "bad_query"}});
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
  prometheus::Family<prometheus::Counter>& call_sites_not_kept_family =
      prometheus::BuildCounter()
          .Name("stallwatch_daemon_call_sites_not_kept_total")
          .Help(
              "Blocking calls whose call site the daemon had no room to keep for /api/v1/calls "
              "(--max-call-sites, --max-call-sites-per-loop); they still count in "
              "stallwatch_blocking_calls_total")
          .Register(registry);
  prometheus::Counter& call_sites_not_kept = call_sites_not_kept_family.Add({});

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
  // By call (kBlockingCalls); created at the loop's first call of each.
  std::array<prometheus::Counter*, kBlockingCalls.size()> calls{};
  std::array<prometheus::Histogram*, kBlockingCalls.size()> call_seconds{};
  // By bucket of stall_duration (StallBucketsSeconds(), then +Inf); empty until the loop's first
  // closed stall.
  std::vector<StallExemplar> exemplars;

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
    for (prometheus::Counter* c : calls) {
      if (c) {
        m->blocking_calls.Remove(c);
      }
    }
    for (prometheus::Histogram* h : call_seconds) {
      if (h) {
        m->blocking_call_seconds.Remove(h);
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
  void ObserveStall(const StallFinding& f) {
    stall_duration->Observe(f.duration_s);
    m->Touch(F::kStallDuration);
    if (f.stall_id == 0) {
      return;  // no id: nothing would resolve it
    }
    // The bucket the observation fell in: the first bound ≥ the duration, as prometheus-cpp's
    // Histogram::Observe picks it (a `le` bucket holds values up to its bound).
    const std::vector<double>& bounds = StallBucketsSeconds();
    const auto b = static_cast<size_t>(
        std::lower_bound(bounds.begin(), bounds.end(), f.duration_s) - bounds.begin());
    exemplars.resize(bounds.size() + 1);
    exemplars[b] =
        StallExemplar{f.stall_id, f.duration_s, f.start_ns + std::llround(f.duration_s * 1e9)};
    m->has_exemplars = true;
  }
  // The OpenMetrics lines of the loop's stall duration histogram, each bucket with the exemplar
  // of the latest stall it counted: {pid="…",stall_id="…"} (with the series' service and loop,
  // the stall's name in the API), the duration, and the time the stall ended (Unix seconds).
  void AppendStallDurationOpenMetrics(std::string* out) const {
    prometheus::MetricFamily fam;
    fam.name = m->stall_duration.GetName();
    fam.type = prometheus::MetricType::Histogram;
    prometheus::ClientMetric c = stall_duration->Collect();
    for (const auto& [name, value] : Labels()) {  // by name, as prometheus-cpp's families
      c.label.push_back(prometheus::ClientMetric::Label{name, value});
    }
    const std::string pid = std::to_string(std::get<1>(*key));
    const ExemplarWriter exemplar = [&](size_t b, std::string* o) {
      if (b >= exemplars.size() || exemplars[b].stall_id == 0) {
        return;
      }
      const StallExemplar& e = exemplars[b];
      // The label set is at most 128 UTF-8 characters (OpenMetrics): here at most ~60.
      *o += " # {pid=\"";
      *o += pid;
      *o += "\",stall_id=\"";
      *o += std::to_string(e.stall_id);
      *o += "\"} ";
      AppendNumber(e.duration_s, o);
      // Seconds with milliseconds, without the rounding of a double.
      const int64_t ms = e.end_unix_ns / 1'000'000;
      std::array<char, 32> ts{};
      const int n =
          std::snprintf(ts.data(), ts.size(), " %lld.%03lld", static_cast<long long>(ms / 1000),
                        static_cast<long long>(ms % 1000));
      o->append(ts.data(), static_cast<size_t>(std::max(n, 0)));
    };
    AppendOpenMetricsSeries(fam, c, &exemplar, out);
  }
  void ObserveCalls(int call, uint64_t count, double sum_s, const SparseHistogram& buckets) {
    const auto i = static_cast<size_t>(call);
    if (!calls.at(i)) {
      prometheus::Labels l = Labels();
      l["call"] = std::string(kBlockingCalls[i].name);
      calls[i] = &m->blocking_calls.Add(l);
      call_seconds[i] = &m->blocking_call_seconds.Add(l, BlockingCallBucketsSeconds());
    }
    calls[i]->Increment(static_cast<double>(count));
    call_seconds[i]->ObserveMultiple(internal::RebucketCalls(buckets, BlockingCallBucketsSeconds()),
                                     sum_s);
    m->Touch(F::kBlockingCalls);
    m->Touch(F::kBlockingCallSeconds);
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
    return {{"service", std::get<0>(*key)}, {"process", m->process}, {"loop", std::get<2>(*key)}};
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

void Registry::SeriesDeleter::operator()(Metrics* m) const { delete m; }
void Registry::SeriesDeleter::operator()(LoopSeries* s) const { delete s; }

std::unique_ptr<Registry::Metrics, Registry::SeriesDeleter> Registry::NewMetrics() {
  return std::unique_ptr<Metrics, SeriesDeleter>(new Metrics());
}

void Registry::AddProcSeries(const ProcKey& key, Proc& p) {
  p.metrics = std::make_shared<ProcMetrics>();
  p.metrics->key = &key;
  p.metrics->proc = &p;
  p.metrics->process = std::to_string(p.slot);
  p.metrics->dropped_series =
      &p.metrics->dropped.Add({{"service", key.first}, {"process", p.metrics->process}});
  p.metrics->Touch(ProcMetrics::kDropped);
  SetProcInfo(p);
}

void Registry::SetProcInfo(Proc& p) {
  // Written from the process's entry at the next serialization (ProcMetrics::InfoFamily).
  p.metrics->Touch(ProcMetrics::kInfo);
}

void Registry::AddLoopSeries(const LoopKey& key, Loop& l, const Proc& p) {
  l.series = std::unique_ptr<LoopSeries, SeriesDeleter>(new LoopSeries(p.metrics.get(), &key));
}

void Registry::ObserveWindow(Loop& l, const DelayFinding& d) { l.series->ObserveWindow(d); }

void Registry::AddStackSamples(Loop& l, uint64_t n) {
  l.series->AddStackSamples(static_cast<double>(n));
}

void Registry::AddSuppressed(Loop& l, uint64_t n) {
  l.series->AddSuppressed(static_cast<double>(n));
}

void Registry::AddStalls(Loop& l, StallClass cls, uint64_t n) {
  l.series->AddStalls(cls, static_cast<double>(n));
}

void Registry::ObserveStall(Loop& l, const StallFinding& f) { l.series->ObserveStall(f); }

void Registry::SetOngoing(Loop& l, double age_s) { l.series->SetOngoing(age_s); }

void Registry::ObserveCalls(Loop& l, int call, uint64_t count, double sum_s,
                            const SparseHistogram& buckets) {
  l.series->ObserveCalls(call, count, sum_s, buckets);
}

void Registry::CountCallSitesNotKept(uint64_t n) {
  metrics_->call_sites_not_kept.Increment(static_cast<double>(n));
}

void Registry::AddDropped(Proc& p, uint64_t n) {
  p.metrics->dropped_series->Increment(static_cast<double>(n));
  p.metrics->Touch(ProcMetrics::kDropped);
}

void Registry::CountStackEvicted() { metrics_->stacks_evicted.Increment(); }

void Registry::CountProcEvicted() { metrics_->procs_evicted.Increment(); }

void Registry::SetAgentGauges() {
  metrics_->agents.Set(static_cast<double>(conns_.size()));
  metrics_->silent.Set(static_cast<double>(silent_agents()));
}

void Registry::Reject(RejectReason reason) { metrics_->rejected.at(reason)->Increment(); }

void Registry::RejectRequest(bool not_found) {
  (not_found ? metrics_->http_not_found : metrics_->http_bad_query).Increment();
}

uint64_t Registry::requests_rejected(bool not_found) const {
  return static_cast<uint64_t>(
      (not_found ? metrics_->http_not_found : metrics_->http_bad_query).Value());
}

uint64_t Registry::rejected(RejectReason reason) const {
  return static_cast<uint64_t>(metrics_->rejected.at(reason)->Value());
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
  SetAgentGauges();
}

// A process's families, each holding one series: what ProcFamilyOrder reads the order from.
// Collect leaves out a family without any series (a process without loops, a loop that made no
// blocking call), so a real process cannot tell the order of every family.
const Registry::ProcMetrics& Registry::FamilyProbe() {
  static const ProcMetrics* probe = [] {
    auto* m = new ProcMetrics();  // never destroyed: used until exit
    const prometheus::Labels l = {{"probe", "1"}};
    m->delay.Add(l, DelayBucketsSeconds());
    m->iteration.Add(l, IterationBucketsSeconds());
    m->utilization.Add(l);
    m->stalls.Add(l);
    m->stall_duration.Add(l, StallBucketsSeconds());
    m->ongoing.Add(l);
    m->stack_samples.Add(l);
    m->suppressed.Add(l);
    m->dropped.Add(l);
    m->blocking_calls.Add(l);
    m->blocking_call_seconds.Add(l, BlockingCallBucketsSeconds());
    return m;
  }();
  return *probe;
}

// The order of a process's families in the exposition: the order prometheus::Registry::Collect
// gives (by type, then registration), stallwatch_process_info last — the order the exposition
// has always had.
const std::vector<unsigned>& Registry::ProcFamilyOrder() {
  static const std::vector<unsigned> order = [] {
    const ProcMetrics& probe = FamilyProbe();
    std::vector<unsigned> o;
    for (const auto& fam : probe.registry.Collect()) {
      for (unsigned f = 0; f < ProcMetrics::kFamilyCount; ++f) {
        if (probe.name(f) == fam.name) {
          o.push_back(f);
        }
      }
    }
    o.push_back(ProcMetrics::kInfo);
    return o;
  }();
  return order;
}

bool Registry::RefreshText(ProcMetrics& m) {
  if (family_order_.empty()) {
    family_order_ = ProcFamilyOrder();
    family_headers_.resize(ProcMetrics::kFamilyCount);
    family_om_headers_.resize(ProcMetrics::kFamilyCount);
    if (family_order_.size() != ProcMetrics::kFamilyCount) {
      return false;
    }
  }
  std::array<std::string, ProcMetrics::kFamilyCount> fresh;
  std::array<std::string_view, ProcMetrics::kFamilyCount> texts = m.text;
  size_t total = 0;
  for (unsigned f = 0; f < ProcMetrics::kFamilyCount; ++f) {
    if (m.dirty & (1u << f)) {
      const std::vector<prometheus::MetricFamily> fams = m.Collect(f);
      if (fams.empty()) {
        texts[f] = {};  // no series of this family in this process
        continue;
      }
      if (fams.size() != 1) {
        return false;
      }
      TextPiece& header = family_headers_[f];
      if (!header.owner) {
        auto h = std::make_shared<std::string>();
        Serialize({prometheus::MetricFamily{fams[0].name, fams[0].help, fams[0].type, {}}},
                  h.get());
        header = TextPiece{h, *h};
        auto om = std::make_shared<std::string>(OpenMetricsHeader(fams[0]));
        family_om_headers_[f] = TextPiece{om, *om};
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
    // A reply being sent still holds this process's text: a new text now would double it in
    // memory until the reply is done (with a scrape in flight while every agent reports, up to
    // the whole 18 MiB). Left to a later call, or to the next scrape, which needs it anyway.
    if (p.metrics->block.use_count() > 1) {
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return true;
    }
    Refresh(*p.metrics);
  }
  return false;
}

void Registry::MetricsPieces(Now now, std::vector<TextPiece>* out, Format format) {
  UpdateAges(now);
  for (auto& [key, p] : procs_) {
    if (p.metrics && !Refresh(*p.metrics)) {
      break;
    }
  }
  const bool om = format == Format::kOpenMetrics;
  if (!text_cache_ok_) {
    if (om) {
      auto text = std::make_shared<std::string>();
      WriteUncachedOpenMetrics(text.get());
      out->push_back(TextPiece{text, *text});
      return;
    }
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
      // A family without a series in any process is left out, as Collect leaves it out.
      bool header = false;
      for (const auto& [key, p] : procs_) {
        if (!p.metrics || p.metrics->text[f].empty()) {
          continue;
        }
        if (!header) {
          out->push_back(om ? family_om_headers_[f] : family_headers_[f]);
          header = true;
        }
        if (om && f == ProcMetrics::kStallDuration && p.metrics->has_exemplars) {
          // Written at each such scrape: the cache holds the text format's lines only (a second
          // cached copy would hold ~1.3 KiB per loop for good).
          auto text = std::make_shared<std::string>();
          StallDurationOpenMetrics(key, text.get());
          out->push_back(TextPiece{text, *text});
          continue;
        }
        out->push_back(TextPiece{p.metrics->block, p.metrics->text[f]});
      }
    }
  }
  // The daemon's own few series change at every scrape: serialized each time.
  auto own = std::make_shared<std::string>();
  if (om) {
    AppendOpenMetrics(metrics_->registry.Collect(), own.get());
    *own += kOpenMetricsEof;
  } else {
    Serialize(metrics_->registry.Collect(), own.get());
  }
  out->push_back(TextPiece{own, *own});
}

void Registry::StallDurationOpenMetrics(const ProcKey& key, std::string* out) const {
  // loops_ is ordered by (service, pid, loop): the process's loops are contiguous.
  for (auto it = loops_.lower_bound(LoopKey{key.first, key.second, std::string()});
       it != loops_.end() && std::get<0>(it->first) == key.first &&
       std::get<1>(it->first) == key.second;
       ++it) {
    if (it->second.series) {
      it->second.series->AppendStallDurationOpenMetrics(out);
    }
  }
}

void Registry::WriteMetrics(std::ostream& out, Now now, Format format) {
  std::vector<TextPiece> pieces;
  MetricsPieces(now, &pieces, format);
  for (const auto& p : pieces) {
    out.write(p.text.data(), static_cast<std::streamsize>(p.text.size()));
  }
}

std::string Registry::MetricsText(Now now, Format format) {
  std::ostringstream out;
  WriteMetrics(out, now, format);
  return std::move(out).str();
}

std::string Registry::MetricsTextUncachedForTest(Now now) {
  UpdateAges(now);
  std::ostringstream out;
  WriteUncached(out);
  return std::move(out).str();
}

namespace {

// Every process's families merged by name (the exposition has each family once), in the
// exposition's order (`order`: the processes' families, ProcFamilyOrder), then the daemon's own.
std::vector<prometheus::MetricFamily> MergeFamilies(
    std::vector<std::vector<prometheus::MetricFamily>>&& parts,
    const std::vector<std::string>& order) {
  std::vector<prometheus::MetricFamily> families;
  std::map<std::string, size_t> index;
  for (auto& part : parts) {
    for (auto& f : part) {
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
  // A process without a family (no loops yet, no blocking calls) must not move it: the order
  // is the fixed one, whichever process has it first.
  auto rank = [&](const std::string& name) {
    const auto at = std::find(order.begin(), order.end(), name);
    return at == order.end() ? order.size() : static_cast<size_t>(at - order.begin());
  };
  std::stable_sort(families.begin(), families.end(),
                   [&](const auto& a, const auto& b) { return rank(a.name) < rank(b.name); });
  return families;
}

}  // namespace

const std::vector<std::string>& Registry::ProcFamilyNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (unsigned f : ProcFamilyOrder()) {
      n.push_back(FamilyProbe().name(f));
    }
    return n;
  }();
  return names;
}

void Registry::WriteUncached(std::ostream& out) {
  std::vector<std::vector<prometheus::MetricFamily>> parts;
  for (const auto& [key, p] : procs_) {
    if (p.metrics) {
      parts.push_back(p.metrics->CollectAll());
    }
  }
  parts.push_back(metrics_->registry.Collect());
  prometheus::TextSerializer().Serialize(out, MergeFamilies(std::move(parts), ProcFamilyNames()));
}

void Registry::WriteUncachedOpenMetrics(std::string* out) {
  // Without the text cache (TextSerializer's layout was not the expected one): every series
  // written here, without exemplars.
  std::vector<std::vector<prometheus::MetricFamily>> parts;
  for (const auto& [key, p] : procs_) {
    if (p.metrics) {
      parts.push_back(p.metrics->CollectAll());
    }
  }
  parts.push_back(metrics_->registry.Collect());
  AppendOpenMetrics(MergeFamilies(std::move(parts), ProcFamilyNames()), out);
  *out += kOpenMetricsEof;
}

}  // namespace stallwatch::daemon
