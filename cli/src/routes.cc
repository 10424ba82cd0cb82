#include "routes.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "server_impl.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/duration.h"

namespace stallwatch::cli {

namespace {

using internal::KeepFrame;
using internal::Pending;
using internal::PendingSet;
using internal::QueryOf;
using internal::Reply;
using internal::ReplyBadRequest;
using std::chrono::milliseconds;

volatile uint64_t g_cpu_sink = 0;

}  // namespace

Route RouteOf(std::string_view path) {
  if (path == "/") {
    return Route::kHello;
  }
  if (path == "/block") {
    return Route::kBlock;
  }
  if (path == "/cpu") {
    return Route::kCpu;
  }
  if (path == "/async") {
    return Route::kAsync;
  }
  if (path == "/offload") {
    return Route::kOffload;
  }
  if (path == "/upstream-blocking") {
    return Route::kUpstreamBlocking;
  }
  if (path == "/upstream-async") {
    return Route::kUpstreamAsync;
  }
  if (path == "/control/block") {
    return Route::kControlBlock;
  }
  if (path == "/control/stats") {
    return Route::kControlStats;
  }
  if (path == "/control/unblock") {
    return Route::kControlUnblock;
  }
  return Route::kUnknown;
}

__attribute__((noinline)) void BlockingSleepOnLoop(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1'000'000L};
  // Restarted after a signal so the loop is blocked for the full time.
  timespec rem{};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &rem) == EINTR) {
    ts = rem;
  }
  KeepFrame();
}

__attribute__((noinline)) void BurnCpuOnLoop(int ms) {
  const int64_t end = MonotonicNanos() + int64_t{ms} * 1'000'000;
  uint64_t x = g_cpu_sink;
  do {
    for (int i = 0; i < 20000; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    }
  } while (MonotonicNanos() < end);
  g_cpu_sink = x;
  KeepFrame();
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
  if (!present) {
    return fallback;
  }
  const std::string form = key + " must be an integer number of milliseconds in 0.." +
                           std::to_string(max_ms) + ", e.g. ?" + key + "=500";
  if (value.empty() || value.size() > 9 ||
      value.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgumentError("bad " + key + "='" + value + "': " + form);
  }
  const int ms = std::stoi(value);
  if (ms > max_ms) {
    return InvalidArgumentError("bad " + key + "='" + value + "': " + form);
  }
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
    if (v == nullptr || !st.ok()) {
      return;
    }
    std::string text = v;
    if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
      text += "ms";
    }
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
  if (!st.ok()) {
    return st;
  }
  if (spec.period < spec.duration) {
    return InvalidArgumentError("period must be at least duration; " + form);
  }
  return spec;
}

void Server::Impl::OnRequest(evhttp_request* req, void* arg) {
  auto* self = static_cast<Impl*>(arg);
  ++self->requests_;
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* path_c = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  const std::string path = path_c != nullptr && *path_c != '\0' ? path_c : "/";
  if (self->opts_.log_requests) {
    std::fprintf(stderr, "%s\n", evhttp_request_get_uri(req));
  }
  self->HandleRequest(req, path);
}

void Server::Impl::HandleRequest(evhttp_request* req, const std::string& path) {
  const Route route = RouteOf(path);
  if (route == Route::kHello) {
    return Reply(req, HTTP_OK, "OK", "hello world\n");
  }
  if (stopping_.load()) {
    return Reply(req, 503, "Service Unavailable", "shutting down\n");
  }
  const std::string query = QueryOf(req);
  switch (route) {
    case Route::kBlock:
    case Route::kCpu:
    case Route::kAsync:
    case Route::kOffload:
      return HandleStall(req, route, query);
    case Route::kUpstreamBlocking:
    case Route::kUpstreamAsync:
      return HandleUpstream(req, route, query);
    case Route::kControlBlock:
      return HandleControlBlock(req, query);
    case Route::kControlStats:
      return HandleControlStats(req);
    case Route::kControlUnblock:
      return HandleControlUnblock(req);
    case Route::kHello:
    case Route::kUnknown:
      break;
  }
  Reply(req, HTTP_NOTFOUND, "Not Found",
        "no route " + path +
            "; routes: / /block?ms= /cpu?ms= /async?ms= /offload?ms= /upstream-blocking "
            "/upstream-async /control/block /control/unblock /control/stats\n");
}

