// The daemon transport (unix:/tcp: endpoints): the wire protocol of docs/protocol.md over a
// stream socket. Runs on the reporter thread only; every system call is bounded in time
// (non-blocking socket + poll), so a daemon that is down, slow, stopped or restarting costs the
// host nothing but queued (and eventually dropped, counted) findings.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <set>

#include "log.h"
#include "platform/proc.h"
#include "reporter.h"
#include "stallwatch/common/log_text.h"
#include "stallwatch/wire/codec.h"

namespace stallwatch::agent::internal {
namespace {

// Text from outside (paths, environment values, resolver errors) goes into log lines through
// EscapeForLog; the bound is wider than its default because a path may be long and a message
// carries advice after it.
constexpr size_t kMaxLoggedText = 1024;

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kConnectTimeout{1000};
constexpr milliseconds kWriteTimeout{1000};
constexpr milliseconds kBackoffMin{100};
constexpr milliseconds kBackoffMax{30000};

std::string ReadExecutable() {
  char buf[4096];
  const std::string link = std::string(platform::ProcRoot()) + "/exe";
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// The daemon's shared token: the file's content without trailing whitespace. Errors are
// reported by the caller (once per failure streak).
std::string ReadToken(const std::string& path, std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    *error = path + ": " + std::strerror(errno);
    return "";
  }
  std::string token(wire::kMaxTokenBytes + 1, '\0');
  size_t got = 0;
  while (got < token.size()) {
    const ssize_t n = ::read(fd, token.data() + got, token.size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  token.resize(std::min(got, wire::kMaxTokenBytes));
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
    token.pop_back();
  }
  if (token.empty()) {
    *error = path + " is empty";
  }
  return token;
}

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) {
    return "";
  }
  return buf;
}

int WaitFd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return 0;
    }
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno == EINTR) {
      continue;
    }
    if (rc <= 0) {
      return rc;
    }
    return p.revents;
  }
}

class DaemonSink : public Sink {
 public:
  explicit DaemonSink(Endpoint e)
      : e_(std::move(e)), rng_(static_cast<uint32_t>(::getpid()) ^ std::random_device{}()) {}
  ~DaemonSink() override { Disconnect(); }

  bool Send(const Finding& f) override {
    const std::string& loop =
        std::visit([](const auto& x) -> const std::string& { return x.loop; }, f);
    loops_.insert(loop);
    service_ = std::visit([](const auto& x) { return x.service; }, f);
    if (fd_ >= 0 && PeerClosed()) {
      Fail("the daemon closed the connection");
    }
    if (fd_ < 0) {
      if (Clock::now() < next_attempt_) {
        return false;
      }
      if (!Connect()) {
        return false;
      }
    }
    const std::string frame =
        std::visit([](const auto& x) { return wire::EncodeFrame(wire::Message(x)); }, f);
    if (!WriteAll(frame)) {
      return false;
    }
    return true;
  }

  std::chrono::milliseconds RetryDelay() override {
    const auto left = std::chrono::duration_cast<milliseconds>(next_attempt_ - Clock::now());
    return std::clamp(left, milliseconds(10), kBackoffMax);
  }

  void Announce(const std::string& service, const std::string& loop) override {
    const bool is_new = loops_.insert(loop).second;
    service_ = service;
    if (fd_ >= 0 && PeerClosed()) {
      Fail("the daemon closed the connection");
    }
    if (fd_ < 0) {
      // Connecting now also tells at once why the daemon cannot be reached (one line).
      if (Clock::now() >= next_attempt_) {
        (void)Connect();
      }
      return;
    }
    // A hello repeating the identity adds the loop (docs/protocol.md).
    if (is_new) {
      (void)WriteAll(wire::EncodeFrame(MakeHello()));
    }
  }

  std::string Describe() const override {
    return e_.kind == Endpoint::Kind::kUnix ? "unix:" + e_.path
                                            : "tcp:" + e_.host + ":" + std::to_string(e_.port);
  }

 private:
  wire::Hello MakeHello() const {
    wire::Hello h;
    h.service = service_;
    h.pid = platform::TargetPid();
    h.host = HostName();
    h.executable = ReadExecutable();
    h.agent_version = SW_PROJECT_VERSION;
    h.start_time_ns = StartTime();
    h.loops.assign(loops_.begin(), loops_.end());
    return h;
  }

  // Read once per process: the boot time /proc/stat gives moves with the wall clock, and the
  // start time must stay the same in every hello of the process. A forked child that keeps the
  // sink (a new target pid) reads its own.
  int64_t StartTime() const {
    const pid_t pid = platform::TargetPid();
    if (start_time_pid_ != pid) {
      start_time_ns_ = platform::ReadProcessStartUnixNs();
      start_time_pid_ = pid;
    }
    return start_time_ns_;
  }

  bool Connect() {
    std::string error;
    int error_errno = 0;
    fd_ = Open(&error, &error_errno);
    if (fd_ < 0) {
      Backoff("cannot connect: " + EscapeForLog(error, kMaxLoggedText) + Advice(error_errno));
      return false;
    }
    wire::Hello h = MakeHello();
    // Only over TCP: a Unix socket's peers are admitted by its file permissions, and the
    // secret should not travel where it is not needed.
    if (e_.kind == Endpoint::Kind::kTcp && !e_.token_file.empty()) {
      std::string token_error;
      h.token = ReadToken(e_.token_file, &token_error);
      if (!token_error.empty() && !token_warned_) {
        token_warned_ = true;
        LogWarn("STALLWATCH_TOKEN_FILE {}; connecting without a token",
                EscapeForLog(token_error, kMaxLoggedText));
      } else if (token_error.empty()) {
        token_warned_ = false;
      }
    }
    if (!WriteAll(wire::EncodeFrame(h))) {
      return false;
    }
    if (failures_ > 0) {
      LogInfo("connected to stallwatchd at {} after {} failed attempts",
              EscapeForLog(Describe(), kMaxLoggedText), failures_);
    }
    failures_ = 0;
    backoff_ = kBackoffMin;
    return true;
  }

