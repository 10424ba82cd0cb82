#include "platform/proc.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace stallwatch::agent::platform {
namespace {

std::vector<std::string_view> SplitWs(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

template <typename T>
bool ParseNum(std::string_view s, T* out, int base = 10) {
  if (base == 16 && s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

// "0100007F:1F90" (little-endian IPv4 hex) → "127.0.0.1:8080".
std::string DecodeInet(std::string_view hex, bool v6) {
  const size_t colon = hex.find(':');
  if (colon == std::string_view::npos) return std::string(hex);
  std::string_view addr = hex.substr(0, colon), port_hex = hex.substr(colon + 1);
  unsigned port = 0;
  ParseNum(port_hex, &port, 16);
  char buf[80];
  if (!v6) {
    uint32_t a = 0;
    ParseNum(addr, &a, 16);
    std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u:%u", a & 0xff, (a >> 8) & 0xff, (a >> 16) & 0xff,
                  (a >> 24) & 0xff, port);
    return buf;
  }
  // IPv6: four little-endian 32-bit words.
  if (addr.size() != 32) return std::string(hex);
  unsigned char b[16];
  for (int w = 0; w < 4; ++w) {
    uint32_t word = 0;
    ParseNum(addr.substr(w * 8, 8), &word, 16);
    for (int k = 0; k < 4; ++k) b[w * 4 + k] = static_cast<unsigned char>((word >> (8 * k)) & 0xff);
  }
  // ::ffff:a.b.c.d and ::1 are the common loopback forms; print others as full hex groups.
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(b, kMapped, 12) == 0) {
    std::snprintf(buf, sizeof(buf), "[::ffff:%u.%u.%u.%u]:%u", b[12], b[13], b[14], b[15], port);
    return buf;
  }
  bool loop = b[15] == 1;
  for (int i = 0; i < 15; ++i) loop = loop && b[i] == 0;
  if (loop) {
    std::snprintf(buf, sizeof(buf), "[::1]:%u", port);
    return buf;
  }
  std::string s = "[";
  for (int i = 0; i < 16; i += 2) {
    char g[8];
    std::snprintf(g, sizeof(g), "%x", (b[i] << 8) | b[i + 1]);
    s += g;
    if (i < 14) s += ':';
  }
  return s + "]:" + std::to_string(port);
}

struct SyscallEntry {
  long nr;
  const char* name;
  bool takes_fd;
};

const SyscallEntry kSyscalls[] = {
#define SW_SC(name, fd) {SYS_##name, #name, fd},
#ifdef SYS_read
    SW_SC(read, true)
#endif
#ifdef SYS_write
        SW_SC(write, true)
#endif
#ifdef SYS_readv
            SW_SC(readv, true)
#endif
#ifdef SYS_writev
                SW_SC(writev, true)
#endif
#ifdef SYS_pread64
                    SW_SC(pread64, true)
#endif
#ifdef SYS_pwrite64
                        SW_SC(pwrite64, true)
#endif
#ifdef SYS_preadv
                            SW_SC(preadv, true)
#endif
#ifdef SYS_pwritev
                                SW_SC(pwritev, true)
#endif
#ifdef SYS_open
                                    SW_SC(open, false)
#endif
#ifdef SYS_openat
                                        SW_SC(openat, false)
#endif
#ifdef SYS_close
                                            SW_SC(close, true)
#endif
#ifdef SYS_stat
                                                SW_SC(stat, false)
#endif
#ifdef SYS_fstat
                                                    SW_SC(fstat, true)
#endif
#ifdef SYS_newfstatat
                                                        SW_SC(newfstatat, false)
#endif
#ifdef SYS_statx
                                                            SW_SC(statx, false)
#endif
#ifdef SYS_poll
                                                                SW_SC(poll, false)
#endif
#ifdef SYS_ppoll
                                                                    SW_SC(ppoll, false)
#endif
#ifdef SYS_select
                                                                        SW_SC(select, false)
#endif
#ifdef SYS_pselect6
                                                                            SW_SC(pselect6, false)
#endif
#ifdef SYS_epoll_wait
                                                                                SW_SC(epoll_wait,
                                                                                      true)
#endif
#ifdef SYS_epoll_pwait
                                                                                    SW_SC(
                                                                                        epoll_pwait,
                                                                                        true)
#endif
#ifdef SYS_epoll_pwait2
                                                                                        SW_SC(
                                                                                            epoll_pwait2,
                                                                                            true)
#endif
#ifdef SYS_nanosleep
                                                                                            SW_SC(
                                                                                                nanosleep,
                                                                                                false)
#endif
#ifdef SYS_clock_nanosleep
                                                                                                SW_SC(
                                                                                                    clock_nanosleep,
                                                                                                    false)
#endif
#ifdef SYS_futex
                                                                                                    SW_SC(
                                                                                                        futex,
                                                                                                        false)
#endif
#ifdef SYS_futex_waitv
                                                                                                        SW_SC(
                                                                                                            futex_waitv,
                                                                                                            false)
#endif
#ifdef SYS_connect
                                                                                                            SW_SC(
                                                                                                                connect,
                                                                                                                true)
#endif
#ifdef SYS_accept
                                                                                                                SW_SC(
                                                                                                                    accept,
                                                                                                                    true)
#endif
#ifdef SYS_accept4
                                                                                                                    SW_SC(
                                                                                                                        accept4,
                                                                                                                        true)
#endif
#ifdef SYS_sendto
                                                                                                                        SW_SC(
                                                                                                                            sendto,
                                                                                                                            true)
#endif
#ifdef SYS_recvfrom
                                                                                                                            SW_SC(
                                                                                                                                recvfrom,
                                                                                                                                true)
#endif
#ifdef SYS_sendmsg
                                                                                                                                SW_SC(
                                                                                                                                    sendmsg,
                                                                                                                                    true)
#endif
#ifdef SYS_recvmsg
                                                                                                                                    SW_SC(
                                                                                                                                        recvmsg,
                                                                                                                                        true)
#endif
#ifdef SYS_sendmmsg
                                                                                                                                        SW_SC(
                                                                                                                                            sendmmsg,
                                                                                                                                            true)
#endif
#ifdef SYS_recvmmsg
                                                                                                                                            SW_SC(
                                                                                                                                                recvmmsg,
                                                                                                                                                true)
#endif
#ifdef SYS_fsync
                                                                                                                                                SW_SC(
                                                                                                                                                    fsync,
                                                                                                                                                    true)
#endif
#ifdef SYS_fdatasync
                                                                                                                                                    SW_SC(
                                                                                                                                                        fdatasync,
                                                                                                                                                        true)
#endif
#ifdef SYS_sync
                                                                                                                                                        SW_SC(
                                                                                                                                                            sync,
                                                                                                                                                            false)
#endif
#ifdef SYS_syncfs
                                                                                                                                                            SW_SC(
                                                                                                                                                                syncfs,
                                                                                                                                                                true)
#endif
#ifdef SYS_sync_file_range
                                                                                                                                                                SW_SC(
                                                                                                                                                                    sync_file_range,
                                                                                                                                                                    true)
#endif
#ifdef SYS_flock
                                                                                                                                                                    SW_SC(flock,
                                                                                                                                                                          true)
#endif
#ifdef SYS_fcntl
                                                                                                                                                                        SW_SC(
                                                                                                                                                                            fcntl,
                                                                                                                                                                            true)
#endif
#ifdef SYS_ioctl
                                                                                                                                                                            SW_SC(
                                                                                                                                                                                ioctl,
                                                                                                                                                                                true)
#endif
#ifdef SYS_wait4
                                                                                                                                                                                SW_SC(
                                                                                                                                                                                    wait4,
                                                                                                                                                                                    false)
#endif
#ifdef SYS_waitid
                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                        waitid,
                                                                                                                                                                                        false)
#endif
#ifdef SYS_pause
                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                            pause,
                                                                                                                                                                                            false)
#endif
#ifdef SYS_rt_sigsuspend
                                                                                                                                                                                            SW_SC(
                                                                                                                                                                                                rt_sigsuspend,
                                                                                                                                                                                                false)
#endif
#ifdef SYS_rt_sigtimedwait
                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                    rt_sigtimedwait,
                                                                                                                                                                                                    false)
