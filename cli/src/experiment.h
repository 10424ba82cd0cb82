#pragma once
// `stallwatch experiment`: runs the bundled server (agent attached, in this process, on its own
// thread) under the load generator for every mode × concurrency and collects, per run, the
// measured QPS and latency beside the theoretical QPS and the agent's findings.
//
// Threading: RunExperiment() is called on any thread and blocks; it starts and joins the
// server's and the load generator's threads for each run. `cancel` may be set from any thread
// or a signal handler; the runs done so far are returned.

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "stallwatch/findings.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

enum class Mode { kBlock, kCpu, kAsync, kOffload, kUpstreamBlocking, kUpstreamAsync };

const std::vector<Mode>& AllModes();
const char* ModeName(Mode m);  // "block", "cpu", "async", "offload", "upstream-blocking", …
bool ParseMode(const std::string& s, Mode* out);
// The route a mode exercises, e.g. "/block?ms=500".
std::string ModeRoute(Mode m, std::chrono::milliseconds work);
// Theoretical throughput: block and cpu 1/work (the loop does one at a time); async and
// upstream-async c/work; offload min(c, workers)/work; upstream-blocking 1/work.
double ExpectedQps(Mode m, int concurrency, std::chrono::milliseconds work, int workers);
// Whether the mode is meant to keep the loop free (async, offload, upstream-async).
bool ModeKeepsLoopFree(Mode m);

// What the agent saw during one run.
struct RunFindings {
  uint64_t stalls = 0;  // closed + ongoing at the end of the run
  double max_stall_s = 0;
  double delay_p99_s = 0;  // loop delay p99 over the run
  double delay_max_s = 0;
  std::string stall_class;  // the class with the most stall time; "" without stalls
  std::string top_frame;    // first frame not in libc/libevent/the agent, most samples
  std::string syscall;      // the syscall of the longest blocked stall, if any
};

// The first frame of `stack` that is not in libc, the dynamic loader, the vDSO, libevent or the
// agent library; "" when none. Function names lose their argument list.
std::string TopBlockingFrame(const Stack& stack);
// Summary of a run's stalls (pure): count, class by stall time, top frame by samples among the
// stalls not caught waiting in epoll_wait.
RunFindings SummarizeStalls(const std::vector<StallFinding>& stalls);

struct ExperimentRow {
  Mode mode = Mode::kBlock;
  int concurrency = 0;
  uint64_t requests = 0;
  double qps = 0;
  double expected_qps = 0;
  double mean_s = 0;
  double p95_s = 0;
  double max_s = 0;
  uint64_t errors = 0;
  double elapsed_s = 0;
  RunFindings findings;
};

// How long a run of `mode` at concurrency c lasts for a target length: whole waves of answers
// plus a margin that ends it between two waves (see experiment.cc).
std::chrono::nanoseconds RunLength(Mode mode, int c, std::chrono::milliseconds work,
                                   std::chrono::nanoseconds target);

// What serves the requests: the bundled libevent server (in this process, agent attached), or
// the bundled Tornado app (examples/tornado_seed.py, in /usr/bin/python3 under the preload shim,
// one process per run; experiment_tornado.h).
enum class Target { kLibevent, kTornado };

struct ExperimentOptions {
  Target target = Target::kLibevent;
  std::string python = "/usr/bin/python3";  // kTornado: the interpreter
  std::string tornado_app;                  // kTornado: the app; "" → found (FindTornadoApp)
  std::vector<Mode> modes = AllModes();
  std::vector<int> concurrency = {5, 10, 20};

  std::chrono::milliseconds work{500};
  int workers = 5;
  std::chrono::nanoseconds run_duration = std::chrono::seconds(10);
  std::chrono::nanoseconds stall_threshold = std::chrono::milliseconds(50);
  std::string endpoint = "off";  // the agent's findings are read in-process
  // Called after each run (on the calling thread) with its index (from 1), count and row.
  std::function<void(size_t, size_t, const ExperimentRow&)> progress;
};

struct LoadResult;
// A run's row from its load figures (findings left empty): both targets fill it alike.
ExperimentRow RowFromLoad(const ExperimentOptions& o, Mode mode, int c, const LoadResult& load);

Status ValidateExperimentOptions(const ExperimentOptions& o);
StatusOr<std::vector<ExperimentRow>> RunExperiment(const ExperimentOptions& options,
                                                   const std::atomic<bool>* cancel = nullptr);

}  // namespace stallwatch::cli
