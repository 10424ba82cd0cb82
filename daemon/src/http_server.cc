#include "http_server.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/queue.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

namespace stallwatch::daemon {
namespace {

void Reply(evhttp_request* req, int code, const char* reason, const std::string& content_type,
           const std::string& body) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", content_type.c_str());
  evhttp_add_header(headers, "Cache-Control", "no-store");
  evbuffer* out = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
    evbuffer_add(out, body.data(), body.size());
  evhttp_send_reply(req, code, reason, out);
  evbuffer_free(out);
}

void ReleasePiece(const void*, size_t, void* arg) { delete static_cast<Registry::TextPiece*>(arg); }

void ReplyMetrics(evhttp_request* req, Registry* registry, Now now) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  evhttp_add_header(headers, "Cache-Control", "no-store");
  std::vector<Registry::TextPiece> pieces;
  registry->MetricsPieces(now, &pieces);
  evbuffer* out = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
    // The reply references the registry's cached text (tens of MiB with thousands of loops)
    // instead of copying it; each piece stays alive until the connection has sent it.
    for (auto& piece : pieces) {
      if (piece.text.empty()) continue;
      auto* hold = new Registry::TextPiece(std::move(piece));
      if (evbuffer_add_reference(out, hold->text.data(), hold->text.size(), &ReleasePiece, hold) !=
          0) {
        evbuffer_add(out, hold->text.data(), hold->text.size());
        delete hold;
      }
    }
  }
  evhttp_send_reply(req, 200, "OK", out);
  evbuffer_free(out);
}

// A client's value as echoed in an error: at most 64 bytes, no control characters, so the
// message stays one short line whatever was sent.
std::string Echo(const std::string& v) {
  std::string out = v.substr(0, 64);
  for (char& ch : out) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
  }
  return v.size() > 64 ? out + "…" : out;
}

void BadRequest(evhttp_request* req, const std::string& message) {
  Reply(req, 400, "Bad Request", "text/plain; charset=utf-8", message + "\n");
}

void Json(evhttp_request* req, const nlohmann::json& j) {
  const std::string body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  Reply(req, 200, "OK", "application/json", body);
}

// Parses the query into (name, value) pairs, refusing names not in `accepted`.
bool ParseQuery(evhttp_request* req, const std::set<std::string>& accepted, const char* form,
                std::vector<std::pair<std::string, std::string>>* out) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* q = uri ? evhttp_uri_get_query(uri) : nullptr;
  if (!q || !*q) return true;
  evkeyvalq kv;
  TAILQ_INIT(&kv);
  if (evhttp_parse_query_str(q, &kv) != 0) {
    BadRequest(req, std::string("malformed query string; accepted: ") + form);
    return false;
  }
  bool ok = true;
  for (evkeyval* e = kv.tqh_first; e; e = e->next.tqe_next) {
    if (!accepted.count(e->key)) {
      BadRequest(req, std::string("unknown parameter '") + Echo(e->key) + "'; accepted: " + form);
      ok = false;
      break;
    }
    out->emplace_back(e->key, e->value);
  }
  evhttp_clear_headers(&kv);
  return ok;
}

}  // namespace

HttpServer::HttpServer(event_base* base, Registry* registry, std::chrono::nanoseconds timeout)
    : http_(evhttp_new(base)), registry_(registry), timeout_(timeout) {}

HttpServer::~HttpServer() {
  if (http_) evhttp_free(http_);
}

