#pragma once
// The daemon an experiment reports to: a stallwatchd already running with the default socket and
// HTTP address, or one this command starts (the stallwatchd next to its own binary) on a private
// socket and loopback port, and stops when done.

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "stallwatch/status.h"

namespace stallwatch::cli {

// How many stalls of a daemon's `/api/v1/stalls` answer are this experiment's own: reported by
// process `pid` and started at or after `since_ns` (Unix ns). A shared daemon also holds other
// services' stalls and this process's earlier ones; they are not counted. Pure.
StatusOr<size_t> CountOwnStalls(const std::string& stalls_body, int64_t pid, int64_t since_ns);

class ExperimentDaemon {
 public:
  ExperimentDaemon() = default;
  ~ExperimentDaemon();  // stops the daemon if this object started it
  ExperimentDaemon(const ExperimentDaemon&) = delete;
  ExperimentDaemon& operator=(const ExperimentDaemon&) = delete;

  // Finds a running daemon or starts one. NotFound when neither is possible.
  [[nodiscard]] Status Acquire();
  // Uses the daemon the user named: its HTTP API at `url` must answer; findings go to `endpoint`
  // ("" = the default socket). Unavailable, naming the URL, when it does not answer.
  [[nodiscard]] Status UseRunning(const std::string& url, const std::string& endpoint);
  const std::string& endpoint() const { return endpoint_; }  // for the agent
  const std::string& url() const { return url_; }            // HTTP API
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
  std::string dir_;
  std::string endpoint_;
  std::string url_;
};

}  // namespace stallwatch::cli