#endif
#ifdef SYS_sendfile
                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                        sendfile,
                                                                                                                                                                                                        false)
#endif
#ifdef SYS_splice
                                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                                            splice,
                                                                                                                                                                                                            true)
#endif
#ifdef SYS_mmap
                                                                                                                                                                                                            SW_SC(
                                                                                                                                                                                                                mmap,
                                                                                                                                                                                                                false)
#endif
#ifdef SYS_munmap
                                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                                    munmap,
                                                                                                                                                                                                                    false)
#endif
#ifdef SYS_madvise
                                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                                        madvise,
                                                                                                                                                                                                                        false)
#endif
#ifdef SYS_msync
                                                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                                                            msync,
                                                                                                                                                                                                                            false)
#endif
#ifdef SYS_fallocate
                                                                                                                                                                                                                            SW_SC(fallocate, true)
#endif
#ifdef SYS_ftruncate
                                                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                                                    ftruncate,
                                                                                                                                                                                                                                    true)
#endif
#ifdef SYS_truncate
                                                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                                                        truncate,
                                                                                                                                                                                                                                        false)
#endif
#ifdef SYS_unlink
                                                                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                                                                            unlink,
                                                                                                                                                                                                                                            false)
#endif
#ifdef SYS_unlinkat
                                                                                                                                                                                                                                            SW_SC(
                                                                                                                                                                                                                                                unlinkat,
                                                                                                                                                                                                                                                false)
