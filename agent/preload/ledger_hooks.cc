// The blocking-call ledger's interposers (agent/src/ledger.h, docs/design.md "Blocking-call
// ledger"): libc functions known to block, forwarded to the next definition (dlsym RTLD_NEXT).
//
// On a thread that is not busy in a watched loop the only cost is one initial-exec thread-local
// load and a predictable branch (bench/agent/ledger_micro.cc). On a loop thread a call is timed
// with two monotonic clock reads and recorded in the loop's fixed table by the interposer's
// return address; nothing is allocated and nothing is symbolized here (the watchdog does that).
// errno is the real call's.
//
// File and socket I/O (read, write, recv, …) is counted by what the descriptor is (FdModeCache,
// agent/src/ledger.h): a regular file always, a socket, pipe or FIFO only in blocking mode. The
// calls that close, replace, create or change a descriptor (close in wait_hook.cc; dup*, fcntl
// F_SETFL and F_DUPFD*, ioctl FIONBIO, socket, accept*, open*, pipe*, socketpair here) make its
// cached mode unknown again on every thread, after the real call.

// The interposers define libc's names themselves: no fortified inline wrappers of them.
#undef _FORTIFY_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
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
  // File and socket I/O, and the calls that change what the cache knows of a descriptor.
  using OpenFn = int (*)(const char*, int, ...);
  using OpenatFn = int (*)(int, const char*, int, ...);
  using Open2Fn = int (*)(const char*, int);
  using Openat2Fn = int (*)(int, const char*, int);
  using FcntlFn = int (*)(int, int, ...);
  using IoctlFn = int (*)(int, unsigned long, ...);  // NOLINT(google-runtime-int): libc's type
  using ReadChkFn = ssize_t (*)(int, void*, size_t, size_t);
  using PreadChkFn = ssize_t (*)(int, void*, size_t, off64_t, size_t);
  using RecvChkFn = ssize_t (*)(int, void*, size_t, size_t, int);
  using RecvfromChkFn = ssize_t (*)(int, void*, size_t, size_t, int, sockaddr*, socklen_t*);
  OpenFn open = nullptr;
  OpenFn open64 = nullptr;
  Open2Fn open_2 = nullptr;
  Open2Fn open64_2 = nullptr;
  OpenatFn openat = nullptr;
  OpenatFn openat64 = nullptr;
  Openat2Fn openat_2 = nullptr;
  Openat2Fn openat64_2 = nullptr;
  decltype(&::read) read = nullptr;
  ReadChkFn read_chk = nullptr;
  decltype(&::write) write = nullptr;
  decltype(&::pread) pread = nullptr;
  decltype(&::pread64) pread64 = nullptr;
  PreadChkFn pread_chk = nullptr;
  PreadChkFn pread64_chk = nullptr;
  decltype(&::pwrite) pwrite = nullptr;
  decltype(&::pwrite64) pwrite64 = nullptr;
  decltype(&::readv) readv = nullptr;
  decltype(&::writev) writev = nullptr;
  decltype(&::accept) accept = nullptr;
  decltype(&::accept4) accept4 = nullptr;
  decltype(&::recv) recv = nullptr;
  RecvChkFn recv_chk = nullptr;
  decltype(&::recvfrom) recvfrom = nullptr;
  RecvfromChkFn recvfrom_chk = nullptr;
  decltype(&::recvmsg) recvmsg = nullptr;
  decltype(&::send) send = nullptr;
  decltype(&::sendto) sendto = nullptr;
  decltype(&::sendmsg) sendmsg = nullptr;
  decltype(&::popen) popen = nullptr;
  decltype(&::pclose) pclose = nullptr;
  FcntlFn fcntl = nullptr;
  FcntlFn fcntl64 = nullptr;
  IoctlFn ioctl = nullptr;
  decltype(&::dup) dup = nullptr;
  decltype(&::dup2) dup2 = nullptr;
  decltype(&::dup3) dup3 = nullptr;
  decltype(&::socket) socket = nullptr;
  decltype(&::socketpair) socketpair = nullptr;
  decltype(&::pipe) pipe = nullptr;
  decltype(&::pipe2) pipe2 = nullptr;
  decltype(&::pthread_mutex_lock) pthread_mutex_lock = nullptr;
  decltype(&::pthread_mutex_trylock) pthread_mutex_trylock = nullptr;
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
  Resolve(&g_real.open, "open");
  Resolve(&g_real.open64, "open64");
  Resolve(&g_real.open_2, "__open_2");
  Resolve(&g_real.open64_2, "__open64_2");
  Resolve(&g_real.openat, "openat");
  Resolve(&g_real.openat64, "openat64");
  Resolve(&g_real.openat_2, "__openat_2");
  Resolve(&g_real.openat64_2, "__openat64_2");
  Resolve(&g_real.read, "read");
  Resolve(&g_real.read_chk, "__read_chk");
  Resolve(&g_real.write, "write");
  Resolve(&g_real.pread, "pread");
  Resolve(&g_real.pread64, "pread64");
  Resolve(&g_real.pread_chk, "__pread_chk");
  Resolve(&g_real.pread64_chk, "__pread64_chk");
  Resolve(&g_real.pwrite, "pwrite");
  Resolve(&g_real.pwrite64, "pwrite64");
  Resolve(&g_real.readv, "readv");
  Resolve(&g_real.writev, "writev");
  Resolve(&g_real.accept, "accept");
  Resolve(&g_real.accept4, "accept4");
  Resolve(&g_real.recv, "recv");
  Resolve(&g_real.recv_chk, "__recv_chk");
  Resolve(&g_real.recvfrom, "recvfrom");
  Resolve(&g_real.recvfrom_chk, "__recvfrom_chk");
  Resolve(&g_real.recvmsg, "recvmsg");
  Resolve(&g_real.send, "send");
  Resolve(&g_real.sendto, "sendto");
  Resolve(&g_real.sendmsg, "sendmsg");
  Resolve(&g_real.popen, "popen");
  Resolve(&g_real.pclose, "pclose");
  Resolve(&g_real.fcntl, "fcntl");
  Resolve(&g_real.fcntl64, "fcntl64");
  Resolve(&g_real.ioctl, "ioctl");
  Resolve(&g_real.dup, "dup");
  Resolve(&g_real.dup2, "dup2");
  Resolve(&g_real.dup3, "dup3");
  Resolve(&g_real.socket, "socket");
  Resolve(&g_real.socketpair, "socketpair");
  Resolve(&g_real.pipe, "pipe");
  Resolve(&g_real.pipe2, "pipe2");
  Resolve(&g_real.pthread_mutex_lock, "pthread_mutex_lock");
  Resolve(&g_real.pthread_mutex_trylock, "pthread_mutex_trylock");
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
    const auto ns = static_cast<uint64_t>(end > start ? end - start : 0);
    const auto native = reinterpret_cast<uint64_t>(site);
    uint64_t code = 0;
    uint64_t instr = 0;
    // A Python loop's call made by the interpreter itself: its Python caller is the site.
    if (CurrentPythonCaller(s->py_tstate.load(std::memory_order_relaxed), native, &code, &instr)) {
      s->ledger.Record(instr, call, ns, code, native);
    } else {
      s->ledger.Record(native, call, ns);
    }
  }
  errno = saved;
  return r;
}

