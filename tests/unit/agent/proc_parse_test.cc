// The pure /proc parsers on fixtures (tests/fixtures/proc): nothing here reads /proc.
#include "platform/proc_parse.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "platform/proc.h"  // DescribeLinkTarget, ReadTableFn (pure given the callback)

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

TEST(ParseStatSteal, EighthValueOfTheCpuLine) {
  EXPECT_EQ(ParseStatSteal("cpu  443239 1445045 131263 5614984 3062 0 4565 34554 0 0\n"
                           "cpu0 236960 721445 64984 2793903 1883 0 2226 16760 0 0\n"),
            34554u);
  EXPECT_EQ(ParseStatSteal("cpu  1 2 3 4 5 6 7 8"), 8u);   // no guest fields, no newline
  EXPECT_FALSE(ParseStatSteal("cpu  1 2 3 4 5 6 7\n"));    // before steal existed
  EXPECT_FALSE(ParseStatSteal("cpu0 1 2 3 4 5 6 7 8\n"));  // not the aggregate line
  EXPECT_FALSE(ParseStatSteal("cpu  1 2 3 4 5 6 7 x\n"));
  EXPECT_FALSE(ParseStatSteal(""));
}

TEST(ParseStartTimeTicks, Field22AfterACommWithSpacesAndParentheses) {
  EXPECT_EQ(ParseStartTimeTicks(Fixture("stat_weird_comm.txt")), 12345u);
  EXPECT_EQ(ParseStartTimeTicks("1 (a) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99"), 99u);
  EXPECT_FALSE(ParseStartTimeTicks("1 (a) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0"));
  EXPECT_FALSE(ParseStartTimeTicks("1 (a) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 x"));
  EXPECT_FALSE(ParseStartTimeTicks("no parens here"));
}

TEST(ParseBootTime, TheBtimeLine) {
  EXPECT_EQ(ParseBootTime("cpu  1 2 3 4 5 6 7 8\nintr 5 0 0\nctxt 42\nbtime 1796655772\n"
                          "processes 99\n"),
            1796655772);
  EXPECT_EQ(ParseBootTime("btime 7"), 7);
  EXPECT_FALSE(ParseBootTime("cpu  1 2 3\nctxt 42\n"));
  EXPECT_FALSE(ParseBootTime("btime x\n"));
  EXPECT_FALSE(ParseBootTime("btime 0\n"));
  EXPECT_FALSE(ParseBootTime(""));
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

TEST(ParseLinkTarget, SocketInodeAndFdName) {
  EXPECT_EQ(ParseSocketLinkInode("socket:[12345]"), 12345u);
  EXPECT_EQ(ParseSocketLinkInode("socket:[]"), std::nullopt);
  EXPECT_EQ(ParseSocketLinkInode("socket:[12x]"), std::nullopt);
  EXPECT_EQ(ParseSocketLinkInode("pipe:[12345]"), std::nullopt);
  EXPECT_EQ(ParseFdName("17"), 17);
  EXPECT_EQ(ParseFdName("."), std::nullopt);
  EXPECT_EQ(ParseFdName(".."), std::nullopt);
}

// DescribeLinkTarget reads the socket tables through the callback only: fixtures, no /proc.
TEST(DescribeLinkTarget, SocketsFromTablesPipesAndFiles) {
  const std::string tcp = Fixture("net_tcp.txt"), unix_table = Fixture("net_unix.txt");
  std::vector<std::string> asked;
  const ReadTableFn read_table = [&](const char* path, std::string* out) {
    asked.emplace_back(path);
    const std::string_view p(path);
    if (p.ends_with("/net/tcp")) {
      *out = tcp;
      return true;
    }
    if (p.ends_with("/net/unix")) {
      *out = unix_table;
      return true;
    }
    return false;
  };
  EXPECT_EQ(DescribeLinkTarget("socket:[22222]", read_table),
            "socket tcp 127.0.0.1:41394 -> 127.0.0.1:5432");
  EXPECT_EQ(DescribeLinkTarget("socket:[44444]", read_table),
            "socket unix /run/stallwatch/agent.sock");
  EXPECT_EQ(DescribeLinkTarget("socket:[55555]", read_table), "socket unix (unnamed)");
  EXPECT_EQ(DescribeLinkTarget("socket:[7]", read_table), "socket (inode 7)");
  EXPECT_EQ(DescribeLinkTarget("pipe:[123]", read_table), "pipe [123]");
  EXPECT_EQ(DescribeLinkTarget("/var/lib/x.db", read_table), "/var/lib/x.db");
  ASSERT_FALSE(asked.empty());
  EXPECT_EQ(asked.front(), "/proc/self/net/tcp");
}

TEST(SyscallTable, NoDuplicateNumbersOrNames) {
  const auto table = SyscallTable();
  ASSERT_GE(table.size(), 50u);
  std::set<long> numbers;
  std::set<std::string_view> names;
  for (const auto& e : table) {
    EXPECT_TRUE(numbers.insert(e.nr).second) << "number " << e.nr << " twice (" << e.name << ")";
    EXPECT_TRUE(names.insert(e.name).second) << e.name << " twice";
  }
}

TEST(SyscallTable, KnownEntriesMapAsBefore) {
  EXPECT_EQ(SyscallName(SYS_read), "read");
  EXPECT_EQ(SyscallName(SYS_epoll_pwait), "epoll_pwait");
  EXPECT_EQ(SyscallName(SYS_connect), "connect");
  EXPECT_EQ(SyscallName(SYS_futex), "futex");
  EXPECT_TRUE(SyscallTakesFd(SYS_epoll_pwait));
  EXPECT_TRUE(SyscallTakesFd(SYS_connect));
  EXPECT_FALSE(SyscallTakesFd(SYS_futex));
  EXPECT_FALSE(SyscallTakesFd(99999));
#if defined(__x86_64__)
  // The numbers /proc/<pid>/task/<tid>/syscall shows on x86_64.
  EXPECT_EQ(SyscallName(0), "read");
  EXPECT_EQ(SyscallName(232), "epoll_wait");
  EXPECT_EQ(SyscallName(35), "nanosleep");
  EXPECT_EQ(SyscallName(230), "clock_nanosleep");
  EXPECT_EQ(SyscallName(202), "futex");
  EXPECT_EQ(SyscallName(42), "connect");
  EXPECT_TRUE(SyscallTakesFd(232));
  EXPECT_FALSE(SyscallTakesFd(35));
#endif
}

#if defined(__x86_64__)
// syscalls_by_name.inc (other architectures) holds what syscalls_x86_64.inc holds.
TEST(SyscallTable, TheListByNameMatchesTheX86Table) {
  const auto table = SyscallTable();
  const auto by_name = SyscallTableByNameForTest();
  ASSERT_EQ(table.size(), by_name.size());
  for (size_t i = 0; i < table.size(); ++i) {
    EXPECT_EQ(table[i].nr, by_name[i].nr) << table[i].name;
    EXPECT_STREQ(table[i].name, by_name[i].name);
    EXPECT_EQ(table[i].takes_fd, by_name[i].takes_fd) << table[i].name;
  }
}
#endif

}  // namespace
}  // namespace stallwatch::agent::platform
