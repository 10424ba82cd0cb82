// The blocking-call ledger's interposers (agent/src/ledger.h, docs/design.md "Blocking-call
// ledger"): libc functions known to block, forwarded to the next definition (dlsym RTLD_NEXT).
//
// On a thread that is not busy in a watched loop the only cost is one initial-exec thread-local
// load and a predictable branch (bench/agent/ledger_micro.cc). On a loop thread a call is timed
// with two monotonic clock reads and recorded in the loop's fixed table by the interposer's
// return address; nothing is allocated and nothing is symbolized here (the watchdog does that).
// errno is the real call's.

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>

#include "ledger.h"
#include "loop_state.h"
#include "stallwatch/common/clock.h"

namespace stallwatch::agent::internal {
namespace {

struct RealCalls {
  decltype(&::getaddrinfo) getaddrinfo = nullptr;
  decltype(&::gethostbyname) gethostbyname = nullptr;
  decltype(&::gethostbyname_r) gethostbyname_r = nullptr;
  decltype(&::getnameinfo) getnameinfo = nullptr;
  decltype(&::nanosleep) nanosleep = nullptr;
  decltype(&::clock_nanosleep) clock_nanosleep = nullptr;
  decltype(&::usleep) usleep = nullptr;
  decltype(&::sleep) sleep = nullptr;
  decltype(&::fsync) fsync = nullptr;
  decltype(&::fdatasync) fdatasync = nullptr;
  decltype(&::sync_file_range) sync_file_range = nullptr;
  decltype(&::syncfs) syncfs = nullptr;
  decltype(&::connect) connect = nullptr;
  decltype(&::waitpid) waitpid = nullptr;
  decltype(&::system) system = nullptr;
  decltype(&::pthread_join) pthread_join = nullptr;
  decltype(&::flock) flock = nullptr;
};

RealCalls g_real;

template <typename Fn>
void Resolve(Fn* fn, const char* name) {
  if (*fn == nullptr) {
    *fn = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
  }
}

__attribute__((constructor)) void ResolveLedgerCalls() {
  Resolve(&g_real.getaddrinfo, "getaddrinfo");
  Resolve(&g_real.gethostbyname, "gethostbyname");
  Resolve(&g_real.gethostbyname_r, "gethostbyname_r");
  Resolve(&g_real.getnameinfo, "getnameinfo");
  Resolve(&g_real.nanosleep, "nanosleep");
  Resolve(&g_real.clock_nanosleep, "clock_nanosleep");
  Resolve(&g_real.usleep, "usleep");
  Resolve(&g_real.sleep, "sleep");
  Resolve(&g_real.fsync, "fsync");
  Resolve(&g_real.fdatasync, "fdatasync");
  Resolve(&g_real.sync_file_range, "sync_file_range");
  Resolve(&g_real.syncfs, "syncfs");
  Resolve(&g_real.connect, "connect");
  Resolve(&g_real.waitpid, "waitpid");
  Resolve(&g_real.system, "system");
  Resolve(&g_real.pthread_join, "pthread_join");
  Resolve(&g_real.flock, "flock");
}

// The real function (resolved now if a constructor that ran before ours calls it).
template <typename Fn>
inline Fn Real(Fn* fn) {
  if (__builtin_expect(*fn == nullptr, 0)) {
    ResolveLedgerCalls();
  }
  return *fn;
}

// Whether this call is counted: the thread is busy in a watched loop and not already inside an
// interposed call (glibc's own nested calls are not counted twice).
inline LoopState* CountedLoop() {
  LedgerThread& t = t_ledger;
  if (__builtin_expect(t.loop == nullptr, 1)) {
    return nullptr;
  }
  return t.depth == 0 ? t.loop : nullptr;
}

// Times `fn()` and records it on `s`'s ledger under (site, call). errno is fn's.
template <typename F>
inline auto Timed(LoopState* s, BlockingCall call, void* site, F&& fn) {
  LedgerThread& t = t_ledger;
  ++t.depth;
  const int64_t start = MonotonicNanos();
  auto r = fn();
  const int64_t end = MonotonicNanos();
  const int saved = errno;
  --t.depth;
  // The loop may have been detached on this thread meanwhile (a callback calling system()
  // cannot do that, but pthread_join on a thread that detaches it could): record only into the
  // loop still current.
  if (t.loop == s) {
    s->ledger.Record(reinterpret_cast<uint64_t>(site), call,
                     static_cast<uint64_t>(end > start ? end - start : 0));
  }
  errno = saved;
  return r;
}

}  // namespace
}  // namespace stallwatch::agent::internal

using stallwatch::agent::internal::BlockingCall;
using stallwatch::agent::internal::CountedLoop;
using stallwatch::agent::internal::g_real;
using stallwatch::agent::internal::LoopState;
using stallwatch::agent::internal::Real;
using stallwatch::agent::internal::Timed;

// Each interposer takes its return address itself (a helper's would be the interposer's).
#define SW_LEDGER_CALL(call_kind, name, ...)                                                    \
  do {                                                                                          \
    auto real = Real(&g_real.name);                                                             \
    LoopState* s = CountedLoop();                                                               \
    if (__builtin_expect(s == nullptr, 1)) {                                                    \
      return real(__VA_ARGS__);                                                                 \
    }                                                                                           \
    return Timed(s, call_kind, __builtin_return_address(0), [&] { return real(__VA_ARGS__); }); \
  } while (0)