// The call a read or write on `fd` counts as on a loop thread: `file_call` on a regular file or
// block device, `stream_call` on a socket, pipe or FIFO in blocking mode, kCount (not counted)
// otherwise. One byte load once the descriptor is known.
inline BlockingCall FdCall(int fd, BlockingCall file_call, BlockingCall stream_call) {
  switch (LedgerFdMode(fd)) {
    case FdMode::kFile:
      return file_call;
    case FdMode::kBlockingStream:
      return stream_call;
    default:
      return BlockingCall::kCount;
  }
}

// A new descriptor (or a failure: nothing to forget). errno untouched.
inline void ForgetNew(int fd) {
  if (fd >= 0) {
    g_fd_modes.Forget(fd);
  }
}

// Whether open's variadic mode argument is there (glibc's __OPEN_NEEDS_MODE).
inline bool OpenNeedsMode(int flags) {
  return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

// Every open on a loop thread is counted, whatever it opens: resolving a path reads directories
// and inodes (disk I/O; a round trip on NFS or FUSE), and opening a FIFO waits for its peer. The
// new descriptor's number is forgotten by the cache, on any thread.
template <typename F>
inline int OpenCall(BlockingCall call, void* site, F&& fn) {
  LoopState* s = CountedLoop();
  const int fd = __builtin_expect(s == nullptr, 1) ? fn() : Timed(s, call, site, fn);
  ForgetNew(fd);
  return fd;
}

// fcntl and fcntl64: lock waits are counted; F_SETFL and F_DUPFD* change what the cache knows.
inline int FcntlCall(RealCalls::FcntlFn* fn, int fd, int cmd, void* arg, void* site) {
  auto real = Real(fn);
  LoopState* s = CountedLoop();
  int r = 0;
  if (__builtin_expect(s == nullptr, 1) || (cmd != F_SETLKW && cmd != F_OFD_SETLKW)) {
    r = real(fd, cmd, arg);
  } else {
    r = Timed(s, BlockingCall::kFcntl, site, [&] { return real(fd, cmd, arg); });
  }
  if (cmd == F_SETFL) {
    g_fd_modes.Forget(fd);
  } else if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
    ForgetNew(r);
  }
  return r;
}

}  // namespace
}  // namespace stallwatch::agent::internal

