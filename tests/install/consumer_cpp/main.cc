#include <event2/event.h>
#include <stallwatch/agent.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

using namespace std::chrono_literals;

int main() {
  event_base* base = event_base_new();
  std::atomic<int> cpu_stalls{0};
  auto agent = stallwatch::Agent::Attach(
      base, {.stall_threshold = 50ms,
             .endpoint = "off",
             .on_stall = [&](const stallwatch::StallFinding& f) {
               // cpu, or starved when other processes hold the cores.
               if (!f.ongoing && (f.stall_class == stallwatch::StallClass::kCpu ||
                                  f.stall_class == stallwatch::StallClass::kStarved)) {
                 ++cpu_stalls;
               }
             }});
  if (!agent.ok()) {
    std::fprintf(stderr, "%s\n", agent.status().ToString().c_str());
    return 1;
  }
  event* ev = evtimer_new(
      base,
      [](evutil_socket_t, short, void*) {
        const auto end = std::chrono::steady_clock::now() + 150ms;
        while (std::chrono::steady_clock::now() < end) {
        }
      },
      nullptr);
  timeval tv{0, 50000};
  evtimer_add(ev, &tv);
  event_base_dispatch(base);
  event_free(ev);
  agent->reset();
  event_base_free(base);
  if (cpu_stalls.load() != 1) {
    std::fprintf(stderr, "expected one cpu stall, got %d\n", cpu_stalls.load());
    return 1;
  }
  std::puts("caught cpu stall");
  return 0;
}
