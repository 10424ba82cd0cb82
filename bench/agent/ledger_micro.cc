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

#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

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

// libc's own pthread_join (RTLD_NEXT from here would find the shim's).
JoinFn LibcJoin() {
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  return libc != nullptr ? reinterpret_cast<JoinFn>(dlsym(libc, "pthread_join")) : nullptr;
}

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

}  // namespace

BENCHMARK_MAIN();
