#pragma once
// Loop boundaries on libevent 2.1: the agent library defines epoll_wait (and the dispatch
// entry points), forwarding to the next definition (libc's, libevent's) via dlsym(RTLD_NEXT).
// A call on an epoll fd that belongs to an attached base stamps the loop's busy/idle
// transitions; every other call costs one relaxed load and a short scan.

#include "loop_state.h"

namespace stallwatch::agent::internal {

// Called on any thread (under the runtime's lock). Returns false when the table is full.
bool RegisterLoop(LoopState* s);
void UnregisterLoop(LoopState* s);
// In a child after fork(): forget every loop (no lock taken; the child is single-threaded). The
// libevent bases among them are remembered: when the child runs one (a daemonizing server), the
// re-attach hook, if set, attaches it again, for the child.
void UnregisterAllLoops();
// Set once by the preload shim: attaches `base` in a forked child. Any thread.
void SetReattachHook(void (*hook)(event_base* base));
// Binds the epoll fd of a registered loop (found by the watchdog or at attach).
void BindEpollFd(LoopState* s, int epfd);
// The loop bound to `epfd`, or nullptr. Any thread; lock-free.
LoopState* FindLoopByEpfd(int epfd);
// True on a thread inside the dispatch of a watched libevent base. Loop thread.
bool InWatchedDispatch();
// Async-signal safe: the sample a watchdog process requested from thread `tid`, or nullptr.
RawSample* FindRequestedSample(pid_t tid);

}  // namespace stallwatch::agent::internal
