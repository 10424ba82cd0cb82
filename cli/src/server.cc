#include "server.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "stallwatch/common/clock.h"
#include "stallwatch/common/duration.h"

namespace stallwatch::cli {

namespace {

using std::chrono::milliseconds;

// Keeps a compiler from turning a call into a tail call (the caller's frame would vanish from
// the stacks) or from deleting a busy loop.
inline void KeepFrame() { asm volatile("" ::: "memory"); }

volatile uint64_t g_cpu_sink = 0;

std::string QueryOf(evhttp_request* req) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* q = uri != nullptr ? evhttp_uri_get_query(uri) : nullptr;
  return q != nullptr ? q : "";
}

void Reply(evhttp_request* req, int code, const char* reason, const std::string& body,
           const char* content_type = "text/plain; charset=utf-8") {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", content_type);
  evbuffer* buf = evbuffer_new();
  evbuffer_add(buf, body.data(), body.size());
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

void ReplyBadRequest(evhttp_request* req, const std::string& message) {
  Reply(req, HTTP_BADREQUEST, "Bad Request", message + "\n");
}

// An eventfd read by the loop: other threads (and signal handlers) wake the loop with Notify().
class Waker {
 public:
  Waker() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Waker() {
    if (ev_ != nullptr) event_free(ev_);
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  // Called on the loop thread (setup).
  bool Bind(event_base* base, event_callback_fn cb, void* arg) {
    ev_ = event_new(base, fd_, EV_READ | EV_PERSIST, cb, arg);
    return ev_ != nullptr && event_add(ev_, nullptr) == 0;
  }
  // Called on any thread. Async-signal safe.
  void Notify() const {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof one);
  }
  // Called on the loop thread.
  void Drain() const {
    uint64_t v;
    [[maybe_unused]] ssize_t n = read(fd_, &v, sizeof v);
  }

 private:
  int fd_;
  event* ev_ = nullptr;
};

// Requests answered later (timer, worker, upstream). Their connection may close meanwhile:
// libevent then frees the request, so the close callback forgets it (req = nullptr).
struct Pending {
  evhttp_request* req = nullptr;
  evhttp_connection* evcon = nullptr;
  event* timer = nullptr;
  evhttp_connection* upstream = nullptr;
  int ms = 0;
  class PendingSet* owner = nullptr;
};

class PendingSet {
 public:
  // Called on the loop thread.
  Pending* Add(evhttp_request* req, int ms) {
    auto* p = new Pending{.req = req, .evcon = evhttp_request_get_connection(req), .ms = ms};
    p->owner = this;
    if (p->evcon != nullptr) evhttp_connection_set_closecb(p->evcon, &PendingSet::OnClose, this);
    set_.insert(p);
    return p;
  }
  // Called on the loop thread: replies (when the client is still there) and frees p.
  void Finish(Pending* p, int code, const char* reason, const std::string& body) {
    if (p->req != nullptr) Reply(p->req, code, reason, body);
    Release(p);
  }
  void Release(Pending* p) {
    if (p->timer != nullptr) event_free(p->timer);
    set_.erase(p);
    delete p;
  }
  // Called on the loop thread at shutdown: answers 503 to all and frees them.
  void FailAll() {
    for (Pending* p : std::vector<Pending*>(set_.begin(), set_.end())) {
      if (p->upstream != nullptr) evhttp_connection_free(p->upstream);
      Finish(p, 503, "Service Unavailable", "shutting down\n");
    }
  }
  bool Contains(Pending* p) const { return set_.count(p) != 0; }
  size_t size() const { return set_.size(); }

 private:
  static void OnClose(evhttp_connection* evcon, void* arg) {
    auto* self = static_cast<PendingSet*>(arg);
    for (Pending* p : self->set_) {
      if (p->evcon == evcon) {
        p->req = nullptr;
        p->evcon = nullptr;
      }
    }
  }
  std::unordered_set<Pending*> set_;
};

int ParseHostPort(const std::string& hp, std::string* host) {
  const auto colon = hp.rfind(':');
  if (colon == std::string::npos) return -1;
  *host = hp.substr(0, colon);
  try {
    const int port = std::stoi(hp.substr(colon + 1));
    return port > 0 && port < 65536 ? port : -1;
  } catch (...) {
    return -1;
  }
}

// Binds evhttp to bind:port; returns the bound port or -1 with errno-based message.
int BindHttp(evhttp* http, const std::string& bind, int port, std::string* error) {
  // Resolved here first: evhttp's own failure to resolve leaves errno at 0 ("Success").
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (const int rc = getaddrinfo(bind.c_str(), nullptr, &hints, &res); rc != 0 || res == nullptr) {
    *error = "cannot resolve --bind '" + bind + "': " + gai_strerror(rc) +
             "; expected an address or host name of this machine, e.g. 127.0.0.1, 0.0.0.0 or ::1";
    return -1;
  }
  freeaddrinfo(res);
  errno = 0;
  evhttp_bound_socket* bs = evhttp_bind_socket_with_handle(http, bind.c_str(), port);
  if (bs == nullptr) {
    const std::string why = errno != 0 ? std::strerror(errno) : "the address cannot be bound";
    *error = "cannot listen on " + bind + ":" + std::to_string(port) + ": " + why +
             " (try another --port, or --port 0 for any free port)";
    return -1;
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(evhttp_bound_socket_get_fd(bs), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    *error = std::string("getsockname: ") + std::strerror(errno);
    return -1;
  }
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

// The slow upstream: its own thread and loop, answering each request after a loop timer.
class SlowUpstream {
 public:
  static StatusOr<std::unique_ptr<SlowUpstream>> Start(milliseconds delay) {
    auto u = std::unique_ptr<SlowUpstream>(new SlowUpstream(delay));
    u->base_ = event_base_new();
    if (u->base_ == nullptr || !u->waker_->ok()) return InternalError("upstream: no event base");
    u->http_ = evhttp_new(u->base_);
    std::string error;
    u->port_ = BindHttp(u->http_, "127.0.0.1", 0, &error);
    if (u->port_ < 0) return UnavailableError("upstream: " + error);
    evhttp_set_gencb(u->http_, &SlowUpstream::OnRequest, u.get());
    u->waker_->Bind(u->base_, &SlowUpstream::OnWake, u.get());
    u->thread_ = std::thread([p = u.get()] { event_base_dispatch(p->base_); });
    return u;
  }
  ~SlowUpstream() {
    waker_->Notify();
    if (thread_.joinable()) thread_.join();
    pending_.FailAll();
    if (http_ != nullptr) evhttp_free(http_);
    waker_.reset();  // its event goes before the base
    if (base_ != nullptr) event_base_free(base_);
  }
  int port() const { return port_; }

 private:
  explicit SlowUpstream(milliseconds delay) : delay_(delay) {}
  static void OnWake(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<SlowUpstream*>(arg);
    self->waker_->Drain();
    event_base_loopbreak(self->base_);
  }
  static void OnRequest(evhttp_request* req, void* arg) {
    auto* self = static_cast<SlowUpstream*>(arg);
    auto ms = ParseMsParam(QueryOf(req), "ms", static_cast<int>(self->delay_.count()));
    if (!ms.ok()) return ReplyBadRequest(req, ms.status().message());
    Pending* p = self->pending_.Add(req, *ms);
    p->timer = evtimer_new(self->base_, &SlowUpstream::OnTimer, p);
    const timeval tv{*ms / 1000, (*ms % 1000) * 1000L};
    evtimer_add(p->timer, &tv);
  }
  static void OnTimer(evutil_socket_t, short, void* arg) {
    auto* p = static_cast<Pending*>(arg);
    p->owner->Finish(p, HTTP_OK, "OK",
                     "upstream answered after " + std::to_string(p->ms) + " ms\n");
  }

  milliseconds delay_;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  int port_ = -1;
  std::unique_ptr<Waker> waker_ = std::make_unique<Waker>();
  PendingSet pending_;
  std::thread thread_;
};

// A fixed pool of threads that sleep for /offload; finished jobs come back to the loop
// through a mutex-protected queue and an eventfd.
class WorkerPool {
 public:
  WorkerPool(int n, const Waker* waker) : waker_(waker) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~WorkerPool() { Stop(); }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  // Called on the loop thread.
  void Submit(Pending* p) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(p);
    }
    cv_.notify_one();
  }
  // Called on the loop thread: the jobs finished since the last call.
  std::vector<Pending*> TakeDone() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Pending*> out(done_.begin(), done_.end());
    done_.clear();
    return out;
  }
  // Jobs never started (at shutdown). Called after Stop().
  std::vector<Pending*> TakeQueued() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Pending*> out(jobs_.begin(), jobs_.end());
    jobs_.clear();
    return out;
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      Pending* p = jobs_.front();
      jobs_.pop_front();
      const int ms = p->ms;
      lock.unlock();
      SleepOnWorker(ms);
      lock.lock();
      done_.push_back(p);
      waker_->Notify();
    }
  }
  __attribute__((noinline)) static void SleepOnWorker(int ms) {
    const timespec ts{ms / 1000, (ms % 1000) * 1'000'000L};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr) == EINTR) {
    }
    KeepFrame();
  }

  const Waker* waker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending*> jobs_;
  std::deque<Pending*> done_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

