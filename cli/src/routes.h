#pragma once
// The routes of the bundled server (`stallwatch serve`): which path is which route, the pure
// parsing of their queries, and the functions that deliberately stall the loop. The handlers
// themselves are Server::Impl's, in routes.cc.

#include <chrono>
#include <string>
#include <string_view>

#include "stallwatch/status.h"

namespace stallwatch::cli {

enum class Route {
  kHello,             // /
  kBlock,             // /block?ms=       sleeps on the loop
  kCpu,               // /cpu?ms=         burns CPU on the loop
  kAsync,             // /async?ms=       a loop timer
  kOffload,           // /offload?ms=     sleeps on a worker thread
  kUpstreamBlocking,  // /upstream-blocking?ms=  a blocking client on the loop
  kUpstreamAsync,     // /upstream-async?ms=     libevent's client
  kControlBlock,      // /control/block?duration=&period=&kind=
  kControlStats,      // /control/stats
  kControlUnblock,    // /control/unblock
  kUnknown,
};
// The route of a request path (without the query). Pure.
Route RouteOf(std::string_view path);

// Query parsing of the routes (pure; exposed for tests). Returns the value of `key` as
// milliseconds in [0, max_ms]; `fallback` when absent; an error naming the accepted form.
StatusOr<int> ParseMsParam(const std::string& query, const std::string& key, int fallback,
                           int max_ms = 60000);

struct ControlSpec {
  std::chrono::milliseconds duration{200};
  std::chrono::milliseconds period{1000};
  bool cpu = false;  // kind=cpu; otherwise kind=sleep
};
// /control/block?duration=200ms&period=1s&kind=cpu|sleep (bare numbers are milliseconds).
StatusOr<ControlSpec> ParseControlQuery(const std::string& query);

// The functions that deliberately stall the loop; named and never inlined so that the agent's
// stacks show them. Called on the loop thread.
void BlockingSleepOnLoop(int ms);
void BurnCpuOnLoop(int ms);

}  // namespace stallwatch::cli
