#include "load_report.h"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

namespace stallwatch::cli {

namespace {
std::string Ms(double s) {
  char buf[32];
  if (s >= 10) {
    std::snprintf(buf, sizeof buf, "%.2fs", s);
  } else if (s >= 0.001) {
    std::snprintf(buf, sizeof buf, "%.2fms", s * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0fus", s * 1e6);
  }
  return buf;
}
}  // namespace

namespace {
// " (Connection refused)" for a nonzero errno, "" otherwise.
std::string ErrnoNote(int err) {
  return err != 0 ? std::string(" (") + std::strerror(err) + ")" : std::string();
}
}  // namespace

std::string FailedRunReason(const LoadResult& r) {
  if (r.ok > 0 || r.errors() == 0) {
    return "";
  }
  struct Kind {
    uint64_t n;
    const char* what;
    int err;
  };
  const Kind kinds[] = {{r.err_connect, "connect", r.connect_errno},
                        {r.err_read, "read", r.read_errno},
                        {r.err_write, "write", r.write_errno},
                        {r.err_timeout, "timeout", 0},
                        {r.err_status, "non-2xx/3xx status", 0}};
  const Kind* most = &kinds[0];
  for (const Kind& k : kinds) {
    if (k.n > most->n) {
      most = &k;
    }
  }
  std::string why = most->what;
  if (most->err != 0) {
    why += std::string(": ") + std::strerror(most->err);
  }
  if (most->err == ECONNREFUSED) {
    why += " (is the server running at " + r.url + "?)";
  }
  return "all " + std::to_string(r.errors()) + " request" + (r.errors() == 1 ? "" : "s") +
         " failed; " + std::to_string(most->n) + " of them " + why;
}

std::string FormatLoadText(const LoadResult& r) {
  char buf[512];
  std::string out;
  std::snprintf(
      buf, sizeof buf, "load %s: %d connection%s, %d thread%s%s\n", r.url.c_str(), r.concurrency,
      r.concurrency == 1 ? "" : "s", r.threads, r.threads == 1 ? "" : "s",
      r.rate > 0
          ? (", fixed rate " + std::to_string(static_cast<int64_t>(r.rate)) + " req/s").c_str()
          : "");
  out += buf;
  std::snprintf(buf, sizeof buf, "  Requests:      %llu completed in %.2f s (%llu ok)%s\n",
                static_cast<unsigned long long>(r.completed), r.elapsed_s,
                static_cast<unsigned long long>(r.ok), r.cancelled ? " — interrupted" : "");
  out += buf;
  std::snprintf(buf, sizeof buf, "  Requests/sec:  %.2f\n", r.qps);
  out += buf;
  std::snprintf(buf, sizeof buf, "  Transfer/sec:  %.2f KB\n",
                r.elapsed_s > 0 ? static_cast<double>(r.bytes) / 1024 / r.elapsed_s : 0);
  out += buf;
  std::snprintf(buf, sizeof buf, "  Latency:       mean %s  p50 %s  p95 %s  p99 %s  max %s\n",
                Ms(r.mean_s()).c_str(), Ms(r.quantile_s(0.5)).c_str(),
                Ms(r.quantile_s(0.95)).c_str(), Ms(r.quantile_s(0.99)).c_str(),
                Ms(r.max_s()).c_str());
  out += buf;
  std::snprintf(buf, sizeof buf,
                "  Errors:        %llu (connect %llu%s, read %llu%s, write %llu%s, timeout %llu, "
                "non-2xx/3xx %llu)\n",
                static_cast<unsigned long long>(r.errors()),
                static_cast<unsigned long long>(r.err_connect), ErrnoNote(r.connect_errno).c_str(),
                static_cast<unsigned long long>(r.err_read), ErrnoNote(r.read_errno).c_str(),
                static_cast<unsigned long long>(r.err_write), ErrnoNote(r.write_errno).c_str(),
                static_cast<unsigned long long>(r.err_timeout),
                static_cast<unsigned long long>(r.err_status));
  out += buf;
  if (r.abandoned > 0) {
    std::snprintf(buf, sizeof buf, "  In flight at the end (not counted): %llu\n",
                  static_cast<unsigned long long>(r.abandoned));
    out += buf;
  }
  return out;
}

nlohmann::json LoadResultToJson(const LoadResult& r) {
  return nlohmann::json{
      {"url", r.url},
      {"concurrency", r.concurrency},
      {"threads", r.threads},
      {"rate", r.rate},
      {"requests", r.completed},
      {"ok", r.ok},
      {"errors", r.errors()},
      {"errors_by_kind",
       {{"connect", r.err_connect},
        {"read", r.err_read},
        {"write", r.err_write},
        {"timeout", r.err_timeout},
        {"status", r.err_status}}},
      {"first_errors",
       {{"connect", r.connect_errno != 0 ? std::strerror(r.connect_errno) : ""},
        {"read", r.read_errno != 0 ? std::strerror(r.read_errno) : ""},
        {"write", r.write_errno != 0 ? std::strerror(r.write_errno) : ""}}},
      {"abandoned", r.abandoned},
      {"bytes", r.bytes},
      {"elapsed_s", r.elapsed_s},
      {"qps", r.qps},
      {"latency_s",
       {{"mean", r.mean_s()},
        {"p50", r.quantile_s(0.5)},
        {"p90", r.quantile_s(0.9)},
        {"p95", r.quantile_s(0.95)},
        {"p99", r.quantile_s(0.99)},
        {"max", r.max_s()}}},
      {"stopped_by_time", r.stopped_by_time},
      {"cancelled", r.cancelled},
  };
}

}  // namespace stallwatch::cli
