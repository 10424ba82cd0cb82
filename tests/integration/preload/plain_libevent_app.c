/* A libevent program that knows nothing of stallwatch (no header, no link): laid out like
 * memcached — the main thread creates every base, named worker threads run theirs. One worker
 * computes for 200 ms in compute_report(), the other blocks 200 ms in fetch_from_disk().
 * With "fork", a child process also creates a base and stalls, then both exit. */
#define _GNU_SOURCE
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) int compute_report(int ms) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do {
    for (int i = 0; i < 10000; ++i) sink += (unsigned long)i * 7;
    clock_gettime(CLOCK_MONOTONIC, &b);
  } while ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < ms);
  return (int)(sink & 1);
}

__attribute__((noinline)) int fetch_from_disk(int ms) {
  int rc = usleep((useconds_t)ms * 1000);
  return rc == 0 ? 0 : -1;
}

static void on_cpu(evutil_socket_t fd, short w, void* arg) {
  (void)fd;
  (void)w;
  (void)arg;
  int r = compute_report(200);
  if (r > 1) puts("never");
}

static void on_io(evutil_socket_t fd, short w, void* arg) {
  (void)fd;
  (void)w;
  (void)arg;
  int r = fetch_from_disk(200);
  if (r != 0) puts("usleep interrupted");
}

struct worker {
  struct event_base* base;
  const char* name;
  event_callback_fn cb;
};

static void* run_worker(void* arg) {
  struct worker* w = arg;
  pthread_setname_np(pthread_self(), w->name);
  struct event* ev = evtimer_new(w->base, w->cb, NULL);
  struct timeval tv = {0, 300000};
  evtimer_add(ev, &tv);
  event_base_dispatch(w->base);
  event_free(ev);
  return NULL;
}

static void on_main_tick(evutil_socket_t fd, short w, void* arg) {
  (void)fd;
  (void)w;
  (void)arg;
}

/* "churn": 20 times, a thread creates a base, stalls its loop for 120 ms (sampled while it
 * lasts), and frees the base as soon as the loop returns. */
static void on_churn(evutil_socket_t fd, short w, void* arg) {
  (void)fd;
  (void)w;
  fetch_from_disk(120);
  event_base_loopbreak(arg);
}

static void* churn(void* arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "churn");
  for (int i = 0; i < 20; ++i) {
    struct event_base* b = event_base_new();
    struct event* ev = evtimer_new(b, on_churn, b);
    struct timeval tv = {0, 1000};
    evtimer_add(ev, &tv);
    event_base_dispatch(b);
    event_free(ev);
    event_base_free(b);
  }
  return NULL;
}

/* "exit-thread": a worker calls exit() while another loop is in the middle of a stall. */
static void* exit_soon(void* arg) {
  (void)arg;
  usleep(450 * 1000);
  puts("exiting from a worker thread");
  fflush(stdout);
  exit(0);
}

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "churn") == 0) {
    pthread_t t;
    pthread_create(&t, NULL, churn, NULL);
    pthread_join(t, NULL);
    puts("churn done");
    return 0;
  }
  if (argc > 1 && strcmp(argv[1], "exit-thread") == 0) {
    pthread_t t;
    pthread_create(&t, NULL, exit_soon, NULL);
  }
  int do_fork = argc > 1 && strcmp(argv[1], "fork") == 0;
  struct event_base* main_base = event_base_new();
  struct worker workers[2] = {{event_base_new(), "worker", on_cpu},
                              {event_base_new(), "worker", on_io}};
  if (do_fork) {
    pid_t child = fork();
    if (child == 0) {
      struct event_base* b = event_base_new();
      struct event* ev = evtimer_new(b, on_cpu, NULL);
      struct timeval tv = {0, 400000}; /* after the agent's stack unwinder has warmed up */
      evtimer_add(ev, &tv);
      event_base_dispatch(b);
      event_free(ev);
      event_base_free(b);
      puts("child done");
      return 0;
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      puts("child failed");
      return 1;
    }
  }
  pthread_t t[2];
  for (int i = 0; i < 2; ++i) pthread_create(&t[i], NULL, run_worker, &workers[i]);
  struct event* tick = evtimer_new(main_base, on_main_tick, NULL);
  struct timeval tv = {1, 500000};
  evtimer_add(tick, &tv);
  event_base_dispatch(main_base);
  for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
  event_free(tick);
  for (int i = 0; i < 2; ++i) event_base_free(workers[i].base);
  event_base_free(main_base);
  puts("done");
  return 0;
}
