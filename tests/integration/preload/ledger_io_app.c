// A plain epoll loop that makes the ledger's descriptor, wait and lock calls between its waits,
// for the blocking-call ledger's tests (ledger_test.cc). The main thread is the loop; a worker
// thread (no loop) makes the same kinds of calls from functions of its own, which must not be
// counted. Every call site is in a function of its own whose name the test looks for; no call
// is in tail position (its caller would be the site).
//
//   ledger_io_app io [N]     the loop, N (default 10) of each:
//     file_io         open + N read, N write, N pread, N pwrite, N readv, N writev on a file
//     pipe_blocking   N read of a blocking pipe (counted as read_blocking)
//     pipe_nonblock   N read of the same pipe after fcntl(F_SETFL, O_NONBLOCK) (not counted),
//                     then N after ioctl(FIONBIO, 0) made it blocking again (counted)
//     sock_blocking   N send and N recv on a blocking socketpair; N recv with MSG_DONTWAIT
//                     (not counted)
//     sock_nonblock   N recv on a non-blocking socketpair (EAGAIN; not counted)
//     accept_one      a blocking accept of a loopback connection
//     run_child       popen("true") and pclose
//     lock_file       fcntl F_SETLKW and F_OFD_SETLKW on the file
//     mutex_free      N pthread_mutex_lock of a free mutex (not counted)
//     mutex_taken     1 pthread_mutex_lock of a mutex the worker holds for 100 ms (counted)
//   ledger_io_app clean      the loop only waits; the worker makes the calls
// Prints "done" and exits 0.
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int ep = -1;
static volatile long sink;  // results kept, so no call is in tail position
static char path[] = "/tmp/stallwatch-ledger-io-XXXXXX";
static pthread_mutex_t taken = PTHREAD_MUTEX_INITIALIZER;
static atomic_int want_hold;        // the loop asks the worker to take `taken`
static atomic_int worker_holds;     // 1 once the worker holds `taken`
static atomic_int loop_done;        // the loop's calls are made: the worker may start its own
static atomic_int worker_finished;  // the worker's calls are made

// One loop iteration's wait (1 ms).
static void Wait(void) {
  struct epoll_event ev[4];
  epoll_wait(ep, ev, 4, 1);
}

__attribute__((noinline)) static void file_io(int n) {
  const int fd = open(path, O_RDWR);
  if (fd < 0) {
    return;
  }
  char buf[16] = "0123456789abcdef";
  for (int i = 0; i < n; ++i) {
    lseek(fd, 0, SEEK_SET);
    sink += write(fd, buf, sizeof(buf));
  }
  for (int i = 0; i < n; ++i) {
    lseek(fd, 0, SEEK_SET);
    sink += read(fd, buf, sizeof(buf));
  }
  for (int i = 0; i < n; ++i) {
    sink += pwrite(fd, buf, sizeof(buf), 16);
  }
  for (int i = 0; i < n; ++i) {
    sink += pread(fd, buf, sizeof(buf), 16);
  }
  struct iovec iov = {buf, sizeof(buf)};
  for (int i = 0; i < n; ++i) {
    lseek(fd, 0, SEEK_SET);
    sink += writev(fd, &iov, 1);
  }
  for (int i = 0; i < n; ++i) {
    lseek(fd, 0, SEEK_SET);
    sink += readv(fd, &iov, 1);
  }
  close(fd);
}

__attribute__((noinline)) static void pipe_blocking(int rfd, int n) {
  char c;
  for (int i = 0; i < n; ++i) {
    sink += read(rfd, &c, 1);
  }
}

__attribute__((noinline)) static void pipe_nonblock(int rfd, int n) {
  char c;
  for (int i = 0; i < n; ++i) {
    sink += read(rfd, &c, 1);  // EAGAIN once empty: either way not counted
  }
}

__attribute__((noinline)) static void pipe_blocking_again(int rfd, int n) {
  char c;
  for (int i = 0; i < n; ++i) {
    sink += read(rfd, &c, 1);
  }
}

static void Fill(int wfd, int n) {
  for (int i = 0; i < n; ++i) {
    sink += write(wfd, "x", 1);  // counted as write_blocking from Fill: the test ignores it
  }
}

__attribute__((noinline)) static void sock_blocking(int a, int b, int n) {
  char c = 'y';
  for (int i = 0; i < n; ++i) {
    sink += send(a, &c, 1, 0);
  }
  for (int i = 0; i < n; ++i) {
    sink += recv(b, &c, 1, 0);
  }
  for (int i = 0; i < n; ++i) {
    sink += recv(b, &c, 1, MSG_DONTWAIT);  // EAGAIN: not counted
  }
}

__attribute__((noinline)) static void sock_nonblock(int b, int n) {
  char c;
  for (int i = 0; i < n; ++i) {
    sink += recv(b, &c, 1, 0);  // EAGAIN: not counted
  }
}

__attribute__((noinline)) static void accept_one(void) {
  const int l = socket(AF_INET, SOCK_STREAM, 0);  // blocking
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (l < 0 || bind(l, (struct sockaddr*)&a, sizeof(a)) != 0 || listen(l, 4) != 0 ||
      getsockname(l, (struct sockaddr*)&a, &len) != 0) {
    return;
  }
  const int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);  // its connect is not counted
  if (c >= 0) {
    sink += connect(c, (struct sockaddr*)&a, sizeof(a));
    const int s = accept(l, NULL, NULL);
    sink += s;
    if (s >= 0) {
      close(s);
    }
    close(c);
  }
  close(l);
}

