#include "sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "stallwatch/common/defaults.h"
#include "stallwatch/wire/codec.h"

namespace stallwatch::daemon {
namespace {

std::string Errno(int e) { return std::strerror(e); }

Status MakeDirs(const std::string& dir, mode_t dir_mode) {
  if (dir.empty() || dir == "/") return OkStatus();
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return FailedPreconditionError(dir + " exists and is not a directory");
    return OkStatus();
  }
  const size_t slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    if (Status s = MakeDirs(dir.substr(0, slash), dir_mode); !s.ok()) return s;
  }
  // mkdir applies the umask; the mode is set explicitly afterwards.
  if (::mkdir(dir.c_str(), dir_mode) == 0) {
    ::chmod(dir.c_str(), dir_mode);
  } else if (errno != EEXIST) {
    const int e = errno;
    Status st_err(
        e == EACCES || e == EPERM ? StatusCode::kPermissionDenied : StatusCode::kFailedPrecondition,
        "cannot create directory " + dir + ": " + Errno(e));
    return st_err;
  }
  return OkStatus();
}

}  // namespace

StatusOr<HostPort> ParseHostPort(const std::string& text, const std::string& flag,
                                 const std::string& default_host) {
  const std::string form = "bad " + flag + " '" + text +
                           "': expected HOST:PORT, [IPv6]:PORT or PORT, e.g. " +
                           std::string(defaults::kDaemonHttpAddress);
  HostPort hp;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return InvalidArgumentError(form);
    }
    hp.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      hp.host = default_host;
      port = text;
    } else {
      hp.host = colon == 0 ? default_host : text.substr(0, colon);
      port = text.substr(colon + 1);
    }
  }
  if (hp.host.empty() || port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgumentError(form);
  }
  hp.port = std::stoi(port);
  if (hp.port > 65535) return InvalidArgumentError(form);
  return hp;
}

StatusOr<int> ListenTcp(const HostPort& address, const std::string& flag) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(address.port);
  if (int rc = ::getaddrinfo(address.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return InvalidArgumentError(flag + ": cannot resolve '" + address.host +
                                "': " + ::gai_strerror(rc) + "; expected HOST:PORT");
  }
  Status last = UnavailableError(flag + ": no usable address for " + address.host);
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = UnavailableError(flag + ": socket: " + Errno(errno));
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 512) != 0) {
      const int e = errno;
      ::close(fd);
      const std::string where = address.host + ":" + port;
      if (e == EADDRINUSE) {
        last = Status(StatusCode::kAlreadyExists,
                      flag + " " + where + ": address already in use (another stallwatchd?)");
      } else if (e == EACCES) {
        last = PermissionDeniedError(flag + " " + where + ": permission denied");
      } else if (e == EADDRNOTAVAIL) {
        last = InvalidArgumentError(flag + " " + where + ": not an address of this host");
      } else {
        last = UnavailableError(flag + " " + where + ": " + Errno(e));
      }
      continue;
    }
    ::freeaddrinfo(res);
    return fd;
  }
  ::freeaddrinfo(res);
  return last;
}

