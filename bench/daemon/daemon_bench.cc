// daemon_bench: measures the built stallwatchd from the outside, over its real sockets.
//
//   daemon_bench [--agents N] [--loops L] [--ingest-findings F] [--ingest-conns C]
//                [--churn-rounds R] [--only ingest|scale|latency]
//
// 1. ingest: C connections send F findings in total (9 delay windows : 1 closed stall with a
//    10-frame stack) as fast as the daemon reads; rate = F / (time until all are applied).
// 2. scale: N agents × L loops connected, one delay window per loop; /metrics latency and size
//    (20 scrapes), daemon RSS; then, three times R rounds in which every loop sends a new window
//    before one timed scrape (all at once and the scrape when the daemon is idle; spread over
//    2 s and the scrape right after; all at once and the scrape at once); peak RSS.
// 3. latency: an in-process agent (threshold 50 ms) on a libevent loop; a 1 s stall is injected
//    and /metrics is polled every 5 ms until stallwatch_stall_ongoing_seconds > 0.
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "stallwatch/agent.h"
#include "stallwatch/common/histogram.h"
#include "stallwatch/wire/codec.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using stallwatch::wire::EncodeFrame;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  (void)::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  socklen_t len = sizeof(sa);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

// `headers`: extra request header lines, each ending in \r\n.
std::string HttpGet(int port, const std::string& path, const std::string& headers = "") {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string all;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\n" + headers + "\r\n";
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    char buf[1 << 16];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) {
      all.append(buf, n);
    }
  }
  ::close(fd);
  const size_t end = all.find("\r\n\r\n");
  return end == std::string::npos ? "" : all.substr(end + 4);
}

// Sum of the samples of `name` (exact name, any labels) in an exposition.
double SumMetric(const std::string& text, const std::string& name) {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, name.size(), name) != 0) {
      continue;
    }
    if (line.size() <= name.size() || (line[name.size()] != '{' && line[name.size()] != ' ')) {
      continue;
    }
    sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return sum;
}

int ConnectUnix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int ConnectTcp(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

// User + system CPU seconds a process has used (/proc/PID/stat fields 14 and 15).
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream rest(all.substr(all.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) {
      ticks += std::atof(field.c_str());
    }
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A field of /proc/PID/status in KiB: VmRSS (resident now) or VmHWM (peak resident).
int64_t StatusKiB(pid_t pid, const std::string& field = "VmRSS:") {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) {
      return std::atoll(line.c_str() + field.size());
    }
  }
  return -1;
}
int64_t RssKiB(pid_t pid) { return StatusKiB(pid); }

