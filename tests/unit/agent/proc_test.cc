#include "platform/proc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

namespace stallwatch::agent::platform {
namespace {

TEST(DescribeFd, PipeAndFile) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_EQ(DescribeFd(0, p[0]).rfind("pipe [", 0), 0u) << DescribeFd(0, p[0]);
  EXPECT_EQ(DescribeFd(GetTid(), p[0]), DescribeFd(0, p[0]));
  close(p[0]);
  close(p[1]);
  EXPECT_EQ(DescribeFd(0, -5), "fd -5");
}

TEST(ReadStealPerCpuNs, KnownAndNeverGoingBack) {
  const int64_t a = ReadStealPerCpuNs();
  ASSERT_GE(a, 0) << "/proc/stat has a steal column on every kernel since 2.6.11";
  const int64_t b = ReadStealPerCpuNs();
  EXPECT_GE(b, a);
}

// An agent thread's own file table: none of the host's fds (beyond 0-2) are in it, nothing it
// opens is among the host's, and it holds no copy that would keep a host pipe open.
TEST(DetachFileTable, TheThreadGetsATableOfItsOwnAndPinsNothing) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP()
      << "under ThreadSanitizer the agent keeps the host's file table (see DetachFileTable)";
#endif
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  const pid_t host_tid = GetTid();
  bool detached = false, host_fd_visible = true;
  int own_fd = -1;
  std::string own_target_in_host_view, host_read_end_seen_by_thread;
  std::thread t([&] {
    detached = DetachFileTable();
    host_fd_visible = fcntl(p[0], F_GETFD) >= 0;
    own_fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    // The host's table, seen through /proc: the thread's fd is not there (or is another file).
    own_target_in_host_view = DescribeFd(host_tid, own_fd);
    host_read_end_seen_by_thread = DescribeFd(host_tid, p[0]);
    close(own_fd);
  });
  t.join();
  ASSERT_TRUE(detached) << "close_range(CLOSE_RANGE_UNSHARE) refused";
  EXPECT_FALSE(host_fd_visible) << "the host's pipe was copied into the agent's table";
  EXPECT_NE(own_target_in_host_view.find("/proc"), 0u) << own_target_in_host_view;
  EXPECT_EQ(host_read_end_seen_by_thread.rfind("pipe [", 0), 0u)
      << "DescribeFd(tid, fd) describes the host's fd from an agent thread";
  // The host still has both ends; closing the write end gives the reader EOF (no copy pins it).
  ASSERT_EQ(close(p[1]), 0);
  char c;
  EXPECT_EQ(read(p[0], &c, 1), 0);
  close(p[0]);
}

}  // namespace
}  // namespace stallwatch::agent::platform
