#include "experiment.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <thread>

#include "experiment_tornado.h"
#include "load.h"
#include "server.h"

namespace stallwatch::cli {

namespace {

std::string Basename(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Frames of these modules are plumbing, not the code that blocked the loop.
bool IsPlumbing(const Frame& f) {
  const std::string base = Basename(f.module);
  // The interpreter's own frames (a Python loop's) are plumbing too: the Python frames that run
  // in them are the code.
  for (const char* prefix :
       {"libc.so", "libc-", "ld-linux", "linux-vdso", "[vdso", "libpthread", "libevent",
        "libstallwatch", "libasan", "libubsan", "libtsan", "python3", "libpython"}) {
    if (base.rfind(prefix, 0) == 0) {
      return true;
    }
  }
  // The standard library's own extension modules (lib-dynload: _asyncio, select, _socket …)
  // run the event loop, not the handler; so do its Python modules (asyncio, socket, urllib):
  // the handler that called them is the code.
  if (f.module.find("/lib-dynload/") != std::string::npos) {
    return true;
  }
  if (f.kind == "python" && f.file.rfind("/usr/lib/python3", 0) == 0 &&
      f.file.find("-packages/") == std::string::npos) {
    return true;
  }
  return f.function.empty() && f.module.empty();
}

std::string WithoutArguments(const std::string& function) {
  // Cut at the parameter list's '(' that closes the name (skip "(anonymous namespace)").
  int depth = 0;
  for (size_t i = 0; i < function.size(); ++i) {
    const char c = function[i];
    if (c == '<') {
      ++depth;
    }
    if (c == '>') {
      --depth;
    }
    if (c == '(' && depth == 0) {
      if (function.compare(i, 21, "(anonymous namespace)") == 0) {
        i += 20;
        continue;
      }
      return function.substr(0, i);
    }
  }
  return function;
}

}  // namespace

const std::vector<Mode>& AllModes() {
  static const std::vector<Mode> kAll = {
      Mode::kBlock,        Mode::kCpu, Mode::kAsync, Mode::kOffload, Mode::kUpstreamBlocking,
      Mode::kUpstreamAsync};
  return kAll;
}

const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kBlock:
      return "block";
    case Mode::kCpu:
      return "cpu";
    case Mode::kAsync:
      return "async";
    case Mode::kOffload:
      return "offload";
    case Mode::kUpstreamBlocking:
      return "upstream-blocking";
    case Mode::kUpstreamAsync:
      return "upstream-async";
  }
  return "?";
}

bool ParseMode(const std::string& s, Mode* out) {
  for (Mode m : AllModes()) {
    if (s == ModeName(m)) {
      *out = m;
      return true;
    }
  }
  return false;
}

std::string ModeRoute(Mode m, std::chrono::milliseconds work) {
  return std::string("/") + ModeName(m) + "?ms=" + std::to_string(work.count());
}

double ExpectedQps(Mode m, int concurrency, std::chrono::milliseconds work, int workers) {
  const double w = static_cast<double>(work.count()) / 1000.0;
  if (w <= 0) {
    return 0;
  }
  switch (m) {
    case Mode::kBlock:
    case Mode::kCpu:
    case Mode::kUpstreamBlocking:
      return 1.0 / w;
    case Mode::kAsync:
    case Mode::kUpstreamAsync:
      return concurrency / w;
    case Mode::kOffload:
      return std::min(concurrency, workers) / w;
  }
  return 0;
}

bool ModeKeepsLoopFree(Mode m) {
  return m == Mode::kAsync || m == Mode::kOffload || m == Mode::kUpstreamAsync;
}

std::string TopBlockingFrame(const Stack& stack) {
  for (const Frame& f : stack.frames) {
    if (IsPlumbing(f)) {
      continue;
    }
    if (!f.function.empty()) {
      return WithoutArguments(f.function);
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "+0x%llx", static_cast<unsigned long long>(f.offset));
    return Basename(f.module) + buf;
  }
  return "";
}

RunFindings SummarizeStalls(const std::vector<StallFinding>& stalls) {
  RunFindings r;
  std::map<std::string, double> class_time;
  std::map<std::string, uint64_t> frame_samples;
  double longest_blocked = -1;
  for (const StallFinding& s : stalls) {
    ++r.stalls;
    r.max_stall_s = std::max(r.max_stall_s, s.duration_s);
    class_time[StallClassName(s.stall_class)] += s.duration_s;
    // A loop found in epoll_wait was waiting for events (the process was paused or starved
    // around it): its stack is not the cause.
    const bool own_work = s.syscall.rfind("epoll_", 0) != 0;
    for (const Stack& st : s.stacks) {
      const std::string top = own_work ? TopBlockingFrame(st) : "";
      if (!top.empty()) {
        frame_samples[top] += std::max<uint64_t>(st.samples, 1);
      }
    }
    if (!s.syscall.empty() && s.duration_s > longest_blocked) {
      longest_blocked = s.duration_s;
      r.syscall = s.syscall;
    }
  }
  double best = -1;
  for (const auto& [name, t] : class_time) {
    if (t > best) {
      best = t;
      r.stall_class = name;
    }
  }
  uint64_t most = 0;
  for (const auto& [name, n] : frame_samples) {
    if (n > most) {
      most = n;
      r.top_frame = name;
    }
  }
  return r;
}

