#include "http_response.h"

#include <gtest/gtest.h>

#include <string>

namespace stallwatch::cli {
namespace {

TEST(ResponseParser, ContentLengthKeepAlive) {
  const std::string r = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  ResponseHead h;
  ASSERT_EQ(ParseResponseHead(r.substr(0, 10), &h), ParseResult::kIncomplete);
  ASSERT_EQ(ParseResponseHead(r, &h), ParseResult::kComplete);
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.content_length, 5);
  EXPECT_FALSE(h.close);
  size_t total = 0;
  EXPECT_EQ(ParseResponseBody(r.substr(0, r.size() - 1), h, false, &total),
            ParseResult::kIncomplete);
  EXPECT_EQ(ParseResponseBody(r + "HTTP/1.1", h, false, &total), ParseResult::kComplete);
  EXPECT_EQ(total, r.size());
}

TEST(ResponseParser, Chunked) {
  const std::string r =
      "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nA\r\n0123456789"
      "\r\n0\r\n\r\n";
  ResponseHead h;
  ASSERT_EQ(ParseResponseHead(r, &h), ParseResult::kComplete);
  EXPECT_EQ(h.status, 404);
  EXPECT_TRUE(h.chunked);
  size_t total = 0;
  EXPECT_EQ(ParseResponseBody(r.substr(0, r.size() - 2), h, false, &total),
            ParseResult::kIncomplete);
  ASSERT_EQ(ParseResponseBody(r, h, false, &total), ParseResult::kComplete);
  EXPECT_EQ(total, r.size());
}

TEST(ResponseParser, CloseDelimitedAndHttp10) {
  const std::string r = "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody until close";
  ResponseHead h;
  ASSERT_EQ(ParseResponseHead(r, &h), ParseResult::kComplete);
  EXPECT_TRUE(h.close);
  size_t total = 0;
  EXPECT_EQ(ParseResponseBody(r, h, false, &total), ParseResult::kIncomplete);
  EXPECT_EQ(ParseResponseBody(r, h, true, &total), ParseResult::kComplete);
  const std::string ka = "HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n";
  ResponseHead h2;
  ASSERT_EQ(ParseResponseHead(ka, &h2), ParseResult::kComplete);
  EXPECT_FALSE(h2.close);
  EXPECT_EQ(ParseResponseBody(ka, h2, false, &total), ParseResult::kComplete);
}

TEST(ResponseParser, Malformed) {
  ResponseHead h;
  EXPECT_EQ(ParseResponseHead("SMTP ready\r\n\r\n", &h), ParseResult::kError);
  EXPECT_EQ(ParseResponseHead("HTTP/1.1 2x0 OK\r\n\r\n", &h), ParseResult::kError);
  EXPECT_EQ(ParseResponseHead("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", &h),
            ParseResult::kError);
  EXPECT_EQ(ParseResponseHead(std::string(70000, 'x'), &h), ParseResult::kError);
}

TEST(ParseHttpResponse, ContentLength) {
  auto r = ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  // Bytes after the framed body are not part of it.
  r = ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->body, "he");
}

TEST(ParseHttpResponse, UntilCloseAndHeaderNames) {
  auto r = ParseHttpResponse("HTTP/1.0 503 Service Unavailable\r\nX-A: b\r\n\r\nbusy\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "busy\n");
  r = ParseHttpResponse("HTTP/1.1 204 No Content\r\n\r\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(r->body, "");
  r = ParseHttpResponse("HTTP/1.1 200 OK\r\ncontent-LENGTH:  3 \r\n\r\nabcdef");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->body, "abc");
}

TEST(ParseHttpResponse, ChunkedIsDecoded) {
  auto r = ParseHttpResponse(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\na;x=1\r\n"
      " 012345678\r\n0\r\nTrailer: t\r\n\r\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->body, "hello 012345678");
  r = ParseHttpResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->body, "");
}

TEST(ParseHttpResponse, TruncatedOrMalformedIsAClearError) {
  const auto error = [](const std::string& in) {
    auto r = ParseHttpResponse(in);
    EXPECT_FALSE(r.ok()) << in;
    if (r.ok()) {
      return std::string();
    }
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    return r.status().message();
  };
  EXPECT_EQ(error(""), "not an HTTP response");
  EXPECT_EQ(error("SSH-2.0-OpenSSH\r\n\r\n"), "not an HTTP response");
  EXPECT_NE(error("HTTP/1.1 200 OK\r\nContent-Le").find("truncated response header"),
            std::string::npos);
  EXPECT_EQ(error("HTTP/1.1 2x0 OK\r\n\r\n"), "malformed response header");
  EXPECT_EQ(error("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
            "truncated body: Content-Length 10, got 5 bytes");
  EXPECT_EQ(error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
            "truncated chunked body");
  EXPECT_EQ(error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
            "truncated chunked body");
  EXPECT_EQ(error("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"),
            "malformed chunk size");
}

}  // namespace
}  // namespace stallwatch::cli
