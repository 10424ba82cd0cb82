// Epoll loops that end while others start, on two threads: thread A runs a loop and closes its
// epoll fd; then thread B runs a loop (whose discovery detaches A's closed one); then A runs a
// new loop. The agent must not free A's loop while A's thread still refers to it.
#include <pthread.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int phase = 0;

static void RunLoop(void) {
  const int ep = epoll_create1(0);
  struct epoll_event ev[4];
  for (int i = 0; i < 5; ++i) {
    epoll_wait(ep, ev, 4, 5);
  }
  close(ep);
}

static void WaitPhase(int p) {
  pthread_mutex_lock(&mu);
  while (phase < p) {
    pthread_cond_wait(&cv, &mu);
  }
  pthread_mutex_unlock(&mu);
}

static void SetPhase(int p) {
  pthread_mutex_lock(&mu);
  phase = p;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void* ThreadA(void* arg) {
  (void)arg;
  RunLoop();
  SetPhase(1);
  WaitPhase(2);
  RunLoop();
  return NULL;
}

static void* ThreadB(void* arg) {
  (void)arg;
  WaitPhase(1);
  RunLoop();
  usleep(200 * 1000);
  SetPhase(2);
  return NULL;
}

int main(void) {
  pthread_t a, b;
  pthread_create(&a, NULL, ThreadA, NULL);
  pthread_create(&b, NULL, ThreadB, NULL);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  puts("done");
  return 0;
}
