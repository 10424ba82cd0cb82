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
#include <limits>
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

// A histogram's state: the observations per bucket (one per bound, then +Inf) and their sum.
// What a prometheus::Histogram holds, without its per-bucket counter objects, mutex and label
// map; the exposition builds prometheus-cpp's ClientMetric from it only while serializing.
struct HistogramData {
  std::vector<uint64_t> counts;
  double sum = 0;

  explicit HistogramData(const std::vector<double>& bounds) : counts(bounds.size() + 1, 0) {}
  // `increments` has one entry per bucket (internal::Rebucket's layout): whole counts.
  void ObserveMultiple(const std::vector<double>& increments, double sum_s) {
    for (size_t b = 0; b < counts.size() && b < increments.size(); ++b) {
      counts[b] += static_cast<uint64_t>(std::max(increments[b], 0.0));
    }
    sum += sum_s;
  }
  // The bucket a value falls in: the first bound ≥ it (a `le` bucket holds values up to its
  // bound), as prometheus-cpp's Histogram::Observe picks it.
  static size_t BucketOf(const std::vector<double>& bounds, double v) {
    return static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin());
  }
  void Observe(const std::vector<double>& bounds, double v) {
    counts.at(BucketOf(bounds, v)) += 1;
    sum += v;
  }
  prometheus::ClientMetric::Histogram Collect(const std::vector<double>& bounds) const {
    prometheus::ClientMetric::Histogram h;
    uint64_t cumulative = 0;
    h.bucket.reserve(counts.size());
    for (size_t b = 0; b < counts.size(); ++b) {
      cumulative += counts[b];
      prometheus::ClientMetric::Bucket bucket;
      bucket.cumulative_count = cumulative;
      bucket.upper_bound = b < bounds.size() ? bounds[b] : std::numeric_limits<double>::infinity();
      h.bucket.push_back(bucket);
    }
    h.sample_count = cumulative;
    h.sample_sum = sum;
    return h;
  }
};

// The families of a process's series: name, # HELP text and type.
struct FamilyDesc {
  const char* name;
  const char* help;
  prometheus::MetricType type;
};

// The series of one process (service, pid), labelled with the process's slot in its service
// (`process`), not its pid. They are the daemon's own plain values (HistogramData, doubles),
// not prometheus-cpp objects: a prometheus-cpp series keeps its own label map and a mutex
// (~5 KiB for the 12 series of a loop, 21 of the daemon's 66 MiB with 1000 agents × 4 loops);
// here a loop's series cost ~0.5 KiB and their labels are built only while serializing.
// /metrics merges the processes' families by name.
struct Registry::ProcMetrics {
  std::string process;  // the `process` label: the slot's number
  // stallwatch_agent_findings_dropped_total, the process's one series of its own.
  double dropped = 0;
  // The series of the process's loops, by loop name (the exposition's order within a family).
  std::vector<LoopSeries*> loops;
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

