#include "experiment_daemon.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "http_get.h"
#include "stallwatch/common/defaults.h"

namespace stallwatch::cli {
namespace {

const std::string kDefaultUrl{defaults::kDaemonUrl};
const std::string kDefaultEndpoint{defaults::kAgentEndpoint};
const std::string kDefaultSocket{defaults::kAgentSocketPath};

bool Healthy(const std::string& url) {
  auto r = HttpGet(url + "/healthz", std::chrono::milliseconds(500));
  return r.ok() && r->status == 200;
}

std::string ExeDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace

StatusOr<size_t> CountOwnStalls(const std::string& stalls_body, int64_t pid, int64_t since_ns) {
  const auto j = nlohmann::json::parse(stalls_body, nullptr, false);
  if (!j.is_object() || !j.contains("stalls") || !j["stalls"].is_array()) {
    return UnavailableError("the daemon's /api/v1/stalls answer has no \"stalls\" array");
  }
  size_t n = 0;
  for (const auto& s : j["stalls"]) {
    if (!s.is_object()) continue;
    const auto p = s.find("pid");
    const auto start = s.find("start_ns");
    if (p == s.end() || !p->is_number_integer() || start == s.end() ||
        !start->is_number_integer()) {
      continue;
    }
    if (p->get<int64_t>() == pid && start->get<int64_t>() >= since_ns) ++n;
  }
  return n;
}

Status ExperimentDaemon::UseRunning(const std::string& url, const std::string& endpoint) {
  std::string base = url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (!Healthy(base)) {
    return UnavailableError("no stallwatchd answers at " + base +
                            "/healthz (start it, or leave --daemon out to use or start one)");
  }
  url_ = base;
  endpoint_ = endpoint.empty() ? kDefaultEndpoint : endpoint;
  return OkStatus();
}

Status ExperimentDaemon::Acquire() {
  if (Healthy(kDefaultUrl) && access(kDefaultSocket.c_str(), W_OK) == 0) {
    endpoint_ = kDefaultEndpoint;
    url_ = kDefaultUrl;
    return OkStatus();
  }
  std::string binary;
  for (const std::string& c : {ExeDir() + "/stallwatchd", ExeDir() + "/../daemon/stallwatchd"}) {
    if (access(c.c_str(), X_OK) == 0) {
      binary = c;
      break;
    }
  }
  if (binary.empty()) {
    return NotFoundError("no stallwatchd running at " + kDefaultUrl +
                         " and none next to this binary");
  }
  char tmpl[] = "/tmp/stallwatch-experiment-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return UnavailableError("cannot create a temporary directory");
  dir_ = tmpl;
  const int port = FreeLoopbackPort();
  if (port == 0) return UnavailableError("no free loopback port for stallwatchd");
  const std::string socket_path = dir_ + "/agent.sock";
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  pid_ = fork();
  if (pid_ == 0) {
    execl(binary.c_str(), "stallwatchd", "--agent-socket", socket_path.c_str(), "--http-listen",
          listen.c_str(), "--log-level", "warn", static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid_ < 0) return UnavailableError("cannot start stallwatchd");
  url_ = "http://" + listen;
  endpoint_ = "unix:" + socket_path;
  for (int i = 0; i < 50; ++i) {
    if (Healthy(url_)) return OkStatus();
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return UnavailableError("stallwatchd exited at start-up");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return UnavailableError("stallwatchd did not answer on " + url_);
}

ExperimentDaemon::~ExperimentDaemon() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

}  // namespace stallwatch::cli
