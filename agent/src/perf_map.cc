#include "perf_map.h"

#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

namespace stallwatch::agent::internal {

namespace {

// A map larger than this is read up to here: a runaway JIT must not make the watchdog read
// gigabytes.
constexpr size_t kMaxMapBytes = size_t{64} << 20;

bool ParseHex(std::string_view s, uint64_t* out) {
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
  }
  if (s.empty()) {
    return false;
  }
  const auto r = std::from_chars(s.data(), s.data() + s.size(), *out, 16);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace

std::vector<PerfMapEntry> ParsePerfMap(std::string_view text, size_t* bad) {
  std::vector<PerfMapEntry> out;
  size_t skipped = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.empty()) {
      continue;
    }
    const size_t a = line.find(' ');
    const size_t b = a == std::string_view::npos ? a : line.find(' ', a + 1);
    PerfMapEntry e;
    if (b == std::string_view::npos || !ParseHex(line.substr(0, a), &e.start) ||
        !ParseHex(line.substr(a + 1, b - a - 1), &e.size) || e.size == 0 ||
        e.start + e.size < e.start || b + 1 >= line.size()) {
      ++skipped;
      continue;
    }
    e.name = std::string(line.substr(b + 1));
    out.push_back(std::move(e));
  }
  // Sorted by start; for equal starts the last line wins (stable sort keeps file order).
  std::stable_sort(out.begin(), out.end(),
                   [](const PerfMapEntry& x, const PerfMapEntry& y) { return x.start < y.start; });
  std::vector<PerfMapEntry> unique;
  unique.reserve(out.size());
  for (auto& e : out) {
    if (!unique.empty() && unique.back().start == e.start) {
      unique.back() = std::move(e);
    } else {
      unique.push_back(std::move(e));
    }
  }
  if (bad != nullptr) {
    *bad = skipped;
  }
  return unique;
}

const PerfMapEntry* FindPerfMapEntry(const std::vector<PerfMapEntry>& entries, uint64_t pc) {
  auto it = std::upper_bound(entries.begin(), entries.end(), pc,
                             [](uint64_t v, const PerfMapEntry& e) { return v < e.start; });
  if (it == entries.begin()) {
    return nullptr;
  }
  --it;
  return pc - it->start < it->size ? &*it : nullptr;
}

std::string JitFunctionName(std::string_view raw) {
  for (std::string_view prefix : {"JS:", "LazyCompile:", "Function:", "Script:"}) {
    if (raw.substr(0, prefix.size()) == prefix) {
      raw.remove_prefix(prefix.size());
      if (!raw.empty() && (raw[0] == '*' || raw[0] == '~' || raw[0] == '^' || raw[0] == '+')) {
        raw.remove_prefix(1);
      }
      break;
    }
  }
  return std::string(raw);
}

PerfMap::PerfMap(pid_t pid, int64_t min_reload_ns)
    : path_("/tmp/perf-" + std::to_string(pid) + ".map"), min_reload_ns_(min_reload_ns) {}

void PerfMap::Reload(int64_t now_ns) {
  last_check_ns_ = now_ns;
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    entries_.clear();
    last_size_ = -1;
    return;
  }
  const int64_t mtime = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (st.st_size == last_size_ && mtime == last_mtime_ns_) {
    return;
  }
  std::ifstream f(path_, std::ios::binary);
  std::string text(std::min<size_t>(static_cast<size_t>(st.st_size), kMaxMapBytes), '\0');
  f.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(f.gcount()));
  // A line being written is cut at the last newline.
  if (const size_t nl = text.rfind('\n'); nl != std::string::npos) {
    text.resize(nl + 1);
  }
  entries_ = ParsePerfMap(text);
  last_size_ = st.st_size;
  last_mtime_ns_ = mtime;
}

std::string PerfMap::Lookup(uint64_t pc, int64_t now_ns) {
  const PerfMapEntry* e = FindPerfMapEntry(entries_, pc);
  if (e == nullptr && (last_check_ns_ < 0 || now_ns - last_check_ns_ >= min_reload_ns_)) {
    Reload(now_ns);
    e = FindPerfMapEntry(entries_, pc);
  }
  return e != nullptr ? JitFunctionName(e->name) : "";
}

}  // namespace stallwatch::agent::internal