using stallwatch::agent::internal::BlockingCall;
using stallwatch::agent::internal::CountedLoop;
using stallwatch::agent::internal::FcntlCall;
using stallwatch::agent::internal::FdCall;
using stallwatch::agent::internal::ForgetNew;
using stallwatch::agent::internal::g_fd_modes;
using stallwatch::agent::internal::g_real;
using stallwatch::agent::internal::LoopState;
using stallwatch::agent::internal::OpenCall;
using stallwatch::agent::internal::OpenNeedsMode;
using stallwatch::agent::internal::Real;
using stallwatch::agent::internal::Timed;

// Each interposer takes its return address itself (a helper's would be the interposer's).
// `decide`, evaluated only on a loop thread outside another interposed call, is the call to count
// it as, or BlockingCall::kCount to pass it through uncounted.
#define SW_LEDGER_DECIDED(name, decide, ...)                                            \
  do {                                                                                  \
    auto real = Real(&g_real.name);                                                     \
    LoopState* s = CountedLoop();                                                       \
    if (__builtin_expect(s == nullptr, 1)) {                                            \
      return real(__VA_ARGS__);                                                         \
    }                                                                                   \
    const BlockingCall c = (decide);                                                    \
    if (c == BlockingCall::kCount) {                                                    \
      return real(__VA_ARGS__);                                                         \
    }                                                                                   \
    return Timed(s, c, __builtin_return_address(0), [&] { return real(__VA_ARGS__); }); \
  } while (0)

// A call counted whenever the loop thread makes it.
#define SW_LEDGER_CALL(call_kind, name, ...) SW_LEDGER_DECIDED(name, call_kind, __VA_ARGS__)

// A read or write on a descriptor: counted as `file_call` or `stream_call` by what it is (FdCall).
#define SW_LEDGER_FD_CALL(file_call, stream_call, name, fd, ...) \
  SW_LEDGER_DECIDED(name, FdCall(fd, file_call, stream_call), __VA_ARGS__)

// A socket call with flags: never counted with MSG_DONTWAIT (it returns at once).
#define SW_LEDGER_SOCKET_CALL(call_kind, name, fd, flags, ...)                                  \
  SW_LEDGER_DECIDED(name,                                                                       \
                    ((flags)&MSG_DONTWAIT) != 0 ||                                              \
                            FdCall(fd, BlockingCall::kCount, call_kind) == BlockingCall::kCount \
                        ? BlockingCall::kCount                                                  \
                        : (call_kind),                                                          \
                    __VA_ARGS__)

// open's mode argument, read only when the flags say it was passed.
#define SW_OPEN_MODE(last, flags) \
  mode_t mode = 0;                \
  if (OpenNeedsMode(flags)) {     \
    va_list ap;                   \
    va_start(ap, last);           \
    mode = va_arg(ap, mode_t);    \
    va_end(ap);                   \
  }

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