  // A process's families, in the exposition's order (the order the exposition has had since
  // its series were prometheus-cpp's: counters, gauges, histograms, each in the order they were
  // registered, stallwatch_process_info last). The exposition of this process's series is
  // cached per family: `text[f]` is what TextSerializer writes for the family's series of this
  // process, without the family's # HELP / # TYPE lines (written once per scrape for all
  // processes). A family is serialized again only after one of its series changed (its `dirty`
  // bit): a scrape re-serializes what changed since the last one, not every series of every
  // process.
  enum FamilyId : unsigned {
    kStalls,
    kStackSamples,
    kSuppressed,
    kDropped,
    kBlockingCalls,
    kUtilization,
    kOngoing,
    kDelay,
    kIteration,
    kStallDuration,
    kBlockingCallSeconds,
    kInfo,
    kFamilyCount
  };
  static const FamilyDesc& Desc(unsigned f) {
    using prometheus::MetricType;
    static const std::array<FamilyDesc, kFamilyCount> desc = {{
        {"stallwatch_stalls_total",
         "Stalls closed, by class (cpu, blocked, starved, suspended; unknown when only the "
         "agent's counter says so)",
         MetricType::Counter},
        {"stallwatch_stack_samples_total", "Stacks sampled by the agent during stalls",
         MetricType::Counter},
        {"stallwatch_reports_suppressed_total",
         "Stack reports suppressed by the agent's rate limit", MetricType::Counter},
        {"stallwatch_agent_findings_dropped_total",
         "Findings the agent dropped from its bounded queue while the daemon was away "
         "(per process)",
         MetricType::Counter},
        {"stallwatch_blocking_calls_total",
         "Calls of known-blocking functions made on the loop's thread, by call (the "
         "blocking-call ledger; call sites in /api/v1/calls)",
         MetricType::Counter},
        {"stallwatch_loop_utilization_ratio",
         "Fraction of the last report window the loop spent busy (not waiting for events)",
         MetricType::Gauge},
        {"stallwatch_stall_ongoing_seconds",
         "Age of the loop's current stall; 0 when the loop is making progress", MetricType::Gauge},
        {"stallwatch_loop_delay_seconds",
         "Lateness of the agent's probe timer: how long ready work waited for the loop",
         MetricType::Histogram},
        {"stallwatch_loop_iteration_seconds",
         "Busy periods of the loop: from returning from the wait for events to the next wait",
         MetricType::Histogram},
        {"stallwatch_stall_duration_seconds", "Exact duration of closed stalls",
         MetricType::Histogram},
        {"stallwatch_blocking_call_seconds",
         "Duration of the loop thread's calls of known-blocking functions, by call",
         MetricType::Histogram},
        {"stallwatch_process_info",
         "1 for each process the daemon holds (connected, or gone and not yet expired nor "
         "replaced): the pid, executable and start time (Unix seconds) behind its process slot",
         MetricType::Gauge},
    }};
    return desc.at(f);
  }
  static constexpr unsigned kAllDirty = (1u << kFamilyCount) - 1;
  unsigned dirty = kAllDirty;
  std::shared_ptr<const char> block;  // the texts of all families, one after the other
  std::array<std::string_view, kFamilyCount> text;  // into `block`
  void Touch(FamilyId f) { dirty |= 1u << f; }

