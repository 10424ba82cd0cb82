#include <event2/event.h>
#include <stallwatch/stallwatch.h>
#include <time.h>

static volatile unsigned long sink;

__attribute__((noinline)) void busy_in_c(void) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do {
    for (int i = 0; i < 10000; ++i) sink += i;
    clock_gettime(CLOCK_MONOTONIC, &b);
  } while ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < 150);
}

static void cb(evutil_socket_t fd, short what, void* arg) {
  (void)fd;
  (void)what;
  (void)arg;
  busy_in_c();
}

int main(void) {
  struct event_base* base = event_base_new();
  struct stallwatch_agent* agent = stallwatch_attach(base, "consumer");
  struct event* ev = evtimer_new(base, cb, NULL);
  struct timeval tv = {0, 400000}; /* after the stack unwinder has warmed up */
  evtimer_add(ev, &tv);
  event_base_dispatch(base);
  event_free(ev);
  stallwatch_detach(agent);
  event_base_free(base);
  return agent ? 0 : 1;
}