#endif
#ifdef SYS_rename
                                                                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                                                                    rename,
                                                                                                                                                                                                                                                    false)
#endif
#ifdef SYS_renameat
                                                                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                                                                        renameat,
                                                                                                                                                                                                                                                        false)
#endif
#ifdef SYS_mkdir
                                                                                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                                                                                            mkdir,
                                                                                                                                                                                                                                                            false)
#endif
#ifdef SYS_getdents64
                                                                                                                                                                                                                                                            SW_SC(
                                                                                                                                                                                                                                                                getdents64,
                                                                                                                                                                                                                                                                true)
#endif
#ifdef SYS_socket
                                                                                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                                                                                    socket,
                                                                                                                                                                                                                                                                    false)
#endif
#ifdef SYS_getrandom
                                                                                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                                                                                        getrandom,
                                                                                                                                                                                                                                                                        false)
#endif
#ifdef SYS_sched_yield
                                                                                                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                                                                                                            sched_yield,
                                                                                                                                                                                                                                                                            false)
#endif
#ifdef SYS_io_getevents
                                                                                                                                                                                                                                                                            SW_SC(
                                                                                                                                                                                                                                                                                io_getevents,
                                                                                                                                                                                                                                                                                false)
#endif
#ifdef SYS_io_uring_enter
                                                                                                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                                                                                                    io_uring_enter,
                                                                                                                                                                                                                                                                                    true)
#endif
#ifdef SYS_msgrcv
                                                                                                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                                                                                                        msgrcv,
                                                                                                                                                                                                                                                                                        false)
#endif
#ifdef SYS_semop
                                                                                                                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                                                                                                                            semop,
                                                                                                                                                                                                                                                                                            false)
#endif
#ifdef SYS_semtimedop
                                                                                                                                                                                                                                                                                            SW_SC(
                                                                                                                                                                                                                                                                                                semtimedop,
                                                                                                                                                                                                                                                                                                false)
#endif
#ifdef SYS_mq_timedreceive
                                                                                                                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                                                                                                                    mq_timedreceive,
                                                                                                                                                                                                                                                                                                    false)
#endif
#ifdef SYS_execve
                                                                                                                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                                                                                                                        execve,
                                                                                                                                                                                                                                                                                                        false)
#endif
#ifdef SYS_clone
                                                                                                                                                                                                                                                                                                        SW_SC(
                                                                                                                                                                                                                                                                                                            clone,
                                                                                                                                                                                                                                                                                                            false)
#endif
#ifdef SYS_clone3
                                                                                                                                                                                                                                                                                                            SW_SC(
                                                                                                                                                                                                                                                                                                                clone3,
                                                                                                                                                                                                                                                                                                                false)
#endif
#ifdef SYS_exit_group
                                                                                                                                                                                                                                                                                                                SW_SC(
                                                                                                                                                                                                                                                                                                                    exit_group,
                                                                                                                                                                                                                                                                                                                    false)
#endif
#ifdef SYS_getaddrinfo
                                                                                                                                                                                                                                                                                                                    SW_SC(
                                                                                                                                                                                                                                                                                                                        getaddrinfo,
                                                                                                                                                                                                                                                                                                                        false)
