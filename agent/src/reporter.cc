#include "reporter.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "log.h"
#include "platform/proc.h"
#include "stallwatch/common/finding_json.h"
#include "stallwatch/common/log_text.h"

namespace stallwatch::agent::internal {

using namespace std::chrono_literals;

namespace {

// Text from outside (paths, environment values, resolver errors) goes into log lines through
// EscapeForLog; the bound is wider than its default because a path may be long and a message
// carries advice after it.
constexpr size_t kMaxLoggedText = 1024;

// Tells a `stallwatch run` parent that a loop of this process is watched: one datagram
// "PID LOOP\tWHAT" to the abstract Unix socket it named (cli/src/run.cc reads it). On the reporter
// thread, whose file table is its own: the host never sees the socket. Best effort, never blocks.
void NotifyRun(const std::string& name, const std::string& loop, const std::string& what) {
  sockaddr_un sa{};
  if (name.size() + 1 >= sizeof(sa.sun_path)) {
    return;
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return;
  }
  const std::string msg = std::to_string(platform::TargetPid()) + " " + loop + "\t" + what;
  (void)::sendto(fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&sa),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size()));
  ::close(fd);
}

std::string ToLine(const Finding& f) {
  std::string line = std::visit([](const auto& x) { return ToJsonLine(x); }, f);
  line.push_back('\n');
  return line;
}

bool WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

class FdSink : public Sink {
 public:
  // Constructed where the endpoint is set up (at attach, in the process that reports): a file
  // endpoint that cannot be written is said at once, not at the first write.
  FdSink(std::string path, bool is_stderr, size_t queue_capacity)
      : path_(std::move(path)), stderr_(is_stderr), queue_capacity_(queue_capacity) {
    if (stderr_) {
      return;
    }
    if (Status st = CheckFileEndpoint(path_); !st.ok()) {
      failing_ = true;
      Warn(st.message());
    }
  }
  ~FdSink() override {
    if (!stderr_ && fd_ >= 0) {
      ::close(fd_);
    }
  }
  bool Send(const Finding& f) override {
    if (fd_ < 0) {
      fd_ = stderr_ ? 2 : ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd_ < 0) {
        Failed(std::string("cannot open it: ") + std::strerror(errno));
        return false;
      }
    }
    if (!WriteAll(fd_, ToLine(f))) {
      const int err = errno;
      if (!stderr_) {
        ::close(fd_);
      }
      fd_ = -1;
      Failed(std::string("write failed: ") + std::strerror(err));
      return false;
    }
    if (failing_ && !stderr_) {
      failing_ = false;
      LogInfo("writing findings to file:{} again", EscapeForLog(path_, kMaxLoggedText));
    }
    return true;
  }
  std::chrono::milliseconds RetryDelay() override { return std::chrono::milliseconds(1000); }
  std::string Describe() const override { return stderr_ ? "stderr" : "file:" + path_; }

 private:
  // One line per failure streak.
  void Failed(const std::string& why) {
    if (failing_) {
      return;
    }
    failing_ = true;
    Warn(why);
  }
  void Warn(const std::string& why) {
    LogWarn(
        "findings cannot be written to {}: {}; they are kept in memory (at most {}, then the "
        "oldest are dropped and counted as findings_dropped) and written when it works, "
        "retried every 1 s",
        EscapeForLog(Describe(), kMaxLoggedText), EscapeForLog(why, kMaxLoggedText),
        queue_capacity_);
  }

  std::string path_;
  bool stderr_;
  size_t queue_capacity_;
  int fd_ = -1;
  bool failing_ = false;
};

class OffSink : public Sink {
 public:
  bool Send(const Finding&) override { return true; }
  std::string Describe() const override { return "off"; }
};

}  // namespace

std::unique_ptr<Sink> MakeDaemonSink(const Endpoint& e);  // daemon_sink.cc

Status CheckFileEndpoint(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return FailedPreconditionError(path + " is a folder; give a file path, e.g. file:" + path +
                                     "/findings.jsonl");
    }
    if (::access(path.c_str(), W_OK) != 0) {
      return FailedPreconditionError(path + ": " + std::strerror(errno));
    }
    return OkStatus();
  }
  if (errno != ENOENT) {
    return FailedPreconditionError(path + ": " + std::strerror(errno));
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  if (::stat(dir.c_str(), &st) != 0) {
    return FailedPreconditionError("folder " + dir + " does not exist (" + std::strerror(errno) +
                                   "); create it first");
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPreconditionError(dir + " is not a folder");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return FailedPreconditionError("cannot create a file in " + dir + ": " + std::strerror(errno));
  }
  return OkStatus();
}

