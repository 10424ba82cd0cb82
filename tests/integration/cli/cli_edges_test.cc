// The stallwatch binary at its edges: out-of-range numbers, failed runs, unresolvable bind
// addresses and malformed URLs each get one line naming the accepted form, and the right exit.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
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

size_t Count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) {
    ++n;
  }
  return n;
}

std::string LastLine(std::string s) {
  while (!s.empty() && s.back() == '\n') {
    s.pop_back();
  }
  const size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

struct Case {
  std::string args;
  std::string says;  // the accepted form, in the error
};

void ExpectUsageError(const Case& c) {
  const Result r = Stallwatch(c.args);
  EXPECT_EQ(r.code, 2) << c.args << ":\n" << r.out;
  EXPECT_NE(r.out.find(c.says), std::string::npos) << c.args << ":\n" << r.out;
  // The error, then CLI11's "Run with --help for more information."
  EXPECT_LE(Count(r.out, "\n"), 2u) << c.args << ":\n" << r.out;
  // CLI11's numeric validators print DBL_MAX and friends; ours name the range.
  EXPECT_EQ(r.out.find("1.79769"), std::string::npos) << c.args << ":\n" << r.out;
}

TEST(CliEdges, LoadRefusesNegativeAndZeroCountsAndDurationsWithTheRange) {
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort()) + "/";
  for (const Case& c : {
           Case{"load " + url + " -n -3", "1..1000000000"},
           Case{"load " + url + " -n 0", "1..1000000000"},
           Case{"load " + url + " -n 5x", "1..1000000000"},
           Case{"load " + url + " -c 0", "1..10000"},
           Case{"load " + url + " -c -1", "1..10000"},
           Case{"load " + url + " -t 0", "1..64"},
           Case{"load " + url + " -d 0s", "not above zero"},
           Case{"load " + url + " -d -5s", "--duration"},
           Case{"load " + url + " --timeout 0ms", "not above zero"},
           Case{"load " + url + " --max-time 0s", "not above zero"},
           Case{"load " + url + " --rate 0", "0.001..1000000"},
           Case{"load " + url + " --rate -2", "0.001..1000000"},
       }) {
    ExpectUsageError(c);
  }
}

TEST(CliEdges, OtherCommandsRefuseZeroCountsAndDurationsWithTheRange) {
  for (const Case& c : {
           Case{"serve --workers 0", "1..1024"},
           Case{"serve --port -1", "0..65535"},
           Case{"serve --threshold 0ms", "not above zero"},
           Case{"experiment -c 0", "1..1000"},
           Case{"experiment -c 5,-1", "1..1000"},
           Case{"experiment -d 0s", "not above zero"},
           Case{"experiment --workers 0", "1..1024"},
           Case{"experiment --threshold 0s", "not above zero"},
           Case{"block --period 0s", "not above zero"},
           Case{"block --duration 0ms", "not above zero"},
           Case{"stalls -n 0", "1..1000"},
           Case{"top --iterations -1", "0..1000000"},
           Case{"run --threshold 0ms -- true", "not above zero"},
       }) {
    ExpectUsageError(c);
  }
}

// The start of a shell script (inside sh -c '…'): a daemon on a temporary socket with HTTP on
// `hport` (its pid in $dpid), `serve` reporting to it (its pid in $spid, its address in $port),
// one request that blocks serve's loop for 300 ms, and a wait until /api/v1/stalls`query` lists
// a stall. $dir is the temporary directory.
std::string DaemonServeAndOneStall(const std::string& hport, const std::string& query) {
  const std::string bin = SW_STALLWATCH_BIN;
  const std::string daemon = SW_STALLWATCHD_BIN;
  return "dir=$(mktemp -d); " + daemon + " --agent-socket $dir/agent.sock --http-listen " +
         "127.0.0.1:" + hport +
         " --log-level warn >$dir/d.out 2>&1 & dpid=$!; "
         "for i in $(seq 100); do [ -S $dir/agent.sock ] && break; sleep 0.1; done; " +
         bin +
         " serve --port 0 --threshold 50ms --endpoint unix:$dir/agent.sock >$dir/s.out 2>&1 & "
         "spid=$!; "
         "for i in $(seq 100); do grep -q listening $dir/s.out && break; sleep 0.1; done; "
         "port=$(grep -o \"127.0.0.1:[0-9]*\" $dir/s.out | head -1); " +
         bin + " load \"http://$port/block?ms=300\" -n 1 -c 1 >/dev/null 2>&1; " +
         "for i in $(seq 100); do curl -s \"http://127.0.0.1:" + hport + "/api/v1/stalls" + query +
         "\" | grep -q stall_id && break; sleep 0.1; done; ";
}

