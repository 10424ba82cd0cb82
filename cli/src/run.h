#pragma once
// `stallwatch run -- PROGRAM ARGS...`: runs an unmodified program with the preload shim, so
// every libevent loop in it is watched.

#include <string>
#include <vector>

#include "stallwatch/status.h"

namespace stallwatch::cli {

struct RunOptions {
  std::string preload;    // path of libstallwatch_preload.so; "" → found next to this binary
  std::string service;    // STALLWATCH_SERVICE ("" → the program's name)
  std::string threshold;  // STALLWATCH_THRESHOLD ("" → the agent's default)
  std::string endpoint;   // STALLWATCH_ENDPOINT ("" → the agent's default: the daemon socket)
  std::string sampling;   // STALLWATCH_SAMPLING
};

// Where the shim is: opts.preload, $STALLWATCH_PRELOAD, ../lib*/ next to this executable (the
// installed layout), or the build tree. NotFound names the places looked at.
StatusOr<std::string> FindPreload(const RunOptions& opts);

// Sets LD_PRELOAD (prepended to any the caller had) and the STALLWATCH_* variables, then
// replaces this process with the program. Returns only on failure.
Status ExecUnderShim(const RunOptions& opts, const std::vector<std::string>& command);

}  // namespace stallwatch::cli
