// Fuzz target: the daemon's frame handling end to end. The input is the byte stream of one
// agent connection; it goes through the real ingest path (daemon/src/ingest.cc: decoder →
// registry) beside a well-behaved agent, then the Prometheus exposition and the JSON API are
// produced from the registry. Checked: every refused frame is counted once, in the exposition
// too; the exposition stays well-formed whatever the agent named its service and loops; the
// registry stays within its limits; the other agent loses nothing; everything the connection
// left behind goes away once it is closed and expired.
#include <cctype>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "fuzz_check.h"
#include "ingest.h"
#include "registry.h"

namespace stallwatch::daemon {
namespace {

Now At(int64_t seconds) {
  Now n;
  n.mono_ns = seconds * 1'000'000'000;
  n.unix_ns = 1'700'000'000'000'000'000 + n.mono_ns;
  return n;
}

RegistryOptions SmallLimits() {
  RegistryOptions o;
  o.max_loops_per_process = 4;
  o.max_recent_stalls = 8;
  o.max_recent_bytes = 64 << 10;
  o.max_stacks = 16;
  o.max_stacks_bytes = 64 << 10;
  o.max_call_sites_per_loop = 4;
  o.max_call_sites = 6;
  return o;
}

// The well-behaved agent: one loop, one closed stall.
Registry::ConnId ConnectGoodAgent(Registry* reg) {
  const auto id = reg->Connect("unix:good", At(1));
  wire::Hello h;
  h.service = "good";
  h.pid = 1;
  h.loops = {"main"};
  SW_FUZZ_CHECK(!reg->Apply(id, wire::Message(h), At(1)));
  StallFinding s;
  s.service = "good";
  s.pid = 1;
  s.loop = "main";
  s.stall_id = 1;
  s.duration_s = 0.5;
  s.stall_class = StallClass::kCpu;
  SW_FUZZ_CHECK(!reg->Apply(id, wire::Message(s), At(2)));
  return id;
}

bool GoodAgentIntact(const Registry& reg, Now now) {
  const nlohmann::json loops = reg.LoopsJson(now);  // kept: the range below refers into it
  for (const auto& l : loops.at("loops")) {
    if (l.at("service") == "good" && l.at("pid") == 1 && l.at("loop") == "main") {
      return l.at("stalls_total").get<uint64_t>() >= 1;
    }
  }
  return false;
}

// A sample line of the text format: name{label="value",...} number — label values escaped
// (\\, \", \n), nothing raw that would split or end the line early.
bool WellFormedSample(std::string_view line) {
  size_t i = 0;
  while (i < line.size() &&
         (std::isalnum(static_cast<unsigned char>(line[i])) || line[i] == '_' || line[i] == ':')) {
    ++i;
  }
  if (i == 0) {
    return false;
  }
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      const size_t eq = line.find("=\"", i);
      if (eq == std::string_view::npos || eq == i) {
        return false;
      }
      i = eq + 2;
      for (;;) {
        if (i >= line.size()) {
          return false;
        }
        if (line[i] == '\\') {
          if (i + 1 >= line.size() ||
              std::string_view("\\\"n").find(line[i + 1]) == std::string_view::npos) {
            return false;
          }
          i += 2;
        } else if (line[i] == '"') {
          ++i;
          break;
        } else {
          ++i;
        }
      }
      if (i >= line.size() || (line[i] != ',' && line[i] != '}')) {
        return false;
      }
      if (line[i] == ',') {
        ++i;
      }
    }
    if (i >= line.size()) {
      return false;
    }
    ++i;  // '}'
  }
  if (i >= line.size() || line[i] != ' ') {
    return false;
  }
  return line.find_first_of(" \t", i + 1) == std::string_view::npos && i + 1 < line.size();
}

// The exposition's value of stallwatch_daemon_frames_rejected_total{reason="…"}.
double RejectedInExposition(const std::string& text, wire::RejectReason r) {
  const std::string key = std::string("stallwatch_daemon_frames_rejected_total{reason=\"") +
                          wire::RejectReasonName(r) + "\"} ";
  const size_t p = text.find(key);
  if (p == std::string::npos) {
    return -1;
  }
  return std::stod(text.substr(p + key.size(), text.find('\n', p) - p - key.size()));
}

}  // namespace
}  // namespace stallwatch::daemon

