#include "platform/proc.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace stallwatch::agent::platform {

bool ReadSmallFile(const char* path, std::string* out) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > size_t{64} * 1024) {
      break;
    }
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
  if (!ReadSmallFile(TaskPath(tid, "syscall").c_str(), &s)) {
    return std::nullopt;
  }
  return ParseSyscall(s);
}

std::optional<SchedStat> ReadThreadSchedstat(pid_t tid) {
  std::string s;
  if (!ReadSmallFile(TaskPath(tid, "schedstat").c_str(), &s)) {
    return std::nullopt;
  }
  return ParseSchedstat(s);
}

int64_t ReadStealPerCpuNs() {
  const int fd = ::open("/proc/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -1;
  }
  char buf[4096];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) {
    return -1;
  }
  const auto steal = ParseStatSteal(std::string_view(buf, static_cast<size_t>(n)));
  static const long kTicks = sysconf(_SC_CLK_TCK);
  static const long kCpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (!steal || kTicks <= 0 || kCpus <= 0) {
    return -1;
  }
  return static_cast<int64_t>(*steal * (1'000'000'000 / static_cast<uint64_t>(kTicks)) /
                              static_cast<uint64_t>(kCpus));
}

int64_t ReadProcessStartUnixNs() {
  std::string stat;
  std::string proc_stat;
  // /proc/stat's per-CPU and interrupt lines come before btime: up to MiBs on large machines.
  if (!ReadSmallFile((std::string(ProcRoot()) + "/stat").c_str(), &stat) ||
      !ReadSmallFileLarge("/proc/stat", &proc_stat)) {
    return 0;
  }
  const auto ticks = ParseStartTimeTicks(stat);
  const auto boot_s = ParseBootTime(proc_stat);
  static const long kTicks = sysconf(_SC_CLK_TCK);
  if (!ticks || !boot_s || kTicks <= 0) {
    return 0;
  }
  return *boot_s * 1'000'000'000 +
         static_cast<int64_t>(*ticks / static_cast<uint64_t>(kTicks)) * 1'000'000'000 +
         static_cast<int64_t>(*ticks % static_cast<uint64_t>(kTicks)) * (1'000'000'000 / kTicks);
}

std::optional<TaskStat> ReadThreadStat(pid_t tid) {
  std::string s;
  if (!ReadSmallFile(TaskPath(tid, "stat").c_str(), &s)) {
    return std::nullopt;
  }
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
  if (const std::optional<uint64_t> socket_inode = ParseSocketLinkInode(target)) {
    const uint64_t inode = *socket_inode;
    std::string table;
    struct Kind {
      const char* path;
      const char* name;
      bool v6;
    };
    for (const Kind& k : {Kind{"net/tcp", "tcp", false}, Kind{"net/tcp6", "tcp6", true},
                          Kind{"net/udp", "udp", false}, Kind{"net/udp6", "udp6", true}}) {
      if (!read_table((std::string(g_proc_root) + "/" + k.path).c_str(), &table)) {
        continue;
      }
      if (auto r = FindInetSocket(table, inode, k.v6)) {
        return "socket " + std::string(k.name) + " " + *r;
      }
    }
    if (read_table((std::string(g_proc_root) + "/net/unix").c_str(), &table)) {
      if (auto r = FindUnixSocket(table, inode)) {
        return r->empty() ? "socket unix (unnamed)" : "socket unix " + *r;
      }
    }
    return "socket (inode " + std::to_string(inode) + ")";
  }
  if (target.starts_with("pipe:")) {
    return "pipe " + std::string(target.substr(5));
  }
  return std::string(target);
}

std::string DescribeFd(pid_t tid, int fd) {
  char path[96], target[4096];
  FdPath(path, sizeof(path), tid, "fd", fd);
  ssize_t n = ::readlink(path, target, sizeof(target) - 1);
  if (n <= 0) {
    return "fd " + std::to_string(fd);
  }
  return DescribeLinkTarget(std::string_view(target, static_cast<size_t>(n)), &ReadSmallFileLarge);
}

bool ReadSmallFileLarge(const char* path, std::string* out) {
  // Like ReadSmallFile but allows up to 4 MiB (socket tables of busy hosts).
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  out->clear();
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > size_t{4} * 1024 * 1024) {
      break;
    }
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
  if (d == nullptr) {
    return -1;
  }
  int found = -1;
  while (dirent* e = ::readdir(d)) {
    const std::optional<int> fd_name = ParseFdName(e->d_name);
    if (!fd_name) {
      continue;
    }
    const int fd = *fd_name;
    char path[96], target[64];
    FdPath(path, sizeof(path), tid, "fd", fd);
    ssize_t n = ::readlink(path, target, sizeof(target) - 1);
    if (n <= 0) {
      continue;
    }
    target[n] = '\0';
    if (std::strcmp(target, "anon_inode:[eventpoll]") != 0) {
      continue;
    }
    FdPath(path, sizeof(path), tid, "fdinfo", fd);
    std::string info;
    if (!ReadSmallFileLarge(path, &info)) {
      continue;
    }
    for (int t : ParseEpollFdinfoTargets(info)) {
      if (t == target_fd) {
        found = fd;
      }
    }
    if (found >= 0) {
      break;
    }
  }
  ::closedir(d);
  return found;
}

namespace {
thread_local bool t_private_file_table = false;
}  // namespace

bool HasPrivateFileTable() { return t_private_file_table; }
void SharesPrivateFileTable() { t_private_file_table = true; }

bool DetachFileTable() {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer models one fd table per process: the same number in two tables looks like a
  // race on one fd to it. Under TSan the agent's threads keep sharing the host's table.
  return false;
#elif defined(SYS_close_range)
  constexpr unsigned kUnshare = 1U << 1;  // CLOSE_RANGE_UNSHARE (Linux 5.9)
  // Unshare and close every copied fd from 3 up in one step (the kernel copies only 0-2). The
  // table is private afterwards whatever it was before, so nothing of the host's is closed.
  if (::syscall(SYS_close_range, 3U, ~0U, kUnshare) != 0) {
    return false;
  }
  t_private_file_table = true;
  // Keep the host's stderr (the agent's warnings and the stderr sink go there); stdin and stdout
  // are never the agent's, and holding copies would keep a pipe the host closes open.
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    if (null_fd > 2) {
      ::close(null_fd);
    }
  }
  return true;
#else
  return false;
#endif
}

ProcFile::ProcFile(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}

ProcFile::~ProcFile() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

bool ProcFile::Read(std::string* out) {
  if (fd_ < 0) {
    return false;
  }
  char buf[4096];
  ssize_t n;
  do {
    n = ::pread(fd_, buf, sizeof(buf), 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    return false;
  }
  out->assign(buf, static_cast<size_t>(n));
  return true;
}

std::optional<SchedStat> ReadSchedstat(ProcFile& f) {
  std::string s;
  if (!f.Read(&s)) {
    return std::nullopt;
  }
  return ParseSchedstat(s);
}

}  // namespace stallwatch::agent::platform
