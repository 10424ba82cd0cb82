#pragma once
// A small blocking HTTP/1.0 GET for the CLI's one-shot requests (block/unblock, daemon views).
// Thread-safe; blocks the calling thread for at most `timeout`.

#include <chrono>
#include <string>

#include "http_response.h"
#include "stallwatch/status.h"

namespace stallwatch::cli {

// UNAVAILABLE with "cannot connect to …" when nothing listens or "… did not answer with HTTP
// (reason)" for a response ParseHttpResponse rejects; DEADLINE_EXCEEDED on timeout.
StatusOr<HttpResponse> HttpGet(const std::string& url,
                               std::chrono::milliseconds timeout = std::chrono::seconds(5));

// `url` without trailing '/', so that API paths can be appended.
std::string BaseUrl(std::string url);
// `s` without trailing newlines (CR or LF).
std::string Trimmed(std::string s);

}  // namespace stallwatch::cli
