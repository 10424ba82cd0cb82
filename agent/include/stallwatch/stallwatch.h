/* stallwatch C API: attach the stall-diagnostics agent to a libevent event_base.
 *
 * Options come from the environment (STALLWATCH_SERVICE, STALLWATCH_THRESHOLD,
 * STALLWATCH_INTERVAL, STALLWATCH_ENDPOINT, STALLWATCH_SAMPLING, STALLWATCH_SIGNAL,
 * STALLWATCH_REPORT_INTERVAL); a malformed value is reported once on stderr with the accepted
 * forms and the default is used. Several loops (one per thread) may be attached; they share
 * one watchdog thread and one reporter connection per process.
 */
#ifndef STALLWATCH_STALLWATCH_H_
#define STALLWATCH_STALLWATCH_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;
struct stallwatch_agent;

/* Attaches an agent to `base`. `loop_name` may be NULL ("loop-N" is used).
 * Call from the thread that will run the loop, or from any thread before the loop runs.
 * Returns NULL (with one line on stderr saying why) when the agent cannot attach; the host
 * loop keeps working either way. Never aborts or throws. */
struct stallwatch_agent* stallwatch_attach(struct event_base* base, const char* loop_name);

/* Detaches and frees the agent: the probe event, the watchdog's view of the loop, and (with the
 * last agent of the process) the watchdog and reporter threads and the sampling signal handler.
 * Call from the loop thread, or from any thread while the loop is not running, before
 * event_base_free(base). NULL is a no-op. */
void stallwatch_detach(struct stallwatch_agent* agent);

/* Writes a JSON snapshot of this loop (delay statistics, recent and ongoing stalls) into buf,
 * NUL-terminated. Returns the length the full snapshot needs (excluding the NUL), like
 * snprintf. Any thread. */
size_t stallwatch_snapshot_json(struct stallwatch_agent* agent, char* buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* STALLWATCH_STALLWATCH_H_ */
