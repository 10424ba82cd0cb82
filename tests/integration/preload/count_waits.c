/* Another LD_PRELOAD interposer, as hosts sometimes carry one: counts epoll_wait and epoll_pwait
 * calls, forwards them to the next definition (RTLD_NEXT), and prints the count at exit. With the
 * stallwatch shim before or after it, both must see the program's waits. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/epoll.h>

static atomic_long calls;

int epoll_wait(int epfd, struct epoll_event* ev, int max, int timeout) {
  static int (*next)(int, struct epoll_event*, int, int);
  if (!next) next = (int (*)(int, struct epoll_event*, int, int))dlsym(RTLD_NEXT, "epoll_wait");
  atomic_fetch_add(&calls, 1);
  return next(epfd, ev, max, timeout);
}

int epoll_pwait(int epfd, struct epoll_event* ev, int max, int timeout, const sigset_t* mask) {
  static int (*next)(int, struct epoll_event*, int, int, const sigset_t*);
  if (!next) {
    next = (int (*)(int, struct epoll_event*, int, int, const sigset_t*))dlsym(RTLD_NEXT,
                                                                               "epoll_pwait");
  }
  atomic_fetch_add(&calls, 1);
  return next(epfd, ev, max, timeout, mask);
}

__attribute__((destructor)) static void report(void) {
  fprintf(stderr, "count_waits: %ld\n", (long)atomic_load(&calls));
}