#endif
#undef SW_SC
};

}  // namespace

std::optional<SyscallInfo> ParseSyscall(std::string_view text) {
  auto f = SplitWs(text);
  if (f.empty()) return std::nullopt;
  SyscallInfo info;
  if (f[0] == "running") {
    info.running = true;
    return info;
  }
  if (!ParseNum(f[0], &info.nr)) return std::nullopt;
  if (info.nr == -1) {  // "-1 sp pc": blocked, not in a syscall
    if (f.size() != 3 || !ParseNum(f[1], &info.sp, 16) || !ParseNum(f[2], &info.pc, 16)) {
      return std::nullopt;
    }
    return info;
  }
  if (f.size() != 9) return std::nullopt;
  for (int i = 0; i < 6; ++i) {
    if (!ParseNum(f[1 + i], &info.args[i], 16)) return std::nullopt;
  }
  if (!ParseNum(f[7], &info.sp, 16) || !ParseNum(f[8], &info.pc, 16)) return std::nullopt;
  return info;
}

std::optional<SchedStat> ParseSchedstat(std::string_view text) {
  auto f = SplitWs(text);
  SchedStat s;
  if (f.size() < 3 || !ParseNum(f[0], &s.exec_ns) || !ParseNum(f[1], &s.run_delay_ns) ||
      !ParseNum(f[2], &s.timeslices)) {
    return std::nullopt;
  }
  return s;
}

std::optional<TaskStat> ParseTaskStat(std::string_view text) {
  // "pid (comm) S ..." where comm may contain spaces and parentheses: split after the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  auto f = SplitWs(text.substr(close + 1));
  // After ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
  // utime(14) stime(15): indices 0..12 here.
  TaskStat s;
  if (f.size() < 13 || f[0].size() != 1) return std::nullopt;
  s.state = f[0][0];
  if (!ParseNum(f[11], &s.utime) || !ParseNum(f[12], &s.stime)) return std::nullopt;
  return s;
}

std::vector<int> ParseEpollFdinfoTargets(std::string_view text) {
  std::vector<int> out;
  size_t pos = 0;
  while ((pos = text.find("tfd:", pos)) != std::string_view::npos) {
    pos += 4;
    while (pos < text.size() && text[pos] == ' ') ++pos;
    size_t end = pos;
    while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
    int fd = -1;
    if (end > pos && ParseNum(text.substr(pos, end - pos), &fd)) out.push_back(fd);
    pos = end;
  }
  return out;
}

std::optional<std::string> FindInetSocket(std::string_view table, uint64_t inode, bool v6) {
  size_t start = 0;
  bool header = true;
  while (start < table.size()) {
    size_t nl = table.find('\n', start);
    if (nl == std::string_view::npos) nl = table.size();
    std::string_view line = table.substr(start, nl - start);
    start = nl + 1;
    if (header) {
      header = false;
      continue;
    }
    auto f = SplitWs(line);
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    if (f.size() < 10) continue;
    uint64_t ino = 0;
    if (!ParseNum(f[9], &ino) || ino != inode) continue;
    std::string local = DecodeInet(f[1], v6), remote = DecodeInet(f[2], v6);
    const bool unconnected = remote.ends_with(":0");
    return unconnected ? local : local + " -> " + remote;
  }
  return std::nullopt;
}

std::optional<std::string> FindUnixSocket(std::string_view table, uint64_t inode) {
  size_t start = 0;
  bool header = true;
  while (start < table.size()) {
    size_t nl = table.find('\n', start);
    if (nl == std::string_view::npos) nl = table.size();
    std::string_view line = table.substr(start, nl - start);
    start = nl + 1;
    if (header) {
      header = false;
      continue;
    }
    auto f = SplitWs(line);
    // Num RefCount Protocol Flags Type St Inode [Path]
    if (f.size() < 7) continue;
    uint64_t ino = 0;
    if (!ParseNum(f[6], &ino) || ino != inode) continue;
    return f.size() >= 8 ? std::string(f[7]) : std::string();
  }
  return std::nullopt;
}

std::string SyscallName(long nr) {
  for (const auto& e : kSyscalls) {
    if (e.nr == nr) return e.name;
  }
  return "syscall_" + std::to_string(nr);
}

bool SyscallTakesFd(long nr) {
  for (const auto& e : kSyscalls) {
    if (e.nr == nr) return e.takes_fd;
  }
  return false;
}

