#include "platform/proc_parse.h"

#include <sys/syscall.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>

namespace stallwatch::agent::platform {
namespace {

std::vector<std::string_view> SplitWs(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) {
      ++i;
    }
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') {
      ++j;
    }
    if (j > i) {
      out.push_back(s.substr(i, j - i));
    }
    i = j;
  }
  return out;
}

template <typename T>
bool ParseNum(std::string_view s, T* out, int base = 10) {
  if (base == 16 && s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

// "0100007F:1F90" (little-endian IPv4 hex) → "127.0.0.1:8080".
std::string DecodeInet(std::string_view hex, bool v6) {
  const size_t colon = hex.find(':');
  if (colon == std::string_view::npos) {
    return std::string(hex);
  }
  std::string_view addr = hex.substr(0, colon), port_hex = hex.substr(colon + 1);
  unsigned port = 0;
  ParseNum(port_hex, &port, 16);
  char buf[80];
  if (!v6) {
    uint32_t a = 0;
    ParseNum(addr, &a, 16);
    std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u:%u", a & 0xff, (a >> 8) & 0xff, (a >> 16) & 0xff,
                  (a >> 24) & 0xff, port);
    return buf;
  }
  // IPv6: four little-endian 32-bit words.
  if (addr.size() != 32) {
    return std::string(hex);
  }
  unsigned char b[16];
  for (int w = 0; w < 4; ++w) {
    uint32_t word = 0;
    ParseNum(addr.substr(static_cast<size_t>(w) * 8, 8), &word, 16);
    for (int k = 0; k < 4; ++k) {
      b[w * 4 + k] = static_cast<unsigned char>((word >> (8 * k)) & 0xff);
    }
  }
  // ::ffff:a.b.c.d and ::1 are the common loopback forms; print others as full hex groups.
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(b, kMapped, 12) == 0) {
    std::snprintf(buf, sizeof(buf), "[::ffff:%u.%u.%u.%u]:%u", b[12], b[13], b[14], b[15], port);
    return buf;
  }
  bool loop = b[15] == 1;
  for (int i = 0; i < 15; ++i) {
    loop = loop && b[i] == 0;
  }
  if (loop) {
    std::snprintf(buf, sizeof(buf), "[::1]:%u", port);
    return buf;
  }
  std::string s = "[";
  for (int i = 0; i < 16; i += 2) {
    char g[8];
    std::snprintf(g, sizeof(g), "%x", (b[i] << 8) | b[i + 1]);
    s += g;
    if (i < 14) {
      s += ':';
    }
  }
  return s + "]:" + std::to_string(port);
}

constexpr bool kFd = true;
constexpr bool kNoFd = false;

#if defined(__x86_64__)
#define SW_SYSCALL(nr, name, first_arg) static_assert((nr) == SYS_##name, #name);
#include "platform/syscalls_x86_64.inc"
#undef SW_SYSCALL

constexpr SyscallEntry kSyscalls[] = {
#define SW_SYSCALL(nr, name, first_arg) {nr, #name, first_arg},
#include "platform/syscalls_x86_64.inc"
#undef SW_SYSCALL
};
#endif

constexpr SyscallEntry kSyscallsByName[] = {
#define SW_SYSCALL_NAMED(name, first_arg) {SYS_##name, #name, first_arg},
#include "platform/syscalls_by_name.inc"
#undef SW_SYSCALL_NAMED
};

#if !defined(__x86_64__)
constexpr const auto& kSyscalls = kSyscallsByName;
#endif

}  // namespace

std::span<const SyscallEntry> SyscallTable() { return kSyscalls; }
std::span<const SyscallEntry> SyscallTableByNameForTest() { return kSyscallsByName; }

