// The daemon's HTTP API request parsing, without a server (daemon/src/api_query.cc).
#include "api_query.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

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
       {Case{"/nope", "", StatusCode::kNotFound, "served: / (web UI), /metrics"},
        Case{"/api/v1/stalls", "limit=0", StatusCode::kInvalidArgument, "a positive integer"},
        Case{"/api/v1/stalls", "limit=-3", StatusCode::kInvalidArgument, "a positive integer"},
        Case{"/api/v1/stalls", "verbose=1", StatusCode::kInvalidArgument,
             "unknown parameter 'verbose'; accepted: limit="},
        Case{"/api/v1/stalls", "service=", StatusCode::kInvalidArgument, "expected a service name"},
        Case{"/api/v1/stalls", "ongoing=maybe", StatusCode::kInvalidArgument,
             "expected true or false"},
        Case{"/api/v1/stacks", "format=svg", StatusCode::kInvalidArgument,
             "expected folded, json or pprof"},
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
  using Requests = std::vector<std::pair<std::string, std::string>>;
  const auto one_line_of_at_most = [](size_t most, const Requests& requests) {
    for (const auto& [path, query] : requests) {
      auto r = ParseApiRequest(path, query);
      ASSERT_FALSE(r.ok()) << path << "?" << query;
      const Status status = r.status();
      const std::string& m = status.message();
      EXPECT_EQ(m.find_first_of("\r\n"), std::string::npos) << m;
      EXPECT_LE(m.size(), most) << m;
    }
  };
  one_line_of_at_most(300, {{"/api/v1/stalls", "limit=%0Aboom"},
                            {"/api/v1/stalls", "ongoing=%0D%0Ax"},
                            {std::string("/\0\0\ropps", 8), ""},
                            {"/api/v1/stacks", "format=" + std::string(500, 'x')},
                            {"/api/v1/stalls", "%0A=1"}});
  // The longest forms: /api/v1/calls names 41 calls when call= is wrong, and the web page's
  // accepted form follows an unknown parameter; each echo is of control bytes (four characters
  // apiece). The fuzz target holds every message to 512 bytes.
  std::string controls;
  for (int i = 0; i < 100; ++i) {
    controls += "%01";
  }
  one_line_of_at_most(512, {{"/api/v1/calls", "call=" + controls},
                            {"/api/v1/calls", controls + "=1"},
                            {"/api/v1/stacks", controls + "=1"},
                            {"/", controls + "=1"},
                            {"/ui/app.js", controls + "=1"},
                            {"/api/v1/stalls", controls + "=1"}});
  auto r = ParseApiRequest("/api/v1/stalls", "limit=%0Aboom");
  EXPECT_NE(r.status().message().find("bad limit '\\x0aboom'"), std::string::npos)
      << r.status().message();
}

