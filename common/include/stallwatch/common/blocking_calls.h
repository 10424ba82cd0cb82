#pragma once
// The calls of the blocking-call ledger and their families, in the order of the agent's
// BlockingCall enum (agent/src/ledger.h): the names in "calls" findings and what
// `stallwatch check --forbid` accepts (docs/findings.md), and the only values a `call` label may
// take. Fixed: a call is only ever appended, never renamed or removed. Pure constexpr data;
// thread-safe.

#include <array>
#include <string_view>

namespace stallwatch {

struct BlockingCallInfo {
  std::string_view name;
  // "dns", "sleep", "sync", "connect", "wait", "lock", "file" (regular files: disk I/O),
  // "socket" (sockets, pipes and FIFOs in blocking mode)
  std::string_view family;
};

inline constexpr std::array<BlockingCallInfo, 41> kBlockingCalls = {{
    {"getaddrinfo", "dns"},
    {"gethostbyname", "dns"},
    {"gethostbyname_r", "dns"},
    {"getnameinfo", "dns"},
    {"nanosleep", "sleep"},
    {"clock_nanosleep", "sleep"},
    {"usleep", "sleep"},
    {"sleep", "sleep"},
    {"fsync", "sync"},
    {"fdatasync", "sync"},
    {"sync_file_range", "sync"},
    {"syncfs", "sync"},
    {"connect", "connect"},
    {"waitpid", "wait"},
    {"system", "wait"},
    {"pthread_join", "wait"},
    {"flock", "lock"},
    // File I/O: open* on any path, the others on a regular file or block device only.
    {"open", "file"},
    {"openat", "file"},
    {"read", "file"},
    {"write", "file"},
    {"pread", "file"},
    {"pwrite", "file"},
    {"readv", "file"},
    {"writev", "file"},
    // On a socket, pipe or FIFO in blocking mode only (never with MSG_DONTWAIT).
    {"accept", "socket"},
    {"accept4", "socket"},
    {"recv", "socket"},
    {"recvfrom", "socket"},
    {"recvmsg", "socket"},
    {"send", "socket"},
    {"sendto", "socket"},
    {"sendmsg", "socket"},
    {"read_blocking", "socket"},  // read(2) on a socket, pipe or FIFO in blocking mode
    {"write_blocking", "socket"},
    {"readv_blocking", "socket"},
    {"writev_blocking", "socket"},
    {"popen", "wait"},
    {"pclose", "wait"},
    {"fcntl", "lock"},               // F_SETLKW and F_OFD_SETLKW only
    {"pthread_mutex_lock", "lock"},  // only when pthread_mutex_trylock found it taken
}};

inline constexpr std::array<std::string_view, 8> kBlockingCallFamilies = {
    "dns", "sleep", "sync", "connect", "wait", "lock", "file", "socket"};

}  // namespace stallwatch