// Only on a socket in blocking mode (the descriptor cache, as recv's): a non-blocking connect
// returns at once (EINPROGRESS).
__attribute__((visibility("default"))) int connect(int fd, const sockaddr* addr, socklen_t len) {
  auto real = Real(&g_real.connect);
  LoopState* s = CountedLoop();
  if (__builtin_expect(s == nullptr, 1) ||
      FdCall(fd, BlockingCall::kCount, BlockingCall::kConnect) == BlockingCall::kCount) {
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

// File I/O. The 64 variants are the same functions on x86-64 but separate symbols, which
// programs built with _FILE_OFFSET_BITS=64 (Python, …) call; the __*_chk and __open*_2 ones are
// what _FORTIFY_SOURCE builds call.
__attribute__((visibility("default"))) int open(const char* path, int flags, ...) {
  SW_OPEN_MODE(flags, flags);
  auto real = Real(&g_real.open);
  return OpenCall(BlockingCall::kOpen, __builtin_return_address(0),
                  [&] { return real(path, flags, mode); });
}

__attribute__((visibility("default"))) int open64(const char* path, int flags, ...) {
  SW_OPEN_MODE(flags, flags);
  auto real = Real(&g_real.open64);
  return OpenCall(BlockingCall::kOpen, __builtin_return_address(0),
                  [&] { return real(path, flags, mode); });
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) int __open_2(const char* path, int flags) {
  auto real = Real(&g_real.open_2);
  return OpenCall(BlockingCall::kOpen, __builtin_return_address(0),
                  [&] { return real(path, flags); });
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) int __open64_2(const char* path, int flags) {
  auto real = Real(&g_real.open64_2);
  return OpenCall(BlockingCall::kOpen, __builtin_return_address(0),
                  [&] { return real(path, flags); });
}

__attribute__((visibility("default"))) int openat(int dirfd, const char* path, int flags, ...) {
  SW_OPEN_MODE(flags, flags);
  auto real = Real(&g_real.openat);
  return OpenCall(BlockingCall::kOpenat, __builtin_return_address(0),
                  [&] { return real(dirfd, path, flags, mode); });
}

__attribute__((visibility("default"))) int openat64(int dirfd, const char* path, int flags, ...) {
  SW_OPEN_MODE(flags, flags);
  auto real = Real(&g_real.openat64);
  return OpenCall(BlockingCall::kOpenat, __builtin_return_address(0),
                  [&] { return real(dirfd, path, flags, mode); });
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) int __openat_2(int dirfd, const char* path, int flags) {
  auto real = Real(&g_real.openat_2);
  return OpenCall(BlockingCall::kOpenat, __builtin_return_address(0),
                  [&] { return real(dirfd, path, flags); });
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) int __openat64_2(int dirfd, const char* path, int flags) {
  auto real = Real(&g_real.openat64_2);
  return OpenCall(BlockingCall::kOpenat, __builtin_return_address(0),
                  [&] { return real(dirfd, path, flags); });
}

__attribute__((visibility("default"))) ssize_t read(int fd, void* buf, size_t n) {
  SW_LEDGER_FD_CALL(BlockingCall::kRead, BlockingCall::kReadBlocking, read, fd, fd, buf, n);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) ssize_t __read_chk(int fd, void* buf, size_t n,
                                                          size_t buflen) {
  SW_LEDGER_FD_CALL(BlockingCall::kRead, BlockingCall::kReadBlocking, read_chk, fd, fd, buf, n,
                    buflen);
}

__attribute__((visibility("default"))) ssize_t write(int fd, const void* buf, size_t n) {
  SW_LEDGER_FD_CALL(BlockingCall::kWrite, BlockingCall::kWriteBlocking, write, fd, fd, buf, n);
}

// pread and pwrite: files only (on a pipe or socket they fail with ESPIPE).
__attribute__((visibility("default"))) ssize_t pread(int fd, void* buf, size_t n, off_t offset) {
  SW_LEDGER_FD_CALL(BlockingCall::kPread, BlockingCall::kCount, pread, fd, fd, buf, n, offset);
}

__attribute__((visibility("default"))) ssize_t pread64(int fd, void* buf, size_t n,
                                                       off64_t offset) {
  SW_LEDGER_FD_CALL(BlockingCall::kPread, BlockingCall::kCount, pread64, fd, fd, buf, n, offset);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) ssize_t __pread_chk(int fd, void* buf, size_t n,
                                                           off64_t offset, size_t buflen) {
  SW_LEDGER_FD_CALL(BlockingCall::kPread, BlockingCall::kCount, pread_chk, fd, fd, buf, n, offset,
                    buflen);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) ssize_t __pread64_chk(int fd, void* buf, size_t n,
                                                             off64_t offset, size_t buflen) {
  SW_LEDGER_FD_CALL(BlockingCall::kPread, BlockingCall::kCount, pread64_chk, fd, fd, buf, n, offset,
                    buflen);
}

__attribute__((visibility("default"))) ssize_t pwrite(int fd, const void* buf, size_t n,
                                                      off_t offset) {
  SW_LEDGER_FD_CALL(BlockingCall::kPwrite, BlockingCall::kCount, pwrite, fd, fd, buf, n, offset);
}

__attribute__((visibility("default"))) ssize_t pwrite64(int fd, const void* buf, size_t n,
                                                        off64_t offset) {
  SW_LEDGER_FD_CALL(BlockingCall::kPwrite, BlockingCall::kCount, pwrite64, fd, fd, buf, n, offset);
}

__attribute__((visibility("default"))) ssize_t readv(int fd, const iovec* iov, int iovcnt) {
  SW_LEDGER_FD_CALL(BlockingCall::kReadv, BlockingCall::kReadvBlocking, readv, fd, fd, iov, iovcnt);
}

__attribute__((visibility("default"))) ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  SW_LEDGER_FD_CALL(BlockingCall::kWritev, BlockingCall::kWritevBlocking, writev, fd, fd, iov,
                    iovcnt);
}

// Sockets. accept and accept4 create a descriptor: forgotten by the cache on any thread.
__attribute__((visibility("default"))) int accept(int fd, sockaddr* addr, socklen_t* len) {
  auto real = Real(&g_real.accept);
  LoopState* s = CountedLoop();
  int r = 0;
  if (__builtin_expect(s == nullptr, 1) ||
      FdCall(fd, BlockingCall::kCount, BlockingCall::kAccept) == BlockingCall::kCount) {
    r = real(fd, addr, len);
  } else {
    r = Timed(s, BlockingCall::kAccept, __builtin_return_address(0),
              [&] { return real(fd, addr, len); });
  }
  ForgetNew(r);
  return r;
}

__attribute__((visibility("default"))) int accept4(int fd, sockaddr* addr, socklen_t* len,
                                                   int flags) {
  auto real = Real(&g_real.accept4);
  LoopState* s = CountedLoop();
  int r = 0;
  if (__builtin_expect(s == nullptr, 1) ||
      FdCall(fd, BlockingCall::kCount, BlockingCall::kAccept4) == BlockingCall::kCount) {
    r = real(fd, addr, len, flags);
  } else {
    r = Timed(s, BlockingCall::kAccept4, __builtin_return_address(0),
              [&] { return real(fd, addr, len, flags); });
  }
  ForgetNew(r);
  return r;
}

__attribute__((visibility("default"))) ssize_t recv(int fd, void* buf, size_t n, int flags) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kRecv, recv, fd, flags, fd, buf, n, flags);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) ssize_t __recv_chk(int fd, void* buf, size_t n,
                                                          size_t buflen, int flags) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kRecv, recv_chk, fd, flags, fd, buf, n, buflen, flags);
}

