#pragma once
// The daemon's listening sockets: address parsing, bind/listen with clear errors. All of the
// daemon's socket and filesystem system calls live here.
//
// Threading: plain functions, called during start-up and shutdown on the main thread.

#include <cstdint>
#include <optional>
#include <string>

#include "stallwatch/status.h"

namespace stallwatch::daemon {

struct HostPort {
  std::string host;
  int port = 0;
};

// "HOST:PORT", "[v6]:PORT", ":PORT" or "PORT" (host = default_host). Port 0 = any free port.
StatusOr<HostPort> ParseHostPort(const std::string& text, const std::string& flag,
                                 const std::string& default_host);

// A non-blocking, close-on-exec TCP listening socket bound to the address.
StatusOr<int> ListenTcp(const HostPort& address, const std::string& flag);

// A non-blocking Unix stream listening socket at `path`: creates missing parent directories
// (mode 0755 when `mode` grants others access, 0750 otherwise), replaces a stale socket left by
// a dead daemon, refuses a path in use by a live one or that is not a socket, and sets the
// socket's mode to `mode`.
StatusOr<int> ListenUnix(const std::string& path, unsigned mode);

// "" when every user that `mode` admits can reach the socket at `path`; otherwise one line
// naming the directory that keeps them out (its mode lacks search permission for them).
std::string UnreachableReason(const std::string& path, unsigned mode);

// The credentials the kernel recorded for the peer of a connected Unix socket when it called
// connect() (SO_PEERCRED): pid in the daemon's pid namespace, effective uid and gid.
struct PeerCred {
  int64_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
};
std::optional<PeerCred> UnixPeerCred(int fd);

// The parent pid of `pid` (from /proc/PID/stat), or 0 when it cannot be read (the process is
// gone, or hidden from the daemon, e.g. by hidepid / ProtectProc=invisible).
int64_t ParentPid(int64_t pid);

// The inode of the file at `path` (0 if none): identifies the socket we bound.
uint64_t PathInode(const std::string& path);
// Removes the socket file if it is still the one we bound (same inode).
void UnlinkUnix(const std::string& path, uint64_t inode);

// The local port of a bound TCP socket (0 on error).
int LocalPort(int fd);

// True for "localhost", 127.0.0.0/8 and ::1.
bool IsLoopbackHost(const std::string& host);

// The shared agent token in the file at `path` (--agent-token-file), trailing whitespace and
// newlines removed. Refused with a one-line error when the file is missing, unreadable, not a
// regular file, empty, longer than 4096 bytes, or accessible by group or others.
StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace stallwatch::daemon