std::optional<SyscallInfo> ParseSyscall(std::string_view text) {
  auto f = SplitWs(text);
  if (f.empty()) {
    return std::nullopt;
  }
  SyscallInfo info;
  if (f[0] == "running") {
    info.running = true;
    return info;
  }
  if (!ParseNum(f[0], &info.nr)) {
    return std::nullopt;
  }
  if (info.nr == -1) {  // "-1 sp pc": blocked, not in a syscall
    if (f.size() != 3 || !ParseNum(f[1], &info.sp, 16) || !ParseNum(f[2], &info.pc, 16)) {
      return std::nullopt;
    }
    return info;
  }
  if (f.size() != 9) {
    return std::nullopt;
  }
  for (int i = 0; i < 6; ++i) {
    if (!ParseNum(f[1 + i], &info.args[i], 16)) {
      return std::nullopt;
    }
  }
  if (!ParseNum(f[7], &info.sp, 16) || !ParseNum(f[8], &info.pc, 16)) {
    return std::nullopt;
  }
  return info;
}

std::optional<SchedStat> ParseSchedstat(std::string_view text) {
  auto f = SplitWs(text);
  SchedStat s;
  if (f.size() < 3 || !ParseNum(f[0], &s.exec_ns) || !ParseNum(f[1], &s.run_delay_ns) ||
      !ParseNum(f[2], &s.timeslices)) {
    return std::nullopt;
  }
  return s;
}

std::optional<uint64_t> ParseStatSteal(std::string_view text) {
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
  if (text.rfind("cpu ", 0) != 0) {
    return std::nullopt;
  }
  const size_t eol = text.find('\n');
  auto f = SplitWs(text.substr(4, eol == std::string_view::npos ? eol : eol - 4));
  uint64_t steal = 0;
  if (f.size() < 8 || !ParseNum(f[7], &steal)) {
    return std::nullopt;
  }
  return steal;
}

std::optional<uint64_t> ParseStartTimeTicks(std::string_view text) {
  // As ParseTaskStat: the fields after the last ')', state (3) being index 0, starttime (22)
  // index 19.
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos) {
    return std::nullopt;
  }
  auto f = SplitWs(text.substr(close + 1));
  uint64_t ticks = 0;
  if (f.size() < 20 || !ParseNum(f[19], &ticks)) {
    return std::nullopt;
  }
  return ticks;
}

std::optional<int64_t> ParseBootTime(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t eol = text.find('\n', pos);
    const std::string_view line =
        text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (line.rfind("btime ", 0) == 0) {
      auto f = SplitWs(line.substr(6));
      uint64_t seconds = 0;
      if (f.size() != 1 || !ParseNum(f[0], &seconds) || seconds == 0 ||
          seconds > static_cast<uint64_t>(std::numeric_limits<int64_t>::max() / 1'000'000'000)) {
        return std::nullopt;
      }
      return static_cast<int64_t>(seconds);
    }
    if (eol == std::string_view::npos) {
      break;
    }
    pos = eol + 1;
  }
  return std::nullopt;
}

std::optional<TaskStat> ParseTaskStat(std::string_view text) {
  // "pid (comm) S ..." where comm may contain spaces and parentheses: split after the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos) {
    return std::nullopt;
  }
  auto f = SplitWs(text.substr(close + 1));
  // After ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
  // utime(14) stime(15): indices 0..12 here.
  TaskStat s;
  if (f.size() < 13 || f[0].size() != 1) {
    return std::nullopt;
  }
  s.state = f[0][0];
  if (!ParseNum(f[11], &s.utime) || !ParseNum(f[12], &s.stime)) {
    return std::nullopt;
  }
  return s;
}

std::vector<int> ParseEpollFdinfoTargets(std::string_view text) {
  std::vector<int> out;
  size_t pos = 0;
  while ((pos = text.find("tfd:", pos)) != std::string_view::npos) {
    pos += 4;
    while (pos < text.size() && text[pos] == ' ') {
      ++pos;
    }
    size_t end = pos;
    while (end < text.size() && text[end] >= '0' && text[end] <= '9') {
      ++end;
    }
    int fd = -1;
    if (end > pos && ParseNum(text.substr(pos, end - pos), &fd)) {
      out.push_back(fd);
    }
    pos = end;
  }
  return out;
}

