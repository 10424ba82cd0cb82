#include "platform/proc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace stallwatch::agent::platform {
namespace {

std::string Fixture(const std::string& name) {
  std::ifstream f(std::string(SW_FIXTURES_DIR) + "/proc/" + name);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_FALSE(ss.str().empty()) << name;
  return ss.str();
}

TEST(ParseSyscall, Running) {
  auto s = ParseSyscall(Fixture("syscall_running.txt"));
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->running);
}

TEST(ParseSyscall, InASyscallWithArgumentsSpAndPc) {
  auto s = ParseSyscall(Fixture("syscall_read.txt"));
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->running);
  EXPECT_EQ(s->nr, 0);
  EXPECT_EQ(s->args[0], 5u);
  EXPECT_EQ(s->sp, 0x7ffd5c1a2fd8u);
  EXPECT_EQ(s->pc, 0x7f3a1c31a1ccu);
  auto n = ParseSyscall(Fixture("syscall_nanosleep.txt"));
  ASSERT_TRUE(n);
  EXPECT_EQ(n->nr, 230);
}

TEST(ParseSyscall, BlockedOutsideASyscall) {
  auto s = ParseSyscall(Fixture("syscall_fault.txt"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->nr, -1);
  EXPECT_EQ(s->pc, 0x55d0c0a01234u);
}

TEST(ParseSyscall, RejectsGarbage) {
  EXPECT_FALSE(ParseSyscall(""));
  EXPECT_FALSE(ParseSyscall("zzz"));
  EXPECT_FALSE(ParseSyscall("0 0x1 0x2"));
  EXPECT_FALSE(ParseSyscall("0 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0xZZ"));
}

TEST(ParseSchedstat, ThreeNumbers) {
  auto s = ParseSchedstat(Fixture("schedstat.txt"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->exec_ns, 123456789u);
  EXPECT_EQ(s->run_delay_ns, 987654u);
  EXPECT_FALSE(ParseSchedstat("1 2"));
}

TEST(ParseTaskStat, CommWithSpacesAndParentheses) {
  auto s = ParseTaskStat(Fixture("stat_weird_comm.txt"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->state, 'S');
  EXPECT_EQ(s->utime, 150u);
  EXPECT_EQ(s->stime, 37u);
  EXPECT_FALSE(ParseTaskStat("no parens here"));
}

TEST(ParseEpollFdinfo, TargetFds) {
  EXPECT_EQ(ParseEpollFdinfoTargets(Fixture("epoll_fdinfo.txt")), (std::vector<int>{6, 11}));
  EXPECT_TRUE(ParseEpollFdinfoTargets("pos: 0\nflags: 02\n").empty());
}

TEST(ProcNet, Tcp4ConnectedAndListening) {
  const std::string t = Fixture("net_tcp.txt");
  EXPECT_EQ(*FindInetSocket(t, 22222, false), "127.0.0.1:41394 -> 127.0.0.1:5432");
  EXPECT_EQ(*FindInetSocket(t, 21001, false), "127.0.0.1:5432");
  EXPECT_FALSE(FindInetSocket(t, 99, false));
}

TEST(ProcNet, Tcp6Loopback) {
  EXPECT_EQ(*FindInetSocket(Fixture("net_tcp6.txt"), 33333, true), "[::1]:8888 -> [::1]:50000");
}

TEST(ProcNet, UnixNamedAndUnnamed) {
  const std::string t = Fixture("net_unix.txt");
  EXPECT_EQ(*FindUnixSocket(t, 44444), "/run/stallwatch/agent.sock");
  EXPECT_EQ(*FindUnixSocket(t, 55555), "");
  EXPECT_FALSE(FindUnixSocket(t, 1));
}

TEST(SyscallNames, CommonOnesAreNamed) {
  EXPECT_EQ(SyscallName(SYS_read), "read");
  EXPECT_EQ(SyscallName(SYS_futex), "futex");
  EXPECT_EQ(SyscallName(SYS_clock_nanosleep), "clock_nanosleep");
  EXPECT_EQ(SyscallName(99999), "syscall_99999");
  EXPECT_TRUE(SyscallTakesFd(SYS_read));
  EXPECT_FALSE(SyscallTakesFd(SYS_nanosleep));
}

TEST(DescribeFd, PipeAndFile) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_EQ(DescribeFd(0, p[0]).rfind("pipe [", 0), 0u) << DescribeFd(0, p[0]);
  EXPECT_EQ(DescribeFd(GetTid(), p[0]), DescribeFd(0, p[0]));
  close(p[0]);
  close(p[1]);
  EXPECT_EQ(DescribeFd(0, -5), "fd -5");
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

TEST(StatusBlocksSignal, ReadsTheSigBlkMask) {
  const std::string status =
      "Name:\tx\nSigPnd:\t0000000000000000\nSigBlk:\t0000000400000001\nSigIgn:\t0\n";
  EXPECT_EQ(StatusBlocksSignal(status, 1), true);  // bit 0
  EXPECT_EQ(StatusBlocksSignal(status, 2), false);
  EXPECT_EQ(StatusBlocksSignal(status, 35), true);  // bit 34
  EXPECT_EQ(StatusBlocksSignal(status, 36), false);
  EXPECT_EQ(StatusBlocksSignal("SigPnd:\t0\n", 1), std::nullopt);
  EXPECT_EQ(StatusBlocksSignal("SigBlk:\tzz\n", 1), std::nullopt);
  EXPECT_EQ(StatusBlocksSignal("SigBlk:\t00000000000000000\n", 1), std::nullopt);  // 17 digits
  EXPECT_EQ(StatusBlocksSignal(status, 0), std::nullopt);
  EXPECT_EQ(StatusBlocksSignal(status, 65), std::nullopt);
}

}  // namespace
}  // namespace stallwatch::agent::platform