StatusOr<int> ListenUnix(const std::string& path, unsigned mode) {
  sockaddr_un sa{};
  if (path.empty() || path[0] != '/') {
    return InvalidArgumentError("bad --agent-socket '" + path + "': expected an absolute path");
  }
  if (path.size() >= sizeof(sa.sun_path)) {
    return InvalidArgumentError("bad --agent-socket '" + path + "': longer than " +
                                std::to_string(sizeof(sa.sun_path) - 1) + " bytes");
  }
  const std::string dir = path.substr(0, path.rfind('/'));
  // Others reach the socket only through directories they may search.
  if (Status s = MakeDirs(dir, (mode & 0007) != 0 ? 0755 : 0750); !s.ok()) return s;
  // The socket's own directory, when it is ours (left by an earlier run in group mode, 0750),
  // gets the search bit the mode's audience needs: a socket open to local users that they cannot
  // reach would refuse every program that drops privileges. Directories above it, or of another
  // owner, are never changed (the start-up warning names them).
  const mode_t search = (mode & 0002) != 0 ? S_IXOTH : (mode & 0020) != 0 ? S_IXGRP : 0;
  if (struct stat dst{}; search != 0 && ::stat(dir.c_str(), &dst) == 0 && S_ISDIR(dst.st_mode) &&
                         dst.st_uid == ::geteuid() && (dst.st_mode & search) == 0) {
    const mode_t opened = (dst.st_mode & 07777) | search | (search == S_IXOTH ? S_IXGRP : 0);
    if (::chmod(dir.c_str(), opened) != 0) {
      return PermissionDeniedError("--agent-socket " + path + ": cannot make " + dir +
                                   " searchable for the socket's users: " + Errno(errno));
    }
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return FailedPreconditionError(
          "--agent-socket " + path +
          " exists and is not a socket; remove it or choose another path");
    }
    // A live daemon answers; a stale socket of a dead one refuses and is replaced.
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      const bool live =
          ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 || errno == EAGAIN;
      ::close(probe);
      if (live) {
        return Status(StatusCode::kAlreadyExists,
                      "--agent-socket " + path + " is in use by a running daemon");
      }
    }
    if (::unlink(path.c_str()) != 0) {
      const int e = errno;
      return PermissionDeniedError("--agent-socket " + path +
                                   ": cannot remove the stale socket: " + Errno(e));
    }
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return UnavailableError("--agent-socket: socket: " + Errno(errno));
  // Create it with no access, then open it up to `mode`: no window where it is wider.
  const mode_t old_umask = ::umask(0777);
  const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  const int bind_errno = errno;
  ::umask(old_umask);
  if (rc != 0) {
    ::close(fd);
    if (bind_errno == EACCES || bind_errno == EPERM || bind_errno == EROFS) {
      return PermissionDeniedError("--agent-socket " + path + ": " + Errno(bind_errno));
    }
    return UnavailableError("--agent-socket " + path + ": bind: " + Errno(bind_errno));
  }
  if (::chmod(path.c_str(), mode) != 0 || ::listen(fd, 512) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return UnavailableError("--agent-socket " + path + ": " + Errno(e));
  }
  return fd;
}

std::string UnreachableReason(const std::string& path, unsigned mode) {
  // Who the socket's mode admits beyond its owner: others (any local user) or the group.
  const mode_t need = (mode & 0002) != 0 ? S_IXOTH : (mode & 0020) != 0 ? S_IXGRP : 0;
  if (need == 0) return "";
  std::string dir = path.substr(0, path.rfind('/'));
  while (!dir.empty()) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0 && (st.st_mode & need) == 0) {
      char m[8];
      std::snprintf(m, sizeof(m), "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return std::string("directory ") + dir + " has mode " + m + ": " +
             (need == S_IXOTH ? "other users" : "the group") + " cannot reach the socket; chmod " +
             (need == S_IXOTH ? "o+x" : "g+x") + " " + dir + " (docs/security.md)";
    }
    dir = dir.substr(0, dir.rfind('/'));
  }
  return "";
}

std::optional<PeerCred> UnixPeerCred(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred) ||
      cred.pid <= 0) {
    return std::nullopt;
  }
  return PeerCred{cred.pid, static_cast<uint32_t>(cred.uid), static_cast<uint32_t>(cred.gid)};
}

int64_t ParentPid(int64_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'.
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr) return 0;
  char state = 0;
  long long ppid = 0;
  if (std::sscanf(close + 1, " %c %lld", &state, &ppid) != 2) return 0;
  return ppid;
}

uint64_t PathInode(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

void UnlinkUnix(const std::string& path, uint64_t inode) {
  if (inode != 0 && PathInode(path) == inode) ::unlink(path.c_str());
}

int LocalPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return ::inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

StatusOr<std::string> ReadTokenFile(const std::string& path) {
  const std::string what = "--agent-token-file " + path;
  const std::string form =
      "; expected a file holding the token, readable by the daemon only "
      "(chmod 0600)";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int e = errno;
    return Status(e == ENOENT ? StatusCode::kNotFound : StatusCode::kPermissionDenied,
                  what + ": " + Errno(e) + form);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FailedPreconditionError(what + ": not a regular file" + form);
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return PermissionDeniedError(what + " has mode " + mode + ": group or others may access it" +
                                 form);
  }
  constexpr size_t kMax = wire::kMaxTokenBytes;
  std::string token(kMax + 1, '\0');
  size_t got = 0;
  while (got < token.size()) {
    const ssize_t n = ::read(fd, token.data() + got, token.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return PermissionDeniedError(what + ": " + Errno(e) + form);
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  token.resize(got);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
    token.pop_back();
  }
  if (got > kMax) {
    return InvalidArgumentError(what + ": longer than " + std::to_string(kMax) + " bytes" + form);
  }
  if (token.empty()) return InvalidArgumentError(what + " is empty" + form);
  return token;
}

}  // namespace stallwatch::daemon
