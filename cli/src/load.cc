#include "load.h"

#include <event2/event.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "http_response.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/duration.h"

namespace stallwatch::cli {

namespace {

constexpr uint64_t kMaxRequests = 1'000'000'000;
constexpr double kMaxRate = 1e6;

using Head = ResponseHead;
using Parse = ParseResult;

}  // namespace

namespace {

struct Shared {
  const LoadOptions* o = nullptr;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string request;
  std::string warmup_request;  // "" without warm-up
  std::atomic<uint64_t> issued{0};
  int64_t send_for_ns = 0;   // no new request after start + this
  int64_t end_after_ns = 0;  // the run ends at start + this at the latest
  const std::atomic<bool>* cancel = nullptr;
};

class Worker;

struct Conn {
  Worker* w = nullptr;
  int fd = -1;
  event* rev = nullptr;
  event* wev = nullptr;
  event* rate_ev = nullptr;
  event* retry_ev = nullptr;  // after a failed connect: retry a little later, not at once
  enum class State {
    kIdle,
    kWaitingSlot,
    kConnecting,
    kSending,
    kReading,
    kDone
  } state = State::kIdle;
  size_t sent = 0;
  std::string in;
  Head head;
  int64_t sent_ns = 0;   // when the request was written (timeouts)
  int64_t sched_ns = 0;  // when it was meant to be sent (latency)
  bool warmup = false;   // this exchange is the uncounted warm-up
};

class Worker {
 public:
  Worker(Shared* s, int conns, double rate) : s_(s), rate_(rate) {
    base_ = event_base_new();
    conns_.resize(static_cast<size_t>(conns));
    for (auto& c : conns_) {
      c.w = this;
      if (rate_ > 0) {
        c.rate_ev = evtimer_new(base_, &Worker::OnRateTimer, &c);
      }
      c.retry_ev = evtimer_new(base_, &Worker::OnRetryTimer, &c);
    }
    sweep_ = event_new(base_, -1, EV_PERSIST, &Worker::OnSweep, this);
    end_ = evtimer_new(base_, &Worker::OnEnd, this);
  }
  ~Worker() {
    for (auto& c : conns_) {
      CloseConn(&c);
      if (c.rate_ev != nullptr) {
        event_free(c.rate_ev);
      }
      event_free(c.retry_ev);
    }
    event_free(sweep_);
    event_free(end_);
    event_base_free(base_);
  }

