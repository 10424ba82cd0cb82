// The stallwatch binary: help that teaches, one-line errors with exit code 2 for bad flags,
// and serve's graceful shutdown on SIGTERM/SIGINT.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "test_support.h"

namespace {

using Result = stallwatch::testing::CommandResult;
using stallwatch::testing::RunCommand;

// A loopback port nothing listens on (bound, then closed).
int ClosedPort() { return stallwatch::testing::FreeLoopbackPort(); }

Result Stallwatch(const std::string& args) {
  return RunCommand(std::string(SW_STALLWATCH_BIN) + " " + args);
}

size_t Lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(StallwatchBinary, HelpOfEveryCommandHasExamples) {
  const Result top = Stallwatch("--help");
  EXPECT_EQ(top.code, 0);
  for (const char* cmd :
       {"serve", "load", "experiment", "block", "unblock", "stalls", "stacks", "top"}) {
    EXPECT_NE(top.out.find(cmd), std::string::npos) << cmd;
    const Result r = Stallwatch(std::string(cmd) + " --help");
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find("Example"), std::string::npos) << cmd << ":\n" << r.out;
  }
}

TEST(StallwatchBinary, BadFlagsGiveOneLineAndExit2) {
  struct Case {
    const char* args;
    const char* says;
  } cases[] = {
      {"", "subcommand"},
      {"serve --port 70000", "--port"},
      {"serve --threshold 5parsecs", "--threshold"},
      {"load", "url"},
      {"load http://127.0.0.1:1/ -c 0", "--concurrency"},
      {"load http://127.0.0.1:1/ --duration soon", "--duration"},
      {"experiment --modes block,teleport", "teleport"},
      {"experiment --format html", "table, markdown, csv or json"},
      {"block --kind gpu", "--kind"},
      {"stacks --format svg", "--format"},
      {"frobnicate", "frobnicate"},
  };
  for (const auto& c : cases) {
    const Result r = Stallwatch(c.args);
    EXPECT_EQ(r.code, 2) << c.args << ":\n" << r.out;
    EXPECT_NE(r.out.find(c.says), std::string::npos) << c.args << ":\n" << r.out;
    // The error, then CLI11's "Run with --help for more information."
    EXPECT_LE(Lines(r.out), 2u) << c.args << ":\n" << r.out;
  }
}

TEST(StallwatchBinary, RuntimeErrorsAreOneLineAndExit1) {
  Result r = Stallwatch("load http://no-such-host.invalid/ -n 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out.rfind("stallwatch load: cannot resolve no-such-host.invalid", 0), 0u) << r.out;
  EXPECT_EQ(Lines(r.out), 1u) << r.out;
  const std::string closed = "127.0.0.1:" + std::to_string(ClosedPort());
  r = Stallwatch("stalls --daemon http://" + closed);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("stallwatch stalls: cannot connect to " + closed), std::string::npos)
      << r.out;
  EXPECT_EQ(Lines(r.out), 1u) << r.out;
  r = Stallwatch("unblock --url http://" + closed);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(Lines(r.out), 1u) << r.out;
  r = Stallwatch("experiment --work 0ms");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--work must be in 1ms..10s"), std::string::npos) << r.out;
}

TEST(StallwatchBinary, ServeShutsDownOnSigtermAndSigint) {
  for (const char* sig : {"TERM", "INT"}) {
    const std::string bin = SW_STALLWATCH_BIN;
    const Result r =
        RunCommand("out=$(mktemp); " + bin +
                   " serve --port 0 --endpoint off >$out 2>&1 & pid=$!; "
                   "for i in $(seq 50); do grep -q listening $out && break; sleep 0.1; done; "
                   "port=$(grep -o '127.0.0.1:[0-9]*' $out | head -1); " +
                   bin + " block --url http://$port --duration 50ms --period 100ms; " + bin +
                   " load http://$port/ -n 100 -c 2 --json | grep -o '\"requests\":100'; "
                   "kill -" +
                   sig + " $pid; wait $pid; echo exit=$?; cat $out; rm -f $out");
    EXPECT_NE(r.out.find("loop stalls 50ms every 100ms (sleep)"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("\"requests\":100"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("exit=0"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(std::string("SIG") + sig + " received, shutting down"), std::string::npos)
        << r.out;
  }
}

}  // namespace

namespace {

TEST(StallwatchBinary, VersionAndHelpExit0) {
  Result r = Stallwatch("--version");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("stallwatch ", 0), 0u) << r.out;
  EXPECT_EQ(Lines(r.out), 1u) << r.out;
  r = Stallwatch("--help");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--version"), std::string::npos) << r.out;
}

TEST(StallwatchBinary, ParseErrorsExit2NotCli11Codes) {
  // Each is a different CLI11 error class with its own internal code (105 ExtrasError, 106
  // RequiredError, 107 ArgumentMismatch, 109 ...): all are usage errors, exit 2.
  for (const char* args : {"--bogus", "serve --bogus", "serve --port", "serve extra-argument",
                           "load http://127.0.0.1:1/ -c", "stalls --limit many"}) {
    const Result r = Stallwatch(args);
    EXPECT_EQ(r.code, 2) << args << ":\n" << r.out;
    EXPECT_LE(Lines(r.out), 2u) << args << ":\n" << r.out;
  }
}

}  // namespace