bool ReadSmallFile(const char* path, std::string* out) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > 64 * 1024) break;
  }
  ::close(fd);
  return !out->empty();
}

pid_t GetTid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

namespace {
pid_t g_target_pid = 0;
char g_proc_root[32] = "/proc/self";
}  // namespace

void SetTargetProcess(pid_t pid) {
  g_target_pid = pid;
  if (pid > 0) {
    std::snprintf(g_proc_root, sizeof(g_proc_root), "/proc/%d", static_cast<int>(pid));
  } else {
    std::snprintf(g_proc_root, sizeof(g_proc_root), "/proc/self");
  }
}

pid_t TargetPid() { return g_target_pid > 0 ? g_target_pid : ::getpid(); }

const char* ProcRoot() { return g_proc_root; }

namespace {
std::string TaskPath(pid_t tid, const char* file) {
  return std::string(g_proc_root) + "/task/" + std::to_string(tid) + "/" + file;
}
}  // namespace

std::optional<SyscallInfo> ReadThreadSyscall(pid_t tid) {
  std::string s;
  if (!ReadSmallFile(TaskPath(tid, "syscall").c_str(), &s)) return std::nullopt;
  return ParseSyscall(s);
}

std::optional<SchedStat> ReadThreadSchedstat(pid_t tid) {
  std::string s;
  if (!ReadSmallFile(TaskPath(tid, "schedstat").c_str(), &s)) return std::nullopt;
  return ParseSchedstat(s);
}

std::optional<TaskStat> ReadThreadStat(pid_t tid) {
  std::string s;
  if (!ReadSmallFile(TaskPath(tid, "stat").c_str(), &s)) return std::nullopt;
  return ParseTaskStat(s);
}

namespace {
// "ROOT/task/TID/fd" or, for tid 0, "ROOT/fd" (+ "info" for fdinfo); ROOT is ProcRoot().
void FdPath(char* buf, size_t size, pid_t tid, const char* dir, int fd) {
  if (tid > 0) {
    std::snprintf(buf, size, "%s/task/%d/%s/%d", g_proc_root, static_cast<int>(tid), dir, fd);
  } else {
    std::snprintf(buf, size, "%s/%s/%d", g_proc_root, dir, fd);
  }
}
}  // namespace

std::string DescribeLinkTarget(std::string_view target, const ReadTableFn& read_table) {
  constexpr std::string_view kSocket = "socket:[";
  uint64_t inode = 0;
  if (target.starts_with(kSocket) && target.ends_with(']') &&
      ParseNum(target.substr(kSocket.size(), target.size() - kSocket.size() - 1), &inode)) {
    std::string table;
    struct Kind {
      const char* path;
      const char* name;
      bool v6;
    };
    for (const Kind& k : {Kind{"net/tcp", "tcp", false}, Kind{"net/tcp6", "tcp6", true},
                          Kind{"net/udp", "udp", false}, Kind{"net/udp6", "udp6", true}}) {
      if (!read_table((std::string(g_proc_root) + "/" + k.path).c_str(), &table)) continue;
      if (auto r = FindInetSocket(table, inode, k.v6))
        return "socket " + std::string(k.name) + " " + *r;
    }
    if (read_table((std::string(g_proc_root) + "/net/unix").c_str(), &table)) {
      if (auto r = FindUnixSocket(table, inode)) {
        return r->empty() ? "socket unix (unnamed)" : "socket unix " + *r;
      }
    }
    return "socket (inode " + std::to_string(inode) + ")";
  }
  if (target.starts_with("pipe:")) return "pipe " + std::string(target.substr(5));
  return std::string(target);
}

std::string DescribeFd(pid_t tid, int fd) {
  char path[96], target[4096];
  FdPath(path, sizeof(path), tid, "fd", fd);
  ssize_t n = ::readlink(path, target, sizeof(target) - 1);
  if (n <= 0) return "fd " + std::to_string(fd);
  return DescribeLinkTarget(std::string_view(target, static_cast<size_t>(n)), &ReadSmallFileLarge);
}

bool ReadSmallFileLarge(const char* path, std::string* out) {
  // Like ReadSmallFile but allows up to 4 MiB (socket tables of busy hosts).
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->clear();
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > 4 * 1024 * 1024) break;
  }
  ::close(fd);
  return !out->empty();
}

