#include <cstdio>
#include <cstring>
#include <new>
#include <nlohmann/json.hpp>

#include "stallwatch/agent.h"
#include "stallwatch/common/finding_json.h"
#include "stallwatch/stallwatch.h"

struct stallwatch_agent {
  std::unique_ptr<stallwatch::Agent> agent;
};

extern "C" {

stallwatch_agent* stallwatch_attach(event_base* base, const char* loop_name) {
  try {
    // Every setting comes from the STALLWATCH_* environment (Attach reads it).
    stallwatch::Options o;
    if (loop_name != nullptr) o.loop_name = loop_name;
    auto a = stallwatch::Agent::Attach(base, std::move(o));
    if (!a.ok()) {
      std::fprintf(stderr, "stallwatch: attach failed: %s\n", a.status().ToString().c_str());
      return nullptr;
    }
    auto* h = new (std::nothrow) stallwatch_agent;
    if (h == nullptr) return nullptr;
    h->agent = std::move(*a);
    return h;
  } catch (...) {
    std::fprintf(stderr, "stallwatch: attach failed: unexpected error\n");
    return nullptr;
  }
}

void stallwatch_detach(stallwatch_agent* agent) {
  try {
    delete agent;
  } catch (...) {
  }
}

size_t stallwatch_snapshot_json(stallwatch_agent* agent, char* buf, size_t len) {
  if (agent == nullptr) return 0;
  try {
    const auto s = agent->agent->Snapshot();
    nlohmann::json j{{"service", s.service},
                     {"loop", s.loop},
                     {"tid", s.tid},
                     {"boundary_source", s.boundary_source},
                     {"watchdog", s.watchdog},
                     {"watchdog_pid", s.watchdog_pid},
                     {"delay_count", s.since_attach.count},
                     {"delay_p50_s", s.since_attach.p50.count() / 1e9},
                     {"delay_p99_s", s.since_attach.p99.count() / 1e9},
                     {"delay_max_s", s.since_attach.max.count() / 1e9},
                     {"iterations", s.iterations},
                     {"stalls_total", s.stalls_total},
                     {"sampling_status", s.sampling_status},
                     {"findings_dropped", s.findings_dropped}};
    nlohmann::json recent = nlohmann::json::array();
    for (const auto& f : s.recent_stalls) recent.push_back(stallwatch::ToJson(f));
    j["recent_stalls"] = std::move(recent);
    j["ongoing"] = s.ongoing ? stallwatch::ToJson(*s.ongoing) : nlohmann::json(nullptr);
    const std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (buf != nullptr && len > 0) {
      const size_t n = std::min(len - 1, text.size());
      std::memcpy(buf, text.data(), n);
      buf[n] = '\0';
    }
    return text.size();
  } catch (...) {
    return 0;
  }
}

}  // extern "C"
