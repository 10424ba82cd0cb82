#pragma once
// `stallwatch experiment --target tornado`: one run of the matrix on the bundled Tornado app
// (examples/tornado_seed.py: the seed article's handlers) in an unmodified /usr/bin/python3 under
// the preload shim. The agent's findings of the run come from its file: endpoint.
//
// Threading: called on the experiment's thread; starts the app, loads it, stops it (by its pid).

#include <atomic>
#include <string>

#include "experiment.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

// The Tornado app's route for a mode: block → /sleep, cpu → /cpu, async → /async, offload →
// /pool, upstream-blocking → /fetch-blocking, upstream-async → /fetch-async (with ?ms=work).
std::string TornadoRoute(Mode m, std::chrono::milliseconds work);

// Where examples/tornado_seed.py is: $STALLWATCH_TORNADO_APP, share/stallwatch/examples/ beside
// this executable's prefix (installed), or the source tree. NotFound names the places looked at.
StatusOr<std::string> FindTornadoApp();

// Checks what a Tornado run needs (the interpreter, Tornado importable, the app, the shim), with
// one line naming what is missing and how to get it.
Status CheckTornadoTarget(const ExperimentOptions& o);

StatusOr<ExperimentRow> RunOneTornado(const ExperimentOptions& o, Mode mode, int c,
                                      const std::atomic<bool>* cancel);

}  // namespace stallwatch::cli
