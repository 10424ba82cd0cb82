#pragma once
// JIT code named from a perf map file (/tmp/perf-PID.map: one line per compiled function,
// "START SIZE NAME" with START and SIZE in hex), as written by `node --perf-basic-prof`,
// Python 3.12+'s `-X perf`, the JVM's perf-map-agent and other JITs.
//
// Threading: a PerfMap is used by one thread (the watchdog's); the parser is pure.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace stallwatch::agent::internal {

struct PerfMapEntry {
  uint64_t start = 0;
  uint64_t size = 0;
  std::string name;
};

// Parses the text of a perf map: entries sorted by start. Malformed lines are skipped and
// counted in *bad (if given). A later entry for the same start replaces an earlier one (a
// function recompiled at the same address); overlapping ranges are kept, the lookup takes the
// latest start at or below the pc. Pure.
std::vector<PerfMapEntry> ParsePerfMap(std::string_view text, size_t* bad = nullptr);

// The entry whose [start, start + size) holds pc, or nullptr. Pure.
const PerfMapEntry* FindPerfMapEntry(const std::vector<PerfMapEntry>& entries, uint64_t pc);

// "JS:*busyLoop [eval]:1:22" → "busyLoop [eval]:1:22": a name without V8's tier prefix
// ("JS:", "LazyCompile:", "Function:", and the marker '*', '~', '^' after it). Other JITs' names
// are kept as they are. Pure.
std::string JitFunctionName(std::string_view raw);

// The perf map of one process, read on demand and read again when the file changed (it grows
// while the JIT compiles), at most once per `min_reload_ns`.
class PerfMap {
 public:
  explicit PerfMap(pid_t pid, int64_t min_reload_ns = 1'000'000'000);
  // The JIT function at pc ("" if none or no map); reloads first if the file changed.
  std::string Lookup(uint64_t pc, int64_t now_ns);
  bool present() const { return !entries_.empty(); }

 private:
  void Reload(int64_t now_ns);

  std::string path_;
  int64_t min_reload_ns_;
  int64_t last_check_ns_ = -1;
  int64_t last_size_ = -1;
  int64_t last_mtime_ns_ = -1;
  std::vector<PerfMapEntry> entries_;
};

}  // namespace stallwatch::agent::internal
