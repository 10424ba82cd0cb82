// Google Benchmark microbenchmarks of the blocking-call ledger's interposers
// (agent/preload/ledger_hooks.cc): what an interposed call costs on a thread that runs no loop
// (one initial-exec thread-local load) and on a loop thread between two waits (two clock reads
// and a table update), against the same system call made directly. The call is fsync(-1): a
// real system call that fails at once (EBADF), so the figures are the interposer's own cost
// plus one cheap syscall; and pthread_join(pthread_self()), which glibc answers (EDEADLK) without
// a syscall, so the interposer's cost is most of what is measured (its libc row calls libc's
// function through a pointer, as the interposer does). Runs under the shim, which a plain epoll
// loop here attaches to:
//
//   LD_PRELOAD=build/agent/preload/libstallwatch_preload.so STALLWATCH_ENDPOINT=off
//     build/bench/sw_bench_ledger --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// (one command line)
//
// Without the shim the interposed rows measure libc's fsync (a baseline too).
//
// The descriptor and lock calls: recv on an empty non-blocking socket (EAGAIN: the normal call of
// an event loop, never counted — on a loop thread it costs the descriptor-mode cache lookup);
// pread of one byte of a regular file (page cache; counted on a loop thread); and an uncontended
// pthread_mutex_lock + unlock (on a loop thread the interposer tries pthread_mutex_trylock
// first: counted only when that fails). Each has a libc row (libc's function through a pointer).

#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

namespace {

// The bench threads' own loop: a plain epoll fd, waited on until the agent found it.
void BecomeLoop() {
  static thread_local int ep = -1;
  if (ep < 0) {
    ep = epoll_create1(0);
  }
  epoll_event ev[4];
  for (int i = 0; i < 5; ++i) {
    epoll_wait(ep, ev, 4, 0);
  }
}

using JoinFn = int (*)(pthread_t, void**);
using RecvFn = ssize_t (*)(int, void*, size_t, int);
using PreadFn = ssize_t (*)(int, void*, size_t, off_t);
using MutexFn = int (*)(pthread_mutex_t*);

// libc's own function `name` (RTLD_NEXT from here would find the shim's).
template <typename Fn>
Fn Libc(const char* name) {
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  return libc != nullptr ? reinterpret_cast<Fn>(dlsym(libc, name)) : nullptr;
}

JoinFn LibcJoin() { return Libc<JoinFn>("pthread_join"); }

// An empty non-blocking socket (recv returns EAGAIN at once); made once, never closed.
int EmptyNonBlockingSocket() {
  static const int fd = [] {
    int sv[2];
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0 ? sv[0] : -1;
  }();
  return fd;
}

// A regular file with a few bytes, in the page cache; made once, unlinked at once.
int SmallFile() {
  static const int fd = [] {
    char path[] = "/tmp/sw-bench-ledger-XXXXXX";
    const int f = mkstemp(path);
    if (f >= 0) {
      unlink(path);
      if (write(f, "0123456789", 10) != 10) {
        return -1;
      }
    }
    return f;
  }();
  return fd;
}

pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;

void RecvEmpty(benchmark::State& state, RecvFn fn) {
  const int fd = EmptyNonBlockingSocket();
  char c = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(fn(fd, &c, 1, 0));
  }
}

void PreadByte(benchmark::State& state, PreadFn fn) {
  const int fd = SmallFile();
  char c = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(fn(fd, &c, 1, 3));
  }
}

void LockUnlock(benchmark::State& state, MutexFn lock) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(lock(&g_mutex));
    pthread_mutex_unlock(&g_mutex);
  }
}

// The libc rows: the function through a pointer, as the interposer calls it.
void BM_RecvNonBlocking_Libc(benchmark::State& state) {
  RecvFn volatile fn = Libc<RecvFn>("recv");
  RecvEmpty(state, fn);
}
BENCHMARK(BM_RecvNonBlocking_Libc);

