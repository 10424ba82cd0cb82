#pragma once
// Shared by the fuzz targets (tests/fuzz/*_fuzz.cc). A target is a plain function
//   extern "C" int SwFuzz<Name>(const uint8_t* data, size_t size);
// called by libFuzzer (libfuzzer_main.cc) and by the corpus replay test in every build. It
// checks the parser's invariants with SW_FUZZ_CHECK, which fails the same way in both: a
// message on stderr, then abort() — a crash that libFuzzer saves as a reproducer and that the
// replay test reports as a failed test.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace stallwatch::fuzz {

// What the replay test is feeding (a corpus file), named when a check fails.
inline const char* current_input = nullptr;

// Inputs the parser accepted / refused: the replay test checks that its corpus has both, so a
// parser that starts refusing everything (or accepting everything) fails the test.
struct Stats {
  uint64_t accepted = 0;
  uint64_t rejected = 0;
};
inline Stats stats;
inline void Count(bool accepted) { ++(accepted ? stats.accepted : stats.rejected); }

[[noreturn]] inline void CheckFailed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)%s%s\n", what, file, line,
               current_input ? " on input " : "", current_input ? current_input : "");
  std::abort();
}

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace stallwatch::fuzz

#define SW_FUZZ_CHECK(cond)                                                  \
  do {                                                                       \
    if (!(cond)) ::stallwatch::fuzz::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)

#define SW_FUZZ_TARGET(name) extern "C" int name(const uint8_t* data, size_t size)
