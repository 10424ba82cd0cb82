#pragma once
// The only code that reads /proc. Pure parsers (tested on fixtures) are separate from the
// readers. Readers are called on the watchdog thread; none is async-signal safe.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stallwatch::agent::platform {

// /proc/<pid>/task/<tid>/syscall: "running", or "nr a1 a2 a3 a4 a5 a6 sp pc", or "-1 sp pc"
// (blocked but not in a syscall, e.g. a page fault).
struct SyscallInfo {
  bool running = false;
  long nr = -1;
  uint64_t args[6] = {};
  uint64_t sp = 0;
  uint64_t pc = 0;
};
std::optional<SyscallInfo> ParseSyscall(std::string_view text);

// /proc/<pid>/task/<tid>/schedstat: "exec_ns run_delay_ns timeslices".
struct SchedStat {
  uint64_t exec_ns = 0;
  uint64_t run_delay_ns = 0;
  uint64_t timeslices = 0;
};
std::optional<SchedStat> ParseSchedstat(std::string_view text);

// /proc/<pid>/task/<tid>/stat: the state letter (field 3) and utime/stime in clock ticks.
struct TaskStat {
  char state = '?';
  uint64_t utime = 0;
  uint64_t stime = 0;
};
std::optional<TaskStat> ParseTaskStat(std::string_view text);

// Whether the "SigBlk:" mask of a /proc/<pid>/task/<tid>/status text has `signo` set; nullopt
// when the line is missing or malformed.
std::optional<bool> StatusBlocksSignal(std::string_view status, int signo);

// /proc/<pid>/fdinfo/<epfd> of an epoll fd: the target fds ("tfd:" lines).
std::vector<int> ParseEpollFdinfoTargets(std::string_view text);

// A /proc/net/{tcp,tcp6,udp,udp6} table: the row whose inode matches, as
// "127.0.0.1:41000 -> 127.0.0.1:5432" (peer omitted when unconnected).
std::optional<std::string> FindInetSocket(std::string_view table, uint64_t inode, bool v6);
// /proc/net/unix: the path bound to the socket with that inode ("" when unnamed).
std::optional<std::string> FindUnixSocket(std::string_view table, uint64_t inode);

// What an fd's /proc/self/fd link target names: "socket tcp 127.0.0.1:41000 -> …" (looked up
// in the /proc/self/net tables that `read_table` reads by path; false: unavailable),
// "socket unix /run/x.sock", "pipe [123]", or the target itself ("/var/lib/x.db").
using ReadTableFn = std::function<bool(const char* path, std::string* out)>;
std::string DescribeLinkTarget(std::string_view target, const ReadTableFn& read_table);
// /proc/<pid>/maps: the [start, end) of the mapping that contains addr, or {0,0}.
std::pair<uint64_t, uint64_t> FindMappingIn(std::string_view maps, uint64_t addr);

// "read", "nanosleep", ...; "syscall_<nr>" for numbers this table does not name.
std::string SyscallName(long nr);
// Whether the syscall's first argument is a file descriptor worth describing.
bool SyscallTakesFd(long nr);

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