extern "C" {

__attribute__((visibility("default"))) int getaddrinfo(const char* node, const char* service,
                                                       const addrinfo* hints, addrinfo** res) {
  SW_LEDGER_CALL(BlockingCall::kGetaddrinfo, getaddrinfo, node, service, hints, res);
}

__attribute__((visibility("default"))) hostent* gethostbyname(const char* name) {
  SW_LEDGER_CALL(BlockingCall::kGethostbyname, gethostbyname, name);
}

__attribute__((visibility("default"))) int gethostbyname_r(const char* name, hostent* ret,
                                                           char* buf, size_t buflen,
                                                           hostent** result, int* h_errnop) {
  SW_LEDGER_CALL(BlockingCall::kGethostbynameR, gethostbyname_r, name, ret, buf, buflen, result,
                 h_errnop);
}

__attribute__((visibility("default"))) int getnameinfo(const sockaddr* addr, socklen_t addrlen,
                                                       char* host, socklen_t hostlen, char* serv,
                                                       socklen_t servlen, int flags) {
  SW_LEDGER_CALL(BlockingCall::kGetnameinfo, getnameinfo, addr, addrlen, host, hostlen, serv,
                 servlen, flags);
}

__attribute__((visibility("default"))) int nanosleep(const timespec* req, timespec* rem) {
  SW_LEDGER_CALL(BlockingCall::kNanosleep, nanosleep, req, rem);
}

__attribute__((visibility("default"))) int clock_nanosleep(clockid_t clock, int flags,
                                                           const timespec* req, timespec* rem) {
  SW_LEDGER_CALL(BlockingCall::kClockNanosleep, clock_nanosleep, clock, flags, req, rem);
}

__attribute__((visibility("default"))) int usleep(useconds_t usec) {
  SW_LEDGER_CALL(BlockingCall::kUsleep, usleep, usec);
}

__attribute__((visibility("default"))) unsigned int sleep(unsigned int seconds) {
  SW_LEDGER_CALL(BlockingCall::kSleep, sleep, seconds);
}

__attribute__((visibility("default"))) int fsync(int fd) {
  SW_LEDGER_CALL(BlockingCall::kFsync, fsync, fd);
}

__attribute__((visibility("default"))) int fdatasync(int fd) {
  SW_LEDGER_CALL(BlockingCall::kFdatasync, fdatasync, fd);
}

__attribute__((visibility("default"))) int sync_file_range(int fd, off64_t offset, off64_t nbytes,
                                                           unsigned int flags) {
  SW_LEDGER_CALL(BlockingCall::kSyncFileRange, sync_file_range, fd, offset, nbytes, flags);
}

__attribute__((visibility("default"))) int syncfs(int fd) noexcept {
  SW_LEDGER_CALL(BlockingCall::kSyncfs, syncfs, fd);
}

// Only on a socket in blocking mode: a non-blocking connect returns at once (EINPROGRESS).
__attribute__((visibility("default"))) int connect(int fd, const sockaddr* addr, socklen_t len) {
  auto real = Real(&g_real.connect);
  LoopState* s = CountedLoop();
  if (__builtin_expect(s == nullptr, 1)) {
    return real(fd, addr, len);
  }
  const int saved = errno;
  const int fl = fcntl(fd, F_GETFL);
  errno = saved;
  if (fl < 0 || (fl & O_NONBLOCK) != 0) {
    return real(fd, addr, len);
  }
  return Timed(s, BlockingCall::kConnect, __builtin_return_address(0),
               [&] { return real(fd, addr, len); });
}

// Only when it may wait: WNOHANG returns at once.
__attribute__((visibility("default"))) pid_t waitpid(pid_t pid, int* status, int options) {
  auto real = Real(&g_real.waitpid);
  LoopState* s = CountedLoop();
  if (__builtin_expect(s == nullptr || (options & WNOHANG) != 0, 1)) {
    return real(pid, status, options);
  }
  return Timed(s, BlockingCall::kWaitpid, __builtin_return_address(0),
               [&] { return real(pid, status, options); });
}

__attribute__((visibility("default"))) int system(const char* command) {
  SW_LEDGER_CALL(BlockingCall::kSystem, system, command);
}

__attribute__((visibility("default"))) int pthread_join(pthread_t thread, void** retval) {
  SW_LEDGER_CALL(BlockingCall::kPthreadJoin, pthread_join, thread, retval);
}

// Only when it may wait: LOCK_NB returns at once.
__attribute__((visibility("default"))) int flock(int fd, int operation) noexcept {
  auto real = Real(&g_real.flock);
  LoopState* s = CountedLoop();
  if (__builtin_expect(s == nullptr || (operation & LOCK_NB) != 0, 1)) {
    return real(fd, operation);
  }
  return Timed(s, BlockingCall::kFlock, __builtin_return_address(0),
               [&] { return real(fd, operation); });
}

}  // extern "C"
