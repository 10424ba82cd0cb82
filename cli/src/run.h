#pragma once
// `stallwatch run -- PROGRAM ARGS...`: runs an unmodified program with the preload shim, so
// every libevent loop in it is watched.
//
// Threading: called on the main thread; it blocks until the program ends.

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
// Whether `p` names a readable file; the folder of this executable ("" if unknown).
bool Readable(const std::string& p);
std::string ExeDir();

// Runs the program under the shim and returns the exit code to leave with: the program's own,
// 128 + N when signal N ended it, 127 when it could not be started (with one line on stderr).
//
// This process stays the program's parent: it sets LD_PRELOAD (prepended to any the caller had)
// and the STALLWATCH_* variables, forks and execs the program, prints one line saying what is
// watched and where findings go, forwards the signals sent to it (SIGTERM, SIGINT, SIGHUP,
// SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT; not those the terminal sent the whole process
// group, which the program got itself), and prints one more line if no event loop was seen
// within 10 s ($STALLWATCH_RUN_NO_LOOP_AFTER overrides). The agent tells it of each watched loop
// by a datagram to an abstract Unix socket named in $STALLWATCH_RUN_NOTIFY: the program inherits
// no file descriptor from this process (every fd here is close-on-exec).
int RunUnderShim(const RunOptions& opts, const std::vector<std::string>& command);

}  // namespace stallwatch::cli