ExperimentRow RowFromLoad(const ExperimentOptions& o, Mode mode, int c, const LoadResult& load) {
  ExperimentRow row;
  row.mode = mode;
  row.concurrency = c;
  row.requests = load.completed;
  row.qps = load.qps;
  row.expected_qps = ExpectedQps(mode, c, o.work, o.workers);
  row.mean_s = load.mean_s();
  row.p95_s = load.quantile_s(0.95);
  row.max_s = load.max_s();
  row.errors = load.errors();
  row.elapsed_s = load.elapsed_s;
  return row;
}

Status ValidateExperimentOptions(const ExperimentOptions& o) {
  if (o.modes.empty()) {
    return InvalidArgumentError("--modes: give at least one mode");
  }
  if (o.concurrency.empty()) {
    return InvalidArgumentError("--concurrency: give at least one level");
  }
  for (int c : o.concurrency) {
    if (c < 1 || c > 1000) {
      return InvalidArgumentError("--concurrency levels must be in 1..1000");
    }
  }
  if (o.work < std::chrono::milliseconds(1) || o.work > std::chrono::seconds(10)) {
    return InvalidArgumentError("--work must be in 1ms..10s, e.g. 500ms");
  }
  if (o.workers < 1 || o.workers > 1024) {
    return InvalidArgumentError("--workers must be in 1..1024");
  }
  if (o.run_duration < std::chrono::milliseconds(200) || o.run_duration > std::chrono::hours(1)) {
    return InvalidArgumentError("--duration must be in 200ms..1h, e.g. 10s");
  }
  return OkStatus();
}

std::chrono::nanoseconds RunLength(Mode mode, int c, std::chrono::milliseconds work,
                                   std::chrono::nanoseconds target) {
  // Answers come in waves. A loop that blocks in each handler runs the handlers of all c ready
  // requests in one iteration, and libevent writes the replies only when the loop goes back to
  // epoll_wait: a wave of c answers every c × work. Loop-free modes answer a wave every work.
  // The load drains what is in flight when the run ends, so the last wave is counted whole;
  // ending half a work before a wave boundary (blocking) or after one (loop-free) means the
  // drain waits for one wave only, not for a whole new one.
  if (ModeKeepsLoopFree(mode)) {
    const int64_t waves = std::max<int64_t>(1, target / work);
    return work * waves + work / 2;
  }
  const std::chrono::nanoseconds wave = work * c;
  const int64_t waves = std::max<int64_t>(1, target / wave);
  return wave * waves - work / 2;
}

namespace {

StatusOr<ExperimentRow> RunOne(const ExperimentOptions& o, Mode mode, int c,
                               const std::atomic<bool>* cancel) {
  ServerOptions so;
  so.port = 0;
  so.workers = o.workers;
  so.upstream_delay = o.work;
  so.stall_threshold = o.stall_threshold;
  so.endpoint = o.endpoint;
  so.loop_name = std::string("experiment-") + ModeName(mode) + "-c" + std::to_string(c);
  auto server = Server::Create(so);
  if (!server.ok()) {
    return server.status();
  }
  Server* srv = server->get();
  Status run_status;
  std::atomic<bool> finished{false};
  std::thread loop([&] {
    run_status = srv->Run();
    finished.store(true);
  });
  // The agent is attached once Run() has started.
  for (int i = 0; i < 2000 && !srv->Snapshot().has_value() && !finished.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  LoadOptions lo;
  lo.url = "http://127.0.0.1:" + std::to_string(srv->port()) + ModeRoute(mode, o.work);
  lo.concurrency = c;
  lo.warmup_path = "/";
  lo.drain = true;
  lo.duration = RunLength(mode, c, o.work, o.run_duration);
  // Generous: a blocked loop makes the last of c requests wait c × work.
  lo.timeout = o.work * (2 * c + 4) + std::chrono::seconds(5);
  auto load = RunLoad(lo, cancel);
  std::optional<LoopSnapshot> snap = srv->Snapshot();
  srv->Stop();
  loop.join();
  if (!run_status.ok()) {
    return run_status;
  }
  if (!load.ok()) {
    return load.status();
  }

  ExperimentRow row = RowFromLoad(o, mode, c, *load);
  if (snap) {
    std::vector<StallFinding> stalls = snap->recent_stalls;
    if (snap->ongoing) {
      stalls.push_back(*snap->ongoing);
    }
    row.findings = SummarizeStalls(stalls);
    row.findings.delay_p99_s = std::chrono::duration<double>(snap->since_attach.p99).count();
    row.findings.delay_max_s = std::chrono::duration<double>(snap->since_attach.max).count();
  }
  return row;
}

}  // namespace

StatusOr<std::vector<ExperimentRow>> RunExperiment(const ExperimentOptions& o,
                                                   const std::atomic<bool>* cancel) {
  if (Status st = ValidateExperimentOptions(o); !st.ok()) {
    return st;
  }
  std::vector<ExperimentRow> rows;
  const size_t total = o.modes.size() * o.concurrency.size();
  for (Mode mode : o.modes) {
    for (int c : o.concurrency) {
      if (cancel != nullptr && cancel->load()) {
        return rows;
      }
      auto row = o.target == Target::kTornado ? RunOneTornado(o, mode, c, cancel)
                                              : RunOne(o, mode, c, cancel);
      if (cancel != nullptr && cancel->load()) {
        return rows;  // a cut-short run is not a result
      }
      if (!row.ok()) {
        return row.status();
      }
      rows.push_back(*row);
      if (o.progress) {
        o.progress(rows.size(), total, rows.back());
      }
    }
  }
  return rows;
}

}  // namespace stallwatch::cli
