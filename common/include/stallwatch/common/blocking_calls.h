#pragma once
// The calls of the blocking-call ledger and their families, in the order of the agent's
// BlockingCall enum (agent/src/ledger.h): the names in "calls" findings and what
// `stallwatch check --forbid` accepts (docs/findings.md). Pure constexpr data; thread-safe.

#include <array>
#include <string_view>

namespace stallwatch {

struct BlockingCallInfo {
  std::string_view name;
  std::string_view family;  // "dns", "sleep", "sync", "connect", "wait", "lock"
};

inline constexpr std::array<BlockingCallInfo, 17> kBlockingCalls = {{
    {"getaddrinfo", "dns"},
    {"gethostbyname", "dns"},
    {"gethostbyname_r", "dns"},
    {"getnameinfo", "dns"},
    {"nanosleep", "sleep"},
    {"clock_nanosleep", "sleep"},
    {"usleep", "sleep"},
    {"sleep", "sleep"},
    {"fsync", "sync"},
    {"fdatasync", "sync"},
    {"sync_file_range", "sync"},
    {"syncfs", "sync"},
    {"connect", "connect"},
    {"waitpid", "wait"},
    {"system", "wait"},
    {"pthread_join", "wait"},
    {"flock", "lock"},
}};

inline constexpr std::array<std::string_view, 6> kBlockingCallFamilies = {
    "dns", "sleep", "sync", "connect", "wait", "lock"};

}  // namespace stallwatch
