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

// Probe keys (epoll_loop.h): the data of an epoll loop's timerfd in the host's own epoll set.
// Set on the loop's thread when its probe goes into that set; kept while the loop is registered
// (a key in flight to another waiter is still recognised), forgotten with the slot.
void SetProbeKey(LoopState* s, uint64_t key);
// In a forked child: the keys the parent (and its ancestors) had in epoll sets this process may
// have inherited. Their events are never the host's. Any thread; lock-free.
bool HaveInheritedProbeKeys();
bool IsInheritedProbeKey(uint64_t data);
// Whether this process created `epfd` since it started or last forked (epoll_create and
// epoll_create1 are interposed): false for a set inherited from a parent, which other processes
// may wait on too. Any thread; lock-free.
bool EpfdCreatedHere(int epfd);

}  // namespace stallwatch::agent::internal
