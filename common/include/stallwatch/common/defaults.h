#pragma once
// Defaults that more than one program relies on: where the daemon listens, where agents send,
// how long the daemon keeps a gone process's series and how many stalls it serves in one reply.
// Docs and tests may spell them out; C++ code takes them from here.
//
// The public agent header keeps its own kDefaultEndpoint (agent/include/stallwatch/agent.h is
// self-contained); agent/src/options.cc checks at compile time that it equals kAgentEndpoint.
//
// Pure constants; thread-safe.

#include <chrono>
#include <cstddef>
#include <string_view>

namespace stallwatch::defaults {

// The Unix socket stallwatchd accepts agents on, and the agent endpoint that names it.
inline constexpr std::string_view kAgentSocketPath = "/run/stallwatch/agent.sock";
inline constexpr std::string_view kAgentEndpoint = "unix:/run/stallwatch/agent.sock";
static_assert(kAgentEndpoint.substr(0, 5) == "unix:" &&
              kAgentEndpoint.substr(5) == kAgentSocketPath);

// stallwatchd's HTTP listener (metrics and API), and the URL the CLI reaches it at.
inline constexpr std::string_view kDaemonHttpAddress = "127.0.0.1:9466";
inline constexpr std::string_view kDaemonUrl = "http://127.0.0.1:9466";
static_assert(kDaemonUrl.substr(0, 7) == "http://" && kDaemonUrl.substr(7) == kDaemonHttpAddress);

// A process's series are removed this long after its last connection closed (--expire-after).
inline constexpr std::chrono::minutes kSeriesExpiry{5};

// /api/v1/stalls: the most stalls one reply holds (larger limits are capped).
inline constexpr size_t kMaxStallsPerReply = 1000;

}  // namespace stallwatch::defaults
