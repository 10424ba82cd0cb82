// `stallwatch check`'s pure parts (cli/src/check.h): --forbid parsing and the verdict from
// finding lines.
#include "check.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace stallwatch::cli {
namespace {

using namespace std::chrono_literals;

TEST(ParseForbidList, CallsAndFamilies) {
  auto f = ParseForbidList("getaddrinfo,sleep,fsync");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*f, (std::set<std::string>{"getaddrinfo", "sleep", "fsync"}));
  EXPECT_TRUE(ParseForbidList("dns,wait,lock,connect,sync").ok());
  EXPECT_TRUE(ParseForbidList("file,socket,read,read_blocking,recv,popen,pthread_mutex_lock").ok());
}

TEST(ParseForbidList, BadItemsNameTheAcceptedForm) {
  auto f = ParseForbidList("getaddrinfo,fread");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("unknown call 'fread'"), std::string::npos);
  EXPECT_NE(f.status().message().find("getaddrinfo,gethostbyname"), std::string::npos);
  EXPECT_EQ(f.status().message().find('\n'), std::string::npos);
  EXPECT_FALSE(ParseForbidList("").ok());
  EXPECT_FALSE(ParseForbidList("dns,,sleep").ok());
  EXPECT_FALSE(ParseForbidList("dns,").ok());
}

TEST(IsForbidden, SleepIsTheFamily) {
  const std::set<std::string> forbid{"sleep", "fsync"};
  EXPECT_TRUE(IsForbidden(forbid, "usleep"));
  EXPECT_TRUE(IsForbidden(forbid, "clock_nanosleep"));
  EXPECT_TRUE(IsForbidden(forbid, "fsync"));
  EXPECT_FALSE(IsForbidden(forbid, "fdatasync"));
  EXPECT_FALSE(IsForbidden(forbid, "getaddrinfo"));
}

TEST(IsForbidden, FileAndSocketFamilies) {
  const std::set<std::string> file{"file"};
  EXPECT_TRUE(IsForbidden(file, "read"));
  EXPECT_TRUE(IsForbidden(file, "openat"));
  EXPECT_FALSE(IsForbidden(file, "read_blocking"));  // a pipe or socket, not a file
  const std::set<std::string> socket{"socket"};
  EXPECT_TRUE(IsForbidden(socket, "read_blocking"));
  EXPECT_TRUE(IsForbidden(socket, "recv"));
  EXPECT_FALSE(IsForbidden(socket, "connect"));  // its own family, as before
  const std::set<std::string> lock{"lock"};
  EXPECT_TRUE(IsForbidden(lock, "pthread_mutex_lock"));
  EXPECT_TRUE(IsForbidden(lock, "fcntl"));
  EXPECT_TRUE(IsForbidden({"wait"}, "popen"));
}

const char* kCalls1 =
    R"({"kind":"calls","schema_version":2,"service":"app","pid":7,"loop":"main","end_ns":1,)"
    R"("window_s":1.0,"overflow":0,"calls":[)"
    R"({"call":"getaddrinfo","count":60,"total_s":0.006,"max_s":0.0002,"p99_s":0.0002,)"
    R"("site":{"function":"resolve_backend","module":"/app","offset":4660,"file":"app.c","line":20,"kind":"native"}},)"
    R"({"call":"usleep","count":2,"total_s":0.02,"max_s":0.01,"p99_s":0.01,)"
    R"("site":{"function":"nap","module":"/app","offset":5000,"file":"app.c","line":30,"kind":"native"}}]})";
const char* kCalls2 =
    R"({"kind":"calls","schema_version":2,"service":"app","pid":7,"loop":"main","end_ns":2,)"
    R"("window_s":1.0,"overflow":0,"calls":[)"
    R"({"call":"getaddrinfo","count":40,"total_s":0.004,"max_s":0.0003,"p99_s":0.0003,)"
    R"("site":{"function":"resolve_backend","module":"/app","offset":4660,"file":"app.c","line":20,"kind":"native"}}]})";
const char* kStallOngoing =
    R"({"kind":"stall","schema_version":2,"service":"app","pid":7,"loop":"main","stall_id":1,)"
    R"("start_ns":1,"duration_s":0.06,"ongoing":true,"class":"blocked","syscall":"nanosleep",)"
    R"("stacks":[{"samples":1,"method":"proc","frames":[{"function":"clock_nanosleep",)"
    R"("module":"/usr/lib/x86_64-linux-gnu/libc.so.6","offset":9,"file":"","line":0,)"
    R"("kind":"native"},{"function":"nap","module":"/app",)"
    R"("offset":1,"file":"app.c","line":30,"kind":"native"}]}]})";
const char* kStallClosed =
    R"({"kind":"stall","schema_version":2,"service":"app","pid":7,"loop":"main","stall_id":1,)"
    R"("start_ns":1,"duration_s":0.12,"ongoing":false,"class":"blocked","syscall":"nanosleep",)"
    R"("stacks":[]})";

TEST(Evaluate, SumsWindowsAndFlagsForbiddenCalls) {
  CheckCriteria c;
  c.max_stall = 1s;
  c.forbid = {"dns"};
  const CheckReport r = Evaluate({kCalls1, "not json", kCalls2, ""}, c);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].call, "getaddrinfo");
  EXPECT_EQ(r.calls[0].site.function, "resolve_backend");
  EXPECT_EQ(r.calls[0].count, 100u);
  EXPECT_DOUBLE_EQ(r.calls[0].max_s, 0.0003);
  EXPECT_EQ(r.calls[0].reason, "forbidden");
  EXPECT_EQ(r.lines_unreadable, 1u);
  EXPECT_TRUE(r.stalls.empty());
  const std::string text = FormatCheckText(r, c);
  EXPECT_NE(text.find("getaddrinfo from resolve_backend (app.c:20) on loop main: 100 calls"),
            std::string::npos)
      << text;
}

TEST(Evaluate, MaxBlockingFlagsOnlyLongerCalls) {
  CheckCriteria c;
  c.max_stall = 1s;
  c.max_blocking = 5ms;
  const CheckReport r = Evaluate({kCalls1, kCalls2}, c);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].call, "usleep");
  EXPECT_EQ(r.calls[0].reason, "longer than 5ms");
}

TEST(Evaluate, AStallIsJudgedByItsFinalDurationWithTheStacksItHad) {
  CheckCriteria c;
  c.max_stall = 100ms;
  CheckReport r = Evaluate({kStallOngoing, kStallClosed}, c);
  ASSERT_EQ(r.stalls.size(), 1u);
  EXPECT_DOUBLE_EQ(r.stalls[0].duration_s, 0.12);
  ASSERT_EQ(r.stalls[0].top_frames.size(), 1u);  // libc's wrapper left out
  EXPECT_EQ(r.stalls[0].top_frames[0].function, "nap");
  c.max_stall = 200ms;
  r = Evaluate({kStallOngoing, kStallClosed}, c);
  EXPECT_TRUE(r.clean());
  EXPECT_EQ(r.loops_seen, 1u);
}

TEST(Evaluate, CleanRunsAreClean) {
  CheckCriteria c;
  const CheckReport r = Evaluate({kCalls1}, c);
  EXPECT_TRUE(r.clean());
  EXPECT_NE(FormatCheckText(r, c).find("clean"), std::string::npos);
  const std::string j = FormatCheckJson(r, c, 0);
  EXPECT_NE(j.find("\"ok\":true"), std::string::npos) << j;
}

}  // namespace
}  // namespace stallwatch::cli