StatusOr<Endpoint> ParseEndpoint(const std::string& text) {
  constexpr const char* kForms = "expected unix:/path, tcp:host:port, file:/path, stderr or off";
  Endpoint e;
  if (text == "off") {
    return e;
  }
  if (text == "stderr") {
    e.kind = Endpoint::Kind::kStderr;
    return e;
  }
  auto starts = [&](const char* p) { return text.rfind(p, 0) == 0; };
  if (starts("file:") || starts("unix:")) {
    e.kind = starts("file:") ? Endpoint::Kind::kFile : Endpoint::Kind::kUnix;
    e.path = text.substr(5);
    if (e.path.empty() || e.path[0] != '/') {
      return InvalidArgumentError("bad endpoint '" + text + "': the path must be absolute; " +
                                  kForms);
    }
    return e;
  }
  if (starts("tcp:")) {
    const std::string rest = text.substr(4);
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return InvalidArgumentError("bad endpoint '" + text + "': " + kForms);
    }
    e.kind = Endpoint::Kind::kTcp;
    e.host = rest.substr(0, colon);
    if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') {
      e.host = e.host.substr(1, e.host.size() - 2);
    }
    char* end = nullptr;
    const long port = std::strtol(rest.c_str() + colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) {
      return InvalidArgumentError("bad endpoint '" + text + "': port must be 1-65535; " + kForms);
    }
    e.port = static_cast<int>(port);
    return e;
  }
  return InvalidArgumentError("bad endpoint '" + text + "': " + kForms);
}

std::unique_ptr<Sink> MakeSink(const Endpoint& e, size_t queue_capacity) {
  switch (e.kind) {
    case Endpoint::Kind::kOff:
      return std::make_unique<OffSink>();
    case Endpoint::Kind::kStderr:
      return std::make_unique<FdSink>("", true, queue_capacity);
    case Endpoint::Kind::kFile:
      return std::make_unique<FdSink>(e.path, false, queue_capacity);
    case Endpoint::Kind::kUnix:
    case Endpoint::Kind::kTcp:
      return MakeDaemonSink(e);
  }
  return std::make_unique<OffSink>();
}

Reporter::Reporter(std::unique_ptr<Sink> sink, size_t capacity)
    : sink_(std::move(sink)), capacity_(capacity == 0 ? 1 : capacity) {
  // Read here, on the attaching thread: the environment is not read from agent threads.
  if (const char* n = std::getenv(kRunNotifyEnv); n != nullptr && *n != '\0') {
    run_notify_ = n;
  }
  thread_ = std::thread([this] { Run(); });
}

void Reporter::Announce(std::string service, std::string loop, std::string what) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    announced_.push_back({std::move(service), std::move(loop), std::move(what)});
  }
  cv_.notify_one();
}

Reporter::~Reporter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  // The reporter handed every finding to the hook thread before it stopped; the hook thread
  // runs the hooks on all of them, then ends.
  {
    std::lock_guard<std::mutex> lock(hook_mu_);
    hook_stop_ = true;
  }
  hook_cv_.notify_all();
  if (hook_thread_.joinable()) {
    hook_thread_.join();
  }
}

void Reporter::Submit(Finding f) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= capacity_) {
      queue_.pop_front();
      dropped_.fetch_add(1, std::memory_order_relaxed);
    }
    queue_.emplace_back(next_seq_++, std::move(f));
  }
  cv_.notify_one();
  progress_cv_.notify_all();
}

void Reporter::SetHooks(const std::string& loop, ReporterHooks hooks) {
  {
    std::lock_guard<std::mutex> lock(hooks_mu_);
    hooks_.emplace_back(loop, std::make_shared<const ReporterHooks>(std::move(hooks)));
  }
  std::lock_guard<std::mutex> hl(hook_mu_);
  if (!hook_thread_.joinable() && !hook_stop_) {
    hook_thread_ = std::thread([this] { RunHooks(); });
  }
}