int FindEpollFdContaining(int target_fd, pid_t tid) {
  char dir[64];
  if (tid > 0) {
    std::snprintf(dir, sizeof(dir), "%s/task/%d/fd", g_proc_root, static_cast<int>(tid));
  } else {
    std::snprintf(dir, sizeof(dir), "%s/fd", g_proc_root);
  }
  DIR* d = ::opendir(dir);
  if (d == nullptr) return -1;
  int found = -1;
  while (dirent* e = ::readdir(d)) {
    int fd = -1;
    if (!ParseNum(std::string_view(e->d_name), &fd)) continue;
    char path[96], target[64];
    FdPath(path, sizeof(path), tid, "fd", fd);
    ssize_t n = ::readlink(path, target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::strcmp(target, "anon_inode:[eventpoll]") != 0) continue;
    FdPath(path, sizeof(path), tid, "fdinfo", fd);
    std::string info;
    if (!ReadSmallFileLarge(path, &info)) continue;
    for (int t : ParseEpollFdinfoTargets(info)) {
      if (t == target_fd) found = fd;
    }
    if (found >= 0) break;
  }
  ::closedir(d);
  return found;
}

bool DetachFileTable() {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer models one fd table per process: the same number in two tables looks like a
  // race on one fd to it. Under TSan the agent's threads keep sharing the host's table.
  return false;
#elif defined(SYS_close_range)
  constexpr unsigned kUnshare = 1U << 1;  // CLOSE_RANGE_UNSHARE (Linux 5.9)
  // Unshare and close every copied fd from 3 up in one step (the kernel copies only 0-2). The
  // table is private afterwards whatever it was before, so nothing of the host's is closed.
  if (::syscall(SYS_close_range, 3U, ~0U, kUnshare) != 0) return false;
  // Keep the host's stderr (the agent's warnings and the stderr sink go there); stdin and stdout
  // are never the agent's, and holding copies would keep a pipe the host closes open.
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    if (null_fd > 2) ::close(null_fd);
  }
  return true;
#else
  return false;
#endif
}

ProcFile::ProcFile(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}

ProcFile::~ProcFile() {
  if (fd_ >= 0) ::close(fd_);
}

bool ProcFile::Read(std::string* out) {
  if (fd_ < 0) return false;
  char buf[4096];
  ssize_t n;
  do {
    n = ::pread(fd_, buf, sizeof(buf), 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  out->assign(buf, static_cast<size_t>(n));
  return true;
}

std::optional<SchedStat> ReadSchedstat(ProcFile& f) {
  std::string s;
  if (!f.Read(&s)) return std::nullopt;
  return ParseSchedstat(s);
}

std::optional<bool> StatusBlocksSignal(std::string_view status, int signo) {
  if (signo <= 0 || signo > 64) return std::nullopt;
  constexpr std::string_view kKey = "\nSigBlk:";
  const size_t at = status.starts_with(kKey.substr(1)) ? 0 : status.find(kKey);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = status.substr(at + (at == 0 ? kKey.size() - 1 : kKey.size()));
  rest = rest.substr(0, rest.find('\n'));
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  uint64_t mask = 0;
  if (rest.empty() || rest.size() > 16 || rest.starts_with("0x") || !ParseNum(rest, &mask, 16)) {
    return std::nullopt;
  }
  return ((mask >> (signo - 1)) & 1U) != 0;
}

std::pair<uint64_t, uint64_t> FindMappingIn(std::string_view maps, uint64_t addr) {
  size_t start = 0;
  while (start < maps.size()) {
    size_t nl = maps.find('\n', start);
    if (nl == std::string_view::npos) nl = maps.size();
    std::string_view line = maps.substr(start, nl - start);
    start = nl + 1;
    size_t dash = line.find('-'), sp = line.find(' ');
    if (dash == std::string_view::npos || sp == std::string_view::npos || sp < dash) continue;
    uint64_t lo = 0, hi = 0;
    if (!ParseNum(line.substr(0, dash), &lo, 16) ||
        !ParseNum(line.substr(dash + 1, sp - dash - 1), &hi, 16)) {
      continue;
    }
    if (addr >= lo && addr < hi) return {lo, hi};
  }
  return {0, 0};
}

}  // namespace stallwatch::agent::platform