__attribute__((visibility("default"))) ssize_t recvfrom(int fd, void* buf, size_t n, int flags,
                                                        sockaddr* addr, socklen_t* len) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kRecvfrom, recvfrom, fd, flags, fd, buf, n, flags, addr, len);
}

// NOLINTNEXTLINE(bugprone-reserved-identifier): glibc's name
__attribute__((visibility("default"))) ssize_t __recvfrom_chk(int fd, void* buf, size_t n,
                                                              size_t buflen, int flags,
                                                              sockaddr* addr, socklen_t* len) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kRecvfrom, recvfrom_chk, fd, flags, fd, buf, n, buflen, flags,
                        addr, len);
}

__attribute__((visibility("default"))) ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kRecvmsg, recvmsg, fd, flags, fd, msg, flags);
}

__attribute__((visibility("default"))) ssize_t send(int fd, const void* buf, size_t n, int flags) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kSend, send, fd, flags, fd, buf, n, flags);
}

__attribute__((visibility("default"))) ssize_t sendto(int fd, const void* buf, size_t n, int flags,
                                                      const sockaddr* addr, socklen_t len) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kSendto, sendto, fd, flags, fd, buf, n, flags, addr, len);
}

__attribute__((visibility("default"))) ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  SW_LEDGER_SOCKET_CALL(BlockingCall::kSendmsg, sendmsg, fd, flags, fd, msg, flags);
}