SW_FUZZ_TARGET(SwFuzzDaemonFrames) {
  using namespace stallwatch::daemon;
  namespace wire = stallwatch::wire;
  const RegistryOptions options = SmallLimits();
  Registry reg(options);
  const auto good = ConnectGoodAgent(&reg);

  // The fuzzed connection, its bytes in three reads.
  const auto id = reg.Connect("unix:fuzz", At(5));
  wire::FrameDecoder decoder;
  uint64_t logged = 0;
  const RejectLog log = [&](const std::string& message) {
    ++logged;
    SW_FUZZ_CHECK(!message.empty() && message.find('\n') == std::string::npos);
  };
  const char* bytes = reinterpret_cast<const char*>(data);
  const size_t cuts[] = {0, size / 3, 2 * size / 3, size};
  bool open = true;
  for (int k = 0; k < 3 && open; ++k) {
    open = IngestBytes(&reg, id, &decoder, bytes + cuts[k], cuts[k + 1] - cuts[k], At(6 + k), log);
    // Bounded: at most one incomplete frame is held.
    SW_FUZZ_CHECK(decoder.pending() <= wire::kHeaderSize + wire::kMaxFrameBody);
  }
  if (!open) {
    SW_FUZZ_CHECK(decoder.failed());
    SW_FUZZ_CHECK(reg.rejected(wire::RejectReason::kBadMagic) +
                      reg.rejected(wire::RejectReason::kBadVersion) +
                      reg.rejected(wire::RejectReason::kBadLength) ==
                  1);
  }
  IngestEnd(&reg, decoder, log);

  // Every refused frame is counted once, and the exposition says so.
  uint64_t counted = 0;
  for (auto r : wire::kAllRejectReasons) {
    counted += reg.rejected(r);
  }
  SW_FUZZ_CHECK(counted == logged);
  stallwatch::fuzz::Count(counted == 0);

  // Limits: one connection speaks for one process, the other agent has its own.
  SW_FUZZ_CHECK(reg.loops() <= 2 * options.max_loops_per_process);
  SW_FUZZ_CHECK(reg.connections() == 2);
  const auto now = At(20);
  reg.Sweep(now);
  std::ostringstream exposition;
  reg.WriteMetrics(exposition, now);
  const std::string text = exposition.str();
  SW_FUZZ_CHECK(text.size() < (1u << 20));
  for (auto r : wire::kAllRejectReasons) {
    SW_FUZZ_CHECK(RejectedInExposition(text, r) == static_cast<double>(reg.rejected(r)));
  }
  size_t start = 0;
  while (start < text.size()) {
    const size_t nl = text.find('\n', start);
    SW_FUZZ_CHECK(nl != std::string::npos);  // every line ends
    const std::string_view line(text.data() + start, nl - start);
    if (!line.starts_with("#")) {
      SW_FUZZ_CHECK(WellFormedSample(line));
    }
    start = nl + 1;
  }

  // The JSON API over whatever the agent sent.
  auto dump = [](const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  const auto loops = reg.LoopsJson(now);
  SW_FUZZ_CHECK(loops.at("loops").size() == reg.loops());
  StallQuery all;
  all.limit = 1000;
  const auto stalls = reg.StallsJson(all, now);
  SW_FUZZ_CHECK(stalls.at("stalls").size() <= options.max_recent_stalls + reg.loops());
  const auto stacks = reg.StacksJson();
  SW_FUZZ_CHECK(stacks.at("stacks").size() <= options.max_stacks);
  CallQuery every_call;
  every_call.limit = 1000;
  const auto calls = reg.CallsJson(every_call, now);
  SW_FUZZ_CHECK(calls.at("calls").size() <= options.max_call_sites);
  // What the API serves parses back (strings not valid UTF-8 are replaced, never fatal).
  for (const auto* j : {&loops, &stalls, &stacks, &calls}) {
    SW_FUZZ_CHECK(!nlohmann::json::parse(dump(*j), nullptr, false).is_discarded());
  }
  (void)reg.StacksFolded();
  SW_FUZZ_CHECK(GoodAgentIntact(reg, now));

  // Closed and expired, the fuzzed agent leaves nothing; the good one is still there.
  reg.Disconnect(id, At(21));
  Now later = At(22);
  later.mono_ns += options.expire_after.count();
  later.unix_ns += options.expire_after.count();
  reg.Sweep(later);
  SW_FUZZ_CHECK(reg.connections() == 1);
  SW_FUZZ_CHECK(GoodAgentIntact(reg, later));
  reg.Disconnect(good, later);
  later.mono_ns += options.expire_after.count() + 1'000'000'000;
  reg.Sweep(later);
  SW_FUZZ_CHECK(reg.loops() == 0 && reg.connections() == 0);
  return 0;
}