void Reporter::RunHooks() {
  std::unique_lock<std::mutex> lock(hook_mu_);
  for (;;) {
    hook_cv_.wait(lock, [&] { return hook_stop_ || !hook_queue_.empty(); });
    if (hook_queue_.empty()) {
      return;  // stopping, and everything went through the hooks
    }
    auto [seq, f] = std::move(hook_queue_.front());
    hook_queue_.pop_front();
    hook_running_seq_ = seq;
    lock.unlock();
    CallHooks(f);
    lock.lock();
    hook_running_seq_ = UINT64_MAX;
    hook_done_cv_.notify_all();
  }
}

bool Reporter::Drain(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t last = next_seq_;  // findings with seq < last
  return sent_cv_.wait_until(lock, deadline, [&] {
    return sink_refusing_ || stop_ || queue_.empty() || queue_.front().first >= last;
  }) && !sink_refusing_;
}

bool Reporter::FlushAndRemoveHooks(const std::string& loop, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool done = true;
  bool has_hook_thread;
  {
    std::lock_guard<std::mutex> hl(hook_mu_);
    has_hook_thread = hook_thread_.joinable();
    if (has_hook_thread && hook_thread_.get_id() == std::this_thread::get_id()) {
      has_hook_thread = false;  // a hook detaching its own loop: cannot wait for itself
    }
  }
  if (has_hook_thread) {
    // 1. The reporter has passed every finding submitted so far to the hook thread.
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t last = next_seq_;  // findings with seq < last
    done = progress_cv_.wait_until(lock, deadline, [&] {
      for (const auto& e : queue_) {
        if (e.first >= hooked_seq_ && e.first < last) {
          return false;
        }
      }
      return true;
    });
    lock.unlock();
    // 2. The hook thread has run the hooks on them.
    if (done) {
      std::unique_lock<std::mutex> hl(hook_mu_);
      done = hook_done_cv_.wait_until(hl, deadline, [&] {
        if (hook_running_seq_ < last) {
          return false;
        }
        for (const auto& e : hook_queue_) {
          if (e.first < last) {
            return false;
          }
        }
        return true;
      });
    }
  }
  RemoveHooks(loop);
  return done;
}

void Reporter::CallHooks(const Finding& f) {
  const std::string& loop =
      std::visit([](const auto& x) -> const std::string& { return x.loop; }, f);
  std::vector<std::shared_ptr<const ReporterHooks>> matching;
  {
    std::lock_guard<std::mutex> hl(hooks_mu_);
    for (const auto& [name, h] : hooks_) {
      if (name == loop) {
        matching.push_back(h);
      }
    }
    if (matching.empty()) {
      return;
    }
    calling_loop_ = loop;
    calling_ = true;
  }
  try {
    for (const auto& h : matching) {
      if (auto* st = std::get_if<StallFinding>(&f); st && h->on_stall) {
        h->on_stall(*st);
      }
      if (auto* d = std::get_if<DelayFinding>(&f); d && h->on_delay) {
        h->on_delay(*d);
      }
    }
  } catch (...) {
    // Hooks are best effort; reporting goes on.
  }
  {
    std::lock_guard<std::mutex> hl(hooks_mu_);
    calling_ = false;
    calling_loop_.clear();
  }
  hooks_idle_cv_.notify_all();
}

void Reporter::RemoveHooks(const std::string& loop) {
  bool on_hook_thread;
  {
    std::lock_guard<std::mutex> hl(hook_mu_);
    on_hook_thread = hook_thread_.joinable() && hook_thread_.get_id() == std::this_thread::get_id();
  }
  std::unique_lock<std::mutex> lock(hooks_mu_);
  std::erase_if(hooks_, [&](const auto& h) { return h.first == loop; });
  // A call of this loop's hooks in progress finishes first (unless this is that call).
  if (!on_hook_thread) {
    hooks_idle_cv_.wait(lock, [&] { return !calling_ || calling_loop_ != loop; });
  }
}

