#include "http_response.h"

#include <algorithm>
#include <cctype>
#include <string_view>

#include "stallwatch/common/ascii.h"

namespace stallwatch::cli {

namespace {

constexpr size_t kMaxHeaderBytes = size_t{64} * 1024;

using Parse = ParseResult;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// The size of the chunk whose size line starts at `pos`; npos when the line has no hex digits.
size_t ChunkSize(const std::string& in, size_t pos, size_t eol) {
  size_t size = 0;
  size_t i = pos;
  for (; i < eol && std::isxdigit(static_cast<unsigned char>(in[i])); ++i) {
    const int ch = std::tolower(static_cast<unsigned char>(in[i]));
    size = size * 16 + static_cast<size_t>(ch <= '9' ? ch - '0' : ch - 'a' + 10);
  }
  return i == pos ? std::string::npos : size;
}

}  // namespace

// Parses the header of `in` into *h once it is complete.
ParseResult ParseResponseHead(const std::string& in, ResponseHead* h) {
  const size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) {
    return in.size() > kMaxHeaderBytes ? Parse::kError : Parse::kIncomplete;
  }
  std::string_view all(in.data(), end + 2);
  const size_t eol = all.find("\r\n");
  std::string_view status_line = all.substr(0, eol);
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") {
    return Parse::kError;
  }
  const bool http10 = status_line.substr(5, 3) == "1.0";
  h->close = http10;
  int code = 0;
  for (size_t i = 9; i < 12; ++i) {
    const char c = status_line[i];
    if (c < '0' || c > '9') {
      return Parse::kError;
    }
    code = code * 10 + (c - '0');
  }
  h->status = code;
  size_t pos = eol + 2;
  while (pos < all.size()) {
    const size_t next = all.find("\r\n", pos);
    std::string_view line = all.substr(pos, next - pos);
    pos = next + 2;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      continue;
    }
    std::string_view name = line.substr(0, colon);
    std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsIgnoreCase(name, "content-length")) {
      int64_t v = 0;
      for (char c : value) {
        if (c < '0' || c > '9') {
          return Parse::kError;
        }
        v = v * 10 + (c - '0');
      }
      h->content_length = v;
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      h->chunked = value.find("chunked") != std::string_view::npos;
    } else if (EqualsIgnoreCase(name, "connection")) {
      if (EqualsIgnoreCase(value, "close")) {
        h->close = true;
      }
      if (EqualsIgnoreCase(value, "keep-alive")) {
        h->close = false;
      }
    }
  }
  h->header_len = end + 4;
  h->parsed = true;
  return Parse::kComplete;
}

// Whether the body after the header is complete; *total = bytes of the whole response.
ParseResult ParseResponseBody(const std::string& in, const ResponseHead& h, bool eof,
                              size_t* total) {
  if (h.status / 100 == 1 || h.status == 204 || h.status == 304) {
    *total = h.header_len;
    return Parse::kComplete;
  }
  if (h.chunked) {
    size_t pos = h.header_len;
    for (;;) {
      const size_t eol = in.find("\r\n", pos);
      if (eol == std::string::npos) {
        return Parse::kIncomplete;
      }
      const size_t size = ChunkSize(in, pos, eol);
      if (size == std::string::npos) {
        return Parse::kError;
      }
      pos = eol + 2;
      if (size == 0) {
        // Trailers end with an empty line.
        const size_t end = in.find("\r\n", pos);
        if (end == std::string::npos) {
          return Parse::kIncomplete;
        }
        if (end != pos) {
          const size_t tend = in.find("\r\n\r\n", pos);
          if (tend == std::string::npos) {
            return Parse::kIncomplete;
          }
          *total = tend + 4;
        } else {
          *total = end + 2;
        }
        return Parse::kComplete;
      }
      if (in.size() < pos + size + 2) {
        return Parse::kIncomplete;
      }
      pos += size + 2;
    }
  }
  if (h.content_length >= 0) {
    const size_t need = h.header_len + static_cast<size_t>(h.content_length);
    if (in.size() < need) {
      return Parse::kIncomplete;
    }
    *total = need;
    return Parse::kComplete;
  }
  if (!eof) {
    return Parse::kIncomplete;
  }
  *total = in.size();
  return Parse::kComplete;
}

StatusOr<HttpResponse> ParseHttpResponse(const std::string& in) {
  if (in.compare(0, 5, "HTTP/") != 0) {
    return InvalidArgumentError("not an HTTP response");
  }
  ResponseHead h;
  switch (ParseResponseHead(in, &h)) {
    case Parse::kIncomplete:
      return InvalidArgumentError("truncated response header (" + std::to_string(in.size()) +
                                  " bytes, no blank line)");
    case Parse::kError:
      return InvalidArgumentError("malformed response header");
    case Parse::kComplete:
      break;
  }
  size_t total = 0;
  switch (ParseResponseBody(in, h, /*eof=*/true, &total)) {
    case Parse::kIncomplete:
      if (h.chunked) {
        return InvalidArgumentError("truncated chunked body");
      }
      return InvalidArgumentError("truncated body: Content-Length " +
                                  std::to_string(h.content_length) + ", got " +
                                  std::to_string(in.size() - h.header_len) + " bytes");
    case Parse::kError:
      return InvalidArgumentError("malformed chunk size");
    case Parse::kComplete:
      break;
  }
  HttpResponse r;
  r.status = h.status;
  if (!h.chunked || total == h.header_len) {
    r.body = in.substr(h.header_len, total - h.header_len);
    return r;
  }
  // ParseResponseBody checked the framing: every size line and chunk is there.
  size_t pos = h.header_len;
  for (;;) {
    const size_t eol = in.find("\r\n", pos);
    const size_t size = ChunkSize(in, pos, eol);
    pos = eol + 2;
    if (size == 0) {
      break;
    }
    r.body.append(in, pos, size);
    pos += size + 2;
  }
  return r;
}

}  // namespace stallwatch::cli
