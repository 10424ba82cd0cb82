// The daemon's HTTP API request parsing, without a server (daemon/src/api_query.cc).
#include "api_query.h"

#include <gtest/gtest.h>

namespace stallwatch::daemon {
namespace {

TEST(ApiQuery, RoutesAndParsesStallQueries) {
  auto r = ParseApiRequest("/api/v1/stalls", "limit=5&service=api&ongoing=true");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->kind, ApiRequest::Kind::kStalls);
  EXPECT_EQ(r->stalls.limit, 5u);
  EXPECT_EQ(r->stalls.service, "api");
  EXPECT_EQ(r->stalls.ongoing, true);
  EXPECT_EQ(ParseApiRequest("/api/v1/stalls", "")->stalls.limit, 100u);
  // Larger limits are capped, not refused.
  EXPECT_EQ(ParseApiRequest("/api/v1/stalls", "limit=12345")->stalls.limit, 1000u);
  EXPECT_EQ(ParseApiRequest("/api/v1/stalls", "limit=0000000000000000007")->stalls.limit, 7u);
  EXPECT_EQ(ParseApiRequest("/api/v1/stalls", "service=a%20b")->stalls.service, "a b");
  EXPECT_EQ(ParseApiRequest("/api/v1/stacks", "format=folded")->kind,
            ApiRequest::Kind::kStacksFolded);
  EXPECT_EQ(ParseApiRequest("/api/v1/stacks", "")->kind, ApiRequest::Kind::kStacksJson);
  EXPECT_EQ(ParseApiRequest("/metrics", "")->kind, ApiRequest::Kind::kMetrics);
  EXPECT_EQ(ParseApiRequest("/healthz", "")->kind, ApiRequest::Kind::kHealthz);
  EXPECT_EQ(ParseApiRequest("/api/v1/loops", "")->kind, ApiRequest::Kind::kLoops);
}

TEST(ApiQuery, BadRequestsNameTheAcceptedForm) {
  struct Case {
    const char* path;
    const char* query;
    StatusCode code;
    const char* says;
  };
  for (const Case& c :
       {Case{"/nope", "", StatusCode::kNotFound, "served: /metrics"},
        Case{"/api/v1/stalls", "limit=0", StatusCode::kInvalidArgument, "a positive integer"},
        Case{"/api/v1/stalls", "limit=-3", StatusCode::kInvalidArgument, "a positive integer"},
        Case{"/api/v1/stalls", "verbose=1", StatusCode::kInvalidArgument,
             "unknown parameter 'verbose'; accepted: limit="},
        Case{"/api/v1/stalls", "service=", StatusCode::kInvalidArgument, "expected a service name"},
        Case{"/api/v1/stalls", "ongoing=maybe", StatusCode::kInvalidArgument,
             "expected true or false"},
        Case{"/api/v1/stacks", "format=svg", StatusCode::kInvalidArgument,
             "expected folded or json"},
        Case{"/metrics", "x=1", StatusCode::kInvalidArgument, "no parameters"}}) {
    auto r = ParseApiRequest(c.path, c.query);
    ASSERT_FALSE(r.ok()) << c.path << "?" << c.query;
    EXPECT_EQ(r.status().code(), c.code) << c.path << "?" << c.query;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().message();
  }
}

// Found by the http_query fuzz target: request text echoed into the error (a decoded "%0A", a
// path with control characters) made a message of several lines.
TEST(ApiQuery, EchoedRequestTextStaysOneBoundedLine) {
  for (auto [path, query] : {std::pair<std::string, std::string>{"/api/v1/stalls", "limit=%0Aboom"},
                             {"/api/v1/stalls", "ongoing=%0D%0Ax"},
                             {std::string("/\0\0\ropps", 8), ""},
                             {"/api/v1/stacks", "format=" + std::string(500, 'x')},
                             {"/api/v1/stalls", "%0A=1"}}) {
    auto r = ParseApiRequest(path, query);
    ASSERT_FALSE(r.ok());
    const Status status = r.status();
    const std::string& m = status.message();
    EXPECT_EQ(m.find_first_of("\r\n"), std::string::npos) << m;
    EXPECT_LT(m.size(), 300u) << m;
  }
  auto r = ParseApiRequest("/api/v1/stalls", "limit=%0Aboom");
  EXPECT_NE(r.status().message().find("bad limit '\\x0aboom'"), std::string::npos)
      << r.status().message();
}

}  // namespace
}  // namespace stallwatch::daemon
