#pragma once
// Event loops found by how they wait (docs/design.md "Foreign loops"): asyncio and Tornado, Redis,
// Node/libuv and any other program whose loop thread waits in epoll_wait / epoll_pwait /
// epoll_pwait2 through libc.
//
// Discovery: with discovery on (the preload shim turns it on), a thread that waits on the same
// epoll fd a second time (WaitTracker) is an event loop on that fd and is attached there, inside
// that wait. A thread is the loop of one epoll fd: once it is, its waits on other epoll fds are
// calls its loop makes (a nested loop, a blocking client) and count as time the loop is blocked.
// An epoll fd is the loop of one thread: waits of other threads on it are passed through.
//
// The probe: a timerfd in the host's own epoll set, edge-triggered, under a key no host event
// carries (kProbeKeyTag); the interposed wait drops its events from what the host sees and, when
// only the probe woke it, waits again for the rest of the host's timeout (LoopWait): one call per
// wait, as without the agent. Only in sets this process created (EpfdCreatedHere): in a set that
// other threads or processes wait on too, they would take its ticks, so there the agent makes an
// epoll fd of its own holding the host's epoll fd and the timerfd, and the loop blocks in that
// one (three calls per blocking wait). A loop moves from the first to the second when another
// thread waits on its set or when it misses kMissesToMoveOut ticks in a row. Busy periods come
// from the wait calls as for libevent.
//
// Closing the host's epoll fd ends the loop (close() is interposed: the loop is no longer
// running, its slot is reaped at the next attach); closing one of the agent's fds (a program that
// closes every fd) loses the probe only: busy periods go on.

#include <sys/epoll.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loop_state.h"
#include "stallwatch/status.h"

namespace stallwatch::agent::internal {

// Which of a thread's epoll fds is its loop (pure; one per thread, used only on that thread).
class WaitTracker {
 public:
  static constexpr int kTracked = 4;  // distinct epoll fds remembered before the thread is done
  // A wait on `epfd`; true when it makes `epfd` this thread's loop (its second wait there).
  bool Observe(int epfd);
  // The thread's loop ended (its fd was closed): it may become the loop of another fd.
  void Reset() { *this = WaitTracker(); }
  // The thread waited on more than kTracked epoll fds without waiting twice on any: not a loop.
  bool gave_up() const { return gave_up_; }

 private:
  int fds_[kTracked] = {-1, -1, -1, -1};
  int counts_[kTracked] = {};
  bool gave_up_ = false;
};

// What runs the loop, from the names of the program (its executable's path, argv[0], its comm:
// redis-server is a link to redis-check-rdb) and the modules it has mapped (pure): "python",
// "node", "redis", "nginx", "memcached", or "" when it cannot be told.
std::string LoopRuntimeFrom(const std::vector<std::string>& program_names,
                            const std::vector<std::string>& modules);
// The same for this process (/proc/self/exe, cmdline, comm, maps). Any thread; reads /proc.
std::string ThisProcessRuntime();

// The probe of an epoll loop: its timerfd, in the host's set or beside it in an epoll fd of the
// agent's (see the top of this file).
class EpollProbe {
 public:
  EpollProbe() = default;
  ~EpollProbe();
  EpollProbe(const EpollProbe&) = delete;
  EpollProbe& operator=(const EpollProbe&) = delete;

  // Loop thread (inside the wait that attaches). Creates both fds and arms the timer.
  [[nodiscard]] Status Start(LoopState* state, int host_epfd);
  // Any thread once the loop no longer waits through it (detach, reap). Idempotent.
  void Stop();

 private:
  LoopState* state_ = nullptr;
};

// The keys of the probe's timerfd and of the host's epoll fd in the agent's epoll fd.
inline constexpr uint64_t kProbeKey = 0x5357'5052'4f42'4531ULL;
inline constexpr uint64_t kHostKey = 0x5357'484f'5354'0001ULL;
// Keys of probes in hosts' epoll sets: the top 20 bits are kProbeKeyTag (never a user-space
// pointer), the low 32 bits have their top two bits set (never an fd a host stores in data.fd),
// the rest tell the process (22 bits of its pid) and the probe apart. Matched exactly, never by
// mask: a host event whose data is garbage in its upper half still reaches the host.
inline constexpr uint64_t kProbeKeyTag = 0x53575;
uint64_t NewProbeKey();
// Ticks in a row that expired inside a blocking wait of the loop without waking it (another
// waiter of a shared set took them) before the probe leaves the host's set.
inline constexpr int kMissesToMoveOut = 3;

// The libc variant a host called; the agent's waits on its behalf go through the same one.
enum class WaitCall { kWait, kPwait, kPwait2 };

// The interposed wait of an epoll loop's thread on its own epoll fd, for each libc variant:
// same events, same timeout (timeout_ns < 0: none), same signal mask and EINTR as the call it
// replaces; probe ticks serviced on the way. `sigmask` may be null. `now_ns`: the monotonic
// time at the call (the caller has read it to close the busy period). `*woke_ns`: the monotonic
// time read after the last wait, when one was read (the start of the next busy period, so the
// caller need not read the clock again), else 0.
int LoopWait(LoopState* s, int epfd, epoll_event* events, int maxevents, int64_t timeout_ns,
             const sigset_t* sigmask, WaitCall call, int64_t now_ns, int64_t* woke_ns);

// Removes from events[0, n) the probe events of `key` (sets *own_fired) and those of probes
// inherited from a parent process, keeping the others in order; returns how many are left.
int DropProbeEvents(epoll_event* events, int n, uint64_t key, bool* own_fired);

// A wait of a thread that is not the set's loop on an epoll set holding a probe (`key`, or a
// parent's): the host's call, without the probe's events; if only they came, waits again for
// the rest of the timeout.
int PassThroughWait(int epfd, epoll_event* events, int maxevents, int64_t timeout_ns,
                    const sigset_t* sigmask, WaitCall call, uint64_t key);

// Discovery, called by the interposers for a wait on an epoll fd that is no loop's. Returns the
// loop this wait made (attached just now: this wait is its first boundary), or nullptr.
LoopState* DiscoverLoop(int epfd);
// The loop discovery attached on this thread, when `epfd` is its epoll fd and it is still open:
// the common wait of a discovered loop, found without the loop table. Only this thread frees
// that state (after it saw the loop closed), so no ScanGuard is needed. Else nullptr.
LoopState* ThisThreadsLoop(int epfd);
// Turned on by the preload shim at load. Any thread.
void EnableEpollDiscovery();
bool EpollDiscoveryEnabled();
// In a child after fork(): every thread's discovery starts again (the loops were forgotten).
void ForgetDiscoveredLoops();
// The host closed its epoll loop's fd, or its thread ended: the loop no longer runs. Any thread;
// async-signal safe (atomics only).
void MarkLoopClosed(LoopState* s);

}  // namespace stallwatch::agent::internal
