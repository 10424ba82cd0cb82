/* A single-loop libevent program for `stallwatch run` and the preload shim.
 *   loop_app RUN_MS [STALLS] [daemonize]
 *                                   knows nothing of stallwatch: runs its loop RUN_MS, blocking
 *                                   it 150 ms STALLS times (default 0) at 300 ms intervals. With
 *                                   "daemonize" it creates its base, then forks as a daemonizing
 *                                   server does: the parent prints the child's pid and exits, the
 *                                   child (a new session) runs the loop, after event_reinit
 *                                   ("daemonize-keep": without it, on the inherited epoll fd).
 * Built twice: as linked_agent_app it also attaches its own agent (stallwatch_attach, loop
 * "app") as a program that links libstallwatch does, so that under the shim too the loop must
 * be watched once. */
#define _GNU_SOURCE
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>
#ifdef SW_LINK_AGENT
#include <stallwatch/stallwatch.h>
#endif

static int stalls_left;

__attribute__((noinline)) void slow_call(void) { usleep(150 * 1000); }

static void on_tick(evutil_socket_t fd, short w, void* arg) {
  (void)fd;
  (void)w;
  (void)arg;
  if (stalls_left > 0) {
    --stalls_left;
    slow_call();
  }
}

static void on_end(evutil_socket_t fd, short w, void* arg) {
  (void)fd;
  (void)w;
  event_base_loopexit((struct event_base*)arg, NULL);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s RUN_MS [STALLS]\n", argv[0]);
    return 2;
  }
  const int run_ms = atoi(argv[1]);
  stalls_left = argc > 2 ? atoi(argv[2]) : 0;
  struct event_base* base = event_base_new();
#ifdef SW_LINK_AGENT
  struct stallwatch_agent* agent = stallwatch_attach(base, "app");
  if (agent == NULL) return 3;
#endif
  struct timeval period = {0, 300 * 1000};
  struct event* tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
  event_add(tick, &period);
  struct timeval end = {run_ms / 1000, (run_ms % 1000) * 1000};
  struct event* stop = evtimer_new(base, on_end, base);
  event_add(stop, &end);
  if (argc > 3 && argv[3][0] == 'd') {
    const pid_t child = fork();
    if (child < 0) return 4;
    if (child > 0) {
      printf("%d\n", (int)child);
      fflush(stdout);
      _exit(0);
    }
    setsid();
    /* "daemonize-keep": the child goes on with the parent's epoll fd, as some servers do. */
    if (argv[3][9] != '-' && event_reinit(base) != 0) return 5;
  }
  event_base_dispatch(base);
  event_free(tick);
  event_free(stop);
#ifdef SW_LINK_AGENT
  stallwatch_detach(agent);
#endif
  event_base_free(base);
  puts("done");
  return 0;
}