__attribute__((noinline)) void BlockingSleepOnLoop(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1'000'000L};
  // Restarted after a signal so the loop is blocked for the full time.
  timespec rem{};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &rem) == EINTR) ts = rem;
  KeepFrame();
}

__attribute__((noinline)) void BurnCpuOnLoop(int ms) {
  const int64_t end = MonotonicNanos() + int64_t{ms} * 1'000'000;
  uint64_t x = g_cpu_sink;
  do {
    for (int i = 0; i < 20000; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  } while (MonotonicNanos() < end);
  g_cpu_sink = x;
  KeepFrame();
}

__attribute__((noinline)) StatusOr<std::string> BlockingUpstreamFetch(const std::string& host,
                                                                      int port,
                                                                      const std::string& path) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (getaddrinfo(host.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) {
    return UnavailableError("upstream: cannot resolve " + host);
  }
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return UnavailableError(std::string("socket: ") + std::strerror(errno));
  }
  // Still a blocking call, but one that gives up after 30 s instead of hanging the loop forever.
  const timeval limit{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  std::string body;
  Status st;
  const int rc = connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    st = UnavailableError(std::string("upstream connect: ") + std::strerror(errno));
  } else {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: upstream\r\n\r\n";
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      st = UnavailableError("upstream send failed");
    } else {
      char buf[4096];
      for (;;) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);  // blocks the loop: the point of the route
        if (n > 0) {
          body.append(buf, static_cast<size_t>(n));
        } else if (n == 0) {
          break;
        } else if (errno != EINTR) {
          st = UnavailableError(std::string("upstream recv: ") + std::strerror(errno));
          break;
        }
      }
    }
  }
  close(fd);
  KeepFrame();
  if (!st.ok()) return st;
  const auto sep = body.find("\r\n\r\n");
  if (body.compare(0, 5, "HTTP/") != 0 || sep == std::string::npos) {
    return UnavailableError("upstream sent no HTTP response");
  }
  return body.substr(sep + 4);
}

