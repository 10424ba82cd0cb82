#pragma once
// HTTP/1.x response framing for the CLI's three clients: the load generator (incremental, on a
// keep-alive connection), HttpGet and the bundled server's blocking upstream fetch (a whole
// response read until the server closed the connection). Pure functions of their input;
// thread-safe.

#include <cstddef>
#include <cstdint>
#include <string>

#include "stallwatch/status.h"

namespace stallwatch::cli {

// The header of a response, once ParseResponseHead found all of it.
struct ResponseHead {
  bool parsed = false;
  size_t header_len = 0;  // bytes up to and including the blank line
  int status = 0;
  bool chunked = false;
  bool close = false;  // the server closes after this response
  int64_t content_length = -1;
};
enum class ParseResult { kIncomplete, kComplete, kError };

// Parses the header of `in` into *h once it is complete. kError for a status line that is not
// "HTTP/x.y NNN", a Content-Length that is not a decimal number, or a header over 64 KiB.
ParseResult ParseResponseHead(const std::string& in, ResponseHead* h);
// Whether the whole response is in `in` (after ParseResponseHead); *total = its length. `eof`:
// the server closed the connection, which ends a body framed by neither length nor chunks.
ParseResult ParseResponseBody(const std::string& in, const ResponseHead& h, bool eof,
                              size_t* total);

struct HttpResponse {
  int status = 0;
  std::string body;  // chunked bodies decoded
};

// Parses one whole response, read until the server closed the connection. INVALID_ARGUMENT
// with a one-line reason for anything else: not HTTP, a truncated header or body, a malformed
// chunk. Bytes after the framed body are ignored.
StatusOr<HttpResponse> ParseHttpResponse(const std::string& in);

}  // namespace stallwatch::cli
