#include "experiment_tornado.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "http_get.h"
#include "load.h"
#include "run.h"
#include "stallwatch/common/finding_json.h"

namespace stallwatch::cli {

namespace {

bool PortFree(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  close(fd);
  return ok;
}

// A loopback port P with P + 1 free too (the app's upstream), or 0.
int FreePortPair() {
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      return 0;
    }
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    int port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0) {
      port = ntohs(sa.sin_port);
    }
    close(fd);
    if (port > 0 && port < 65535 && PortFree(port) && PortFree(port + 1)) {
      return port;
    }
  }
  return 0;
}

std::string Millis(std::chrono::nanoseconds d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + "ms";
}

// The app under the shim, reporting to `findings`; its output discarded.
pid_t StartApp(const ExperimentOptions& o, const std::string& app, const std::string& shim,
               const std::string& findings, int port) {
  const pid_t pid = fork();
  if (pid != 0) {
    return pid;
  }
  setenv("LD_PRELOAD", shim.c_str(), 1);
  setenv("STALLWATCH_ENDPOINT", ("file:" + findings).c_str(), 1);
  setenv("STALLWATCH_THRESHOLD", Millis(o.stall_threshold).c_str(), 1);
  setenv("STALLWATCH_REPORT_INTERVAL", "500ms", 1);
  setenv("STALLWATCH_SERVICE", "tornado_seed", 1);
  unsetenv("STALLWATCH_RUN_NOTIFY");
  if (FILE* null = std::fopen("/dev/null", "w")) {
    dup2(fileno(null), 1);
    dup2(fileno(null), 2);
  }
  const std::string p = std::to_string(port);
  const std::string pool = std::to_string(o.workers);
  execl(o.python.c_str(), o.python.c_str(), app.c_str(), "--port", p.c_str(), "--pool",
        pool.c_str(), static_cast<char*>(nullptr));
  _exit(127);
}

void StopApp(pid_t pid) {
  if (pid <= 0) {
    return;
  }
  kill(pid, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
}

}  // namespace

std::string TornadoRoute(Mode m, std::chrono::milliseconds work) {
  const char* path = "/";
  switch (m) {
    case Mode::kBlock:
      path = "/sleep";
      break;
    case Mode::kCpu:
      path = "/cpu";
      break;
    case Mode::kAsync:
      path = "/async";
      break;
    case Mode::kOffload:
      path = "/pool";
      break;
    case Mode::kUpstreamBlocking:
      path = "/fetch-blocking";
      break;
    case Mode::kUpstreamAsync:
      path = "/fetch-async";
      break;
  }
  return std::string(path) + "?ms=" + std::to_string(work.count());
}

StatusOr<std::string> FindTornadoApp() {
  std::vector<std::string> tried;
  if (const char* env = std::getenv("STALLWATCH_TORNADO_APP"); env != nullptr && *env != '\0') {
    tried.emplace_back(env);
  }
  tried.push_back(ExeDir() + "/../share/stallwatch/examples/tornado_seed.py");
  tried.emplace_back(SW_TORNADO_APP_SOURCE);
  std::string looked;
  for (const auto& p : tried) {
    if (Readable(p)) {
      return p;
    }
    looked += (looked.empty() ? "" : ", ") + p;
  }
  return NotFoundError("tornado_seed.py not found (looked at " + looked +
                       "); give its path in STALLWATCH_TORNADO_APP");
}

Status CheckTornadoTarget(const ExperimentOptions& o) {
  if (access(o.python.c_str(), X_OK) != 0) {
    return FailedPreconditionError(o.python +
                                   " not found: --target tornado runs Debian's python3 "
                                   "(apt-get install python3 python3-tornado)");
  }
  const std::string probe = o.python + " -c 'import tornado' >/dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) {
    return FailedPreconditionError("Tornado is not importable by " + o.python +
                                   " (apt-get install python3-tornado)");
  }
  if (o.tornado_app.empty()) {
    if (auto app = FindTornadoApp(); !app.ok()) {
      return app.status();
    }
  } else if (!Readable(o.tornado_app)) {
    return NotFoundError(o.tornado_app + ": no such readable file");
  }
  if (auto shim = FindPreload(RunOptions{}); !shim.ok()) {
    return shim.status();
  }
  return OkStatus();
}

StatusOr<ExperimentRow> RunOneTornado(const ExperimentOptions& o, Mode mode, int c,
                                      const std::atomic<bool>* cancel) {
  std::string app = o.tornado_app;
  if (app.empty()) {
    auto found = FindTornadoApp();
    if (!found.ok()) {
      return found.status();
    }
    app = *found;
  }
  auto shim = FindPreload(RunOptions{});
  if (!shim.ok()) {
    return shim.status();
  }
  const int port = FreePortPair();
  if (port == 0) {
    return UnavailableError("no free pair of loopback ports for the Tornado app");
  }
  char path[] = "/tmp/stallwatch-experiment-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    return UnavailableError("cannot create a findings file in /tmp");
  }
  close(fd);
  const std::string findings = path;
  const pid_t pid = StartApp(o, app, *shim, findings, port);
  if (pid < 0) {
    unlink(path);
    return UnavailableError("fork failed");
  }
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  bool up = false;
  for (int i = 0; i < 200 && !up; ++i) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      break;
    }
    auto r = HttpGet(base + "/", std::chrono::milliseconds(500));
    up = r.ok() && r->status == 200;
    if (!up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (!up) {
    StopApp(pid);
    unlink(path);
    return UnavailableError("the Tornado app (" + o.python + " " + app +
                            ") did not answer on port " + std::to_string(port) + " within 20 s");
  }
  LoadOptions lo;
  lo.url = base + TornadoRoute(mode, o.work);
  lo.concurrency = c;
  lo.warmup_path = "/";
  lo.drain = true;
  lo.duration = RunLength(mode, c, o.work, o.run_duration);
  lo.timeout = o.work * (2 * c + 4) + std::chrono::seconds(5);
  auto load = RunLoad(lo, cancel);
  // The stalls of the last wave close when its handlers return; give the reporter a moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  StopApp(pid);
  if (!load.ok()) {
    unlink(path);
    return load.status();
  }
  ExperimentRow row = RowFromLoad(o, mode, c, *load);
  std::vector<StallFinding> stalls;
  std::ifstream in(findings);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) {
      continue;
    }
    if (j.value("kind", "") == "stall" && !j.value("ongoing", false)) {
      if (auto s = StallFromJson(j); s.ok()) {
        stalls.push_back(std::move(*s));
      }
    } else if (j.value("kind", "") == "delay") {
      // Windows of 0.5 s: the run's figure is the worst window's.
      row.findings.delay_p99_s = std::max(row.findings.delay_p99_s, j.value("p99_s", 0.0));
      row.findings.delay_max_s = std::max(row.findings.delay_max_s, j.value("max_s", 0.0));
    }
  }
  unlink(path);
  const double p99 = row.findings.delay_p99_s;
  const double max = row.findings.delay_max_s;
  row.findings = SummarizeStalls(stalls);
  row.findings.delay_p99_s = p99;
  row.findings.delay_max_s = max;
  return row;
}

}  // namespace stallwatch::cli