StatusOr<int> ParseMsParam(const std::string& query, const std::string& key, int fallback,
                           int max_ms) {
  evkeyvalq params{};
  if (evhttp_parse_query_str(query.c_str(), &params) != 0) {
    return InvalidArgumentError("malformed query string; expected ?" + key + "=<milliseconds>");
  }
  const char* v = evhttp_find_header(&params, key.c_str());
  std::string value = v != nullptr ? v : "";
  const bool present = v != nullptr;
  evhttp_clear_headers(&params);
  if (!present) return fallback;
  const std::string form = key + " must be an integer number of milliseconds in 0.." +
                           std::to_string(max_ms) + ", e.g. ?" + key + "=500";
  if (value.empty() || value.size() > 9 ||
      value.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgumentError("bad " + key + "='" + value + "': " + form);
  }
  const int ms = std::stoi(value);
  if (ms > max_ms) return InvalidArgumentError("bad " + key + "='" + value + "': " + form);
  return ms;
}

StatusOr<ControlSpec> ParseControlQuery(const std::string& query) {
  evkeyvalq params{};
  const std::string form =
      "expected /control/block?duration=200ms&period=1s&kind=cpu|sleep (durations: a number "
      "with ms or s, bare numbers are milliseconds; duration 1ms..60s, period >= duration)";
  if (evhttp_parse_query_str(query.c_str(), &params) != 0) {
    return InvalidArgumentError("malformed query string; " + form);
  }
  ControlSpec spec;
  Status st;
  auto duration = [&](const char* key, milliseconds* out) {
    const char* v = evhttp_find_header(&params, key);
    if (v == nullptr || !st.ok()) return;
    std::string text = v;
    if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) text += "ms";
    auto d = ParseDuration(text);
    if (!d.ok() || *d < milliseconds(1) || *d > std::chrono::seconds(60)) {
      st = InvalidArgumentError(std::string("bad ") + key + "='" + v + "': " + form);
      return;
    }
    *out = std::chrono::duration_cast<milliseconds>(*d);
  };
  duration("duration", &spec.duration);
  duration("period", &spec.period);
  if (const char* k = evhttp_find_header(&params, "kind"); k != nullptr && st.ok()) {
    if (std::strcmp(k, "cpu") == 0) {
      spec.cpu = true;
    } else if (std::strcmp(k, "sleep") != 0) {
      st = InvalidArgumentError(std::string("bad kind='") + k + "': " + form);
    }
  }
  evhttp_clear_headers(&params);
  if (!st.ok()) return st;
  if (spec.period < spec.duration) {
    return InvalidArgumentError("period must be at least duration; " + form);
  }
  return spec;
}

