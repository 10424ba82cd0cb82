// Fuzz target: the /proc parsers of the agent (agent/src/platform/proc.cc): the input is the
// content of a /proc file, given to every parser in turn — task syscall, schedstat and stat
// lines, epoll fdinfo, the /proc/self/net tables (looked up by every inode-like number in the
// input), /proc/self/maps (by every address-like number) and an fd's link target.
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "platform/proc.h"

namespace stallwatch::agent::platform {
namespace {

// Numbers of the input (decimal and hex runs), to look up: a parser that finds a row must find
// the row whose key is in the input. At most 8 of each.
void Candidates(std::string_view text, std::vector<uint64_t>* dec, std::vector<uint64_t>* hex) {
  size_t i = 0;
  while (i < text.size() && (dec->size() < 8 || hex->size() < 8)) {
    auto is_hex = [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    };
    if (!is_hex(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    bool decimal = true;
    for (; j < text.size() && is_hex(text[j]); ++j) decimal = decimal && text[j] <= '9';
    const std::string run(text.substr(i, std::min<size_t>(j - i, 16)));
    if (decimal && dec->size() < 8 && run.size() <= 19) dec->push_back(std::stoull(run));
    if (hex->size() < 8) hex->push_back(std::stoull(run, nullptr, 16));
    i = j;
  }
}

}  // namespace
}  // namespace stallwatch::agent::platform

SW_FUZZ_TARGET(SwFuzzProc) {
  using namespace stallwatch::agent::platform;
  const std::string_view text = stallwatch::fuzz::AsText(data, size);
  bool any = false;

  if (auto s = ParseSyscall(text)) {
    any = true;
    if (s->running) SW_FUZZ_CHECK(s->nr == -1 && s->pc == 0);
    const std::string name = SyscallName(s->nr);
    SW_FUZZ_CHECK(!name.empty());
    (void)SyscallTakesFd(s->nr);
  }
  for (int signo : {1, 35, 64}) (void)StatusBlocksSignal(text, signo);
  if (auto s = ParseSchedstat(text)) {
    any = true;
    (void)s;
  }
  if (auto s = ParseTaskStat(text)) {
    any = true;
    SW_FUZZ_CHECK(text.find(')') != std::string_view::npos);
    SW_FUZZ_CHECK(s->state != ' ' && s->state != '\n');
  }
  const std::vector<int> fds = ParseEpollFdinfoTargets(text);
  size_t tfd_lines = 0;
  for (size_t p = text.find("tfd:"); p != std::string_view::npos; p = text.find("tfd:", p + 1)) {
    ++tfd_lines;
  }
  SW_FUZZ_CHECK(fds.size() <= tfd_lines);
  for (int fd : fds) SW_FUZZ_CHECK(fd >= 0);
  any = any || !fds.empty();

  std::vector<uint64_t> dec, hex;
  stallwatch::agent::platform::Candidates(text, &dec, &hex);
  for (uint64_t inode : dec) {
    for (bool v6 : {false, true}) {
      if (auto r = FindInetSocket(text, inode, v6)) {
        any = true;
        SW_FUZZ_CHECK(!r->empty() && r->size() <= 2 * text.size() + 64);
      }
    }
    if (auto r = FindUnixSocket(text, inode)) {
      any = true;
      SW_FUZZ_CHECK(r->empty() || text.find(*r) != std::string_view::npos);
    }
  }
  for (uint64_t addr : hex) {
    const auto [lo, hi] = FindMappingIn(text, addr);
    if (lo != 0 || hi != 0) {
      any = true;
      SW_FUZZ_CHECK(lo <= addr && addr < hi);
    }
  }

  // The input as an fd's link target, the /proc/self/net tables all being the input too.
  const std::string_view target = text.substr(0, text.find('\n'));
  const std::string described = DescribeLinkTarget(target, [&](const char*, std::string* out) {
    out->assign(text);
    return !text.empty();
  });
  if (target.starts_with("socket:[") && target.ends_with("]") && target.size() > 9 &&
      target.find_first_not_of("0123456789", 8) == target.size() - 1 && target.size() < 24) {
    SW_FUZZ_CHECK(described.starts_with("socket "));
  }
  stallwatch::fuzz::Count(any);
  return 0;
}