  static prometheus::MetricFamily EmptyFamily(unsigned f) {
    const FamilyDesc& d = Desc(f);
    prometheus::MetricFamily fam;
    fam.name = d.name;
    fam.help = d.help;
    fam.type = d.type;
    return fam;
  }
  // The process's series of family `f`, built now (defined after LoopSeries); none when the
  // process has no series of it (no loops yet, no blocking call): the family is left out.
  std::vector<prometheus::MetricFamily> Collect(unsigned f) const;
  // The OpenMetrics lines of the stall durations of the process's loops, with their exemplars
  // (defined after LoopSeries).
  void AppendStallDurationOpenMetrics(std::string* out) const;
  // Every family of this process that has series, in the exposition's order.
  std::vector<prometheus::MetricFamily> CollectAll() const {
    std::vector<prometheus::MetricFamily> all;
    for (unsigned f = 0; f < kFamilyCount; ++f) {
      for (auto& fam : Collect(f)) {
        all.push_back(std::move(fam));
      }
    }
    return all;
  }
  // Labels are by name, as prometheus-cpp's families ordered them.
  prometheus::ClientMetric InfoMetric() const {
    prometheus::ClientMetric m;
    m.label = {{"agent_version", proc->agent_version},
               {"executable", proc->executable},
               {"host", proc->host},
               {"pid", std::to_string(key->second)},
               {"process", process},
               {"service", key->first},
               {"start_time", StartTimeLabel(proc->start_time_ns)}};
    m.gauge.value = 1;
    return m;
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
  HistogramData delay{DelayBucketsSeconds()};
  HistogramData iteration{IterationBucketsSeconds()};
  HistogramData stall_duration{StallBucketsSeconds()};
  double utilization = 0;
  double ongoing = 0;
  double stack_samples = 0;
  double suppressed = 0;
  // By StallClass; a class's series exists once `stalls_seen` has its bit (the four real
  // classes from the start, see the constructor).
  std::array<double, 5> stalls{};
  unsigned stalls_seen = 0;
  // By call, in the order of the loop's first call of each; created at that call.
  struct CallSeries {
    int call = 0;  // indexes kBlockingCalls
    double count = 0;
    HistogramData seconds{BlockingCallBucketsSeconds()};
  };
  std::vector<CallSeries> calls;
  // By bucket of stall_duration (StallBucketsSeconds(), then +Inf); empty until the loop's first
  // closed stall.
  std::vector<StallExemplar> exemplars;

  LoopSeries(ProcMetrics* metrics, const LoopKey* k) : m(metrics), key(k) {
    const auto at = std::lower_bound(
        m->loops.begin(), m->loops.end(), std::get<2>(*key),
        [](const LoopSeries* s, const std::string& name) { return std::get<2>(*s->key) < name; });
    m->loops.insert(at, this);
    m->dirty = ProcMetrics::kAllDirty;
    // The four classes exist from the start so rate() sees the first stall of each.
    for (StallClass c :
         {StallClass::kCpu, StallClass::kBlocked, StallClass::kStarved, StallClass::kSuspended}) {
      stalls_seen |= 1u << static_cast<unsigned>(c);
    }
  }
  ~LoopSeries() {
    m->loops.erase(std::remove(m->loops.begin(), m->loops.end(), this), m->loops.end());
    m->dirty = ProcMetrics::kAllDirty;
  }
  LoopSeries(const LoopSeries&) = delete;
  LoopSeries& operator=(const LoopSeries&) = delete;

  void ObserveWindow(const DelayFinding& d) {
    delay.ObserveMultiple(internal::Rebucket(d.delay_buckets, DelayBucketsSeconds()), d.sum_s);
    iteration.ObserveMultiple(internal::Rebucket(d.iteration_buckets, IterationBucketsSeconds()),
                              d.iteration_sum_s);
    utilization = d.utilization;
    m->Touch(F::kDelay);
    m->Touch(F::kIteration);
    m->Touch(F::kUtilization);
  }
  void AddStackSamples(double n) {
    stack_samples += n;
    m->Touch(F::kStackSamples);
  }
  void AddSuppressed(double n) {
    suppressed += n;
    m->Touch(F::kSuppressed);
  }
  void AddStalls(StallClass cls, double n) {
    const auto c = static_cast<size_t>(cls);
    stalls.at(c) += n;
    stalls_seen |= 1u << c;
    m->Touch(F::kStalls);
  }
  void ObserveStall(const StallFinding& f) {
    const std::vector<double>& bounds = StallBucketsSeconds();
    stall_duration.Observe(bounds, f.duration_s);
    m->Touch(F::kStallDuration);
    if (f.stall_id == 0) {
      return;  // no id: nothing would resolve it
    }
    exemplars.resize(bounds.size() + 1);
    exemplars[HistogramData::BucketOf(bounds, f.duration_s)] =
        StallExemplar{f.stall_id, f.duration_s, f.start_ns + std::llround(f.duration_s * 1e9)};
    m->has_exemplars = true;
  }
  // The OpenMetrics lines of the loop's stall duration histogram, each bucket with the exemplar
  // of the latest stall it counted: {pid="…",stall_id="…"} (with the series' service and loop,
  // the stall's name in the API), the duration, and the time the stall ended (Unix seconds).
  void AppendStallDurationOpenMetrics(std::string* out) const {
    const prometheus::MetricFamily fam = ProcMetrics::EmptyFamily(F::kStallDuration);
    prometheus::ClientMetric c;
    c.label = Labels();
    c.histogram = stall_duration.Collect(StallBucketsSeconds());
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
    (void)kBlockingCalls.at(static_cast<size_t>(call));  // a known call (the codec checked)
    auto it = std::find_if(calls.begin(), calls.end(),
                           [call](const CallSeries& c) { return c.call == call; });
    if (it == calls.end()) {
      calls.push_back(CallSeries{call});
      it = calls.end() - 1;
    }
    it->count += static_cast<double>(count);
    it->seconds.ObserveMultiple(internal::RebucketCalls(buckets, BlockingCallBucketsSeconds()),
                                sum_s);
    m->Touch(F::kBlockingCalls);
    m->Touch(F::kBlockingCallSeconds);
  }
  void SetOngoing(double age_s) {
    if (ongoing == age_s) {
      return;  // the sweep sets every loop's gauge each second
    }
    ongoing = age_s;
    m->Touch(F::kOngoing);
  }

  // The loop's series of family `f`, appended to `out` (ProcMetrics::Collect).
  void Collect(unsigned f, std::vector<prometheus::ClientMetric>* out) const {
    const auto add = [&](std::vector<prometheus::ClientMetric::Label> labels) {
      out->emplace_back();
      out->back().label = std::move(labels);
      return &out->back();
    };
    switch (f) {
      case F::kStalls:
        for (size_t c = 0; c < stalls.size(); ++c) {
          if (stalls_seen & (1u << c)) {
            add(Labels("class", StallClassName(static_cast<StallClass>(c))))->counter.value =
                stalls[c];
          }
        }
        break;
      case F::kStackSamples:
        add(Labels())->counter.value = stack_samples;
        break;
      case F::kSuppressed:
        add(Labels())->counter.value = suppressed;
        break;
      case F::kBlockingCalls:
        for (const CallSeries& c : calls) {
          add(Labels("call", kBlockingCalls.at(static_cast<size_t>(c.call)).name))->counter.value =
              c.count;
        }
        break;
      case F::kUtilization:
        add(Labels())->gauge.value = utilization;
        break;
      case F::kOngoing:
        add(Labels())->gauge.value = ongoing;
        break;
      case F::kDelay:
        add(Labels())->histogram = delay.Collect(DelayBucketsSeconds());
        break;
      case F::kIteration:
        add(Labels())->histogram = iteration.Collect(IterationBucketsSeconds());
        break;
      case F::kStallDuration:
        add(Labels())->histogram = stall_duration.Collect(StallBucketsSeconds());
        break;
      case F::kBlockingCallSeconds:
        for (const CallSeries& c : calls) {
          add(Labels("call", kBlockingCalls.at(static_cast<size_t>(c.call)).name))->histogram =
              c.seconds.Collect(BlockingCallBucketsSeconds());
        }
        break;
      default:
        break;  // the process's own families
    }
  }

 private:
  // Built while serializing, not kept: thousands of loops. By name, as prometheus-cpp's
  // families ordered them; `extra` ("call", "class") sorts before "loop".
  std::vector<prometheus::ClientMetric::Label> Labels(std::string_view extra = {},
                                                      std::string_view value = {}) const {
    std::vector<prometheus::ClientMetric::Label> l;
    l.reserve(4);
    if (!extra.empty()) {
      l.push_back({std::string(extra), std::string(value)});
    }
    l.push_back({"loop", std::get<2>(*key)});
    l.push_back({"process", m->process});
    l.push_back({"service", std::get<0>(*key)});
    return l;
  }
};

std::vector<prometheus::MetricFamily> Registry::ProcMetrics::Collect(unsigned f) const {
  prometheus::MetricFamily fam = EmptyFamily(f);
  if (f == kInfo) {
    fam.metric.push_back(InfoMetric());
  } else if (f == kDropped) {
    prometheus::ClientMetric c;
    c.label = {{"process", process}, {"service", key->first}};
    c.counter.value = dropped;
    fam.metric.push_back(std::move(c));
  } else {
    for (const LoopSeries* s : loops) {
      s->Collect(f, &fam.metric);
    }
  }
  if (fam.metric.empty()) {
    return {};
  }
  return {std::move(fam)};
}

void Registry::ProcMetrics::AppendStallDurationOpenMetrics(std::string* out) const {
  for (const LoopSeries* s : loops) {
    s->AppendStallDurationOpenMetrics(out);
  }
}

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
  p.metrics->Touch(ProcMetrics::kDropped);
  SetProcInfo(p);
}

void Registry::SetProcInfo(Proc& p) {
  // Written from the process's entry at the next serialization (ProcMetrics::InfoMetric).
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
  p.metrics->dropped += static_cast<double>(n);
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

bool Registry::RefreshText(ProcMetrics& m) {
  if (family_headers_.empty()) {
    family_headers_.resize(ProcMetrics::kFamilyCount);
    family_om_headers_.resize(ProcMetrics::kFamilyCount);
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
        const prometheus::MetricFamily empty = ProcMetrics::EmptyFamily(f);
        auto h = std::make_shared<std::string>();
        Serialize({empty}, h.get());
        header = TextPiece{h, *h};
        auto om = std::make_shared<std::string>(OpenMetricsHeader(empty));
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
    for (unsigned f = 0; f < ProcMetrics::kFamilyCount; ++f) {
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
          p.metrics->AppendStallDurationOpenMetrics(text.get());
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
    for (unsigned f = 0; f < ProcMetrics::kFamilyCount; ++f) {
      n.emplace_back(ProcMetrics::Desc(f).name);
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