void Reporter::Run() {
  using Clock = std::chrono::steady_clock;
  // The sink's connection and the enricher's ELF files live in a file table of the reporter's
  // own (platform::DetachFileTable); they are opened and closed on this thread only.
  platform::DetachFileTable();
  std::unique_lock<std::mutex> lock(mu_);
  Clock::time_point retry_at = Clock::time_point::min();  // sink refused: not before this
  Clock::time_point stop_deadline = Clock::time_point::max();
  uint64_t drops_seen = 0;   // dropped_ when last looked at
  bool drop_streak = false;  // drops reported, and no finding delivered since
  auto entry = [&](uint64_t seq) -> std::pair<uint64_t, Finding>* {
    for (auto& e : queue_) {
      if (e.first == seq) {
        return &e;
      }
    }
    return nullptr;
  };
  for (;;) {
    // 1. Every finding is enriched and handed to the hooks as soon as it arrives, whatever the
    //    sink does (an absent daemon must not hide findings from in-process consumers).
    while (true) {
      auto it = std::find_if(queue_.begin(), queue_.end(),
                             [&](const auto& e) { return e.first >= hooked_seq_; });
      if (it == queue_.end()) {
        break;
      }
      const uint64_t seq = it->first;
      Finding f = it->second;
      lock.unlock();
      try {
        if (enrich_) {
          enrich_(f);
        }
      } catch (...) {
        // Enrichment is best effort; reporting goes on.
      }
      bool hooked = false;
      {
        std::lock_guard<std::mutex> hl(hooks_mu_);
        hooked = !hooks_.empty();
      }
      if (hooked) {
        {
          std::lock_guard<std::mutex> hl(hook_mu_);
          if (hook_queue_.size() >= capacity_) {
            hook_queue_.pop_front();
            dropped_.fetch_add(1, std::memory_order_relaxed);
          }
          hook_queue_.emplace_back(seq, f);
        }
        hook_cv_.notify_one();
      }
      lock.lock();
      if (auto* e = entry(seq)) {
        e->second = std::move(f);  // unless dropped meanwhile
      }
      hooked_seq_ = seq + 1;
      progress_cv_.notify_all();
    }
    // 2. Loops attached since the last turn: the daemon hears of them before their first window.
    if (!announced_.empty()) {
      auto announced = std::move(announced_);
      announced_.clear();
      lock.unlock();
      for (const auto& a : announced) {
        try {
          sink_->Announce(a.service, a.loop);
          if (!run_notify_.empty()) {
            NotifyRun(run_notify_, a.loop, a.what);
          }
        } catch (...) {
          // Best effort; the loop's findings announce it anyway.
        }
      }
      lock.lock();
      continue;
    }
    // 3. Deliver the oldest finding, unless the sink asked to wait.
    const auto now = Clock::now();
    if (stop_ && stop_deadline == Clock::time_point::max()) {
      stop_deadline = now + 1s;
    }
    if (!queue_.empty() && now >= retry_at) {
      const uint64_t seq = queue_.front().first;
      Finding f = queue_.front().second;
      lock.unlock();
      bool sent = false;
      try {
        sent = sink_->Send(f);
      } catch (...) {
        sent = false;
      }
      lock.lock();
      sink_refusing_ = !sent;
      sent_cv_.notify_all();
      if (sent) {
        if (!queue_.empty() && queue_.front().first == seq) {
          queue_.pop_front();
        }
        retry_at = Clock::time_point::min();
        drop_streak = false;
        continue;
      }
      retry_at = Clock::now() + sink_->RetryDelay();
    }
    // Findings are never dropped without a line: one per streak of drops (until the sink takes
    // a finding again); the counter has them all.
    if (const uint64_t dropped = dropped_.load(std::memory_order_relaxed); dropped != drops_seen) {
      drops_seen = dropped;
      if (!drop_streak) {
        drop_streak = true;
        LogWarn(
            "findings dropped: {} undelivered findings are queued (the limit) while {} does not "
            "take them; the oldest are dropped and counted ({} so far: findings_dropped, "
            "stallwatch_agent_findings_dropped_total)",
            capacity_, EscapeForLog(sink_->Describe(), kMaxLoggedText), dropped);
      }
    }
    // 4. Stop: deliver what can be delivered within 1 s, then leave the rest (counted as queued).
    if (stop_ && (queue_.empty() || retry_at > Clock::now() || Clock::now() > stop_deadline)) {
      break;
    }
    auto ready = [&] {
      return stop_ || !announced_.empty() ||
             (!queue_.empty() && queue_.back().first >= hooked_seq_) ||
             (!queue_.empty() && Clock::now() >= retry_at);
    };
    if (queue_.empty() || retry_at == Clock::time_point::min()) {
      cv_.wait(lock, ready);
    } else {
      cv_.wait_until(lock, retry_at, ready);
    }
  }
  // Close the sink and the enricher's files on this thread: they belong to its file table.
  lock.unlock();
  sink_.reset();
  enrich_ = nullptr;
}

}  // namespace stallwatch::agent::internal
