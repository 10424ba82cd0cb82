#pragma once
// The load generator of `stallwatch load` and `stallwatch experiment`: HTTP/1.1 keep-alive
// GETs over non-blocking sockets driven by libevent, one event loop per thread.
//
// Threading: RunLoad() is called on any thread and blocks until the run ends; it starts and
// joins its own threads. `cancel` may be set from any thread or a signal handler.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "stallwatch/common/defaults.h"
#include "stallwatch/common/histogram.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

struct Url {
  std::string host;
  int port = 80;
  std::string path = "/";  // with the query
};
// Example URLs that errors show, one per kind of URL the CLI takes.
inline constexpr const char* kServerUrlExample = "http://127.0.0.1:8888/block?ms=500";
inline constexpr const char* kDaemonUrlExample =
    defaults::kDaemonUrl.data();  // NUL-terminated literal
// http://host[:port][/path[?query]]; IPv6 literals in brackets. Other schemes are rejected; the
// error names the accepted form with `example` (the kind of URL the caller wants).
StatusOr<Url> ParseUrl(const std::string& text, const char* example = kServerUrlExample);

struct LoadOptions {
  std::string url;
  uint64_t requests = 0;  // -n: stop sending after this many; 0 = no count bound (flag: 1..1e9)
  int concurrency = 1;    // -c: connections
  int threads = 1;
  std::chrono::nanoseconds duration{0};  // stop after this; 0 = no duration bound
  std::chrono::nanoseconds timeout = std::chrono::seconds(30);  // per request
  // Requests per second over all connections; 0 = closed loop (each connection sends its next
  // request when the previous answer arrives). With a rate, latency counts from the scheduled
  // send time, so a slow server cannot hide its queueing delay (no coordinated omission).
  double rate = 0;
  // At the end of `duration`, wait for the requests in flight (up to `timeout`) and count them,
  // instead of abandoning them as wrk does. A server that answers in batches (a loop blocked in
  // every handler flushes its replies together) is then measured without the batch cut off.
  bool drain = false;
  // When set, each connection first fetches this path (not counted) and the run starts once all
  // connections are open and have been answered once: no connection set-up in the figures.
  std::string warmup_path;
  // Hard bound on a run bounded by count only.
  std::chrono::nanoseconds max_time = std::chrono::seconds(300);
};

// Checks the options (one-line errors naming the accepted values).
Status ValidateLoadOptions(const LoadOptions& o);

struct LoadResult {
  std::string url;
  int concurrency = 0;
  int threads = 0;
  double rate = 0;
  uint64_t completed = 0;    // responses received (any status)
  uint64_t ok = 0;           // 2xx and 3xx
  uint64_t err_connect = 0;  // connection refused/reset while connecting
  uint64_t err_read = 0;     // connection lost or malformed response
  uint64_t err_write = 0;
  uint64_t err_timeout = 0;
  uint64_t err_status = 0;  // non-2xx/3xx responses
  uint64_t abandoned = 0;   // in flight when the duration ended (not errors, as wrk)
  // The first OS error of each kind (0: none), so a refused connection is named once.
  int connect_errno = 0;
  int read_errno = 0;
  int write_errno = 0;
  uint64_t bytes = 0;
  double elapsed_s = 0;  // first request sent → last response received (or the end)
  double qps = 0;        // completed / elapsed_s
  bool stopped_by_time = false;
  bool cancelled = false;
  HistogramCounts latency;  // of completed requests, ns

  uint64_t errors() const { return err_connect + err_read + err_write + err_timeout + err_status; }
  double mean_s() const;
  double quantile_s(double q) const;
  double max_s() const;
};

StatusOr<LoadResult> RunLoad(const LoadOptions& options, const std::atomic<bool>* cancel = nullptr);

}  // namespace stallwatch::cli