class Server::Impl {
 public:
  explicit Impl(ServerOptions o) : opts_(std::move(o)) {}

  ~Impl() {
    pool_.reset();
    if (control_timer_ != nullptr) event_free(control_timer_);
    for (event* e : signals_) event_free(e);
    if (http_ != nullptr) evhttp_free(http_);
    waker_.reset();
    agent_.reset();
    if (base_ != nullptr) event_base_free(base_);
    upstream_.reset();
  }

  Status Init() {
    if (opts_.workers < 1 || opts_.workers > 1024) {
      return InvalidArgumentError("--workers must be in 1..1024");
    }
    if (opts_.upstream.empty()) {
      auto u = SlowUpstream::Start(opts_.upstream_delay);
      if (!u.ok()) return u.status();
      upstream_ = std::move(*u);
      upstream_host_ = "127.0.0.1";
      upstream_port_ = upstream_->port();
    } else {
      upstream_port_ = ParseHostPort(opts_.upstream, &upstream_host_);
      if (upstream_port_ < 0) {
        return InvalidArgumentError("bad upstream '" + opts_.upstream + "': expected host:port");
      }
    }
    base_ = event_base_new();
    if (base_ == nullptr) return InternalError("event_base_new failed");
    waker_ = std::make_unique<Waker>();
    if (!waker_->ok() || !waker_->Bind(base_, &Impl::OnWake, this)) {
      return InternalError(std::string("eventfd: ") + std::strerror(errno));
    }
    http_ = evhttp_new(base_);
    std::string error;
    port_ = BindHttp(http_, opts_.bind, opts_.port, &error);
    if (port_ < 0) return UnavailableError(error);
    evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_gencb(http_, &Impl::OnRequest, this);
    pool_ = std::make_unique<WorkerPool>(opts_.workers, waker_.get());
    if (opts_.handle_signals) {
      for (int sig : {SIGINT, SIGTERM}) {
        event* e = evsignal_new(base_, sig, &Impl::OnSignal, this);
        evsignal_add(e, nullptr);
        signals_.push_back(e);
      }
    }
    return OkStatus();
  }

