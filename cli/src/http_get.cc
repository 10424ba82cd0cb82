#include "http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "load.h"
#include "stallwatch/common/clock.h"

namespace stallwatch::cli {

namespace {

// Waits for `events` on fd until deadline; false on timeout.
bool WaitFor(int fd, short events, int64_t deadline_ns) {
  for (;;) {
    const int64_t left_ms = (deadline_ns - MonotonicNanos()) / 1'000'000;
    if (left_ms <= 0) {
      return false;
    }
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, static_cast<int>(left_ms));
    if (n > 0) {
      return true;
    }
    if (n == 0) {
      return false;
    }
    if (errno != EINTR) {
      return false;
    }
  }
}

}  // namespace

StatusOr<HttpResponse> HttpGet(const std::string& url_text, std::chrono::milliseconds timeout) {
  auto url = ParseUrl(url_text);
  if (!url.ok()) {
    return url.status();
  }
  const int64_t deadline = MonotonicNanos() + timeout.count() * 1'000'000;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(url->port);
  if (int rc = getaddrinfo(url->host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res) {
    return UnavailableError("cannot resolve " + url->host + ": " + gai_strerror(rc));
  }
  const std::string where = url->host + ":" + port;
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return UnavailableError(std::string("socket: ") + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  const int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0 && errno != EINPROGRESS) {
    return UnavailableError("cannot connect to " + where + ": " + std::strerror(errno));
  }
  if (!WaitFor(fd, POLLOUT, deadline)) {
    return Status(StatusCode::kDeadlineExceeded, "timed out connecting to " + where);
  }
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    return UnavailableError("cannot connect to " + where + ": " + std::strerror(err));
  }
  const std::string req = "GET " + url->path + " HTTP/1.0\r\nHost: " + where +
                          "\r\nUser-Agent: stallwatch\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!WaitFor(fd, POLLOUT, deadline)) {
        return Status(StatusCode::kDeadlineExceeded, "timed out sending to " + where);
      }
    } else {
      return UnavailableError("send to " + where + ": " + std::strerror(errno));
    }
  }
  std::string in;
  char buf[16384];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
      if (in.size() > (64u << 20)) {
        return ResourceExhaustedError("response from " + where + " over 64 MiB");
      }
    } else if (n == 0) {
      break;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (!WaitFor(fd, POLLIN, deadline)) {
        return Status(StatusCode::kDeadlineExceeded, "timed out waiting for " + where);
      }
    } else {
      return UnavailableError("recv from " + where + ": " + std::strerror(errno));
    }
  }
  auto response = ParseHttpResponse(in);
  if (!response.ok()) {
    return UnavailableError(where + " did not answer with HTTP (" + response.status().message() +
                            ")");
  }
  return response;
}

std::string BaseUrl(std::string url) {
  while (!url.empty() && url.back() == '/') {
    url.pop_back();
  }
  return url;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) {
    s.pop_back();
  }
  return s;
}

}  // namespace stallwatch::cli