__attribute__((noinline)) static void run_child(void) {
  FILE* f = popen("true", "r");
  if (f != NULL) {
    sink += pclose(f);
  }
}

__attribute__((noinline)) static void lock_file(void) {
  const int fd = open(path, O_RDWR);
  if (fd < 0) {
    return;
  }
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  sink += fcntl(fd, F_SETLKW, &fl);
  fl.l_type = F_UNLCK;
  sink += fcntl(fd, F_SETLK, &fl);  // does not wait: not counted
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  sink += fcntl(fd, F_OFD_SETLKW, &fl);
  close(fd);
}

__attribute__((noinline)) static void mutex_free(int n) {
  static pthread_mutex_t free_mutex = PTHREAD_MUTEX_INITIALIZER;
  for (int i = 0; i < n; ++i) {
    sink += pthread_mutex_lock(&free_mutex);
    pthread_mutex_unlock(&free_mutex);
  }
}

__attribute__((noinline)) static void mutex_taken(void) {
  atomic_store(&want_hold, 1);
  while (!atomic_load(&worker_holds)) {
  }
  sink += pthread_mutex_lock(&taken);
  pthread_mutex_unlock(&taken);
}

// The worker: the same calls from functions of its own, on a thread that runs no loop.
__attribute__((noinline)) static void worker_calls(int n) {
  const int fd = open(path, O_RDWR);
  char buf[16];
  for (int i = 0; fd >= 0 && i < n; ++i) {
    sink += pread(fd, buf, sizeof(buf), 0);
    sink += write(fd, buf, sizeof(buf));
  }
  if (fd >= 0) {
    close(fd);
  }
  int p[2];
  if (pipe(p) == 0) {
    for (int i = 0; i < n; ++i) {
      sink += write(p[1], "w", 1);
      sink += read(p[0], buf, 1);
    }
    close(p[0]);
    close(p[1]);
  }
  int s[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0) {
    for (int i = 0; i < n; ++i) {
      sink += send(s[0], "w", 1, 0);
      sink += recv(s[1], buf, 1, 0);
    }
    close(s[0]);
    close(s[1]);
  }
  run_child();
}

static void Nap(void) {
  const struct timespec nap = {0, 1000 * 1000};
  nanosleep(&nap, NULL);
}

static void* worker(void* arg) {
  const int n = *(const int*)arg;
  // Holds `taken` for 100 ms while the loop locks it (mutex_taken): long enough that the loop
  // finds it taken however late it is scheduled.
  while (!atomic_load(&want_hold)) {
    Nap();
  }
  pthread_mutex_lock(&taken);
  atomic_store(&worker_holds, 1);
  const struct timespec hold = {0, 100 * 1000 * 1000};
  nanosleep(&hold, NULL);
  pthread_mutex_unlock(&taken);
  while (!atomic_load(&loop_done)) {
    Nap();
  }
  worker_calls(n);
  atomic_store(&worker_finished, 1);
  return NULL;
}

int main(int argc, char** argv) {
  const int io = argc > 1 && strcmp(argv[1], "io") == 0;
  int n = argc > 2 ? atoi(argv[2]) : 10;
  if (n < 1 || n > 1000) {
    n = 10;
  }
  const int tmp = mkstemp(path);
  if (tmp < 0) {
    return 1;
  }
  close(tmp);
  ep = epoll_create1(0);
  for (int i = 0; i < 5; ++i) {
    Wait();  // the loop is found by its waits
  }
  pthread_t t;
  pthread_create(&t, NULL, worker, &n);
  if (io) {
    file_io(n);
    Wait();
    int p[2];
    if (pipe(p) == 0) {
      Fill(p[1], 2 * n);
      Wait();
      pipe_blocking(p[0], n);
      Wait();
      fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
      pipe_nonblock(p[0], 2 * n);  // the first n find data, then EAGAIN
      Wait();
      int off = 0;
      ioctl(p[0], FIONBIO, &off);
      Fill(p[1], n);
      pipe_blocking_again(p[0], n);
      Wait();
      close(p[0]);
      close(p[1]);
    }
    int s[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0) {
      sock_blocking(s[0], s[1], n);
      close(s[0]);
      close(s[1]);
    }
    Wait();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s) == 0) {
      sock_nonblock(s[1], n);
      close(s[0]);
      close(s[1]);
    }
    Wait();
    accept_one();
    Wait();
    run_child();
    Wait();
    lock_file();
    Wait();
    mutex_free(n);
    Wait();
    mutex_taken();
    Wait();
  } else {
    atomic_store(&want_hold, 1);
    while (!atomic_load(&worker_holds)) {
      Wait();
    }
  }
  atomic_store(&loop_done, 1);
  while (!atomic_load(&worker_finished)) {
    Wait();  // the worker's calls, while the loop waits
  }
  close(ep);  // the loop ends: what the thread calls now is not the loop's
  pthread_join(t, NULL);
  unlink(path);
  puts("done");
  return 0;
}