  // How to fix a failed connect, for the one line that reports it.
  std::string Advice(int e) const {
    if (e_.kind != Endpoint::Kind::kUnix) {
      return e == ECONNREFUSED ? "; is stallwatchd running with --agent-listen?" : "";
    }
    if (e == EACCES || e == EPERM) {
      return " (uid " + std::to_string(::geteuid()) +
             " may not connect: start stallwatchd with --agent-socket-mode 0666, its default, "
             "or add this user to the socket's group; docs/security.md)";
    }
    if (e == ENOENT) {
      return " (no socket there: start stallwatchd, or set STALLWATCH_ENDPOINT)";
    }
    if (e == ECONNREFUSED) {
      return " (a stale socket: no stallwatchd is running; start it)";
    }
    return "";
  }

  // A non-blocking connect bounded by kConnectTimeout.
  int Open(std::string* error, int* error_errno) {
    if (e_.kind == Endpoint::Kind::kUnix) {
      sockaddr_un sa{};
      if (e_.path.size() >= sizeof(sa.sun_path)) {
        *error = "socket path too long";
        return -1;
      }
      sa.sun_family = AF_UNIX;
      std::memcpy(sa.sun_path, e_.path.c_str(), e_.path.size() + 1);
      return ConnectTo(AF_UNIX, reinterpret_cast<sockaddr*>(&sa), sizeof(sa), error, error_errno);
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    // Name resolution may block; tcp endpoints are expected to be addresses (docs/protocol.md).
    const std::string port = std::to_string(e_.port);
    if (const int rc = ::getaddrinfo(e_.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
      *error = ::gai_strerror(rc);
      return -1;
    }
    int fd = -1;
    for (addrinfo* ai = res; ai && fd < 0; ai = ai->ai_next) {
      fd = ConnectTo(ai->ai_family, ai->ai_addr, ai->ai_addrlen, error, error_errno);
    }
    ::freeaddrinfo(res);
    if (fd >= 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
  }

  static int ConnectTo(int family, const sockaddr* sa, socklen_t len, std::string* error,
                       int* error_errno) {
    const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *error_errno = errno;
      *error = std::strerror(errno);
      return -1;
    }
    if (::connect(fd, sa, len) == 0) {
      return fd;
    }
    if (errno != EINPROGRESS && errno != EAGAIN) {
      *error_errno = errno;
      *error = std::strerror(errno);
      ::close(fd);
      return -1;
    }
    const int ev = WaitFd(fd, POLLOUT, Clock::now() + kConnectTimeout);
    int so_error = 0;
    socklen_t so_len = sizeof(so_error);
    if (ev <= 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &so_len) != 0 ||
        so_error != 0) {
      *error_errno = ev == 0 ? ETIMEDOUT : so_error ? so_error : errno;
      *error = ev == 0 ? "connect timed out" : std::strerror(*error_errno);
      ::close(fd);
      return -1;
    }
    return fd;
  }

  // The daemon never writes: a readable socket means it closed (or reset) the connection.
  bool PeerClosed() const {
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

  bool WriteAll(const std::string& data) {
    const auto deadline = Clock::now() + kWriteTimeout;
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (WaitFd(fd_, POLLOUT, deadline) > 0) {
          continue;
        }
        Fail("the daemon did not read for " + std::to_string(kWriteTimeout.count()) + " ms");
        return false;
      }
      Fail(std::string("write failed: ") + std::strerror(errno));
      return false;
    }
    return true;
  }

  void Fail(const std::string& why) {
    Disconnect();
    Backoff(why);
  }

  void Disconnect() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = -1;
  }

  // Exponential backoff with ±20 % jitter, so agents restarted together do not reconnect in step.
  void Backoff(const std::string& why) {
    if (failures_++ == 0) {
      LogWarn("stallwatchd at {} unavailable ({}); findings stay queued, retrying with backoff",
              EscapeForLog(Describe(), kMaxLoggedText), why);
    }
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    const auto delay = milliseconds(static_cast<int64_t>(backoff_.count() * jitter(rng_)));
    next_attempt_ = Clock::now() + delay;
    backoff_ = std::min(backoff_ * 2, kBackoffMax);
  }

  Endpoint e_;
  int fd_ = -1;
  std::string service_;
  std::set<std::string> loops_;
  milliseconds backoff_ = kBackoffMin;
  Clock::time_point next_attempt_{};
  uint64_t failures_ = 0;
  bool token_warned_ = false;
  std::mt19937 rng_;
  mutable pid_t start_time_pid_ = 0;  // StartTime()'s cache: the pid it read for
  mutable int64_t start_time_ns_ = 0;
};

}  // namespace

std::unique_ptr<Sink> MakeDaemonSink(const Endpoint& e) { return std::make_unique<DaemonSink>(e); }

}  // namespace stallwatch::agent::internal