// /block, /cpu stall the loop; /async waits with a loop timer; /offload sleeps on a worker.
void Server::Impl::HandleStall(evhttp_request* req, Route route, const std::string& query) {
  auto ms = ParseMsParam(query, "ms", 500);
  if (!ms.ok()) {
    return BadRequest(req, ms.status().message());
  }
  if (route == Route::kBlock) {
    BlockingSleepOnLoop(*ms);
    return Reply(req, HTTP_OK, "OK", "slept " + std::to_string(*ms) + " ms on the loop\n");
  }
  if (route == Route::kCpu) {
    BurnCpuOnLoop(*ms);
    return Reply(req, HTTP_OK, "OK", "burned " + std::to_string(*ms) + " ms of CPU on the loop\n");
  }
  Pending* p = pending_.Add(req, *ms);
  if (route == Route::kOffload) {
    return pool_->Submit(p);
  }
  p->timer = evtimer_new(base_, &Impl::OnAsyncTimer, p);
  const timeval tv{*ms / 1000, (*ms % 1000) * 1000L};
  evtimer_add(p->timer, &tv);
}

void Server::Impl::HandleUpstream(evhttp_request* req, Route route, const std::string& query) {
  auto ms = ParseMsParam(query, "ms", static_cast<int>(opts_.upstream_delay.count()));
  if (!ms.ok()) {
    return BadRequest(req, ms.status().message());
  }
  const std::string upath = "/slow?ms=" + std::to_string(*ms);
  if (route == Route::kUpstreamBlocking) {
    auto body = BlockingUpstreamFetch(upstream_host_, upstream_port_, upath);
    if (!body.ok()) {
      return Reply(req, 502, "Bad Gateway", body.status().message() + "\n");
    }
    return Reply(req, HTTP_OK, "OK", "upstream (blocking client): " + *body);
  }
  FetchAsync(req, upath, *ms);
}

void Server::Impl::HandleControlBlock(evhttp_request* req, const std::string& query) {
  auto spec = ParseControlQuery(query);
  if (!spec.ok()) {
    return BadRequest(req, spec.status().message());
  }
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
  Reply(req, HTTP_OK, "OK",
        "{\"blocking\":true,\"duration_ms\":" + std::to_string(control_.duration.count()) +
            ",\"period_ms\":" + std::to_string(p) + ",\"kind\":\"" + kind + "\"}\n",
        "application/json");
}

void Server::Impl::HandleControlStats(evhttp_request* req) {
  const bool blocking =
      control_timer_ != nullptr && event_pending(control_timer_, EV_TIMEOUT, nullptr);
  Reply(req, HTTP_OK, "OK",
        "{\"requests\":" + std::to_string(requests_) + ",\"bad_requests\":" +
            std::to_string(bad_requests_) + ",\"pending\":" + std::to_string(pending_.size()) +
            ",\"blocking\":" + (blocking ? "true" : "false") + "}\n",
        "application/json");
}

void Server::Impl::HandleControlUnblock(evhttp_request* req) {
  const bool was = control_timer_ != nullptr && event_pending(control_timer_, EV_TIMEOUT, nullptr);
  if (control_timer_ != nullptr) {
    event_del(control_timer_);
  }
  if (was) {
    std::fprintf(stderr, "stallwatch serve: periodic stall off\n");
  }
  Reply(req, HTTP_OK, "OK",
        std::string("{\"blocking\":false,\"was_blocking\":") + (was ? "true" : "false") + "}\n",
        "application/json");
}

// Rejects a malformed query: one line naming the accepted form, counted.
void Server::Impl::BadRequest(evhttp_request* req, const std::string& message) {
  ++bad_requests_;
  ReplyBadRequest(req, message);
}

void Server::Impl::FetchAsync(evhttp_request* req, const std::string& upath, int ms) {
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

void Server::Impl::OnUpstreamDone(evhttp_request* ureq, void* arg) {
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

void Server::Impl::FreeConnection(evutil_socket_t, short, void* arg) {
  evhttp_connection_free(static_cast<evhttp_connection*>(arg));
}

void Server::Impl::OnAsyncTimer(evutil_socket_t, short, void* arg) {
  auto* p = static_cast<Pending*>(arg);
  p->owner->Finish(p, HTTP_OK, "OK", "waited " + std::to_string(p->ms) + " ms with a loop timer\n");
}

void Server::Impl::OnControlTimer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Impl*>(arg);
  const int ms = static_cast<int>(self->control_.duration.count());
  if (self->control_.cpu) {
    BurnCpuOnLoop(ms);
  } else {
    BlockingSleepOnLoop(ms);
  }
}

}  // namespace stallwatch::cli