namespace {

// The fields of the first row of a /proc/net table (after its header line) whose field
// `inode_field` is `inode` and that has at least `min_fields` fields; empty if none.
std::vector<std::string_view> RowWithInode(std::string_view table, size_t inode_field,
                                           size_t min_fields, uint64_t inode) {
  size_t start = table.find('\n');  // the header
  start = start == std::string_view::npos ? table.size() : start + 1;
  while (start < table.size()) {
    size_t nl = table.find('\n', start);
    if (nl == std::string_view::npos) {
      nl = table.size();
    }
    auto f = SplitWs(table.substr(start, nl - start));
    start = nl + 1;
    uint64_t ino = 0;
    if (f.size() >= min_fields && ParseNum(f[inode_field], &ino) && ino == inode) {
      return f;
    }
  }
  return {};
}

}  // namespace

std::optional<std::string> FindInetSocket(std::string_view table, uint64_t inode, bool v6) {
  // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
  const auto f = RowWithInode(table, 9, 10, inode);
  if (f.empty()) {
    return std::nullopt;
  }
  std::string local = DecodeInet(f[1], v6), remote = DecodeInet(f[2], v6);
  const bool unconnected = remote.ends_with(":0");
  if (unconnected) {
    return local;
  }
  local += " -> ";
  local += remote;
  return local;
}

std::optional<std::string> FindUnixSocket(std::string_view table, uint64_t inode) {
  // Num RefCount Protocol Flags Type St Inode [Path]
  const auto f = RowWithInode(table, 6, 7, inode);
  if (f.empty()) {
    return std::nullopt;
  }
  return f.size() >= 8 ? std::string(f[7]) : std::string();
}

std::optional<uint64_t> ParseSocketLinkInode(std::string_view target) {
  constexpr std::string_view kSocket = "socket:[";
  uint64_t inode = 0;
  if (!target.starts_with(kSocket) || !target.ends_with(']') ||
      !ParseNum(target.substr(kSocket.size(), target.size() - kSocket.size() - 1), &inode)) {
    return std::nullopt;
  }
  return inode;
}

std::optional<int> ParseFdName(std::string_view name) {
  int fd = -1;
  if (!ParseNum(name, &fd)) {
    return std::nullopt;
  }
  return fd;
}

std::string SyscallName(long nr) {
  for (const auto& e : kSyscalls) {
    if (e.nr == nr) {
      return e.name;
    }
  }
  return "syscall_" + std::to_string(nr);
}

bool SyscallTakesFd(long nr) {
  for (const auto& e : kSyscalls) {
    if (e.nr == nr) {
      return e.takes_fd;
    }
  }
  return false;
}

std::optional<bool> StatusBlocksSignal(std::string_view status, int signo) {
  if (signo <= 0 || signo > 64) {
    return std::nullopt;
  }
  constexpr std::string_view kKey = "\nSigBlk:";
  const size_t at = status.starts_with(kKey.substr(1)) ? 0 : status.find(kKey);
  if (at == std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view rest = status.substr(at + (at == 0 ? kKey.size() - 1 : kKey.size()));
  rest = rest.substr(0, rest.find('\n'));
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) {
    rest.remove_prefix(1);
  }
  uint64_t mask = 0;
  if (rest.empty() || rest.size() > 16 || rest.starts_with("0x") || !ParseNum(rest, &mask, 16)) {
    return std::nullopt;
  }
  return ((mask >> (signo - 1)) & 1U) != 0;
}

std::pair<uint64_t, uint64_t> FindMappingIn(std::string_view maps, uint64_t addr) {
  size_t start = 0;
  while (start < maps.size()) {
    size_t nl = maps.find('\n', start);
    if (nl == std::string_view::npos) {
      nl = maps.size();
    }
    std::string_view line = maps.substr(start, nl - start);
    start = nl + 1;
    size_t dash = line.find('-'), sp = line.find(' ');
    if (dash == std::string_view::npos || sp == std::string_view::npos || sp < dash) {
      continue;
    }
    uint64_t lo = 0, hi = 0;
    if (!ParseNum(line.substr(0, dash), &lo, 16) ||
        !ParseNum(line.substr(dash + 1, sp - dash - 1), &hi, 16)) {
      continue;
    }
    if (addr >= lo && addr < hi) {
      return {lo, hi};
    }
  }
  return {0, 0};
}

}  // namespace stallwatch::agent::platform