Status HttpServer::Start(int fd) {
  if (!http_) {
    ::close(fd);
    return InternalError("cannot create the HTTP server");
  }
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
  const timeval tv{static_cast<time_t>(timeout_.count() / 1'000'000'000),
                   static_cast<suseconds_t>((timeout_.count() % 1'000'000'000) / 1000)};
  evhttp_set_timeout_tv(http_, &tv);
  evhttp_set_max_headers_size(http_, 16 * 1024);
  evhttp_set_max_body_size(http_, 4096);
  evhttp_set_gencb(http_, &HttpServer::OnRequest, this);
  if (!evhttp_accept_socket_with_handle(http_, fd)) {
    ::close(fd);
    return UnavailableError("cannot serve HTTP on the listening socket");
  }
  return OkStatus();
}

void HttpServer::OnRequest(evhttp_request* req, void* arg) noexcept {
  auto* self = static_cast<HttpServer*>(arg);
  try {
    // A scrape or an API document of thousands of loops allocates tens of MiB for a moment
    // (the series of processes that changed are collected and serialized; JSON is built as a
    // DOM): hand it back so the daemon's resident size stays at its steady state. Once the
    // reply is sent, not before: trimmed right after the handler, the heap was resident again
    // (~9 MiB with 1000 agents) by the time a large reply had gone out.
    const char* uri = evhttp_request_get_uri(req);
    if (uri && std::strncmp(uri, "/healthz", 8) != 0) {
      evhttp_request_set_on_complete_cb(
          req, [](evhttp_request*, void*) { ::malloc_trim(0); }, nullptr);
    }
    self->Handle(req);
  } catch (const std::exception& e) {
    spdlog::error("HTTP {}: {}", evhttp_request_get_uri(req), e.what());
    Reply(req, 500, "Internal Server Error", "text/plain", std::string(e.what()) + "\n");
  }
}

void HttpServer::Handle(evhttp_request* req) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* p = uri ? evhttp_uri_get_path(uri) : nullptr;
  const std::string path = p ? p : "";
  const Now now = Now::FromClocks();
  std::vector<std::pair<std::string, std::string>> params;

  if (path == "/metrics") {
    if (!ParseQuery(req, {}, "no parameters", &params)) return;
    ReplyMetrics(req, registry_, now);
  } else if (path == "/healthz") {
    if (!ParseQuery(req, {}, "no parameters", &params)) return;
    Reply(req, 200, "OK", "text/plain; charset=utf-8", "ok\n");
  } else if (path == "/api/v1/loops") {
    if (!ParseQuery(req, {}, "no parameters", &params)) return;
    Json(req, registry_->LoopsJson(now));
  } else if (path == "/api/v1/stalls") {
    constexpr const char* kForm =
        "limit=1..1000 (default 100; larger values are capped at 1000), service=NAME, "
        "ongoing=true|false";
    constexpr size_t kMaxLimit = 1000;
    if (!ParseQuery(req, {"limit", "service", "ongoing"}, kForm, &params)) return;
    StallQuery q;
    for (const auto& [k, v] : params) {
      if (k == "limit") {
        // Any positive integer is accepted and capped, so a client asking for "everything"
        // gets the most the daemon serves in one reply rather than an error.
        const size_t first = v.find_first_not_of('0');
        if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos ||
            first == std::string::npos) {
          return BadRequest(req, "bad limit '" + Echo(v) +
                                     "': expected a positive integer (at most 1000 are returned)");
        }
        const std::string digits = v.substr(first);
        q.limit = digits.size() > 4 ? kMaxLimit
                                    : std::min(kMaxLimit, static_cast<size_t>(std::stoi(digits)));
      } else if (k == "service") {
        if (v.empty()) return BadRequest(req, "bad service '': expected a service name");
        q.service = v;
      } else if (k == "ongoing") {
        if (v == "true" || v == "1") {
          q.ongoing = true;
        } else if (v == "false" || v == "0") {
          q.ongoing = false;
        } else {
          return BadRequest(req, "bad ongoing '" + Echo(v) + "': expected true or false");
        }
      }
    }
    Json(req, registry_->StallsJson(q, now));
  } else if (path == "/api/v1/stacks") {
    if (!ParseQuery(req, {"format"}, "format=folded|json", &params)) return;
    std::string format = "json";
    for (const auto& [k, v] : params) format = v;
    if (format == "json") {
      Json(req, registry_->StacksJson());
    } else if (format == "folded") {
      Reply(req, 200, "OK", "text/plain; charset=utf-8", registry_->StacksFolded());
    } else {
      BadRequest(req, "bad format '" + Echo(format) + "': expected folded or json");
    }
  } else {
    Reply(req, 404, "Not Found", "text/plain; charset=utf-8",
          "no such path '" + Echo(path) +
              "'; served: /metrics, /healthz, /api/v1/loops, /api/v1/stalls, /api/v1/stacks\n");
  }
}

}  // namespace stallwatch::daemon