// Waits until the daemon has used no CPU for 500 ms (it has applied what it was sent, and
// prepared its text; CPU time moves in 10 ms ticks).
void WaitIdle(pid_t pid) {
  double last = CpuSeconds(pid);
  for (int quiet = 0, i = 0; quiet < 5 && i < 600; ++i) {
    std::this_thread::sleep_for(100ms);
    const double now = CpuSeconds(pid);
    quiet = now == last ? quiet + 1 : 0;
    last = now;
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

stallwatch::DelayFinding Window(const std::string& service, int64_t pid, const std::string& loop) {
  stallwatch::DelayFinding d;
  d.service = service;
  d.pid = pid;
  d.loop = loop;
  d.window_s = 10;
  d.count = 1000;
  d.sum_s = 0.2;
  d.utilization = 0.3;
  // A realistic spread: ~30 occupied buckets from 20 µs to 40 ms.
  for (uint64_t v = 20'000; v < 40'000'000; v = v * 13 / 10) {
    d.delay_buckets.emplace_back(static_cast<uint32_t>(stallwatch::HistBucketIndex(v)), 33);
    d.iteration_buckets.emplace_back(static_cast<uint32_t>(stallwatch::HistBucketIndex(v / 2)), 33);
  }
  d.count = 0;
  for (const auto& b : d.delay_buckets) {
    d.count += b.second;
  }
  d.iterations = d.count;
  d.iteration_sum_s = 0.1;
  return d;
}

stallwatch::StallFinding Stall(const std::string& service, int64_t pid, const std::string& loop,
                               uint64_t id) {
  stallwatch::StallFinding f;
  f.service = service;
  f.pid = pid;
  f.loop = loop;
  f.stall_id = id;
  f.start_ns = 1'700'000'000'000'000'000;
  f.duration_s = 0.2;
  f.stall_class = stallwatch::StallClass::kBlocked;
  f.syscall = "read";
  f.fd_target = "socket 127.0.0.1:5432";
  f.hint = "offload the blocking call to a thread pool or use an async client";
  stallwatch::Stack s;
  s.samples = 3;
  s.method = "proc";
  for (int i = 0; i < 10; ++i) {
    s.frames.push_back({"app::handler_" + std::to_string(i) + "(request const&)", "/usr/bin/app",
                        static_cast<uint64_t>(0x1000 + i), "src/app.cc", 100 + i});
  }
  f.stacks.push_back(s);
  return f;
}

class Daemon {
 public:
  explicit Daemon(const std::string& dir)
      : sock_(dir + "/agent.sock"), port_(FreePort()), agent_port_(FreePort()) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open((dir + "/stallwatchd.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const std::string http = "127.0.0.1:" + std::to_string(port_);
      const std::string agents = "127.0.0.1:" + std::to_string(agent_port_);
      ::execl(SW_STALLWATCHD, SW_STALLWATCHD, "--agent-socket", sock_.c_str(), "--agent-listen",
              agents.c_str(), "--http-listen", http.c_str(), "--log-level", "warn", "--max-agents",
              "100000", nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 200 && HttpGet(port_, "/healthz") != "ok\n"; ++i) {
      std::this_thread::sleep_for(25ms);
    }
  }
  ~Daemon() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  const std::string& sock() const { return sock_; }
  int port() const { return port_; }
  int agent_port() const { return agent_port_; }
  pid_t pid() const { return pid_; }

 private:
  std::string sock_;
  int port_;
  int agent_port_;  // TCP agents: their hello's pid is taken as sent
  pid_t pid_ = -1;
};

void BenchIngest(const std::string& dir, int findings, int conns) {
  Daemon d(dir + "/ingest");
  std::vector<std::string> payloads(conns);
  int per_conn = findings / conns;
  size_t bytes = 0;
  for (int c = 0; c < conns; ++c) {
    const std::string service = "ingest" + std::to_string(c);
    stallwatch::wire::Hello h;
    h.service = service;
    h.pid = 10000 + c;
    h.loops = {"main"};
    std::string& p = payloads[c];
    p = EncodeFrame(h);
    const std::string window = EncodeFrame(Window(service, 10000 + c, "main"));
    for (int i = 0; i < per_conn; ++i) {
      p += i % 10 == 9 ? EncodeFrame(Stall(service, 10000 + c, "main", i + 1)) : window;
    }
    bytes += p.size();
  }
  const int total = per_conn * conns;
  const int windows_expected = (per_conn - per_conn / 10) * conns;
  const double cpu_start = CpuSeconds(d.pid());
  const auto start = Clock::now();
  std::vector<std::thread> senders;
  senders.reserve(conns);
  for (int c = 0; c < conns; ++c) {
    senders.emplace_back([&, c] {
      const int fd = ConnectUnix(d.sock());
      if (fd < 0 || !WriteAll(fd, payloads[c])) {
        std::fprintf(stderr, "send failed\n");
      }
      // Keep the connection until the daemon has read everything.
      std::this_thread::sleep_for(1ms);
      char b;
      timeval tv{60, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      (void)b;
      ::shutdown(fd, SHUT_WR);
      ::recv(fd, &b, 1, 0);  // returns when the daemon closes or on timeout
      ::close(fd);
    });
  }
  // Done when every delay window is counted.
  const double per_window = static_cast<double>(Window("x", 1, "main").count);
  double counted = 0;
  while (Clock::now() - start < 120s) {
    counted = SumMetric(HttpGet(d.port(), "/metrics"), "stallwatch_loop_delay_seconds_count");
    if (counted >= per_window * windows_expected) {
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  const auto elapsed = Clock::now() - start;
  const double cpu = CpuSeconds(d.pid()) - cpu_start;
  for (auto& t : senders) {
    t.join();
  }
  std::printf(
      "ingest: %d findings (%d conns, %.1f MiB, 90%% delay windows with ~30 buckets, 10%% "
      "stalls with a 10-frame stack) in %.1f ms = %.0f findings/s; daemon CPU %.2f s = %.0f "
      "findings per CPU-second (%s)\n",
      total, conns, bytes / 1048576.0, Ms(elapsed), total / (Ms(elapsed) / 1000), cpu,
      total / std::max(cpu, 0.01),
      counted >= per_window * windows_expected ? "all applied" : "INCOMPLETE");
}

void BenchScale(const std::string& dir, int agents, int loops, int churn_rounds) {
  Daemon d(dir + "/scale");
  const int64_t rss_idle = RssKiB(d.pid());
  std::vector<int> fds;
  for (int a = 0; a < agents; ++a) {
    // Over TCP: on the Unix socket the daemon reports every connection of this one process under
    // its pid (SO_PEERCRED), and the 1000 agents would be 50 processes, one per service.
    const int fd = ConnectTcp(d.agent_port());
    if (fd < 0) {
      std::fprintf(stderr, "connect %d failed: %s\n", a, std::strerror(errno));
      break;
    }
    const std::string service = "svc" + std::to_string(a % 50);
    const int64_t pid = 100000 + a;
    stallwatch::wire::Hello h;
    h.service = service;
    h.pid = pid;
    std::string p;
    for (int l = 0; l < loops; ++l) {
      h.loops.push_back("loop-" + std::to_string(l));
    }
    p = EncodeFrame(h);
    for (int l = 0; l < loops; ++l) {
      p += EncodeFrame(Window(service, pid, "loop-" + std::to_string(l)));
      if (a % 10 == 0) {
        p += EncodeFrame(Stall(service, pid, "loop-" + std::to_string(l), 1));
      }
    }
    WriteAll(fd, p);
    fds.push_back(fd);
  }
  const double expected = static_cast<double>(Window("x", 1, "main").count) * agents * loops;
  const auto fill_start = Clock::now();
  for (int i = 0; i < 600; ++i) {
    if (SumMetric(HttpGet(d.port(), "/metrics"), "stallwatch_loop_delay_seconds_count") >=
        expected) {
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  const double fill_ms = Ms(Clock::now() - fill_start);
  const int64_t rss_steady = RssKiB(d.pid());
  // Where the peak is reached: VmHWM after each step.
  const int64_t hwm_fill = StatusKiB(d.pid(), "VmHWM:");
  std::vector<double> ms;
  size_t size = 0, lines = 0;
  const double scrape_cpu0 = CpuSeconds(d.pid());
  for (int i = 0; i < 20; ++i) {
    const auto t0 = Clock::now();
    const std::string m = HttpGet(d.port(), "/metrics");
    ms.push_back(Ms(Clock::now() - t0));
    size = m.size();
    lines = static_cast<size_t>(std::count(m.begin(), m.end(), '\n'));
  }
  const double scrape_cpu_ms = (CpuSeconds(d.pid()) - scrape_cpu0) * 1000 / 20;
  const int64_t hwm_scrapes = StatusKiB(d.pid(), "VmHWM:");
  std::sort(ms.begin(), ms.end());
  const auto t0 = Clock::now();
  const size_t loops_json = HttpGet(d.port(), "/api/v1/loops").size();
  const double loops_ms = Ms(Clock::now() - t0);
  const int64_t rss = RssKiB(d.pid());
  const int64_t hwm_loops = StatusKiB(d.pid(), "VmHWM:");
  std::printf(
      "scale: %zu agents x %d loops (applied within %.0f ms): /metrics %.2f MiB (%zu lines), "
      "p50 %.1f ms, max %.1f ms, daemon CPU per scrape %.1f ms; /api/v1/loops %.2f MiB in "
      "%.1f ms; daemon RSS idle %.1f MiB, with the agents %.1f MiB, after 21 scrapes %.1f "
      "MiB\n",
      fds.size(), loops, fill_ms, size / 1048576.0, lines, ms[ms.size() / 2], ms.back(),
      scrape_cpu_ms, loops_json / 1048576.0, loops_ms, rss_idle / 1024.0, rss_steady / 1024.0,
      rss / 1024.0);
  std::printf(
      "scale: peak RSS (VmHWM) after the fill %.1f MiB, after the 20 scrapes %.1f MiB, after "
      "/api/v1/loops %.1f MiB\n",
      hwm_fill / 1024.0, hwm_scrapes / 1024.0, hwm_loops / 1024.0);
  // As Prometheus asks: OpenMetrics, whose stall durations carry exemplars (written at each
  // scrape for the processes with a closed stall, 1 agent in 10 here).
  {
    std::vector<double> om_ms;
    size_t om_size = 0;
    size_t exemplars = 0;
    for (int i = 0; i < 5; ++i) {
      const auto t1 = Clock::now();
      const std::string m =
          HttpGet(d.port(), "/metrics",
                  "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n");
      om_ms.push_back(Ms(Clock::now() - t1));
      om_size = m.size();
      exemplars = 0;
      for (size_t at = m.find("stall_id=\""); at != std::string::npos;
           at = m.find("stall_id=\"", at + 1)) {
        ++exemplars;
      }
    }
    std::sort(om_ms.begin(), om_ms.end());
    std::printf(
        "scale: OpenMetrics /metrics %.2f MiB with %zu exemplars, p50 of 5 %.1f ms; peak RSS "
        "(VmHWM) after them %.1f MiB, RSS %.1f MiB\n",
        om_size / 1048576.0, exemplars, om_ms[om_ms.size() / 2],
        StatusKiB(d.pid(), "VmHWM:") / 1024.0, RssKiB(d.pid()) / 1024.0);
  }
  // Churn: before each scrape every loop of every agent sends a new delay window, so every
  // process's series changed since the previous scrape (agents report every 10 s, Prometheus
  // typically scrapes every 15-60 s: in production most series change between two scrapes).
  // Three ways the windows arrive:
  //   idle:   all at once; the scrape once the daemon has used no CPU for 500 ms;
  //   spread: agent by agent over 10 s (20 batches, 500 ms apart), as reports arrive in
  //           production (agents report every 10 s); the scrape right after the last batch;
  //   burst:  all at once; the scrape at once (the worst case: it queues behind the ingest).
  const double per_window = static_cast<double>(Window("x", 1, "main").count);
  double sent = expected;
  const auto send = [&](int from, int to) {
    for (int a = from; a < to; ++a) {
      const std::string service = "svc" + std::to_string(a % 50);
      std::string p;
      for (int l = 0; l < loops; ++l) {
        p += EncodeFrame(Window(service, 100000 + a, "loop-" + std::to_string(l)));
      }
      WriteAll(fds[a], p);
    }
    sent += per_window * (to - from) * loops;
  };
  const int n = static_cast<int>(fds.size());
  for (const char* mode : {"idle", "spread", "burst"}) {
    if (churn_rounds == 0) {
      break;
    }
    std::vector<double> wall, cpu, counted;
    for (int round = 0; round < churn_rounds; ++round) {
      const double before = sent;
      if (std::string(mode) == "spread") {
        for (int b = 0; b < 20; ++b) {
          if (b > 0) {
            std::this_thread::sleep_for(500ms);
          }
          send(n * b / 20, n * (b + 1) / 20);
        }
      } else {
        send(0, n);
      }
      if (std::string(mode) == "idle") {
        WaitIdle(d.pid());
      }
      const double cpu0 = CpuSeconds(d.pid());
      const auto c0 = Clock::now();
      const std::string m = HttpGet(d.port(), "/metrics");
      wall.push_back(Ms(Clock::now() - c0));
      cpu.push_back((CpuSeconds(d.pid()) - cpu0) * 1000);
      counted.push_back(100 * (SumMetric(m, "stallwatch_loop_delay_seconds_count") - before) /
                        (sent - before));
      if (std::string(mode) != "idle") {
        WaitIdle(d.pid());  // the next round starts calm
      }
    }
    std::sort(wall.begin(), wall.end());
    std::printf(
        "scale, churn (%s): every loop sent a new window before each of %d scrapes: /metrics "
        "p50 %.1f ms, min %.1f ms, max %.1f ms; daemon CPU during the scrape p50 %.0f ms; new "
        "windows counted by the scrape: median %.0f %%, min %.0f %%; peak RSS (VmHWM) so far "
        "%.1f MiB\n",
        mode, churn_rounds, Median(wall), wall.front(), wall.back(), Median(cpu), Median(counted),
        *std::min_element(counted.begin(), counted.end()), StatusKiB(d.pid(), "VmHWM:") / 1024.0);
  }
  std::printf("scale: daemon RSS at the end %.1f MiB, peak (VmHWM) over the whole run %.1f MiB\n",
              RssKiB(d.pid()) / 1024.0, StatusKiB(d.pid(), "VmHWM:") / 1024.0);
  for (int fd : fds) {
    ::close(fd);
  }
}

void Noop(evutil_socket_t, short, void*) {}
void Block(evutil_socket_t, short, void* arg) {
  static_cast<std::atomic<int64_t>*>(arg)->store(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
  std::this_thread::sleep_for(1s);
}

void BenchLatency(const std::string& dir) {
  Daemon d(dir + "/latency");
  evthread_use_pthreads();
  event_base* base = event_base_new();
  stallwatch::Options o;
  o.service = "latency";
  o.loop_name = "main";
  o.endpoint = "unix:" + d.sock();
  o.stall_threshold = 50ms;
  auto agent = stallwatch::Agent::Attach(base, o);
  if (!agent.ok()) {
    std::fprintf(stderr, "attach: %s\n", agent.status().message().c_str());
    return;
  }
  event* keep = event_new(base, -1, EV_PERSIST, &Noop, nullptr);
  const timeval tv{0, 100000};
  event_add(keep, &tv);
  std::thread loop([&] { event_base_dispatch(base); });
  std::vector<double> results;
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(500ms);
    std::atomic<int64_t> started{0};
    const timeval zero{0, 0};
    event_base_once(base, -1, EV_TIMEOUT, &Block, &started, &zero);
    while (started.load() == 0) {
      std::this_thread::sleep_for(100us);
    }
    const int64_t s = started.load();
    for (;;) {
      const std::string m = HttpGet(d.port(), "/metrics");
      if (m.find("stallwatch_stall_ongoing_seconds{loop=\"main\"") != std::string::npos &&
          SumMetric(m, "stallwatch_stall_ongoing_seconds") > 0) {
        const int64_t now =
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
                .count();
        results.push_back((now - s) / 1e6);
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    std::this_thread::sleep_for(1200ms);  // let the stall close
  }
  event_base_loopbreak(base);
  loop.join();
  agent->reset();
  event_free(keep);
  event_base_free(base);
  std::sort(results.begin(), results.end());
  std::printf(
      "latency: stall start -> ongoing on /metrics (threshold 50 ms), 5 stalls: "
      "min %.1f ms, median %.1f ms, max %.1f ms\n",
      results.front(), results[results.size() / 2], results.back());
}

}  // namespace

int main(int argc, char** argv) {
  int agents = 1000, loops = 4, findings = 200000, conns = 8, churn = 5;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--only") {
      only = argv[i + 1];
      continue;
    }
    if (a == "--agents") {
      agents = v;
    } else if (a == "--loops") {
      loops = v;
    } else if (a == "--ingest-findings") {
      findings = v;
    } else if (a == "--ingest-conns") {
      conns = v;
    } else if (a == "--churn-rounds") {
      churn = v;
    } else {
      std::fprintf(stderr,
                   "usage: daemon_bench [--agents N] [--loops L] [--ingest-findings F] "
                   "[--ingest-conns C] [--churn-rounds R] [--only ingest|scale|latency]\n");
      return 2;
    }
  }
  std::signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/swbench.XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  for (const char* sub : {"/ingest", "/scale", "/latency"}) {
    std::filesystem::create_directories(dir + sub);
  }
  if (only.empty() || only == "ingest") {
    BenchIngest(dir, findings, conns);
  }
  if (only.empty() || only == "scale") {
    BenchScale(dir, agents, loops, churn);
  }
  if (only.empty() || only == "latency") {
    BenchLatency(dir);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