  Status Run() {
    if (opts_.attach_agent) {
      Options o = Options::FromEnvironment(Options{});
      if (opts_.stall_threshold) o.stall_threshold = *opts_.stall_threshold;
      if (!opts_.endpoint.empty()) o.endpoint = opts_.endpoint;
      if (!opts_.service.empty()) o.service = opts_.service;
      o.loop_name = opts_.loop_name;
      o.on_stall = opts_.on_stall;
      auto a = Agent::Attach(base_, std::move(o));
      if (!a.ok()) return a.status();
      std::lock_guard<std::mutex> lock(agent_mu_);
      agent_ = std::move(*a);
    }
    if (!stopping_.load()) event_base_dispatch(base_);
    Shutdown();
    return OkStatus();
  }

  // Async-signal safe.
  void Stop() {
    stopping_.store(true);
    waker_->Notify();
  }

  std::optional<LoopSnapshot> Snapshot() const {
    std::lock_guard<std::mutex> lock(agent_mu_);
    if (!agent_) return std::nullopt;
    return agent_->Snapshot();
  }

  int port() const { return port_; }
  int upstream_port() const { return upstream_port_; }

 private:
  // Called on the loop thread once the loop has stopped: stop accepting, answer what is
  // pending with 503, give the replies a moment to leave.
  void Shutdown() {
    if (control_timer_ != nullptr) event_del(control_timer_);
    pool_->Stop();
    for (Pending* p : pool_->TakeQueued())
      pending_.Finish(p, 503, "Service Unavailable", "shutting down\n");
    for (Pending* p : pool_->TakeDone())
      pending_.Finish(p, 503, "Service Unavailable", "shutting down\n");
    pending_.FailAll();
    const timeval flush{0, 100'000};
    event_base_loopexit(base_, &flush);
    event_base_dispatch(base_);
    if (opts_.handle_signals) {
      std::fprintf(stderr, "stallwatch serve: served %llu requests (%llu rejected as malformed)\n",
                   static_cast<unsigned long long>(requests_),
                   static_cast<unsigned long long>(bad_requests_));
    }
  }

  static void OnWake(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    self->waker_->Drain();
    if (self->stopping_.load()) {
      event_base_loopbreak(self->base_);
      return;
    }
    for (Pending* p : self->pool_->TakeDone()) {
      self->pending_.Finish(p, HTTP_OK, "OK",
                            "slept " + std::to_string(p->ms) + " ms on a worker thread\n");
    }
  }

  static void OnSignal(evutil_socket_t sig, short, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    std::fprintf(stderr, "stallwatch serve: %s received, shutting down\n",
                 sig == SIGINT ? "SIGINT" : "SIGTERM");
    self->stopping_.store(true);
    event_base_loopbreak(self->base_);
  }

  static void OnRequest(evhttp_request* req, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    ++self->requests_;
    const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
    const char* path_c = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
    const std::string path = path_c != nullptr && *path_c != '\0' ? path_c : "/";
    if (self->opts_.log_requests) {
      std::fprintf(stderr, "%s\n", evhttp_request_get_uri(req));
    }
    self->Route(req, path);
  }

  void Route(evhttp_request* req, const std::string& path) {
    if (path == "/") return Reply(req, HTTP_OK, "OK", "hello world\n");
    if (stopping_.load()) return Reply(req, 503, "Service Unavailable", "shutting down\n");
    const std::string query = QueryOf(req);
    if (path == "/block" || path == "/cpu" || path == "/async" || path == "/offload") {
      auto ms = ParseMsParam(query, "ms", 500);
      if (!ms.ok()) return BadRequest(req, ms.status().message());
      if (path == "/block") {
        BlockingSleepOnLoop(*ms);
        return Reply(req, HTTP_OK, "OK", "slept " + std::to_string(*ms) + " ms on the loop\n");
      }
      if (path == "/cpu") {
        BurnCpuOnLoop(*ms);
        return Reply(req, HTTP_OK, "OK",
                     "burned " + std::to_string(*ms) + " ms of CPU on the loop\n");
      }
      Pending* p = pending_.Add(req, *ms);
      if (path == "/offload") return pool_->Submit(p);
      p->timer = evtimer_new(base_, &Impl::OnAsyncTimer, p);
      const timeval tv{*ms / 1000, (*ms % 1000) * 1000L};
      evtimer_add(p->timer, &tv);
      return;
    }
    if (path == "/upstream-blocking" || path == "/upstream-async") {
      auto ms = ParseMsParam(query, "ms", static_cast<int>(opts_.upstream_delay.count()));
      if (!ms.ok()) return BadRequest(req, ms.status().message());
      const std::string upath = "/slow?ms=" + std::to_string(*ms);
      if (path == "/upstream-blocking") {
        auto body = BlockingUpstreamFetch(upstream_host_, upstream_port_, upath);
        if (!body.ok()) return Reply(req, 502, "Bad Gateway", body.status().message() + "\n");
        return Reply(req, HTTP_OK, "OK", "upstream (blocking client): " + *body);
      }
      return FetchAsync(req, upath, *ms);
    }
    if (path == "/control/block") {
      auto spec = ParseControlQuery(query);
      if (!spec.ok()) return BadRequest(req, spec.status().message());
      control_ = *spec;
      if (control_timer_ == nullptr) {
        control_timer_ = event_new(base_, -1, EV_PERSIST, &Impl::OnControlTimer, this);
      }
      event_del(control_timer_);
      const auto p = control_.period.count();
      const timeval tv{p / 1000, (p % 1000) * 1000};
      event_add(control_timer_, &tv);
      const std::string kind = control_.cpu ? "cpu" : "sleep";
      std::fprintf(stderr, "stallwatch serve: stalling the loop %lld ms every %lld ms (%s)\n",
                   static_cast<long long>(control_.duration.count()), static_cast<long long>(p),
                   kind.c_str());
      return Reply(
          req, HTTP_OK, "OK",
          "{\"blocking\":true,\"duration_ms\":" + std::to_string(control_.duration.count()) +
              ",\"period_ms\":" + std::to_string(p) + ",\"kind\":\"" + kind + "\"}\n",
          "application/json");
    }
    if (path == "/control/stats") {
      const bool blocking =
          control_timer_ != nullptr && event_pending(control_timer_, EV_TIMEOUT, nullptr);
      return Reply(req, HTTP_OK, "OK",
                   "{\"requests\":" + std::to_string(requests_) +
                       ",\"bad_requests\":" + std::to_string(bad_requests_) +
                       ",\"pending\":" + std::to_string(pending_.size()) +
                       ",\"blocking\":" + (blocking ? "true" : "false") + "}\n",
                   "application/json");
    }
    if (path == "/control/unblock") {
      const bool was =
          control_timer_ != nullptr && event_pending(control_timer_, EV_TIMEOUT, nullptr);
      if (control_timer_ != nullptr) event_del(control_timer_);
      if (was) std::fprintf(stderr, "stallwatch serve: periodic stall off\n");
      return Reply(
          req, HTTP_OK, "OK",
          std::string("{\"blocking\":false,\"was_blocking\":") + (was ? "true" : "false") + "}\n",
          "application/json");
    }
    Reply(req, HTTP_NOTFOUND, "Not Found",
          "no route " + path +
              "; routes: / /block?ms= /cpu?ms= /async?ms= /offload?ms= /upstream-blocking "
              "/upstream-async /control/block /control/unblock /control/stats\n");
  }

  // Rejects a malformed query: one line naming the accepted form, counted.
  void BadRequest(evhttp_request* req, const std::string& message) {
    ++bad_requests_;
    ReplyBadRequest(req, message);
  }

  void FetchAsync(evhttp_request* req, const std::string& upath, int ms) {
    Pending* p = pending_.Add(req, ms);
    p->upstream = evhttp_connection_base_new(base_, nullptr, upstream_host_.c_str(),
                                             static_cast<uint16_t>(upstream_port_));
    evhttp_request* ureq = evhttp_request_new(&Impl::OnUpstreamDone, p);
    evhttp_add_header(evhttp_request_get_output_headers(ureq), "Host", upstream_host_.c_str());
    if (evhttp_make_request(p->upstream, ureq, EVHTTP_REQ_GET, upath.c_str()) != 0) {
      evhttp_connection_free(p->upstream);
      p->upstream = nullptr;
      pending_.Finish(p, 502, "Bad Gateway", "cannot send to upstream\n");
    }
  }

  static void OnUpstreamDone(evhttp_request* ureq, void* arg) {
    auto* p = static_cast<Pending*>(arg);
    PendingSet* set = p->owner;
    std::string body;
    const bool ok = ureq != nullptr && evhttp_request_get_response_code(ureq) == HTTP_OK;
    if (ok) {
      evbuffer* in = evhttp_request_get_input_buffer(ureq);
      body.resize(evbuffer_get_length(in));
      evbuffer_copyout(in, body.data(), body.size());
    }
    // The connection cannot be freed inside its own callback: free it on the next iteration.
    const timeval now{0, 0};
    event_base_once(evhttp_connection_get_base(p->upstream), -1, EV_TIMEOUT, &Impl::FreeConnection,
                    p->upstream, &now);
    p->upstream = nullptr;
    if (ok) {
      set->Finish(p, HTTP_OK, "OK", "upstream (async client): " + body);
    } else {
      set->Finish(p, 502, "Bad Gateway", "upstream failed\n");
    }
  }

  static void FreeConnection(evutil_socket_t, short, void* arg) {
    evhttp_connection_free(static_cast<evhttp_connection*>(arg));
  }

  static void OnAsyncTimer(evutil_socket_t, short, void* arg) {
    auto* p = static_cast<Pending*>(arg);
    p->owner->Finish(p, HTTP_OK, "OK",
                     "waited " + std::to_string(p->ms) + " ms with a loop timer\n");
  }

  static void OnControlTimer(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    const int ms = static_cast<int>(self->control_.duration.count());
    if (self->control_.cpu) {
      BurnCpuOnLoop(ms);
    } else {
      BlockingSleepOnLoop(ms);
    }
  }

  ServerOptions opts_;
  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  int port_ = -1;
  std::unique_ptr<SlowUpstream> upstream_;
  std::string upstream_host_;
  int upstream_port_ = -1;
  std::unique_ptr<Waker> waker_;
  std::unique_ptr<WorkerPool> pool_;
  PendingSet pending_;
  std::vector<event*> signals_;
  event* control_timer_ = nullptr;
  ControlSpec control_;
  std::atomic<bool> stopping_{false};
  uint64_t requests_ = 0;      // loop thread only
  uint64_t bad_requests_ = 0;  // loop thread only: answered 400
  mutable std::mutex agent_mu_;
  std::unique_ptr<Agent> agent_;
};

StatusOr<std::unique_ptr<Server>> Server::Create(ServerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (Status st = impl->Init(); !st.ok()) return st;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;
Status Server::Run() { return impl_->Run(); }
void Server::Stop() { impl_->Stop(); }
int Server::port() const { return impl_->port(); }
int Server::upstream_port() const { return impl_->upstream_port(); }
std::optional<LoopSnapshot> Server::Snapshot() const { return impl_->Snapshot(); }

}  // namespace stallwatch::cli
