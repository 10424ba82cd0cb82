#include "http_server.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <ostream>
#include <streambuf>
#include <string_view>

#include "api_query.h"

namespace stallwatch::daemon {
namespace {

void Reply(evhttp_request* req, int code, const char* reason, const std::string& content_type,
           std::string_view body, const char* cache_control = "no-store") {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", content_type.c_str());
  evhttp_add_header(headers, "Cache-Control", cache_control);
  evbuffer* out = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
    evbuffer_add(out, body.data(), body.size());
  }
  evhttp_send_reply(req, code, reason, out);
  evbuffer_free(out);
}

// The web UI's page, script and style sheet (web_assets.h). The policy admits only the daemon's
// own script, style sheet and API (no inline script or style, nothing from elsewhere), so a
// finding's text (function names, paths, hints) can never run as code in the page.
void ReplyWebAsset(evhttp_request* req, const WebAsset& asset) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Security-Policy",
                    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                    "img-src 'self' data:; form-action 'self'; base-uri 'none'; "
                    "frame-ancestors 'none'");
  evhttp_add_header(headers, "X-Content-Type-Options", "nosniff");
  evhttp_add_header(headers, "Referrer-Policy", "no-referrer");
  // Revalidated on every load: the files change with the daemon's binary, and they are small.
  Reply(req, 200, "OK", std::string(asset.content_type), asset.body, "no-cache");
}

void ReleasePiece(const void*, size_t, void* arg) { delete static_cast<Registry::TextPiece*>(arg); }

void ReplyMetrics(evhttp_request* req, Registry* registry, Now now) {
  // OpenMetrics (with the stall durations' exemplars) when the scraper asks for it, as
  // Prometheus does; the text format otherwise.
  const char* accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
  const bool om = accept && WantsOpenMetrics(accept);
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type",
                    om ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
                       : "text/plain; version=0.0.4; charset=utf-8");
  evhttp_add_header(headers, "Cache-Control", "no-store");
  evhttp_add_header(headers, "Vary", "Accept");
  std::vector<Registry::TextPiece> pieces;
  registry->MetricsPieces(now, &pieces,
                          om ? Registry::Format::kOpenMetrics : Registry::Format::kText);
  evbuffer* out = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
    // The reply references the registry's cached text (tens of MiB with thousands of loops)
    // instead of copying it; each piece stays alive until the connection has sent it. (Sent
    // whole: a reply handed over in batches leaves libevent 2.1 a request it never frees when
    // the client goes away mid-reply.)
    for (auto& piece : pieces) {
      if (piece.text.empty()) {
        continue;
      }
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

void ReleaseString(const void*, size_t, void* arg) { delete static_cast<std::string*>(arg); }

// A 200 reply whose body the connection takes over instead of copying (the loops document is
// 2.6 MiB with 4000 loops: a copy was the daemon's peak).
void ReplyOwned(evhttp_request* req, const char* content_type, std::string&& body) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", content_type);
  evhttp_add_header(headers, "Cache-Control", "no-store");
  evbuffer* out = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD && !body.empty()) {
    auto* hold = new std::string(std::move(body));
    if (evbuffer_add_reference(out, hold->data(), hold->size(), &ReleaseString, hold) != 0) {
      evbuffer_add(out, hold->data(), hold->size());
      delete hold;
    }
  }
  evhttp_send_reply(req, 200, "OK", out);
  evbuffer_free(out);
}

void BadRequest(evhttp_request* req, const std::string& message) {
  Reply(req, 400, "Bad Request", "text/plain; charset=utf-8", message + "\n");
}

void Json(evhttp_request* req, const nlohmann::json& j) {
  const std::string body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  Reply(req, 200, "OK", "application/json", body);
}

}  // namespace

HttpServer::HttpServer(event_base* base, Registry* registry, std::chrono::nanoseconds timeout)
    : http_(evhttp_new(base)), registry_(registry), timeout_(timeout) {}

HttpServer::~HttpServer() {
  if (http_) {
    evhttp_free(http_);
  }
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
  evhttp_set_max_headers_size(http_, ssize_t{16} * 1024);
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
  const char* q = uri ? evhttp_uri_get_query(uri) : nullptr;
  const auto r = ParseApiRequest(p ? p : "", q ? q : "");
  if (!r.ok()) {
    const bool not_found = r.status().code() == StatusCode::kNotFound;
    registry_->RejectRequest(not_found);
    if (not_found) {
      Reply(req, 404, "Not Found", "text/plain; charset=utf-8", r.status().message() + "\n");
    } else {
      BadRequest(req, r.status().message());
    }
    return;
  }
  const Now now = Now::FromClocks();
  switch (r->kind) {
    case ApiRequest::Kind::kMetrics:
      ReplyMetrics(req, registry_, now);
      break;
    case ApiRequest::Kind::kHealthz:
      Reply(req, 200, "OK", "text/plain; charset=utf-8", "ok\n");
      break;
    case ApiRequest::Kind::kLoops:
      ReplyOwned(req, "application/json", registry_->LoopsJsonText(now));
      break;
    case ApiRequest::Kind::kStalls:
      Json(req, registry_->StallsJson(r->stalls, now));
      break;
    case ApiRequest::Kind::kCalls:
      Json(req, registry_->CallsJson(r->calls, now));
      break;
    case ApiRequest::Kind::kStacksJson:
      Json(req, registry_->StacksJson(r->stacks, now));
      break;
    case ApiRequest::Kind::kStacksFolded:
      Reply(req, 200, "OK", "text/plain; charset=utf-8", registry_->StacksFolded(r->stacks, now));
      break;
    case ApiRequest::Kind::kWebUi:
      ReplyWebAsset(req, *r->asset);
      break;
    case ApiRequest::Kind::kStacksPprof: {
      auto profile = registry_->StacksPprof(r->stacks, now);
      if (!profile.ok()) {
        Reply(req, 500, "Internal Server Error", "text/plain; charset=utf-8",
              profile.status().message() + "\n");
        break;
      }
      // A gzipped profile.proto, as Go's net/http/pprof serves it: `go tool pprof URL` reads it.
      evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Disposition",
                        "attachment; filename=\"stallwatch-stacks.pb.gz\"");
      Reply(req, 200, "OK", "application/octet-stream", *profile);
      break;
    }
  }
}

}  // namespace stallwatch::daemon
