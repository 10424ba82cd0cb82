/* stallwatch C API: attach the stall-diagnostics agent to a libevent event_base.
 *
 * Options come from the environment (defaults in brackets):
 *   STALLWATCH_SERVICE          service label [the program name]
 *   STALLWATCH_THRESHOLD        stall threshold, a duration >= 1ms [50ms]
 *   STALLWATCH_INTERVAL         probe period, >= 100us [10ms]
 *   STALLWATCH_REPORT_INTERVAL  delay-statistics window, >= 100ms [10s]
 *   STALLWATCH_ENDPOINT         unix:/path, tcp:host:port, file:/path (JSON Lines), stderr or off
 *                               [unix:/run/stallwatch/agent.sock]; a file: path that cannot be
 *                               written is reported at attach
 *   STALLWATCH_SAMPLING         on, off or signal-all [on]
 *   STALLWATCH_SIGNAL           a real-time signal: SIGRTMIN+N, RTMIN+N, SIGRTMAX-N or a number in
 *                               SIGRTMIN..SIGRTMAX [SIGRTMIN+3]
 *   STALLWATCH_MAX_STACK_REPORTS  stack reports per loop per minute for stalls whose stack
 *                               repeats an earlier one, 0-1000000 (a new stack is always
 *                               reported) [12]
 *   STALLWATCH_WATCHDOG         auto, thread or process [auto]
 *   STALLWATCH_TOKEN_FILE       absolute path of the daemon's token file, tcp: only [none]
 *   STALLWATCH_DEBUGINFO        embedded or all (also separate debug files) [embedded]
 * A malformed value is reported once on stderr with the accepted forms and the default is used.
 * Several loops (one per thread) may be attached; they share one watchdog thread and one
 * reporter connection per process.
 */
#ifndef STALLWATCH_STALLWATCH_H_
#define STALLWATCH_STALLWATCH_H_

#include <stddef.h>

#include "stallwatch/export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;
struct stallwatch_agent;

/* Attaches an agent to `base`. `loop_name` may be NULL ("loop-N" is used).
 * Call from the thread that will run the loop, or from any thread before the loop runs.
 * Returns NULL (with one line on stderr saying why) when the agent cannot attach; the host
 * loop keeps working either way. Never aborts or throws. */
STALLWATCH_EXPORT struct stallwatch_agent* stallwatch_attach(struct event_base* base,
                                                             const char* loop_name);

/* Detaches and frees the agent: the probe event, the watchdog's view of the loop, and (with the
 * last agent of the process) the watchdog and reporter threads and the sampling signal handler.
 * Call from the loop thread, or from any thread while the loop is not running, before
 * event_base_free(base). NULL is a no-op. */
STALLWATCH_EXPORT void stallwatch_detach(struct stallwatch_agent* agent);

/* Writes a JSON snapshot of this loop (delay statistics, recent and ongoing stalls, the
 * process's findings_dropped count) into buf,
 * NUL-terminated. Returns the length the full snapshot needs (excluding the NUL), like
 * snprintf. Any thread. */
STALLWATCH_EXPORT size_t stallwatch_snapshot_json(struct stallwatch_agent* agent, char* buf,
                                                  size_t len);

#ifdef __cplusplus
}
#endif

#endif /* STALLWATCH_STALLWATCH_H_ */