// experiment --daemon URL uses that running daemon, and its closing count is only the
// experiment's own stalls: a stall another process reported to the same daemon is not counted.
TEST(CliEdges, ExperimentWithAGivenDaemonCountsOnlyItsOwnStalls) {
  const std::string bin = SW_STALLWATCH_BIN;
  const std::string hport = std::to_string(ClosedPort());
  const Result r =
      RunCommand("sh -c '" + DaemonServeAndOneStall(hport, "") + "kill -TERM $spid; wait $spid; " +
                 bin + " experiment --quick --modes block -c 2 --daemon http://127.0.0.1:" + hport +
                 " --endpoint unix:$dir/agent.sock --json >/dev/null; echo exit=$?; "
                 "echo foreign=$(curl -s http://127.0.0.1:" +
                 hport +
                 "/api/v1/stalls | grep -o \"\\\"pid\\\"\" | wc -l); "
                 "kill -TERM $dpid; wait $dpid; rm -rf $dir'");
  EXPECT_NE(r.out.find("exit=0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("counted at stallwatchd http://127.0.0.1:" + hport), std::string::npos)
      << r.out;
  // The quick block run at c=2 stalls the loop in every wave: at least one stall of its own.
  const size_t at = r.out.find("stallwatchd recorded ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const int own = std::atoi(r.out.c_str() + at + std::strlen("stallwatchd recorded "));
  const size_t fat = r.out.find("foreign=");
  ASSERT_NE(fat, std::string::npos) << r.out;
  const int all = std::atoi(r.out.c_str() + fat + std::strlen("foreign="));
  EXPECT_GE(own, 1) << r.out;
  // The daemon holds the serve process's stall too; the experiment's count leaves it out.
  EXPECT_EQ(all, own + 1) << r.out;
}

// `stallwatch stacks` against a real daemon that holds a real blocked stall of `serve`: the
// filters reach the daemon (the class narrows, an unknown service empties), a pprof profile goes
// to -o FILE but never to a terminal, and the daemon's refusal of a bad --since is printed.
TEST(CliEdges, StacksFiltersAndWritesPprofToAFileNeverToATerminal) {
  const std::string bin = SW_STALLWATCH_BIN;
  const std::string hport = std::to_string(ClosedPort());
  const std::string stacks = bin + " stacks --daemon http://127.0.0.1:" + hport;
  const Result r =
      RunCommand("sh -c '" + DaemonServeAndOneStall(hport, "?ongoing=false") + "echo == blocked; " +
                 stacks + " --format folded --class blocked --since 10m; echo == cpu; " + stacks +
                 " --format folded --class cpu; echo == nobody; " + stacks +
                 " --format json --service nobody; echo == pprof; " + stacks +
                 " --format pprof --since 1h -o $dir/p.pb.gz; echo pprof_exit=$?; "
                 "echo magic=$(od -An -tx1 -N2 $dir/p.pb.gz | tr -d \" \"); echo == tty; "
                 "script -qec \"" +
                 stacks + " --format pprof\" /dev/null; echo tty_exit=$?; echo == bad; " + stacks +
                 " --since soon; echo bad_exit=$?; echo == end; "
                 "kill -TERM $spid; wait $spid; kill -TERM $dpid; wait $dpid; rm -rf $dir'");
  auto section = [&](const std::string& name) {
    const size_t from = r.out.find("== " + name + "\n");
    if (from == std::string::npos) {
      return std::string();
    }
    const size_t to = r.out.find("== ", from + 3);
    return r.out.substr(from, to == std::string::npos ? std::string::npos : to - from);
  };
  EXPECT_NE(section("blocked").find("BlockingSleepOnLoop"), std::string::npos) << r.out;
  EXPECT_EQ(section("cpu").find("BlockingSleepOnLoop"), std::string::npos) << r.out;
  EXPECT_NE(section("nobody").find("\"stacks\":[]"), std::string::npos) << r.out;
  EXPECT_NE(section("pprof").find("pprof_exit=0"), std::string::npos) << r.out;
  EXPECT_NE(section("pprof").find("magic=1f8b"), std::string::npos) << r.out;
  EXPECT_NE(section("tty").find("refusing to write a binary pprof profile to a terminal; use -o "
                                "FILE"),
            std::string::npos)
      << r.out;
  EXPECT_NE(section("tty").find("tty_exit=1"), std::string::npos) << r.out;
  EXPECT_NE(section("bad").find("bad since 'soon': expected Unix nanoseconds"), std::string::npos)
      << r.out;
  EXPECT_NE(section("bad").find("bad_exit=1"), std::string::npos) << r.out;
  ExpectUsageError({"stacks --class sleepy", "--class"});
  ExpectUsageError({"stacks --format svg", "--format"});
}

TEST(CliEdges, ExperimentWithADaemonThatDoesNotAnswerSaysSo) {
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort());
  const Result r = Stallwatch("experiment --quick --daemon " + url);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("stallwatch experiment: no stallwatchd answers at " + url + "/healthz"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(Count(r.out, "\n"), 1u) << r.out;
}

// A bad --work is refused before a daemon is looked for or started.
TEST(CliEdges, ExperimentRefusesBadOptionsBeforeStartingAnything) {
  const Result r = Stallwatch("experiment --work 20s");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "stallwatch experiment: --work must be in 1ms..10s, e.g. 500ms\n");
}

TEST(CliEdges, ALoadWhereEveryConnectionIsRefusedExitsNonZeroNamingTheErrnoOnce) {
  const Result r =
      Stallwatch("load http://127.0.0.1:" + std::to_string(ClosedPort()) + "/ -n 20 -c 2");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(LastLine(r.out).find("stallwatch load: all 20 requests failed"), std::string::npos)
      << r.out;
  EXPECT_NE(LastLine(r.out).find("connect: Connection refused"), std::string::npos) << r.out;
  // Named in the table and in the last line, not once per request.
  EXPECT_GE(Count(r.out, "Connection refused"), 1u) << r.out;
  EXPECT_LE(Count(r.out, "Connection refused"), 2u) << r.out;
}

TEST(CliEdges, ALoadWhereEveryAnswerIsNon2xxExitsNonZero) {
  const std::string bin = SW_STALLWATCH_BIN;
  const Result r =
      RunCommand("sh -c 'out=$(mktemp); " + bin +
                 " serve --port 0 --endpoint off >$out 2>&1 & pid=$!; "
                 "for i in $(seq 100); do grep -q listening $out && break; sleep 0.1; done; "
                 "port=$(grep -o \"127.0.0.1:[0-9]*\" $out | head -1); " +
                 bin +
                 " load http://$port/no-such-route -n 10 -c 2; echo exit=$?; "
                 "kill -TERM $pid; wait $pid; rm -f $out'");
  EXPECT_NE(r.out.find("exit=1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stallwatch load: all 10 requests failed; 10 of them non-2xx/3xx status"),
            std::string::npos)
      << r.out;
}

TEST(CliEdges, ServeWithAnUnresolvableBindSaysSoAndTheAcceptedForm) {
  const Result r = Stallwatch("serve --bind nothost.invalid --port 0 --endpoint off");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("cannot resolve --bind 'nothost.invalid'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("127.0.0.1"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("Success"), std::string::npos) << r.out;
  EXPECT_EQ(Count(r.out, "\n"), 1u) << r.out;
}

TEST(CliEdges, UrlErrorsShowAnExampleForTheCommandAndNeverAnInternalUrl) {
  struct UrlCase {
    std::string args;
    std::string example;
  };
  for (const UrlCase& c : {
           UrlCase{"stalls --daemon 127.0.0.1:9466", "e.g. http://127.0.0.1:9466"},
           UrlCase{"stacks --daemon ftp://x", "e.g. http://127.0.0.1:9466"},
           UrlCase{"top --daemon localhost --iterations 1", "e.g. http://127.0.0.1:9466"},
           UrlCase{"load 127.0.0.1:8888/ -n 1", "e.g. http://127.0.0.1:8888/"},
           UrlCase{"block --url 127.0.0.1:8888", "e.g. http://127.0.0.1:8888"},
           UrlCase{"unblock --url http://:1", "e.g. http://127.0.0.1:8888"},
       }) {
    const Result r = Stallwatch(c.args);
    EXPECT_EQ(r.code, 2) << c.args << ":\n" << r.out;
    EXPECT_NE(r.out.find(c.example), std::string::npos) << c.args << ":\n" << r.out;
    EXPECT_EQ(r.out.find("/api/v1"), std::string::npos) << c.args << ":\n" << r.out;
    EXPECT_EQ(r.out.find("/control/"), std::string::npos) << c.args << ":\n" << r.out;
    if (c.args.find("--daemon") != std::string::npos) {
      EXPECT_EQ(r.out.find("8888"), std::string::npos) << c.args << ":\n" << r.out;
    }
  }
}

// A DNS lookup on the loop, for real: `serve --upstream dns-stall.test:80` resolves the
// upstream with getaddrinfo() on the loop in /upstream-blocking. The resolver is a UDP socket on
// 127.0.0.1:53 that never answers, made the nameserver for the server alone: its own mount
// namespace bind-mounts a test resolv.conf over /etc/resolv.conf (the host's file is untouched).
// The agent must see the loop blocked on that socket and hint evdns_getaddrinfo().
TEST(CliEdges, ADnsLookupOnTheLoopGetsTheEvdnsHint) {
  const int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(53);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(udp, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(udp);
    GTEST_SKIP() << "cannot bind 127.0.0.1:53 (needs root and a free port 53)";
  }
  if (RunCommand("unshare -m true").code != 0) {
    close(udp);
    GTEST_SKIP() << "cannot create a mount namespace (unshare -m)";
  }
  const std::string bin = SW_STALLWATCH_BIN;
  const Result r = RunCommand(
      "sh -c 'dir=$(mktemp -d); "
      "printf \"nameserver 127.0.0.1\\noptions timeout:1 attempts:1\\n\" >$dir/resolv.conf; "
      "unshare -m sh -c \"mount --bind $dir/resolv.conf /etc/resolv.conf && exec " +
      bin +
      " serve --port 0 --threshold 50ms --endpoint file:$dir/f.jsonl "
      "--upstream dns-stall.test:80\" >$dir/out 2>&1 & pid=$!; "
      "for i in $(seq 100); do grep -q listening $dir/out && break; sleep 0.1; done; "
      "port=$(grep -o \"127.0.0.1:[0-9]*\" $dir/out | head -1); " +
      bin +
      " load http://$port/upstream-blocking -n 1 -c 1 --timeout 20s >/dev/null 2>&1; "
      "for i in $(seq 100); do grep -q \"\\\"ongoing\\\":false\" $dir/f.jsonl && break; "
      "sleep 0.1; done; "
      "kill -TERM $pid; wait $pid; grep \"\\\"kind\\\":\\\"stall\" $dir/f.jsonl; "
      "rm -rf $dir'");
  close(udp);
  EXPECT_NE(r.out.find("\"class\":\"blocked\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-> 127.0.0.1:53"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("evdns_getaddrinfo()"), std::string::npos) << r.out;
  // The stack has no proven tail call (CLI11 reaches the handler through std::function's
  // indirect jump): no note about one.
  EXPECT_EQ(r.out.find("tail-called"), std::string::npos) << r.out;
}

}  // namespace
