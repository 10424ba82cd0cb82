#include "load.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "load_report.h"

namespace stallwatch::cli {
namespace {

TEST(ParseUrl, HostPortPath) {
  auto u = ParseUrl("http://127.0.0.1:8888/block?ms=500");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8888);
  EXPECT_EQ(u->path, "/block?ms=500");
  auto d = ParseUrl("http://localhost");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->port, 80);
  EXPECT_EQ(d->path, "/");
  auto q = ParseUrl("http://h:1?x=1");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->path, "/?x=1");
  auto v6 = ParseUrl("http://[::1]:9000/x");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9000);
}

TEST(ParseUrl, Rejects) {
  for (const char* bad : {"https://a/", "127.0.0.1:8888", "http://", "http://h:0/",
                          "http://h:70000/", "http://h:x/", "http://h:/"}) {
    auto u = ParseUrl(bad);
    EXPECT_FALSE(u.ok()) << bad;
    if (!u.ok()) {
      EXPECT_NE(u.status().message().find("http://host"), std::string::npos);
    }
  }
}

TEST(ValidateLoadOptions, NamesTheFlag) {
  LoadOptions o;
  o.url = "http://127.0.0.1:1/";
  EXPECT_TRUE(ValidateLoadOptions(o).ok());
  o.concurrency = 0;
  EXPECT_NE(ValidateLoadOptions(o).message().find("--concurrency"), std::string::npos);
  o.concurrency = 2;
  o.threads = 3;
  EXPECT_NE(ValidateLoadOptions(o).message().find("--threads"), std::string::npos);
  o.threads = 1;
  o.rate = -1;
  EXPECT_NE(ValidateLoadOptions(o).message().find("--rate"), std::string::npos);
  o.rate = 0;
  o.timeout = std::chrono::nanoseconds(0);
  EXPECT_NE(ValidateLoadOptions(o).message().find("--timeout"), std::string::npos);
}

TEST(LoadResult, StatsAndJson) {
  LoadResult r;
  r.url = "http://h/";
  r.concurrency = 2;
  r.threads = 1;
  for (int i = 1; i <= 100; ++i) {
    r.latency.Add(static_cast<uint64_t>(i) * 1'000'000);
  }
  r.completed = 100;
  r.ok = 99;
  r.err_status = 1;
  r.err_timeout = 2;
  r.elapsed_s = 2;
  r.qps = 50;
  EXPECT_NEAR(r.mean_s(), 0.0505, 1e-6);
  EXPECT_NEAR(r.quantile_s(0.5), 0.050, 0.0005);
  EXPECT_NEAR(r.quantile_s(0.99), 0.099, 0.001);
  EXPECT_NEAR(r.max_s(), 0.100, 1e-9);
  EXPECT_EQ(r.errors(), 3u);
  const auto j = LoadResultToJson(r);
  EXPECT_EQ(j["requests"], 100);
  EXPECT_EQ(j["errors"], 3);
  EXPECT_EQ(j["errors_by_kind"]["timeout"], 2);
  EXPECT_DOUBLE_EQ(j["qps"].get<double>(), 50);
  const std::string text = FormatLoadText(r);
  EXPECT_NE(text.find("Requests/sec:  50.00"), std::string::npos) << text;
  EXPECT_NE(text.find("p99 98.83ms  max 100.00ms"), std::string::npos) << text;
  EXPECT_NE(text.find("Errors:        3 (connect 0, read 0, write 0, timeout 2, non-2xx/3xx 1)"),
            std::string::npos)
      << text;
}

TEST(ParseUrl, ErrorsShowTheExampleOfTheCaller) {
  auto server = ParseUrl("127.0.0.1:8888");
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("e.g. http://127.0.0.1:8888/"), std::string::npos);
  auto daemon = ParseUrl("127.0.0.1:9466", kDaemonUrlExample);
  ASSERT_FALSE(daemon.ok());
  EXPECT_NE(daemon.status().message().find("e.g. http://127.0.0.1:9466"), std::string::npos)
      << daemon.status().message();
  EXPECT_EQ(daemon.status().message().find("8888"), std::string::npos) << daemon.status().message();
}

TEST(ValidateLoadOptions, CountsRatesAndTimesHaveARange) {
  LoadOptions o;
  o.url = "http://127.0.0.1:1/";
  o.requests = 2'000'000'000;
  EXPECT_NE(ValidateLoadOptions(o).message().find("1..1000000000"), std::string::npos);
  o.requests = 10;
  o.rate = 1e300;
  EXPECT_NE(ValidateLoadOptions(o).message().find("0.001..1000000"), std::string::npos);
  EXPECT_EQ(ValidateLoadOptions(o).message().find("e+"), std::string::npos);
  o.rate = 0;
  o.max_time = std::chrono::nanoseconds(0);
  EXPECT_NE(ValidateLoadOptions(o).message().find("--max-time"), std::string::npos);
}

TEST(FailedRunReason, OnlyWhenNothingSucceededAndNamingTheCommonestCause) {
  LoadResult r;
  r.url = "http://127.0.0.1:1/";
  EXPECT_EQ(FailedRunReason(r), "");  // nothing sent, nothing failed
  r.err_connect = 7;
  r.connect_errno = ECONNREFUSED;
  r.err_timeout = 1;
  EXPECT_EQ(FailedRunReason(r),
            "all 8 requests failed; 7 of them connect: Connection refused (is the server running "
            "at http://127.0.0.1:1/?)");
  r.ok = 1;
  EXPECT_EQ(FailedRunReason(r), "");  // one success: not a failed run
  LoadResult s;
  s.completed = 3;
  s.err_status = 3;
  EXPECT_EQ(FailedRunReason(s), "all 3 requests failed; 3 of them non-2xx/3xx status");
}

TEST(FormatLoadText, NamesTheFirstErrnoOnce) {
  LoadResult r;
  r.err_connect = 50;
  r.connect_errno = ECONNREFUSED;
  const std::string text = FormatLoadText(r);
  EXPECT_NE(text.find("connect 50 (Connection refused)"), std::string::npos) << text;
  EXPECT_EQ(text.find("Connection refused"), text.rfind("Connection refused")) << text;
  EXPECT_EQ(LoadResultToJson(r)["first_errors"]["connect"], "Connection refused");
}

}  // namespace
}  // namespace stallwatch::cli
