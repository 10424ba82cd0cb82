// A minimal libevent evhttp "hello" server for the throughput A/B benchmark
// (bench/scripts/http_ab.sh). The same binary runs with and without the agent.
//
//   sw_bench_http --port=8899 --agent=on|off [--threshold-ms=50] [--interval-ms=10]
//                 [--endpoint=off] [--seconds=60] [--host-thread=yes|unshare]
//
// --host-thread=yes starts one idle thread of the host's own before serving: a multi-threaded
// host. glibc (malloc, stdio locks) and the kernel (fdget) take faster paths in a
// single-threaded process, so without it "agent off" also means "single-threaded" and the A/B
// charges that difference to the agent (docs/benchmarks.md §2.3).
//
// Agent options are the library defaults (threshold 50 ms, probe 10 ms, sampling on) unless
// given; the endpoint is "off" by default so no daemon is involved. Exits on SIGINT/SIGTERM or
// after --seconds (a bound in case the driver dies), printing one summary line on stderr.

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "bench_util.h"
#include "stallwatch/agent.h"

namespace sb = stallwatch::bench;

namespace {

void OnHello(evhttp_request* req, void* /*arg*/) {
  static const char kBody[] = "hello\n";
  evbuffer* out = evhttp_request_get_output_buffer(req);
  evbuffer_add_reference(out, kBody, sizeof kBody - 1, nullptr, nullptr);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
  evhttp_send_reply(req, 200, "OK", nullptr);
}

void OnStop(evutil_socket_t, short, void* arg) {
  event_base_loopbreak(static_cast<event_base*>(arg));
}

}  // namespace

int main(int argc, char** argv) {
  const int port = std::atoi(sb::Flag(argc, argv, "port", "8899").c_str());
  const bool with_agent = sb::Flag(argc, argv, "agent", "on") == "on";
  const int seconds = std::atoi(sb::Flag(argc, argv, "seconds", "60").c_str());
  signal(SIGPIPE, SIG_IGN);
  std::mutex host_mu;
  std::condition_variable host_cv;
  bool host_stop = false;
  std::thread host_thread;
  const std::string host_thread_mode = sb::Flag(argc, argv, "host-thread", "no");
  if (host_thread_mode == "yes" || host_thread_mode == "unshare") {
    host_thread = std::thread([&] {
      // "unshare": the thread gives up its share of the file table, so the kernel's fdget fast
      // path (file table not shared) comes back for the loop thread; glibc stays multi-threaded.
      if (host_thread_mode == "unshare") ::unshare(CLONE_FILES);
      std::unique_lock<std::mutex> l(host_mu);
      host_cv.wait(l, [&] { return host_stop; });
    });
  }
  event_base* base = event_base_new();
  evhttp* http = evhttp_new(base);
  evhttp_set_gencb(http, OnHello, nullptr);
  if (evhttp_bind_socket(http, "127.0.0.1", static_cast<uint16_t>(port)) != 0) {
    std::fprintf(stderr, "sw_bench_http: cannot bind 127.0.0.1:%d\n", port);
    return 1;
  }
  std::unique_ptr<stallwatch::Agent> agent;
  if (with_agent) {
    stallwatch::Options o;
    o.loop_name = "http";
    o.endpoint = sb::Flag(argc, argv, "endpoint", "off");
    const std::string thr = sb::Flag(argc, argv, "threshold-ms", "");
    if (!thr.empty()) {
      o.stall_threshold =
          std::chrono::nanoseconds(static_cast<int64_t>(std::atof(thr.c_str()) * 1e6));
    }
    const std::string iv = sb::Flag(argc, argv, "interval-ms", "");
    if (!iv.empty()) {
      o.probe_interval =
          std::chrono::nanoseconds(static_cast<int64_t>(std::atof(iv.c_str()) * 1e6));
    }
    auto a = stallwatch::Agent::Attach(base, o);
    if (!a.ok()) {
      std::fprintf(stderr, "sw_bench_http: attach: %s\n", a.status().ToString().c_str());
      return 1;
    }
    agent = std::move(*a);
  }
  event* sigint = evsignal_new(base, SIGINT, OnStop, base);
  event* sigterm = evsignal_new(base, SIGTERM, OnStop, base);
  event* limit = evtimer_new(base, OnStop, base);
  event_add(sigint, nullptr);
  event_add(sigterm, nullptr);
  timeval tv{seconds, 0};
  event_add(limit, &tv);
  std::fprintf(stderr, "sw_bench_http: listening on 127.0.0.1:%d, agent %s\n", port,
               with_agent ? "on" : "off");
  event_base_dispatch(base);
  if (agent) {
    auto s = agent->Snapshot();
    std::fprintf(stderr,
                 "sw_bench_http: agent: boundaries %s, iterations %llu, stalls %llu, delay p50 "
                 "%.3f ms p99 %.3f ms max %.3f ms, utilization %.3f\n",
                 s.boundary_source.c_str(), static_cast<unsigned long long>(s.iterations),
                 static_cast<unsigned long long>(s.stalls_total), s.since_attach.p50.count() / 1e6,
                 s.since_attach.p99.count() / 1e6, s.since_attach.max.count() / 1e6,
                 s.since_attach.utilization);
    agent.reset();
  }
  event_free(sigint);
  event_free(sigterm);
  event_free(limit);
  evhttp_free(http);
  event_base_free(base);
  if (host_thread.joinable()) {
    {
      std::lock_guard<std::mutex> l(host_mu);
      host_stop = true;
    }
    host_cv.notify_all();
    host_thread.join();
  }
  return 0;
}
