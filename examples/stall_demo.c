/* stall_demo: a tiny libevent program with the stallwatch agent attached through the C API.
 * It provokes one CPU stall and one blocking sleep on the loop, then exits; the agent's findings
 * go where STALLWATCH_ENDPOINT says (the demo defaults it to stderr). */
#include <event2/event.h>
#include <stallwatch/stallwatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

/* Burns CPU on the loop thread for about `ms` milliseconds. */
__attribute__((noinline)) static void checksum_everything(int ms) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  do {
    for (int i = 0; i < 100000; ++i) sink += (unsigned long)i * 2654435761u;
    clock_gettime(CLOCK_MONOTONIC, &now);
  } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
}

/* Blocks the loop thread in nanosleep, like a synchronous client would. */
__attribute__((noinline)) static int call_slow_backend(int ms) {
  int rc = usleep((useconds_t)ms * 1000);
  return rc == 0 ? ms : -1; /* (not a tail call: keeps this frame on the stack) */
}

static void on_cpu(evutil_socket_t fd, short what, void* arg) {
  (void)fd;
  (void)what;
  (void)arg;
  fprintf(stderr, "stall_demo: burning CPU on the loop for 300 ms\n");
  checksum_everything(300);
  fprintf(stderr, "stall_demo: done burning\n");
}

static void on_sleep(evutil_socket_t fd, short what, void* arg) {
  (void)fd;
  (void)what;
  (void)arg;
  fprintf(stderr, "stall_demo: sleeping on the loop for 200 ms\n");
  int got = call_slow_backend(200);
  fprintf(stderr, "stall_demo: backend answered after %d ms\n", got);
}

int main(void) {
  setenv("STALLWATCH_ENDPOINT", "stderr", 0);
  setenv("STALLWATCH_REPORT_INTERVAL", "1s", 0);
  struct event_base* base = event_base_new();
  struct stallwatch_agent* agent = stallwatch_attach(base, "main");
  struct timeval t1 = {0, 300000}, t2 = {1, 0};
  struct event* cpu = evtimer_new(base, on_cpu, NULL);
  struct event* slp = evtimer_new(base, on_sleep, NULL);
  evtimer_add(cpu, &t1);
  evtimer_add(slp, &t2);
  event_base_dispatch(base);
  /* Give the reporter a moment, then show the in-process snapshot. */
  usleep(100 * 1000);
  char buf[256];
  size_t need = stallwatch_snapshot_json(agent, buf, sizeof buf);
  fprintf(stderr, "stall_demo: snapshot is %zu bytes; done\n", need);
  event_free(cpu);
  event_free(slp);
  stallwatch_detach(agent);
  event_base_free(base);
  return 0;
}
