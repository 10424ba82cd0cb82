#include "options.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <csignal>

#include "reporter.h"
#include "stallwatch/agent.h"

namespace stallwatch {
namespace {

class EnvTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const char* v :
         {"STALLWATCH_SERVICE", "STALLWATCH_THRESHOLD", "STALLWATCH_INTERVAL",
          "STALLWATCH_ENDPOINT", "STALLWATCH_SAMPLING", "STALLWATCH_SIGNAL",
          "STALLWATCH_MAX_STACK_REPORTS", "STALLWATCH_WATCHDOG", "STALLWATCH_DEBUGINFO"}) {
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
  setenv("STALLWATCH_DEBUGINFO", "yes", 1);
  testing::internal::CaptureStderr();
  Options o = Options::FromEnvironment();
  Options again = Options::FromEnvironment();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(o.stall_threshold, std::chrono::milliseconds(50));
  EXPECT_EQ(o.probe_interval, std::chrono::milliseconds(10));
  EXPECT_EQ(o.endpoint, kDefaultEndpoint);
  EXPECT_EQ(o.sampling, SamplingMode::kOn);
  EXPECT_EQ(o.sample_signal, 0);
  EXPECT_EQ(again.stall_threshold, o.stall_threshold);
  // One line per bad variable, naming the accepted form, reported once per process.
  for (const char* needle :
       {"STALLWATCH_THRESHOLD='fast'", "ns, us, ms, s or m", "STALLWATCH_INTERVAL='0ms'",
        "STALLWATCH_ENDPOINT='http://x'", "unix:/path", "STALLWATCH_SAMPLING='sometimes'",
        "STALLWATCH_SIGNAL='SIGUSR1'", "STALLWATCH_DEBUGINFO='yes'", "expected all"}) {
    EXPECT_NE(err.find(needle), std::string::npos) << needle << "\n" << err;
  }
  size_t lines = 0;
  for (char c : err) {
    lines += c == '\n';
  }
  EXPECT_EQ(lines, 6u) << err;
}

// Fields set in code win over the environment; unset fields take it; without it, the defaults.
TEST_F(EnvTest, ExplicitFieldsOverEnvironmentOverDefaults) {
  setenv("STALLWATCH_SERVICE", "billing", 1);
  setenv("STALLWATCH_THRESHOLD", "200ms", 1);
  setenv("STALLWATCH_SAMPLING", "off", 1);
  setenv("STALLWATCH_MAX_STACK_REPORTS", "3", 1);
  setenv("STALLWATCH_WATCHDOG", "thread", 1);
  Options explicit_fields =
      Options::FromEnvironment({.service = "orders",
                                .stall_threshold = std::chrono::milliseconds(50),
                                .sampling = SamplingMode::kOn,
                                .max_stack_reports_per_minute = 7});
  EXPECT_EQ(explicit_fields.service, "orders");
  EXPECT_EQ(explicit_fields.stall_threshold, std::chrono::milliseconds(50));  // = the default
  EXPECT_EQ(explicit_fields.sampling, SamplingMode::kOn);
  EXPECT_EQ(explicit_fields.max_stack_reports_per_minute, 7);
  EXPECT_EQ(explicit_fields.watchdog, WatchdogMode::kThread);  // not set in code: from the env

  Options from_env = Options::FromEnvironment({});
  EXPECT_EQ(from_env.service, "billing");
  EXPECT_EQ(from_env.stall_threshold, std::chrono::milliseconds(200));
  EXPECT_EQ(from_env.sampling, SamplingMode::kOff);
  EXPECT_EQ(from_env.max_stack_reports_per_minute, 3);

  TearDown();
  Options defaults = Options::FromEnvironment({});
  EXPECT_EQ(defaults.service, "");  // the program name, chosen at attach
  EXPECT_EQ(defaults.stall_threshold, kDefaultStallThreshold);
  EXPECT_EQ(defaults.probe_interval, kDefaultProbeInterval);
  EXPECT_EQ(defaults.report_interval, kDefaultReportInterval);
  EXPECT_EQ(defaults.endpoint, kDefaultEndpoint);
  EXPECT_EQ(defaults.sampling, SamplingMode::kOn);
  EXPECT_EQ(defaults.watchdog, WatchdogMode::kAuto);
  EXPECT_EQ(defaults.max_stack_reports_per_minute, kDefaultMaxStackReportsPerMinute);
  EXPECT_EQ(defaults.sample_signal, 0);
}

TEST(SampleSignal, RealTimeSignalsByNameOrNumber) {
  using agent::internal::ParseSampleSignal;
  EXPECT_EQ(*ParseSampleSignal("SIGRTMIN+3"), SIGRTMIN + 3);
  EXPECT_EQ(*ParseSampleSignal("RTMIN+3"), SIGRTMIN + 3);
  EXPECT_EQ(*ParseSampleSignal("SIGRTMIN"), SIGRTMIN);
  EXPECT_EQ(*ParseSampleSignal("SIGRTMAX-2"), SIGRTMAX - 2);
  EXPECT_EQ(*ParseSampleSignal("RTMAX"), SIGRTMAX);
  EXPECT_EQ(*ParseSampleSignal("40"), 40);
  EXPECT_EQ(*ParseSampleSignal(std::to_string(SIGRTMAX)), SIGRTMAX);
  // Signals that are not real-time ones: the message says which are needed.
  for (const char* bad : {"SIGUSR1", "USR2", "10", "SIGPROF", "1", "SIGRTMAX+1", "SIGRTMIN-1"}) {
    auto r = ParseSampleSignal(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("a real-time signal"), std::string::npos)
        << bad << ": " << r.status().message();
    EXPECT_NE(r.status().message().find("SIGRTMIN"), std::string::npos) << bad;
  }
  for (const char* bad : {"", "SIGRTMIN+", "SIGRTMIN+x", "RTMIN 3", " 40", "40 ", "sigrtmin+3",
                          "SIGRTMIN++3", "-40", "99999999999999999999"}) {
    auto r = ParseSampleSignal(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("real-time signal"), std::string::npos)
        << bad << ": " << r.status().message();
  }
}

TEST_F(EnvTest, SignalSpelledAsInTheReadmeIsApplied) {
  setenv("STALLWATCH_SIGNAL", "SIGRTMIN+3", 1);
  EXPECT_EQ(Options::FromEnvironment().sample_signal, SIGRTMIN + 3);
  setenv("STALLWATCH_SIGNAL", "SIGRTMAX-2", 1);
  EXPECT_EQ(Options::FromEnvironment().sample_signal, SIGRTMAX - 2);
}

TEST_F(EnvTest, StackBudgetFromEnvironment) {
  using agent::internal::OptionsFromEnv;
  auto env = [](const char* value) {
    return [value](const char* name) -> const char* {
      return std::string(name) == "STALLWATCH_MAX_STACK_REPORTS" ? value : nullptr;
    };
  };
  EXPECT_EQ(OptionsFromEnv({}, env("0")).max_stack_reports_per_minute, 0);
  EXPECT_EQ(OptionsFromEnv({}, env("120")).max_stack_reports_per_minute, 120);
  testing::internal::CaptureStderr();
  for (const char* bad : {"-1", "many", "12/min", "1e3", "99999999"}) {
    EXPECT_EQ(OptionsFromEnv({}, env(bad)).max_stack_reports_per_minute,
              kDefaultMaxStackReportsPerMinute)
        << bad;
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("STALLWATCH_MAX_STACK_REPORTS='-1' ignored: expected a whole number"),
            std::string::npos)
      << err;
}

// A value from the environment reaches the warning escaped: one line, no raw control bytes.
TEST_F(EnvTest, IgnoredValueIsEscapedInTheWarning) {
  using agent::internal::OptionsFromEnv;
  const auto env = [](const char* name) -> const char* {
    return std::string(name) == "STALLWATCH_WATCHDOG" ? "thr\nead\x1b[31m" : nullptr;
  };
  testing::internal::CaptureStderr();
  EXPECT_EQ(OptionsFromEnv({}, env).watchdog, WatchdogMode::kAuto);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("STALLWATCH_WATCHDOG='thr\\x0aead\\x1b[31m' ignored"), std::string::npos)
      << err;
  EXPECT_EQ(err.find('\x1b'), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST(Endpoint, TyposGetAHint) {
  using agent::internal::EndpointHint;
  EXPECT_EQ(EndpointHint("stdout"), "did you mean stderr?");
  EXPECT_EQ(EndpointHint("/var/log/x.jsonl"),
            "did you mean file:/var/log/x.jsonl or unix:/var/log/x.jsonl?");
  EXPECT_EQ(EndpointHint("udp:x"), "");
}

TEST(Endpoint, FileEndpointChecks) {
  using agent::internal::CheckFileEndpoint;
  EXPECT_TRUE(CheckFileEndpoint("/tmp/stallwatch-unit-new-file.jsonl").ok());
  auto folder = CheckFileEndpoint("/tmp");
  ASSERT_FALSE(folder.ok());
  EXPECT_NE(folder.message().find("/tmp is a folder"), std::string::npos) << folder.message();
  auto missing = CheckFileEndpoint("/tmp/stallwatch-no-such-folder/x/f.jsonl");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("folder /tmp/stallwatch-no-such-folder/x does not exist"),
            std::string::npos)
      << missing.message();
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