// popen starts a shell; pclose waits for it. The stream's descriptor is new, then closed, out of
// the shim's sight (glibc's internal calls): forgotten by the cache here.
__attribute__((visibility("default"))) FILE* popen(const char* command, const char* type) {
  auto real = Real(&g_real.popen);
  LoopState* s = CountedLoop();
  FILE* f = __builtin_expect(s == nullptr, 1)
                ? real(command, type)
                : Timed(s, BlockingCall::kPopen, __builtin_return_address(0),
                        [&] { return real(command, type); });
  if (f != nullptr) {
    ForgetNew(fileno(f));
  }
  return f;
}

__attribute__((visibility("default"))) int pclose(FILE* stream) {
  auto real = Real(&g_real.pclose);
  const int fd = stream != nullptr ? fileno(stream) : -1;
  LoopState* s = CountedLoop();
  const int r = __builtin_expect(s == nullptr, 1)
                    ? real(stream)
                    : Timed(s, BlockingCall::kPclose, __builtin_return_address(0),
                            [&] { return real(stream); });
  ForgetNew(fd);
  return r;
}

// glibc's fcntl reads its third argument as a pointer whatever the command (an int command's
// argument fits in it): it is passed on the same way.
__attribute__((visibility("default"))) int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return FcntlCall(&g_real.fcntl, fd, cmd, arg, __builtin_return_address(0));
}

__attribute__((visibility("default"))) int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return FcntlCall(&g_real.fcntl64, fd, cmd, arg, __builtin_return_address(0));
}

// Not counted: FIONBIO (how Python sets a socket's blocking mode) changes what the cache knows.
// NOLINTNEXTLINE(google-runtime-int): libc's prototype
__attribute__((visibility("default"))) int ioctl(int fd, unsigned long request, ...) noexcept {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  const int r = Real(&g_real.ioctl)(fd, request, arg);
  if (request == FIONBIO) {
    g_fd_modes.Forget(fd);
  }
  return r;
}

// Not counted: they make a descriptor number mean something new.
__attribute__((visibility("default"))) int dup(int fd) noexcept {
  const int r = Real(&g_real.dup)(fd);
  ForgetNew(r);
  return r;
}

__attribute__((visibility("default"))) int dup2(int fd, int fd2) noexcept {
  const int r = Real(&g_real.dup2)(fd, fd2);
  ForgetNew(fd2);
  return r;
}

__attribute__((visibility("default"))) int dup3(int fd, int fd2, int flags) noexcept {
  const int r = Real(&g_real.dup3)(fd, fd2, flags);
  ForgetNew(fd2);
  return r;
}

__attribute__((visibility("default"))) int socket(int domain, int type, int protocol) noexcept {
  const int r = Real(&g_real.socket)(domain, type, protocol);
  ForgetNew(r);
  return r;
}

__attribute__((visibility("default"))) int socketpair(int domain, int type, int protocol,
                                                      int fds[2]) noexcept {
  const int r = Real(&g_real.socketpair)(domain, type, protocol, fds);
  if (r == 0) {
    ForgetNew(fds[0]);
    ForgetNew(fds[1]);
  }
  return r;
}

__attribute__((visibility("default"))) int pipe(int fds[2]) noexcept {
  const int r = Real(&g_real.pipe)(fds);
  if (r == 0) {
    ForgetNew(fds[0]);
    ForgetNew(fds[1]);
  }
  return r;
}

__attribute__((visibility("default"))) int pipe2(int fds[2], int flags) noexcept {
  const int r = Real(&g_real.pipe2)(fds, flags);
  if (r == 0) {
    ForgetNew(fds[0]);
    ForgetNew(fds[1]);
  }
  return r;
}

// A contended mutex: pthread_mutex_trylock first, and only when the mutex is taken (EBUSY) the
// real lock is timed and counted. Any other result of the trylock is the lock's (0: taken now;
// EOWNERDEAD: a robust mutex taken whose owner died; EINVAL, EAGAIN). The uncontended path on a
// loop thread costs one trylock instead of one lock.
__attribute__((visibility("default"))) int pthread_mutex_lock(pthread_mutex_t* m) noexcept {
  auto real = Real(&g_real.pthread_mutex_lock);
  LoopState* s = CountedLoop();
  if (__builtin_expect(s == nullptr, 1)) {
    return real(m);
  }
  const int r = Real(&g_real.pthread_mutex_trylock)(m);
  if (r != EBUSY) {
    return r;
  }
  return Timed(s, BlockingCall::kPthreadMutexLock, __builtin_return_address(0),
               [&] { return real(m); });
}

}  // extern "C"
