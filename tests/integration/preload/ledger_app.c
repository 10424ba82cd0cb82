// A plain epoll loop that makes known-blocking calls between its waits, for the blocking-call
// ledger's tests (ledger_test.cc). The main thread is the loop; a worker thread (no loop) makes
// the same kinds of calls from functions of its own, which must not be counted.
//
//   ledger_app dirty [N] [EXIT]  the loop: 100 getaddrinfo("localhost") in resolve_backend,
//                                N (default 5) usleep(2000) in nap, fsync in sync_file, a
//                                connect to a loopback listener on a blocking socket in dial,
//                                pthread_join of the worker in main
//   ledger_app clean [N] [EXIT]  the loop only waits; the worker makes the calls
// Exits with EXIT (default 0).
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { kResolves = 100, kWorkerResolves = 30 };

static int ep = -1;

// One loop iteration's wait (1 ms).
static void Wait(void) {
  struct epoll_event ev[4];
  epoll_wait(ep, ev, 4, 1);
}

__attribute__((noinline)) static void resolve_backend(void) {
  for (int i = 0; i < kResolves; ++i) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo* res = NULL;
    if (getaddrinfo("localhost", NULL, &hints, &res) == 0) {
      freeaddrinfo(res);
    }
  }
}

__attribute__((noinline)) static void nap(int n) {
  for (int i = 0; i < n; ++i) {
    usleep(2000);
  }
}

__attribute__((noinline)) static void sync_file(void) {
  char path[] = "/tmp/stallwatch-ledger-app-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    return;
  }
  if (write(fd, "x", 1) == 1) {
    fsync(fd);
  }
  close(fd);
  unlink(path);
}

__attribute__((noinline)) static void dial(void) {
  const int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(l, 4) != 0 ||
      getsockname(l, (struct sockaddr*)&a, &len) != 0) {
    return;
  }
  const int c = socket(AF_INET, SOCK_STREAM, 0);  // blocking
  if (c >= 0) {
    connect(c, (struct sockaddr*)&a, sizeof(a));
    close(c);
  }
  close(l);
}

// The worker: the same calls from functions of its own, on a thread that runs no loop.
__attribute__((noinline)) static void worker_calls(void) {
  for (int i = 0; i < kWorkerResolves; ++i) {
    struct addrinfo* res = NULL;
    if (getaddrinfo("localhost", NULL, NULL, &res) == 0) {
      freeaddrinfo(res);
    }
  }
  usleep(2000);
  char path[] = "/tmp/stallwatch-ledger-worker-XXXXXX";
  const int fd = mkstemp(path);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
    unlink(path);
  }
}

static void* worker(void* arg) {
  (void)arg;
  worker_calls();
  return NULL;
}

int main(int argc, char** argv) {
  const int dirty = argc > 1 && strcmp(argv[1], "dirty") == 0;
  const int naps = argc > 2 ? atoi(argv[2]) : 5;
  const int exit_code = argc > 3 ? atoi(argv[3]) : 0;
  ep = epoll_create1(0);
  for (int i = 0; i < 5; ++i) {
    Wait();  // the loop is found by its waits
  }
  // The worker runs while the loop waits: its calls are on a thread that is no loop.
  pthread_t t;
  pthread_create(&t, NULL, worker, NULL);
  for (int i = 0; i < 50; ++i) {
    Wait();
  }
  if (dirty) {
    resolve_backend();
    Wait();
    nap(naps);
    Wait();
    sync_file();
    Wait();
    dial();
    Wait();
  }
  for (int i = 0; i < 5; ++i) {
    Wait();
  }
  if (dirty) {
    // Between two waits, like every call above (counted as pthread_join); the worker has ended
    // long before.
    pthread_join(t, NULL);
    Wait();
  }
  close(ep);  // the loop ends: what the thread calls now is not the loop's
  if (!dirty) {
    pthread_join(t, NULL);
  }
  puts("done");
  return exit_code;
}
