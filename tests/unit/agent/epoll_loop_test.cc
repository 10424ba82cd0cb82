// Discovery policy and runtime naming of epoll loops (agent/src/epoll_loop.h).
#include "epoll_loop.h"

#include <gtest/gtest.h>

namespace stallwatch::agent::internal {
namespace {

TEST(WaitTracker, TheSecondWaitOnTheSameEpollFdMakesItTheLoop) {
  WaitTracker t;
  EXPECT_FALSE(t.Observe(7));
  EXPECT_TRUE(t.Observe(7));
}

TEST(WaitTracker, InterleavedFdsAttachTheFirstOneWaitedOnTwice) {
  WaitTracker t;
  EXPECT_FALSE(t.Observe(3));
  EXPECT_FALSE(t.Observe(9));
  EXPECT_FALSE(t.Observe(4));
  EXPECT_TRUE(t.Observe(9));
}

TEST(WaitTracker, AThreadWaitingOnManyFdsOnceEachIsNoLoop) {
  WaitTracker t;
  for (int fd = 10; fd < 10 + WaitTracker::kTracked; ++fd) {
    EXPECT_FALSE(t.Observe(fd));
  }
  EXPECT_FALSE(t.gave_up());
  EXPECT_FALSE(t.Observe(99));  // one fd more than it tracks
  EXPECT_TRUE(t.gave_up());
  EXPECT_FALSE(t.Observe(10));  // not even a known one afterwards
}

TEST(WaitTracker, ResetStartsOverAfterALoopEnds) {
  WaitTracker t;
  t.Observe(5);
  EXPECT_TRUE(t.Observe(5));
  t.Reset();
  EXPECT_FALSE(t.Observe(5));
  EXPECT_TRUE(t.Observe(5));
}

TEST(LoopRuntime, NamedFromTheExecutableArgvZeroOrComm) {
  EXPECT_EQ(LoopRuntimeFrom({"/usr/bin/python3.11"}, {}), "python");
  EXPECT_EQ(LoopRuntimeFrom({"/usr/bin/node"}, {}), "node");
  // Debian's redis-server is a link to redis-check-rdb: /proc/self/exe says the latter.
  EXPECT_EQ(LoopRuntimeFrom({"/usr/bin/redis-check-rdb", "redis-server *:6379"}, {}), "redis");
  EXPECT_EQ(LoopRuntimeFrom({"/usr/sbin/nginx", "nginx: worker process"}, {}), "nginx");
  EXPECT_EQ(LoopRuntimeFrom({"/usr/bin/memcached"}, {}), "memcached");
}

TEST(LoopRuntime, AnEmbeddedInterpreterIsFoundInTheModules) {
  EXPECT_EQ(
      LoopRuntimeFrom({"/opt/app/server"}, {"/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"}),
      "python");
  EXPECT_EQ(LoopRuntimeFrom({"/opt/app/server"}, {"/usr/lib/libnode.so.108"}), "node");
}

TEST(LoopRuntime, UnknownProgramsSayNothingRatherThanGuess) {
  EXPECT_EQ(LoopRuntimeFrom({"/opt/app/server", "server"}, {"/usr/lib/libc.so.6"}), "");
  EXPECT_EQ(LoopRuntimeFrom({}, {}), "");
  EXPECT_EQ(LoopRuntimeFrom({"/opt/pythonic/server"}, {}), "");  // a directory is not a name
}

}  // namespace
}  // namespace stallwatch::agent::internal
