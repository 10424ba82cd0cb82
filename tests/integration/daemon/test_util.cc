#include "test_util.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>

#include "http_get.h"
#include "test_support.h"

namespace stallwatch::daemon::testing {

HttpResponse HttpGet(int port, const std::string& path) {
  auto r = cli::HttpGet("http://127.0.0.1:" + std::to_string(port) + path, std::chrono::seconds(5));
  if (!r.ok()) {
    return {};
  }
  return {r->status, std::move(r->body)};
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  return stallwatch::testing::WaitFor(pred, timeout);
}

std::vector<std::string> SeriesLines(const std::string& exposition) {
  std::vector<std::string> out;
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') {
      out.push_back(line.substr(0, line.rfind(' ')));
    }
  }
  return out;
}

std::optional<double> MetricValue(const std::string& exposition, const std::string& name,
                                  const std::vector<std::string>& labels) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    if (line.compare(0, name.size(), name) != 0) {
      continue;
    }
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') {
      continue;
    }
    bool all = true;
    for (const auto& l : labels) {
      all = all && line.find(l) != std::string::npos;
    }
    if (!all) {
      continue;
    }
    const size_t sp = line.rfind(' ');
    return std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return std::nullopt;
}

DaemonOptions DaemonOptionsIn(const TempDir& dir) {
  DaemonOptions o;
  o.agent_socket = dir.path() + "/run/agent.sock";
  o.http_listen = "127.0.0.1:0";
  return o;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/swtest.XXXXXX";
  path_ = ::mkdtemp(tmpl) ? tmpl : "/tmp/swtest.fallback";
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

DaemonThread::DaemonThread(DaemonOptions options) {
  options.handle_signals = false;
  if (options.http_listen == kDefaultHttpListen) {
    options.http_listen = "127.0.0.1:0";
  }
  std::promise<void> ready;
  auto started = ready.get_future();
  thread_ = std::thread([this, options, &ready] {
    auto d = Daemon::Create(options);
    if (!d.ok()) {
      error_ = d.status().message();
      ready.set_value();
      return;
    }
    daemon_ = d->get();
    http_port_ = daemon_->http_port();
    agent_tcp_port_ = daemon_->agent_tcp_port();
    ok_ = true;
    ready.set_value();
    (void)daemon_->Run();
    daemon_ = nullptr;
  });
  started.wait();
}

DaemonThread::~DaemonThread() {
  if (daemon_) {
    daemon_->Stop();
  }
  thread_.join();
}

namespace {
void KeepAlive(evutil_socket_t, short, void*) {}
void RunPosted(evutil_socket_t, short, void* arg) {
  std::unique_ptr<std::function<void()>> fn(static_cast<std::function<void()>*>(arg));
  (*fn)();
}
const int kThreads = evthread_use_pthreads();
}  // namespace

LoopThread::LoopThread() {
  (void)kThreads;
  base_ = event_base_new();
  keepalive_ = event_new(base_, -1, EV_PERSIST, &KeepAlive, nullptr);
  const timeval tv{0, 100000};
  event_add(keepalive_, &tv);
}

LoopThread::~LoopThread() {
  Stop();
  event_free(keepalive_);
  event_base_free(base_);
}

void LoopThread::Start() {
  thread_ = std::thread([this] { event_base_dispatch(base_); });
}

void LoopThread::Stop() {
  if (!thread_.joinable()) {
    return;
  }
  event_base_loopbreak(base_);
  thread_.join();
}

void LoopThread::Post(std::function<void()> fn) {
  auto* p = new std::function<void()>(std::move(fn));
  const timeval zero{0, 0};
  event_base_once(base_, -1, EV_TIMEOUT, &RunPosted, p, &zero);
}

RawClient::RawClient(const std::string& socket_path) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, socket_path.c_str(), sizeof(sa.sun_path) - 1);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    Close();
  }
}

RawClient::RawClient(int tcp_port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(tcp_port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    Close();
  }
}

RawClient::~RawClient() { Close(); }

bool RawClient::Write(const std::string& bytes) {
  if (fd_ < 0) {
    return false;
  }
  return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(bytes.size());
}

bool RawClient::ClosedByPeer(std::chrono::milliseconds timeout) {
  if (fd_ < 0) {
    return true;
  }
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
    return false;
  }
  char c;
  return ::recv(fd_, &c, 1, MSG_DONTWAIT) <= 0;
}

void RawClient::Close() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = -1;
}

uint64_t RaiseFileLimit(uint64_t n) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    return 0;
  }
  if (rl.rlim_cur < n) {
    rl.rlim_cur = std::min<rlim_t>(n, rl.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

int64_t RssBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, rss = 0;
  in >> pages >> rss;
  return rss * ::sysconf(_SC_PAGESIZE);
}

}  // namespace stallwatch::daemon::testing
