// A single-threaded libevent program with the agent attached, run by
// watchdog_process_test.cc as a child process (a gtest binary has threads of its own). It
// never creates a thread; each mode prints one JSON object on stdout.
//
//   single_thread_host stalls    CPU stall (BurnCpuInNamedFunction, 150 ms), then a 120 ms
//                                usleep on the loop; prints the snapshot and what detach left
//   single_thread_host cycle N   attach/detach N times; fds, threads and children before/after
//   single_thread_host hooks     a second attach with hooks while the watchdog is a process
//   single_thread_host forever   attach, print the snapshot, run until killed
//   single_thread_host exec      attach, print the snapshot, run 300 ms, then exec sleep 5
//   single_thread_host repeat N  after 1.5 s, N CPU stalls of 200 ms, 600 ms apart; prints the
//                                snapshot again and exits
//   single_thread_host stall-idle  attach, a 150 ms CPU stall after 1.5 s, print the snapshot
//                                  0.5 s later, then idle until killed (memory after stacks)
#include <dirent.h>
#include <event2/event.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "stallwatch/agent.h"
#include "stallwatch/common/clock.h"

namespace {

using namespace std::chrono_literals;
using nlohmann::json;

int CountFds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n - 1;  // the directory's own fd
}

int Threads() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

// Child processes that still exist (running or zombie).
std::string Children() {
  std::ifstream in("/proc/self/task/" + std::to_string(getpid()) + "/children");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// Whether process `pid` exists and is not a zombie.
bool Alive(int64_t pid) {
  if (pid <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

__attribute__((noinline)) uint64_t BurnCpuInNamedFunction(std::chrono::milliseconds d) {
  const int64_t end = stallwatch::MonotonicNanos() + d.count() * 1'000'000;
  volatile uint64_t x = 1;
  while (stallwatch::MonotonicNanos() < end) {
    for (int i = 0; i < 1000; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  }
  return x;
}

json SnapshotJson(const stallwatch::Agent& a) {
  const auto s = a.Snapshot();
  json j{{"loop", s.loop},
         {"tid", s.tid},
         {"watchdog", s.watchdog},
         {"watchdog_pid", s.watchdog_pid},
         {"boundary_source", s.boundary_source},
         {"sampling_status", s.sampling_status},
         {"stalls_total", s.stalls_total},
         {"delay_count", s.since_attach.count}};
  json recent = json::array();
  for (const auto& f : s.recent_stalls) {
    json functions = json::array();
    for (const auto& st : f.stacks) {
      for (const auto& fr : st.frames) functions.push_back(fr.function);
    }
    recent.push_back({{"class", std::string(stallwatch::StallClassName(f.stall_class))},
                      {"duration_s", f.duration_s},
                      {"syscall", f.syscall},
                      {"pid", f.pid},
                      {"functions", functions},
                      {"sampling_note", f.sampling_note}});
  }
  j["recent"] = recent;
  return j;
}

struct Stalls {
  event_base* base;
  int step = 0;
  double sleep_ms = 0;
};

void OnStep(evutil_socket_t, short, void* arg) {
  auto* st = static_cast<Stalls*>(arg);
  if (st->step == 0) {
    BurnCpuInNamedFunction(150ms);
  } else if (st->step == 1) {
    const int64_t t0 = stallwatch::MonotonicNanos();
    usleep(120'000);
    st->sleep_ms = (stallwatch::MonotonicNanos() - t0) / 1e6;
  } else {
    event_base_loopbreak(st->base);
    return;
  }
  ++st->step;
  timeval tv{0, st->step == 2 ? 400'000 : 200'000};
  event_base_once(st->base, -1, EV_TIMEOUT, &OnStep, st, &tv);
}

stallwatch::Options HostOptions() {
  stallwatch::Options o;
  // Fields set in code win over STALLWATCH_*: the endpoint is "off" only when the test gives
  // none.
  const char* endpoint = std::getenv("STALLWATCH_ENDPOINT");
  if (endpoint == nullptr || *endpoint == '\0') o.endpoint = "off";
  o.loop_name = "host";
  return stallwatch::Options::FromEnvironment(o);
}

// Attaches with `o`; on failure prints {"error": ...} for the test and returns nullptr.
std::unique_ptr<stallwatch::Agent> AttachOrReport(event_base* base,
                                                  stallwatch::Options o = HostOptions()) {
  auto agent = stallwatch::Agent::Attach(base, std::move(o));
  if (!agent.ok()) {
    std::printf("%s\n", json{{"error", agent.status().message()}}.dump().c_str());
    return nullptr;
  }
  return std::move(*agent);
}

// An hour-long persistent timer: the loop runs until something breaks it.
event* KeepLoopAlive(event_base* base) {
  event* keep = event_new(
      base, -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr);
  timeval hour{3600, 0};
  event_add(keep, &hour);
  return keep;
}

int RunStalls() {
  event_base* base = event_base_new();
  const int fds_before = CountFds();
  auto agent = AttachOrReport(base);
  if (!agent) return 1;
  Stalls st{base};
  timeval tv{0, 300'000};
  event_base_once(base, -1, EV_TIMEOUT, &OnStep, &st, &tv);
  // Something to wait for, so the loop runs until the last step breaks it.
  event* keep = KeepLoopAlive(base);
  event_base_dispatch(base);
  json j = SnapshotJson(*agent);
  j["threads_attached"] = Threads();
  j["fds_attached_extra"] = CountFds() - fds_before;
  j["sleep_ms"] = st.sleep_ms;
  const int64_t wpid = j["watchdog_pid"].get<int64_t>();
  j["watchdog_alive_attached"] = Alive(wpid);
  agent.reset();  // detach
  j["watchdog_alive_detached"] = Alive(wpid);
  j["children_detached"] = Children();
  j["fds_detached_extra"] = CountFds() - fds_before;
  j["threads_detached"] = Threads();
  event_free(keep);
  event_base_free(base);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

int RunCycle(int n) {
  event_base* base = event_base_new();
  const int fds_before = CountFds();
  int64_t last_pid = 0;
  std::string watchdog;
  for (int i = 0; i < n; ++i) {
    auto agent = AttachOrReport(base);
    if (!agent) return 1;
    event_base_loop(base, EVLOOP_NONBLOCK);
    const auto s = agent->Snapshot();
    watchdog = s.watchdog;
    last_pid = s.watchdog_pid;
  }
  json j{
      {"cycles", n},          {"watchdog", watchdog},   {"fds_extra", CountFds() - fds_before},
      {"threads", Threads()}, {"children", Children()}, {"last_watchdog_alive", Alive(last_pid)}};
  event_base_free(base);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

int RunHooks() {
  event_base* a = event_base_new();
  event_base* b = event_base_new();
  auto first = AttachOrReport(a);
  if (!first) return 1;
  stallwatch::Options hooked = HostOptions();
  hooked.loop_name = "hooked";
  hooked.on_stall = [](const stallwatch::StallFinding&) {};
  auto second = stallwatch::Agent::Attach(b, hooked);
  json j{{"watchdog", first->Snapshot().watchdog},
         {"second_ok", second.ok()},
         {"second_error", second.ok() ? "" : second.status().message()},
         {"threads", Threads()}};
  first.reset();
  event_base_free(a);
  event_base_free(b);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

struct StallIdle {
  event_base* base;
  const stallwatch::Agent* agent;
  int step = 0;
};

void OnStallIdle(evutil_socket_t, short, void* arg) {
  auto* st = static_cast<StallIdle*>(arg);
  if (st->step++ == 0) {
    BurnCpuInNamedFunction(150ms);
    timeval tv{0, 500'000};
    event_base_once(st->base, -1, EV_TIMEOUT, &OnStallIdle, st, &tv);
    return;
  }
  std::printf("%s\n", SnapshotJson(*st->agent).dump().c_str());
  std::fflush(stdout);
}

int RunStallIdle() {
  event_base* base = event_base_new();
  auto agent = AttachOrReport(base);
  if (!agent) return 1;
  StallIdle st{base, agent.get()};
  timeval tv{1, 500'000};
  event_base_once(base, -1, EV_TIMEOUT, &OnStallIdle, &st, &tv);
  KeepLoopAlive(base);
  event_base_dispatch(base);
  return 0;
}

struct Repeat {
  event_base* base;
  int left;
};

void OnRepeat(evutil_socket_t, short, void* arg) {
  auto* r = static_cast<Repeat*>(arg);
  if (r->left-- <= 0) {
    event_base_loopbreak(r->base);
    return;
  }
  BurnCpuInNamedFunction(200ms);
  timeval tv{0, 600'000};
  event_base_once(r->base, -1, EV_TIMEOUT, &OnRepeat, r, &tv);
}

int RunRepeat(int n) {
  event_base* base = event_base_new();
  auto agent = AttachOrReport(base);
  if (!agent) return 1;
  std::printf("%s\n", SnapshotJson(*agent).dump().c_str());
  std::fflush(stdout);
  Repeat r{base, n};
  timeval tv{1, 500'000};
  event_base_once(base, -1, EV_TIMEOUT, &OnRepeat, &r, &tv);
  event* keep = KeepLoopAlive(base);
  event_base_dispatch(base);
  std::printf("%s\n", SnapshotJson(*agent).dump().c_str());
  std::fflush(stdout);
  agent.reset();
  event_free(keep);
  event_base_free(base);
  return 0;
}

int RunForever(bool then_exec = false) {
  event_base* base = event_base_new();
  auto agent = AttachOrReport(base);
  if (!agent) return 1;
  json j = SnapshotJson(*agent);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  KeepLoopAlive(base);
  if (then_exec) {
    timeval t{0, 300'000};
    event_base_loopexit(base, &t);
    event_base_dispatch(base);
    execl("/bin/sleep", "sleep", "5", static_cast<char*>(nullptr));
    return 1;
  }
  event_base_dispatch(base);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "stalls") return RunStalls();
  if (mode == "cycle") return RunCycle(argc > 2 ? std::atoi(argv[2]) : 100);
  if (mode == "hooks") return RunHooks();
  if (mode == "forever") return RunForever();
  if (mode == "exec") return RunForever(true);
  if (mode == "stall-idle") return RunStallIdle();
  if (mode == "repeat") return RunRepeat(argc > 2 ? std::atoi(argv[2]) : 5);
  std::fprintf(stderr, "usage: single_thread_host stalls|cycle N|hooks|forever|exec\n");
  return 2;
}
