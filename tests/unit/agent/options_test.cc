#include <gtest/gtest.h>
#include <stdlib.h>

#include "reporter.h"
#include "stallwatch/agent.h"

namespace stallwatch {
namespace {

class EnvTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const char* v : {"STALLWATCH_SERVICE", "STALLWATCH_THRESHOLD", "STALLWATCH_INTERVAL",
                          "STALLWATCH_ENDPOINT", "STALLWATCH_SAMPLING", "STALLWATCH_SIGNAL"}) {
      unsetenv(v);
    }
  }
};

TEST_F(EnvTest, ValidValuesAreApplied) {
  setenv("STALLWATCH_SERVICE", "billing", 1);
  setenv("STALLWATCH_THRESHOLD", "20ms", 1);
  setenv("STALLWATCH_INTERVAL", "2ms", 1);
  setenv("STALLWATCH_ENDPOINT", "file:/tmp/x.jsonl", 1);
  setenv("STALLWATCH_SAMPLING", "off", 1);
  setenv("STALLWATCH_SIGNAL", "40", 1);
  Options o = Options::FromEnvironment();
  EXPECT_EQ(o.service, "billing");
  EXPECT_EQ(o.stall_threshold, std::chrono::milliseconds(20));
  EXPECT_EQ(o.probe_interval, std::chrono::milliseconds(2));
  EXPECT_EQ(o.endpoint, "file:/tmp/x.jsonl");
  EXPECT_EQ(o.sampling, SamplingMode::kOff);
  EXPECT_EQ(o.sample_signal, 40);
}

TEST_F(EnvTest, MalformedValuesKeepDefaultsAndSayWhyOnce) {
  setenv("STALLWATCH_THRESHOLD", "fast", 1);
  setenv("STALLWATCH_INTERVAL", "0ms", 1);
  setenv("STALLWATCH_ENDPOINT", "http://x", 1);
  setenv("STALLWATCH_SAMPLING", "sometimes", 1);
  setenv("STALLWATCH_SIGNAL", "SIGUSR1", 1);
  testing::internal::CaptureStderr();
  Options o = Options::FromEnvironment();
  Options again = Options::FromEnvironment();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(o.stall_threshold, std::chrono::milliseconds(50));
  EXPECT_EQ(o.probe_interval, std::chrono::milliseconds(10));
  EXPECT_EQ(o.endpoint, "");
  EXPECT_EQ(o.sampling, SamplingMode::kOn);
  EXPECT_EQ(o.sample_signal, 0);
  EXPECT_EQ(again.stall_threshold, o.stall_threshold);
  // One line per bad variable, naming the accepted form, reported once per process.
  for (const char* needle :
       {"STALLWATCH_THRESHOLD='fast'", "ns, us, ms, s or m", "STALLWATCH_INTERVAL='0ms'",
        "STALLWATCH_ENDPOINT='http://x'", "unix:/path", "STALLWATCH_SAMPLING='sometimes'",
        "STALLWATCH_SIGNAL='SIGUSR1'"}) {
    EXPECT_NE(err.find(needle), std::string::npos) << needle << "\n" << err;
  }
  size_t lines = 0;
  for (char c : err) lines += c == '\n';
  EXPECT_EQ(lines, 5u) << err;
}

TEST(Endpoint, AcceptedForms) {
  using agent::internal::Endpoint;
  using agent::internal::ParseEndpoint;
  EXPECT_EQ(ParseEndpoint("off")->kind, Endpoint::Kind::kOff);
  EXPECT_EQ(ParseEndpoint("stderr")->kind, Endpoint::Kind::kStderr);
  EXPECT_EQ(ParseEndpoint("file:/a/b")->path, "/a/b");
  EXPECT_EQ(ParseEndpoint("unix:/run/x.sock")->kind, Endpoint::Kind::kUnix);
  auto t = ParseEndpoint("tcp:127.0.0.1:9467");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->host, "127.0.0.1");
  EXPECT_EQ(t->port, 9467);
  EXPECT_EQ(ParseEndpoint("tcp:[::1]:9467")->host, "::1");
  for (const char* bad :
       {"", "file:relative", "tcp:host", "tcp:host:0", "tcp:host:99999", "udp:x", "unix:"}) {
    auto r = ParseEndpoint(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("expected unix:/path"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace stallwatch