TEST(ApiQuery, StackQueriesParseEveryFilter) {
  auto r = ParseApiRequest("/api/v1/stacks",
                           "format=pprof&service=api&loop=main&class=blocked&since=10m&until="
                           "2026-12-07T15:04:05Z");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->kind, ApiRequest::Kind::kStacksPprof);
  EXPECT_EQ(r->stacks.service, "api");
  EXPECT_EQ(r->stacks.loop, "main");
  EXPECT_EQ(r->stacks.stall_class, StallClass::kBlocked);
  EXPECT_EQ(r->stacks.since, (TimeBound{600'000'000'000, true}));
  EXPECT_EQ(r->stacks.until, (TimeBound{1'796'655'845'000'000'000, false}));
  EXPECT_TRUE(r->stacks.filtered());
  // No filter: the merged table, as before.
  for (const char* q : {"", "format=json", "format=folded", "format=pprof"}) {
    auto plain = ParseApiRequest("/api/v1/stacks", q);
    ASSERT_TRUE(plain.ok()) << q;
    EXPECT_FALSE(plain->stacks.filtered()) << q;
  }
  EXPECT_EQ(ParseApiRequest("/api/v1/stacks", "service=a%20b")->stacks.service, "a b");
  // An offset's '+' percent-encoded or not (a query string may decode '+' to a space).
  for (const char* q : {"until=2026-12-07T16:04:05%2B01:00", "until=2026-12-07T16:04:05+01:00"}) {
    auto t = ParseApiRequest("/api/v1/stacks", q);
    ASSERT_TRUE(t.ok()) << q << ": " << t.status().message();
    EXPECT_EQ(t->stacks.until, (TimeBound{1'796'655'845'000'000'000, false})) << q;
  }
  for (const char* c : {"cpu", "blocked", "starved", "suspended", "unknown"}) {
    auto k = ParseApiRequest("/api/v1/stacks", std::string("class=") + c);
    ASSERT_TRUE(k.ok()) << c;
    EXPECT_STREQ(StallClassName(*k->stacks.stall_class), c);
  }
}

TEST(ApiQuery, TimeBoundsTakeUnixNanosecondsRfc3339AndDurationsAgo) {
  struct Case {
    const char* text = "";
    TimeBound want;
  };
  for (const Case& c : {
           Case{"0", {0, false}},
           Case{"1765119845000000000", {1'765'119'845'000'000'000, false}},
           Case{"9223372036854775807", {INT64_MAX, false}},
           Case{"1970-01-01T00:00:00Z", {0, false}},
           Case{"2026-12-07T15:04:05Z", {1'796'655'845'000'000'000, false}},
           Case{"2026-12-07t15:04:05z", {1'796'655'845'000'000'000, false}},
           Case{"2026-12-07T15:04:05.25Z", {1'796'655'845'250'000'000, false}},
           Case{"2026-12-07T15:04:05.123456789Z", {1'796'655'845'123'456'789, false}},
           Case{"2026-12-07T16:04:05+01:00", {1'796'655'845'000'000'000, false}},
           Case{"2026-12-07T16:04:05 01:00", {1'796'655'845'000'000'000, false}},  // '+' decoded
           Case{"2026-12-07T10:04:05-05:00", {1'796'655'845'000'000'000, false}},
           Case{"2024-02-29T00:00:00Z", {1'709'164'800'000'000'000, false}},
           Case{"500ms", {500'000'000, true}},
           Case{"90s", {90'000'000'000, true}},
           Case{"10m", {600'000'000'000, true}},
           Case{"1.5h", {5'400'000'000'000, true}},
           Case{"2d", {172'800'000'000'000, true}},
           Case{"0s", {0, true}},
       }) {
    auto t = ParseTimeBound("since", c.text);
    ASSERT_TRUE(t.ok()) << c.text << ": " << t.status().message();
    EXPECT_EQ(t->ns, c.want.ns) << c.text;
    EXPECT_EQ(t->ago, c.want.ago) << c.text;
  }
  EXPECT_EQ((TimeBound{600, true}).At(1000), 400);
  EXPECT_EQ((TimeBound{600, false}).At(1000), 600);
}

TEST(ApiQuery, BadStackQueriesNameTheAcceptedForm) {
  for (const char* bad : {"",
                          "-5",
                          "10x",
                          "10 m",
                          "m",
                          ".5m",
                          "5.m",
                          "1.2.3s",
                          "1e3s",
                          "10M",
                          "99999999999d",
                          "92233720368547758070",
                          "9223372036854775808",
                          "2026-12-07",
                          "2026-12-07T15:04:05",
                          "2026-13-07T15:04:05Z",
                          "2026-02-30T15:04:05Z",
                          "2026-12-07T24:04:05Z",
                          "2026-12-07T15:04:05+1:00",
                          "2026-12-07T15:04:05.Z",
                          "2026-12-07T15:04:05Zjunk",
                          "1500-01-01T00:00:00Z",
                          "yesterday"}) {
    auto t = ParseTimeBound("until", bad);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find("bad until '"), std::string::npos) << t.status().message();
    EXPECT_NE(t.status().message().find("expected Unix nanoseconds"), std::string::npos)
        << t.status().message();
    EXPECT_NE(t.status().message().find("RFC 3339 (2026-12-07T15:04:05Z)"), std::string::npos);
    EXPECT_NE(t.status().message().find("duration ago (90s, 10m, 2h, 1d)"), std::string::npos);
  }
  struct Case {
    const char* query;
    const char* says;
  };
  for (const Case& c : {
           Case{"class=sleepy", "bad class 'sleepy': expected cpu, blocked, starved, suspended"},
           Case{"class=", "bad class ''"},
           Case{"service=", "bad service '': expected a service name"},
           Case{"loop=", "bad loop '': expected a loop name"},
           Case{"since=soon", "bad since 'soon': expected Unix nanoseconds"},
           Case{"until=%0Ax", "bad until '\\x0ax'"},
           Case{"since=5m&until=10m", "since is after until"},
           Case{"since=2000&until=1000", "since is after until"},
           Case{"pid=3", "unknown parameter 'pid'; accepted: format=json|folded|pprof, service="},
           Case{"format=svg", "expected folded, json or pprof"},
       }) {
    auto r = ParseApiRequest("/api/v1/stacks", c.query);
    ASSERT_FALSE(r.ok()) << c.query;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.query;
    const std::string m = r.status().message();
    EXPECT_NE(m.find(c.says), std::string::npos) << c.query << ": " << m;
    EXPECT_EQ(m.find_first_of("\r\n"), std::string::npos) << m;
  }
  // A Unix time and a duration ago are compared only when the request is served.
  EXPECT_TRUE(ParseApiRequest("/api/v1/stacks", "since=5m&until=1000").ok());
  EXPECT_TRUE(ParseApiRequest("/api/v1/stacks", "since=10m&until=5m").ok());
}

// The web UI's stall page looks one stall up by service, pid, loop and id.
TEST(ApiQuery, StallQueriesSelectOneStall) {
  auto r = ParseApiRequest("/api/v1/stalls", "service=api&pid=4242&loop=main&id=17&limit=1");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->stalls.service, "api");
  EXPECT_EQ(r->stalls.pid, int64_t{4242});
  EXPECT_EQ(r->stalls.loop, "main");
  EXPECT_EQ(r->stalls.stall_id, uint64_t{17});
  EXPECT_EQ(r->stalls.limit, 1u);
  EXPECT_EQ(ParseApiRequest("/api/v1/stalls", "id=007")->stalls.stall_id, uint64_t{7});
  const auto plain = ParseApiRequest("/api/v1/stalls", "");
  EXPECT_FALSE(plain->stalls.pid || plain->stalls.loop || plain->stalls.stall_id);
  struct Case {
    const char* query;
    const char* says;
  };
  for (const Case& c : {Case{"pid=0", "bad pid '0': expected a process id (a positive integer)"},
                        Case{"pid=-1", "bad pid '-1'"}, Case{"pid=12a", "bad pid '12a'"},
                        Case{"pid=99999999999999999999", "bad pid"},
                        Case{"id=", "bad id '': expected a stall id (a positive integer)"},
                        Case{"id=0", "bad id '0'"}, Case{"id=1.5", "bad id '1.5'"},
                        Case{"loop=", "bad loop '': expected a loop name"},
                        Case{"stall=3",
                             "accepted: limit=1..1000 (default 100; larger values are "
                             "capped at 1000), service=NAME, ongoing=true|false, "
                             "pid=PID, loop=NAME, id=STALL_ID"}}) {
    auto bad = ParseApiRequest("/api/v1/stalls", c.query);
    ASSERT_FALSE(bad.ok()) << c.query;
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << c.query;
    EXPECT_NE(bad.status().message().find(c.says), std::string::npos) << bad.status().message();
  }
}

TEST(ApiQuery, RoutesTheWebUiAndItsFiles) {
  auto page = ParseApiRequest("/", "");
  ASSERT_TRUE(page.ok()) << page.status().message();
  EXPECT_EQ(page->kind, ApiRequest::Kind::kWebUi);
  ASSERT_NE(page->asset, nullptr);
  EXPECT_EQ(page->asset->name, "index.html");
  EXPECT_EQ(page->asset->content_type, "text/html; charset=utf-8");
  // The page's script and style sheet are separate files (the page admits no inline script).
  EXPECT_NE(page->asset->body.find("src=\"/ui/app.js\""), std::string_view::npos);
  EXPECT_EQ(page->asset->body.find("<script>"), std::string_view::npos);
  for (const char* query :
       {"view=flame&service=api&loop=main&class=cpu&since=10m&until=2026-12-07T15:04:05Z",
        "view=diff&a_since=2h&a_until=1h&b_since=1h&b_until=0s&service=api",
        "view=stall&service=api&pid=42&loop=main&id=7", "view=loops&span=15m",
        "view=flame&service=api&zoom=api%3Bmain%3Bspin%28int%29"}) {
    auto r = ParseApiRequest("/", query);
    ASSERT_TRUE(r.ok()) << query << ": " << r.status().message();
    EXPECT_EQ(r->asset->name, "index.html");
  }
  auto js = ParseApiRequest("/ui/app.js", "");
  ASSERT_TRUE(js.ok()) << js.status().message();
  EXPECT_EQ(js->kind, ApiRequest::Kind::kWebUi);
  EXPECT_EQ(js->asset->content_type, "text/javascript; charset=utf-8");
  EXPECT_FALSE(js->asset->body.empty());
  EXPECT_EQ(ParseApiRequest("/ui/app.css", "")->asset->content_type, "text/css; charset=utf-8");

  struct Case {
    const char* path;
    const char* query;
    StatusCode code;
    const char* says;
  };
  for (const Case& c :
       {Case{"/", "view=graph", StatusCode::kInvalidArgument,
             "bad view 'graph': expected loops, flame, diff or stall"},
        Case{"/", "zom=1", StatusCode::kInvalidArgument,
             "unknown parameter 'zom'; accepted: view=loops|flame|diff|stall"},
        Case{"/ui/app.js", "v=1", StatusCode::kInvalidArgument, "no parameters"},
        Case{"/ui/index.html", "", StatusCode::kNotFound, "served: / (web UI), /metrics"},
        Case{"/ui/", "", StatusCode::kNotFound, "no such path '/ui/'"},
        Case{"/ui/../api/v1/loops", "", StatusCode::kNotFound, "no such path"},
        Case{"/index.html", "", StatusCode::kNotFound, "no such path '/index.html'"}}) {
    auto r = ParseApiRequest(c.path, c.query);
    ASSERT_FALSE(r.ok()) << c.path << "?" << c.query;
    EXPECT_EQ(r.status().code(), c.code) << c.path << "?" << c.query;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace stallwatch::daemon

namespace stallwatch::daemon {
namespace {

// /api/v1/calls: the filters of the blocking-call ledger; call and family only from the fixed
// lists (they name the accepted values), the shared limit/service/loop/pid rules.
TEST(ApiQuery, CallQueriesParseEveryFilterAndRefuseUnknownCallsAndFamilies) {
  auto r = ParseApiRequest("/api/v1/calls",
                           "limit=5&service=api&pid=42&loop=main&call=getaddrinfo&family=dns");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->kind, ApiRequest::Kind::kCalls);
  EXPECT_EQ(r->calls.limit, 5u);
  EXPECT_EQ(r->calls.service, "api");
  EXPECT_EQ(r->calls.pid, 42);
  EXPECT_EQ(r->calls.loop, "main");
  EXPECT_EQ(r->calls.call, "getaddrinfo");
  EXPECT_EQ(r->calls.family, "dns");
  EXPECT_EQ(ParseApiRequest("/api/v1/calls", "")->calls.limit, 100u);
  EXPECT_EQ(ParseApiRequest("/api/v1/calls", "limit=99999")->calls.limit, 1000u);

  auto bad = [](const char* query) {
    auto b = ParseApiRequest("/api/v1/calls", query);
    EXPECT_FALSE(b.ok()) << query;
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument) << query;
    return b.status().message();
  };
  EXPECT_NE(bad("call=gettimeofday").find("bad call 'gettimeofday': expected one of getaddrinfo|"),
            std::string::npos);
  EXPECT_NE(bad("family=disk").find("bad family 'disk': expected one of dns|sleep|"),
            std::string::npos);
  EXPECT_NE(bad("limit=0").find("bad limit '0'"), std::string::npos);
  EXPECT_NE(bad("pid=-1").find("bad pid '-1'"), std::string::npos);
  EXPECT_NE(bad("loop=").find("bad loop ''"), std::string::npos);
  const std::string unknown = bad("format=folded");
  EXPECT_NE(unknown.find("unknown parameter 'format'; accepted: limit=1..1000"), std::string::npos)
      << unknown;
  EXPECT_EQ(unknown.find('\n'), std::string::npos);
  // The 404 names the new path among those served.
  EXPECT_NE(ParseApiRequest("/api/v1/call", "").status().message().find("/api/v1/calls"),
            std::string::npos);
}

}  // namespace
}  // namespace stallwatch::daemon
