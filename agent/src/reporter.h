#pragma once
// The reporter: a bounded queue of findings drained by the agent's own thread into a sink
// (JSON Lines file, stderr, the daemon). The watchdog never blocks on it: when the queue is full
// the oldest finding is dropped and counted.
//
// Threading: Submit() and Announce() from any thread (brief lock, no I/O). The enricher and the
// sink's methods run on the reporter thread, which has a file table of its own
// (platform::DetachFileTable): the sink's socket or file is never among the host's fds. The sink
// is constructed on the attaching thread (MakeSink) and destroyed on the reporter thread. Hooks
// are the host's code and may use the host's fds, so they run not on the reporter thread but on
// a hook thread that shares the host's table, started by the first SetHooks(). Hooks run
// without any of the reporter's locks held: a hook may call SetHooks, RemoveHooks or
// FlushAndRemoveHooks (a hook detaching its own loop), and a slow hook holds up only the hook
// thread. RemoveHooks called elsewhere waits for a call of that loop's hooks in progress, so
// that after it returns they are not running and are never called again.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "stallwatch/findings.h"
#include "stallwatch/status.h"

namespace stallwatch::agent::internal {

using Finding = std::variant<StallFinding, DelayFinding, CallsFinding>;

// Set by `stallwatch run` for the program it starts: the abstract Unix socket name it listens
// on for "a loop is watched" datagrams (cli/src/run.cc uses the same name).
inline constexpr const char* kRunNotifyEnv = "STALLWATCH_RUN_NOTIFY";

// Where findings go. Its methods are called on the reporter thread only (it is constructed on
// the attaching thread and destroyed on the reporter thread when the reporter stops).
class Sink {
 public:
  virtual ~Sink() = default;
  // Delivers one finding. Returns false when the endpoint cannot take it now; the reporter
  // keeps it queued and calls again after RetryDelay().
  virtual bool Send(const Finding& f) = 0;
  // How long to wait before retrying after a failed Send (the sink's backoff).
  virtual std::chrono::milliseconds RetryDelay() { return std::chrono::milliseconds(100); }
  virtual std::string Describe() const = 0;
  // A loop was attached (the reporter thread calls it soon after Reporter::Announce): the
  // daemon transport connects, or sends a new hello, so the loop is visible before its first
  // report window. Best effort: a daemon that is down gets the loop in the hello of the
  // connection that the next finding makes.
  virtual void Announce(const std::string& /*service*/, const std::string& /*loop*/) {}
};

struct Endpoint {
  enum class Kind { kOff, kStderr, kFile, kUnix, kTcp } kind = Kind::kOff;
  std::string path;  // file / unix
  std::string host;  // tcp
  int port = 0;
  std::string token_file;  // tcp: the daemon's shared token is read from it at each connection
};
// Accepted forms: unix:/path, tcp:host:port, file:/path, stderr, off.
StatusOr<Endpoint> ParseEndpoint(const std::string& text);
// Creates the sink for an endpoint (the daemon transport for unix:/tcp:). A file: endpoint that
// cannot be written (CheckFileEndpoint) is reported on stderr here, at once; `queue_capacity` is
// the reporter's, for that line.
std::unique_ptr<Sink> MakeSink(const Endpoint& e, size_t queue_capacity);
// Whether a file: endpoint's path can be written: an existing file that is not a folder and is
// writable, or a missing file in an existing, writable folder. Only stat/access: no fd opened.
Status CheckFileEndpoint(const std::string& path);

struct ReporterHooks {
  std::function<void(const StallFinding&)> on_stall;
  std::function<void(const DelayFinding&)> on_delay;
};

class Reporter {
 public:
  Reporter(std::unique_ptr<Sink> sink, size_t capacity);
  ~Reporter();  // delivers what it can within 1 s, then stops and joins its thread
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  // Called on any thread. Never blocks on I/O.
  void Submit(Finding f);
  // Called on any thread (the watchdog). Never blocks on I/O: the sink hears of the loop on the
  // reporter thread (Sink::Announce), and so does `stallwatch run` when it started the program
  // (STALLWATCH_RUN_NOTIFY, cli/src/run.h).
  // `what`: what the loop is, for `stallwatch run`'s line ("libevent", "epoll, python").
  void Announce(std::string service, std::string loop, std::string what = "");
  // Hooks run on the hook thread, in submission order; a loop's hooks are keyed by its name.
  // Call on a host thread (the hook thread is created here and shares the caller's file table).
  void SetHooks(const std::string& loop, ReporterHooks hooks);
  void RemoveHooks(const std::string& loop);
  // Waits (at most `timeout`) until every finding submitted so far went through the hooks, then
  // removes the loop's hooks: after a detach, its hooks are not called again. Returns false on
  // timeout (the hooks are removed all the same). On the hook thread (inside a hook) it does not
  // wait.
  bool FlushAndRemoveHooks(const std::string& loop, std::chrono::milliseconds timeout);
  // Waits (at most `timeout`) until the sink took every finding submitted so far; returns at
  // once (false) while the sink refuses them (an absent daemon does not hold up the caller).
  // Any thread but the reporter's. Returns whether everything was delivered.
  bool Drain(std::chrono::milliseconds timeout);
  // Runs on the reporter thread on every finding before the hooks and the sink (e.g. to add
  // file:line to stack frames). Set before the first Submit(), on the submitting thread or one
  // ordered before it (the reporter thread reads it without a lock); destroyed on the reporter
  // thread when it stops.
  void SetEnricher(std::function<void(Finding&)> enrich) { enrich_ = std::move(enrich); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  void Run();
  void RunHooks();
  void CallHooks(const Finding& f);

  std::unique_ptr<Sink> sink_;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<uint64_t, Finding>> queue_;  // (sequence, finding)
  struct Announced {
    std::string service, loop, what;
  };
  std::vector<Announced> announced_;  // not yet told
  std::string run_notify_;  // abstract socket name of a `stallwatch run` parent, "" if none
  uint64_t next_seq_ = 0;
  uint64_t hooked_seq_ = 0;  // findings with a lower sequence number went through the hooks
  // Shared with the hook thread's call in progress, so that a hook removing itself does not
  // destroy the function it runs in.
  std::vector<std::pair<std::string, std::shared_ptr<const ReporterHooks>>> hooks_;
  std::string calling_loop_;  // with hooks_mu_: the loop whose hooks run now (empty: none)
  bool calling_ = false;
  std::condition_variable hooks_idle_cv_;  // with hooks_mu_: calling_ became false
  std::function<void(Finding&)> enrich_;
  std::mutex hooks_mu_;
  bool stop_ = false;
  std::atomic<uint64_t> dropped_{0};
  bool sink_refusing_ = false;       // with mu_: the sink's last Send failed
  std::condition_variable sent_cv_;  // with mu_: a finding was delivered, or the sink refused
  std::thread thread_;
  // The hook thread: findings after enrichment, bounded like the queue (overflow is dropped and
  // counted in dropped_).
  std::mutex hook_mu_;
  std::condition_variable hook_cv_;
  std::condition_variable hook_done_cv_;
  std::deque<std::pair<uint64_t, Finding>> hook_queue_;
  uint64_t hook_running_seq_ = UINT64_MAX;  // the finding the hooks are running on, if any
  bool hook_stop_ = false;
  std::thread hook_thread_;
  std::condition_variable progress_cv_;  // with mu_: hooked_seq_ moved
};

}  // namespace stallwatch::agent::internal
