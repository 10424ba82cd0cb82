// Functions for the tail-call test, compiled at -O2 with sibling-call optimization (see
// CMakeLists.txt): TailCaller ends in a jump to TailCallee, so a stack taken in TailCallee shows
// the caller of TailCaller directly above it.
#include "tail_call_pair.h"

#include <unistd.h>

extern "C" {

volatile uint64_t g_tail_call_sink = 0;

__attribute__((noipa)) uint64_t TailCallee(int x) {
  asm volatile("" ::: "memory");
  return reinterpret_cast<uint64_t>(__builtin_return_address(0)) + static_cast<uint64_t>(x) * 0;
}

__attribute__((noipa)) uint64_t TailCaller(int x) { return TailCallee(x + 1); }

__attribute__((noipa)) uint64_t CallsThroughTailCall(int x) {
  const uint64_t r = TailCaller(x);
  g_tail_call_sink = r;  // work after the call: a real call, not another tail call
  return r;
}

__attribute__((noipa)) uint64_t CallsDirectly(int x) {
  const uint64_t r = TailCallee(x);
  g_tail_call_sink = r;
  return r;
}
// Ends in `jmp read@plt`: its frame is gone while the thread blocks in read().
__attribute__((noipa)) long ReadThroughTailCall(int fd, char* byte) { return read(fd, byte, 1); }

__attribute__((noipa)) long CallsReadThroughTailCall(int fd) {
  char byte = 0;
  const long r = ReadThroughTailCall(fd, &byte);
  g_tail_call_sink = static_cast<uint64_t>(r);
  return r;
}
}
