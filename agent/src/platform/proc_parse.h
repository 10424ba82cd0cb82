#pragma once
// Pure parsers of /proc texts: text in, struct out. No file is opened here, so every function is
// tested on fixtures (tests/fixtures/proc). Callable from any thread; none is async-signal safe
// (they allocate).

#include <cstdint>
#include <optional>
#include <span>
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

// /proc/<pid>/stat: the process's start time (field 22), in clock ticks after boot.
std::optional<uint64_t> ParseStartTimeTicks(std::string_view text);

// /proc/stat: the boot time ("btime" line), in Unix seconds.
std::optional<int64_t> ParseBootTime(std::string_view text);

// /proc/stat: the steal time (8th value of the aggregate "cpu " line, in clock ticks, summed
// over all CPUs): time a hypervisor ran something else while this machine's vCPUs wanted to
// run. nullopt when the line is missing or has fewer than 8 values (kernels before 2.6.11).
std::optional<uint64_t> ParseStatSteal(std::string_view text);

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

// The inode of an fd link target "socket:[12345]"; nullopt for any other target.
std::optional<uint64_t> ParseSocketLinkInode(std::string_view target);
// A /proc/<pid>/fd directory entry name ("17") as an fd; nullopt for ".", ".." and the like.
std::optional<int> ParseFdName(std::string_view name);

// /proc/<pid>/maps: the [start, end) of the mapping that contains addr, or {0,0}.
std::pair<uint64_t, uint64_t> FindMappingIn(std::string_view maps, uint64_t addr);

// "read", "nanosleep", ...; "syscall_<nr>" for numbers this table does not name.
std::string SyscallName(long nr);
// Whether the syscall's first argument is a file descriptor worth describing.
bool SyscallTakesFd(long nr);

// The syscall table, for tests.
struct SyscallEntry {
  long nr;
  const char* name;
  bool takes_fd;
};
// The table SyscallName and SyscallTakesFd look up: syscalls_x86_64.inc on x86_64, otherwise
// syscalls_by_name.inc with numbers from <sys/syscall.h>.
std::span<const SyscallEntry> SyscallTable();
// syscalls_by_name.inc resolved through <sys/syscall.h>, whatever the architecture (tests compare
// it with SyscallTable() on x86_64).
std::span<const SyscallEntry> SyscallTableByNameForTest();

}  // namespace stallwatch::agent::platform
