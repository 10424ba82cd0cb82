#pragma once
// A real tail call for the unwinder's tests (tail_call_pair.cc, built at -O2).
// Each function returns the return address TailCallee saw.

#include <cstdint>

extern "C" {
uint64_t TailCallee(int x);
uint64_t TailCaller(int x);                    // tail-calls TailCallee
uint64_t CallsThroughTailCall(int x);          // calls TailCaller
uint64_t CallsDirectly(int x);                 // calls TailCallee
long ReadThroughTailCall(int fd, char* byte);  // tail-calls libc's read() through the PLT
long CallsReadThroughTailCall(int fd);         // calls ReadThroughTailCall
}
