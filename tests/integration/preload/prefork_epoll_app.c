/* A pre-fork server on raw epoll, knowing nothing of stallwatch:
 *   prefork_epoll_app PORT WORKERS RUN_MS
 * The parent creates the listening socket and ONE epoll fd holding it, then forks WORKERS
 * workers that all wait on that inherited epoll fd (the loop is the parent's, shared). A worker
 * accepts a connection, reads one line "block MS", sleeps MS on its loop, answers "ok PID\n" and
 * closes it. Workers exit after RUN_MS; the parent waits for them and prints "done". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static volatile int handled;

/* Not a tail call: the frame stays on the stack while usleep runs. */
__attribute__((noinline)) static void handle_block(int ms) {
  usleep((useconds_t)ms * 1000);
  ++handled;
}

static void serve(int lfd, int epfd, int run_ms) {
  const long long end = now_ms() + run_ms;
  while (now_ms() < end) {
    struct epoll_event ev[8];
    const int n = epoll_wait(epfd, ev, 8, 50);
    if (n < 0 && errno != EINTR) exit(3);
    for (int i = 0; i < n; ++i) {
      const int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue; /* another worker took it */
      char line[64] = {0};
      const ssize_t got = read(c, line, sizeof(line) - 1);
      int ms = 0;
      if (got > 0 && sscanf(line, "block %d", &ms) == 1 && ms > 0) handle_block(ms);
      char out[32];
      const int len = snprintf(out, sizeof(out), "ok %d\n", (int)getpid());
      (void)!write(c, out, (size_t)len);
      close(c);
    }
  }
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s PORT WORKERS RUN_MS\n", argv[0]);
    return 2;
  }
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)atoi(argv[1]));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr*)&sa, sizeof(sa)) != 0 || listen(lfd, 64) != 0) return 4;
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event e = {.events = EPOLLIN, .data = {.fd = lfd}};
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &e);
  const int workers = atoi(argv[2]);
  for (int w = 0; w < workers; ++w) {
    if (fork() == 0) {
      serve(lfd, epfd, atoi(argv[3]));
      _exit(0);
    }
  }
  while (wait(NULL) > 0) {
  }
  puts("done");
  return 0;
}