  void Run() {
    const timeval sweep{0, 20'000};
    event_add(sweep_, &sweep);
    active_ = static_cast<int>(conns_.size());
    if (!s_->warmup_request.empty()) {
      // The warm-up is bounded by the timeout (sweep) and the run's own end.
      AddEndTimer(MonotonicNanos() + s_->end_after_ns);
      warm_left_ = active_;
      for (auto& c : conns_) {
        c.warmup = true;
        c.sched_ns = MonotonicNanos();
        Send(&c);
      }
    } else {
      BeginRun();
    }
    if (active_ > 0) {
      event_base_dispatch(base_);
    }
    for (auto& c : conns_) {
      if (c.state == Conn::State::kConnecting || c.state == Conn::State::kSending ||
          c.state == Conn::State::kReading) {
        ++r_.abandoned;
      }
    }
  }

  void BeginRun() {
    start_ns_ = MonotonicNanos();
    send_deadline_ns_ = start_ns_ + s_->send_for_ns;
    AddEndTimer(start_ns_ + s_->end_after_ns);
    for (auto& c : conns_) {
      if (c.state != Conn::State::kDone) {
        Next(&c);
      }
    }
  }

  void AddEndTimer(int64_t at_ns) {
    const int64_t left = std::max<int64_t>(at_ns - MonotonicNanos(), 0);
    const timeval end{static_cast<time_t>(left / 1'000'000'000),
                      static_cast<suseconds_t>(left % 1'000'000'000 / 1000)};
    event_add(end_, &end);
  }

  // A connection finished (or failed) its warm-up exchange.
  void WarmedUp(Conn* c) {
    c->warmup = false;
    c->state = Conn::State::kIdle;
    if (--warm_left_ == 0) {
      BeginRun();
    }
  }

  LoadResult& result() { return r_; }
  int64_t first_send_ns() const { return first_send_ns_; }
  int64_t last_done_ns() const { return last_done_ns_; }

 private:
  // Picks the connection's next request, or retires it.
  void Next(Conn* c) {
    const int64_t now = MonotonicNanos();
    if ((s_->cancel != nullptr && s_->cancel->load(std::memory_order_relaxed)) ||
        now >= send_deadline_ns_ ||
        (s_->o->requests != 0 && s_->issued.fetch_add(1) >= s_->o->requests)) {
      Retire(c);
      return;
    }
    if (rate_ > 0) {
      const int64_t sched =
          start_ns_ + static_cast<int64_t>(static_cast<double>(rate_seq_++) * 1e9 / rate_);
      c->sched_ns = sched;
      if (sched > now) {
        c->state = Conn::State::kWaitingSlot;
        const int64_t d = sched - now;
        const timeval tv{static_cast<time_t>(d / 1'000'000'000),
                         static_cast<suseconds_t>(d % 1'000'000'000 / 1000)};
        evtimer_add(c->rate_ev, &tv);
        return;
      }
    } else {
      c->sched_ns = now;
    }
    Send(c);
  }

  void Retire(Conn* c) {
    CloseConn(c);
    c->state = Conn::State::kDone;
    if (--active_ == 0) {
      event_base_loopbreak(base_);
    }
  }

  void Send(Conn* c) {
    if (first_send_ns_ == 0 && !c->warmup) {
      first_send_ns_ = std::max(c->sched_ns, start_ns_);
    }
    c->sent = 0;
    c->in.clear();
    c->head = Head{};
    c->sent_ns = MonotonicNanos();
    if (c->fd < 0) {
      c->fd = socket(s_->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (c->fd < 0) {
        return Fail(c, &r_.err_connect, errno);
      }
      const int one = 1;
      setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      c->rev = event_new(base_, c->fd, EV_READ | EV_PERSIST, &Worker::OnReadable, c);
      c->wev = event_new(base_, c->fd, EV_WRITE, &Worker::OnWritable, c);
      event_add(c->rev, nullptr);
      if (connect(c->fd, reinterpret_cast<const sockaddr*>(&s_->addr), s_->addr_len) != 0 &&
          errno != EINPROGRESS) {
        return Fail(c, &r_.err_connect, errno);
      }
      c->state = Conn::State::kConnecting;
      event_add(c->wev, nullptr);
      return;
    }
    c->state = Conn::State::kSending;
    Write(c);
  }

  void Write(Conn* c) {
    const std::string& req = c->warmup ? s_->warmup_request : s_->request;
    while (c->sent < req.size()) {
      const ssize_t n = send(c->fd, req.data() + c->sent, req.size() - c->sent, MSG_NOSIGNAL);
      if (n > 0) {
        c->sent += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        event_add(c->wev, nullptr);
        return;
      } else {
        return Fail(c, &r_.err_write, errno);
      }
    }
    c->state = Conn::State::kReading;
  }

  static void OnWritable(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    Worker* w = c->w;
    if (c->state == Conn::State::kConnecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        return w->Fail(c, &w->r_.err_connect, err);
      }
      c->state = Conn::State::kSending;
    }
    if (c->state == Conn::State::kSending) {
      w->Write(c);
    }
  }

  static void OnReadable(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    Worker* w = c->w;
    char buf[16384];
    bool eof = false;
    for (;;) {
      const ssize_t n = recv(c->fd, buf, sizeof buf, 0);
      if (n > 0) {
        c->in.append(buf, static_cast<size_t>(n));
        w->r_.bytes += static_cast<uint64_t>(n);
        if (static_cast<size_t>(n) < sizeof buf) {
          break;
        }
      } else if (n == 0) {
        eof = true;
        break;
      } else if (errno == EINTR) {
        continue;
      } else if (errno == EAGAIN) {
        break;
      } else {
        if (c->state == Conn::State::kConnecting) {
          return w->Fail(c, &w->r_.err_connect, errno);
        }
        return w->Fail(c, &w->r_.err_read, errno);
      }
    }
    if (c->state != Conn::State::kReading && c->state != Conn::State::kSending) {
      // Unsolicited bytes or a close on an idle connection: drop the connection quietly.
      if (eof || !c->in.empty()) {
        w->CloseConn(c);
      }
      return;
    }
    if (!c->head.parsed) {
      const Parse p = ParseResponseHead(c->in, &c->head);
      if (p == Parse::kError) {
        return w->Fail(c, &w->r_.err_read);
      }
      if (p == Parse::kIncomplete) {
        if (eof) {
          return w->Fail(c, &w->r_.err_read);
        }
        return;
      }
    }
    size_t total = 0;
    const Parse p = ParseResponseBody(c->in, c->head, eof, &total);
    if (p == Parse::kError || (p == Parse::kIncomplete && eof)) {
      return w->Fail(c, &w->r_.err_read);
    }
    if (p == Parse::kIncomplete) {
      return;
    }
    w->Complete(c, eof);
  }

  void Complete(Conn* c, bool eof) {
    if (c->warmup) {
      if (eof || c->head.close) {
        CloseConn(c);
      }
      return WarmedUp(c);
    }
    const int64_t now = MonotonicNanos();
    const int64_t lat = std::max<int64_t>(now - c->sched_ns, 0);
    r_.latency.Add(static_cast<uint64_t>(lat));
    ++r_.completed;
    if (c->head.status >= 200 && c->head.status < 400) {
      ++r_.ok;
    } else {
      ++r_.err_status;
    }
    last_done_ns_ = now;
    if (eof || c->head.close) {
      CloseConn(c);
    }
    c->state = Conn::State::kIdle;
    Next(c);
  }

  // `err`: the errno of a failed call (0 when the failure is not an OS error).
  void Fail(Conn* c, uint64_t* counter, int err = 0) {
    ++*counter;
    int* first = counter == &r_.err_connect ? &r_.connect_errno
                 : counter == &r_.err_read  ? &r_.read_errno
                 : counter == &r_.err_write ? &r_.write_errno
                                            : nullptr;
    if (first != nullptr && *first == 0) {
      *first = err;
    }
    if (c->warmup) {
      CloseConn(c);
      return WarmedUp(c);
    }
    last_done_ns_ = MonotonicNanos();
    CloseConn(c);
    c->state = Conn::State::kIdle;
    if (counter == &r_.err_connect) {
      // A refused connection fails at once: pace the retries (and never recurse).
      c->state = Conn::State::kWaitingSlot;
      const timeval tv{0, 10'000};
      evtimer_add(c->retry_ev, &tv);
      return;
    }
    Next(c);
  }

  static void OnRetryTimer(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    c->state = Conn::State::kIdle;
    c->w->Next(c);
  }

  void CloseConn(Conn* c) {
    if (c->rev != nullptr) {
      event_free(c->rev);
    }
    if (c->wev != nullptr) {
      event_free(c->wev);
    }
    c->rev = c->wev = nullptr;
    if (c->fd >= 0) {
      close(c->fd);
    }
    c->fd = -1;
  }

  static void OnRateTimer(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    if (MonotonicNanos() >= c->w->send_deadline_ns_) {
      return c->w->Retire(c);
    }
    c->w->Send(c);
  }

  static void OnSweep(evutil_socket_t, short, void* arg) {
    auto* w = static_cast<Worker*>(arg);
    if (w->s_->cancel != nullptr && w->s_->cancel->load(std::memory_order_relaxed)) {
      w->r_.cancelled = true;
      event_base_loopbreak(w->base_);
      return;
    }
    const int64_t now = MonotonicNanos();
    const int64_t timeout = w->s_->o->timeout.count();
    for (auto& c : w->conns_) {
      const bool busy = c.state == Conn::State::kConnecting || c.state == Conn::State::kSending ||
                        c.state == Conn::State::kReading;
      if (busy && now - c.sent_ns > timeout) {
        w->Fail(&c, &w->r_.err_timeout);
      }
    }
  }

  static void OnEnd(evutil_socket_t, short, void* arg) {
    auto* w = static_cast<Worker*>(arg);
    w->r_.stopped_by_time = true;
    event_base_loopbreak(w->base_);
  }

  Shared* s_;
  double rate_;
  uint64_t rate_seq_ = 0;
  event_base* base_ = nullptr;
  event* sweep_ = nullptr;
  event* end_ = nullptr;
  std::vector<Conn> conns_;
  int active_ = 0;
  int warm_left_ = 0;
  int64_t start_ns_ = 0;
  int64_t send_deadline_ns_ = INT64_MAX;
  LoadResult r_;
  int64_t first_send_ns_ = 0;
  int64_t last_done_ns_ = 0;
};

}  // namespace

StatusOr<Url> ParseUrl(const std::string& text, const char* example) {
  const std::string form = std::string("expected http://host[:port][/path], e.g. ") + example;
  const std::string scheme = "http://";
  if (text.compare(0, scheme.size(), scheme) != 0) {
    return InvalidArgumentError("bad URL '" + text + "': " + form);
  }
  Url u;
  std::string rest = text.substr(scheme.size());
  const size_t slash = rest.find_first_of("/?");
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) {
    u.path = rest.substr(slash);
    if (u.path[0] == '?') {
      u.path = "/" + u.path;
    }
  }
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) {
      return InvalidArgumentError("bad URL '" + text + "': " + form);
    }
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        return InvalidArgumentError("bad URL '" + text + "': " + form);
      }
      port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port = authority.substr(colon + 1);
    }
  }
  if (u.host.empty()) {
    return InvalidArgumentError("bad URL '" + text + "': no host; " + form);
  }
  if (!port.empty() || authority.find(':') != std::string::npos) {
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) == 0 ||
        std::stoi(port) > 65535) {
      return InvalidArgumentError("bad port in URL '" + text + "': " + form);
    }
    u.port = std::stoi(port);
  }
  return u;
}

Status ValidateLoadOptions(const LoadOptions& o) {
  if (o.requests > kMaxRequests) {
    return InvalidArgumentError("-n/--requests must be in 1..1000000000");
  }
  if (o.concurrency < 1 || o.concurrency > 10000) {
    return InvalidArgumentError("-c/--concurrency must be in 1..10000");
  }
  if (o.threads < 1 || o.threads > 64) {
    return InvalidArgumentError("--threads must be in 1..64");
  }
  if (o.threads > o.concurrency) {
    return InvalidArgumentError("--threads must not exceed -c/--concurrency");
  }
  if (o.rate < 0 || !std::isfinite(o.rate) || o.rate > kMaxRate) {
    return InvalidArgumentError(
        "--rate must be a number of requests per second in 0.001..1000000, e.g. --rate 100");
  }
  if (o.timeout <= std::chrono::nanoseconds(0)) {
    return InvalidArgumentError("--timeout must be a positive duration, e.g. 5s");
  }
  if (o.duration < std::chrono::nanoseconds(0)) {
    return InvalidArgumentError("--duration must be a positive duration, e.g. 10s");
  }
  if (o.max_time <= std::chrono::nanoseconds(0)) {
    return InvalidArgumentError("--max-time must be a positive duration, e.g. 5m");
  }
  return ParseUrl(o.url).status();
}

double LoadResult::mean_s() const {
  return latency.total() == 0 ? 0 : static_cast<double>(latency.sum_ns()) / latency.total() / 1e9;
}
double LoadResult::quantile_s(double q) const {
  if (latency.total() == 0) {
    return 0;
  }
  return std::min(static_cast<double>(latency.ValueAtQuantile(q)),
                  static_cast<double>(latency.max_ns())) /
         1e9;
}
double LoadResult::max_s() const { return static_cast<double>(latency.max_ns()) / 1e9; }

StatusOr<LoadResult> RunLoad(const LoadOptions& o, const std::atomic<bool>* cancel) {
  if (Status st = ValidateLoadOptions(o); !st.ok()) {
    return st;
  }
  auto url = *ParseUrl(o.url);
  Shared s;
  s.o = &o;
  s.cancel = cancel;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(url.port);
  if (int rc = getaddrinfo(url.host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res) {
    return UnavailableError("cannot resolve " + url.host + ": " + gai_strerror(rc));
  }
  std::memcpy(&s.addr, res->ai_addr, res->ai_addrlen);
  s.addr_len = res->ai_addrlen;
  freeaddrinfo(res);
  std::string host_header =
      url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  if (url.port != 80) {
    host_header += ":" + port;
  }
  auto request = [&](const std::string& path) {
    return "GET " + path + " HTTP/1.1\r\nHost: " + host_header +
           "\r\nUser-Agent: stallwatch-load\r\nAccept: */*\r\n\r\n";
  };
  s.request = request(url.path);
  if (!o.warmup_path.empty()) {
    s.warmup_request = request(o.warmup_path);
  }

  LoadOptions eff = o;
  if (eff.requests == 0 && eff.duration.count() == 0) {
    eff.duration = std::chrono::seconds(10);
  }
  s.o = &eff;
  const int64_t started = MonotonicNanos();
  s.send_for_ns = eff.duration.count() > 0 ? eff.duration.count() : eff.max_time.count();
  // A count-bound run waits for its last answers (up to the timeout) within max_time.
  s.end_after_ns = s.send_for_ns;
  // Draining: the requests in flight when the duration ends are awaited (up to the timeout).
  if (eff.drain && eff.duration.count() > 0) {
    s.end_after_ns += eff.timeout.count();
  }

  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < eff.threads; ++i) {
    const int conns = eff.concurrency / eff.threads + (i < eff.concurrency % eff.threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(&s, conns, eff.rate / eff.threads));
  }
  std::vector<std::thread> threads;
  for (size_t i = 1; i < workers.size(); ++i) {
    threads.emplace_back([w = workers[i].get()] { w->Run(); });
  }
  workers[0]->Run();
  for (auto& t : threads) {
    t.join();
  }
  const int64_t end = MonotonicNanos();

  LoadResult r;
  r.url = o.url;
  r.concurrency = o.concurrency;
  r.threads = o.threads;
  r.rate = o.rate;
  int64_t first = 0, last = 0;
  for (auto& w : workers) {
    LoadResult& p = w->result();
    r.completed += p.completed;
    r.ok += p.ok;
    r.err_connect += p.err_connect;
    r.err_read += p.err_read;
    r.err_write += p.err_write;
    r.err_timeout += p.err_timeout;
    r.err_status += p.err_status;
    r.abandoned += p.abandoned;
    if (r.connect_errno == 0) {
      r.connect_errno = p.connect_errno;
    }
    if (r.read_errno == 0) {
      r.read_errno = p.read_errno;
    }
    if (r.write_errno == 0) {
      r.write_errno = p.write_errno;
    }
    r.bytes += p.bytes;
    r.stopped_by_time |= p.stopped_by_time;
    r.cancelled |= p.cancelled;
    r.latency.Merge(p.latency);
    if (w->first_send_ns() != 0 && (first == 0 || w->first_send_ns() < first)) {
      first = w->first_send_ns();
    }
    last = std::max(last, w->last_done_ns());
  }
  if (first == 0) {
    first = started;
  }
  if (last <= first) {
    last = end;
  }
  r.elapsed_s = static_cast<double>(last - first) / 1e9;
  r.qps = r.elapsed_s > 0 ? static_cast<double>(r.completed) / r.elapsed_s : 0;
  return r;
}

}  // namespace stallwatch::cli