void BM_PreadFile_Libc(benchmark::State& state) {
  PreadFn volatile fn = Libc<PreadFn>("pread");
  PreadByte(state, fn);
}
BENCHMARK(BM_PreadFile_Libc);

void BM_MutexUncontended_Libc(benchmark::State& state) {
  MutexFn volatile fn = Libc<MutexFn>("pthread_mutex_lock");
  LockUnlock(state, fn);
}
BENCHMARK(BM_MutexUncontended_Libc);

// Interposed (the PLT: the shim's definitions under LD_PRELOAD), the thread not a loop yet.
void BM_RecvNonBlocking_Interposed_NotALoop(benchmark::State& state) { RecvEmpty(state, &recv); }
BENCHMARK(BM_RecvNonBlocking_Interposed_NotALoop);

void BM_PreadFile_Interposed_NotALoop(benchmark::State& state) { PreadByte(state, &pread); }
BENCHMARK(BM_PreadFile_Interposed_NotALoop);

void BM_MutexUncontended_Interposed_NotALoop(benchmark::State& state) {
  LockUnlock(state, &pthread_mutex_lock);
}
BENCHMARK(BM_MutexUncontended_Interposed_NotALoop);

void BM_JoinSelf_Libc(benchmark::State& state) {
  const JoinFn join = LibcJoin();
  if (join == nullptr) {
    state.SkipWithError("libc.so.6 not found");
    return;
  }
  JoinFn volatile fn = join;  // called through a pointer, as the interposer calls it
  for (auto _ : state) {
    benchmark::DoNotOptimize(fn(pthread_self(), nullptr));
  }
}
BENCHMARK(BM_JoinSelf_Libc);

void BM_JoinSelf_Interposed_NotALoop(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(pthread_join(pthread_self(), nullptr));
  }
}
BENCHMARK(BM_JoinSelf_Interposed_NotALoop);

void BM_Fsync_RawSyscall(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(syscall(SYS_fsync, -1));
  }
}
BENCHMARK(BM_Fsync_RawSyscall);

// A thread that never waits in epoll: the interposer's check fails, the call goes through.
void BM_Fsync_Interposed_NotALoop(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(fsync(-1));
  }
}
// Registered before the loop benchmark: benchmarks run in this order, and the main thread is
// not a loop yet.
BENCHMARK(BM_Fsync_Interposed_NotALoop);

// The loop thread, busy between two waits: each call is timed and recorded.
void BM_Fsync_Interposed_LoopThread(benchmark::State& state) {
  BecomeLoop();
  for (auto _ : state) {
    benchmark::DoNotOptimize(fsync(-1));
  }
}
BENCHMARK(BM_Fsync_Interposed_LoopThread);

void BM_JoinSelf_Interposed_LoopThread(benchmark::State& state) {
  BecomeLoop();
  for (auto _ : state) {
    benchmark::DoNotOptimize(pthread_join(pthread_self(), nullptr));
  }
}
BENCHMARK(BM_JoinSelf_Interposed_LoopThread);

// The loop thread's normal call: not counted, one cached byte looked up (classified once).
void BM_RecvNonBlocking_Interposed_LoopThread(benchmark::State& state) {
  BecomeLoop();
  RecvEmpty(state, &recv);
}
BENCHMARK(BM_RecvNonBlocking_Interposed_LoopThread);

// Disk I/O on the loop thread (the page cache here): counted, timed and recorded.
void BM_PreadFile_Interposed_LoopThread(benchmark::State& state) {
  BecomeLoop();
  PreadByte(state, &pread);
}
BENCHMARK(BM_PreadFile_Interposed_LoopThread);

// A free mutex on the loop thread: pthread_mutex_trylock takes it, nothing is counted.
void BM_MutexUncontended_Interposed_LoopThread(benchmark::State& state) {
  BecomeLoop();
  LockUnlock(state, &pthread_mutex_lock);
}
BENCHMARK(BM_MutexUncontended_Interposed_LoopThread);

}  // namespace

BENCHMARK_MAIN();
