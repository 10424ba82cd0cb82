#pragma once
// The readers of /proc: the only code that opens /proc files. The pure parsers they use are in
// proc_parse.h (included here, so callers of either need only this header). Readers may be called
// from any thread (the watchdog thread or process, the reporter's thread, a loop thread at
// attach); none is async-signal safe.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "platform/proc_parse.h"

namespace stallwatch::agent::platform {

// What an fd's /proc/self/fd link target names: "socket tcp 127.0.0.1:41000 -> …" (looked up
// in the /proc/self/net tables that `read_table` reads by path; false: unavailable),
// "socket unix /run/x.sock", "pipe [123]", or the target itself ("/var/lib/x.db").
using ReadTableFn = std::function<bool(const char* path, std::string* out)>;
std::string DescribeLinkTarget(std::string_view target, const ReadTableFn& read_table);

// Readers.
bool ReadSmallFile(const char* path, std::string* out);       // at most 64 KiB
bool ReadSmallFileLarge(const char* path, std::string* out);  // at most 4 MiB
pid_t GetTid();
// The process whose threads the readers below look at: this one (default), or the host process
// a watchdog process serves (docs/design.md, "Watchdog process"). Set once, before any reader.
void SetTargetProcess(pid_t pid);
pid_t TargetPid();
// "/proc/self", or "/proc/PID" of the target.
const char* ProcRoot();
std::optional<SyscallInfo> ReadThreadSyscall(pid_t tid);
std::optional<SchedStat> ReadThreadSchedstat(pid_t tid);
std::optional<TaskStat> ReadThreadStat(pid_t tid);
// When the target process started, in Unix ns (/proc/stat's boot time plus the process's start
// in clock ticks: a resolution of 1 s from the boot time, which the kernel derives from the wall
// clock at each read); 0 when unknown.
int64_t ReadProcessStartUnixNs();
// Hypervisor steal time of one CPU on average, in ns since boot (/proc/stat's steal over all
// CPUs divided by the online CPUs): what a thread that wanted a CPU all along lost to it; -1
// when unknown. Reads the first 4 KiB of /proc/stat only.
int64_t ReadStealPerCpuNs();
// What an fd of the host's file table refers to, as thread `tid` sees it (0: the thread group
// leader's table): "/var/lib/x.db", "pipe:[123]",
// "socket tcp 127.0.0.1:41000 -> 127.0.0.1:5432", "socket unix /run/x.sock", ...
std::string DescribeFd(pid_t tid, int fd);
// The epoll fd of thread `tid`'s file table (0: the leader's) whose interest list contains
// `target_fd`, or -1.
int FindEpollFdContaining(int target_fd, pid_t tid = 0);

// Gives the calling thread (one of the agent's own) a file table of its own holding only copies
// of fds 0-2 (0 and 1 pointed at /dev/null). The host's table is then shared by the host's
// threads alone: a single-threaded host keeps the kernel's fast path for every fd syscall
// (fdget without reference counting, ~3 % of an evhttp request's CPU here), the agent's files
// (ELF files, the daemon socket, /proc files) never appear among the host's fds, and a host
// that closes "all" its fds cannot close the agent's. Threads the caller creates afterwards
// share its table. Every fd the agent opens on such a thread must be used and closed on a
// thread of the same table. Returns false (and changes nothing) where the kernel refuses.
bool DetachFileTable();
// True on a thread whose DetachFileTable succeeded, or that was started by one and said so
// (SharesPrivateFileTable): its fd numbers are not the host's.
bool HasPrivateFileTable();
void SharesPrivateFileTable();

// A /proc file kept open and re-read with pread(): no path walk per read (the watchdog reads
// its own schedstat on every tick). Not copyable.
class ProcFile {
 public:
  ProcFile() = default;
  explicit ProcFile(const std::string& path);
  ~ProcFile();
  ProcFile(const ProcFile&) = delete;
  ProcFile& operator=(const ProcFile&) = delete;
  // The whole file (at most 4 KiB), or false.
  bool Read(std::string* out);

 private:
  int fd_ = -1;
};
std::optional<SchedStat> ReadSchedstat(ProcFile& f);

}  // namespace stallwatch::agent::platform
