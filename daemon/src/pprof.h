#pragma once
// Stall stacks as a pprof profile (/api/v1/stacks?format=pprof): profile.proto
// (daemon/proto/profile.proto) encoded with protobuf and gzipped, as `go tool pprof` and other
// pprof readers take it. The only file of the daemon that includes the generated code.
//
// Pure (no I/O). Threading: free functions, thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "stack_records.h"
#include "stallwatch/status.h"

namespace stallwatch::daemon {

struct PprofOptions {
  int64_t time_ns = 0;                // Unix ns the profile starts at (0: unknown)
  int64_t duration_ns = 0;            // how long it covers (0: unknown)
  std::vector<std::string> comments;  // shown by `go tool pprof -comments`
};

// A gzipped profile.proto of `stacks`, one sample each with two values — sample types
// `samples/count` and `stall_time/nanoseconds` (the default) — and string labels `service`,
// plus `loop` and `class` where the total has them. Frames become locations (innermost first)
// of functions named as demangled (or `module+0xOFFSET` when unnamed) with their source file
// and line; native and JIT frames belong to a mapping named after their module, at a synthetic
// address (the mapping's start plus the frame's module offset); Python frames have no mapping.
// The first mapping (the "main binary" of pprof readers) is the first module, outermost frames
// first, that is not a shared object.
// Internal only if protobuf or zlib fail.
StatusOr<std::string> EncodePprof(const std::vector<StackTotal>& stacks,
                                  const PprofOptions& options);

// The uncompressed profile.proto bytes of a gzip stream (RFC 1952), for tests; InvalidArgument
// when `gz` is not one.
StatusOr<std::string> GunzipForTest(const std::string& gz);

}  // namespace stallwatch::daemon
