// Fuzz target: the daemon's HTTP API request parsing (daemon/src/api_query.cc). The input is a
// request target ("/api/v1/stalls?limit=5&service=api"); it is split the way the daemon's HTTP
// server splits it (libevent's URI parser) and also at the first '?', routed, and the accepted
// queries are run against a registry holding a few agents, stalls and stacks.
#include <event2/http.h>

#include <nlohmann/json.hpp>
#include <string>

#include "api_query.h"
#include "fuzz_check.h"
#include "registry.h"

namespace stallwatch::daemon {
namespace {

using ::stallwatch::fuzz::Count;

Now At(int64_t seconds) {
  Now n;
  n.mono_ns = seconds * 1'000'000'000;
  n.unix_ns = 1'700'000'000'000'000'000 + n.mono_ns;
  return n;
}

StallFinding Stall(const std::string& service, int64_t pid, uint64_t id, bool ongoing) {
  StallFinding f;
  f.service = service;
  f.pid = pid;
  f.loop = "main";
  f.stall_id = id;
  f.start_ns = At(static_cast<int64_t>(id)).unix_ns;
  f.duration_s = 0.2;
  f.ongoing = ongoing;
  f.stall_class = StallClass::kBlocked;
  Stack stack;
  stack.samples = 2;
  stack.method = "proc";
  stack.frames.resize(2);
  stack.frames[0].function = "usleep";
  stack.frames[0].module = "/libc.so";
  stack.frames[1].module = "/srv/" + service;
  stack.frames[1].offset = 32;
  f.stacks.push_back(std::move(stack));
  return f;
}

// Two agents, closed and ongoing stalls: enough for every filter to matter.
const Registry& Sample() {
  static Registry* r = [] {
    auto* reg = new Registry();  // lives until exit
    uint64_t id = 1;
    for (const char* service : {"api", "worker"}) {
      const auto conn = reg->Connect("fuzz", At(1));
      wire::Hello h;
      h.service = service;
      h.pid = 40 + static_cast<int64_t>(id);
      h.loops = {"main"};
      const int64_t pid = h.pid;
      SW_FUZZ_CHECK(!reg->Apply(conn, h, At(1)));
      for (int i = 0; i < 3; ++i) {
        SW_FUZZ_CHECK(!reg->Apply(conn, Stall(service, pid, id++, false), At(2)));
      }
      SW_FUZZ_CHECK(!reg->Apply(conn, Stall(service, pid, id++, true), At(3)));
    }
    return reg;
  }();
  return *r;
}

void Route(std::string_view path, std::string_view query) {
  auto r = ParseApiRequest(path, query);
  Count(r.ok());
  if (!r.ok()) {
    const Status status = r.status();
    const std::string& m = status.message();
    SW_FUZZ_CHECK(r.status().code() == StatusCode::kNotFound ||
                  r.status().code() == StatusCode::kInvalidArgument);
    SW_FUZZ_CHECK(
        r.status().code() != StatusCode::kNotFound ||
        (path != "/metrics" && path != "/healthz" && path != "/api/v1/loops" &&
         path != "/api/v1/stalls" && path != "/api/v1/stacks" && path != "/" &&
         !(path.starts_with("/ui/") && FindWebAsset(path.substr(4)) && path != "/ui/index.html")));
    // One clear line, whatever the request held; bounded even for a huge request.
    SW_FUZZ_CHECK(!m.empty() && m.find_first_of("\r\n") == std::string::npos);
    SW_FUZZ_CHECK(m.size() <= 512);
    return;
  }
  const Registry& reg = Sample();
  const Now now = At(10);
  switch (r->kind) {
    case ApiRequest::Kind::kStalls: {
      SW_FUZZ_CHECK(path == "/api/v1/stalls");
      const StallQuery& q = r->stalls;
      SW_FUZZ_CHECK(q.limit >= 1 && q.limit <= 1000);
      SW_FUZZ_CHECK(!q.service || !q.service->empty());
      const nlohmann::json j = reg.StallsJson(q, now);
      const auto& stalls = j.at("stalls");
      SW_FUZZ_CHECK(stalls.size() <= q.limit);
      for (const auto& s : stalls) {
        if (q.service) {
          SW_FUZZ_CHECK(s.at("service") == *q.service);
        }
        if (q.ongoing) {
          SW_FUZZ_CHECK(s.at("ongoing") == *q.ongoing);
        }
        if (q.pid) {
          SW_FUZZ_CHECK(s.at("pid") == *q.pid);
        }
        if (q.loop) {
          SW_FUZZ_CHECK(s.at("loop") == *q.loop);
        }
        if (q.stall_id) {
          SW_FUZZ_CHECK(s.at("stall_id") == *q.stall_id);
        }
      }
      (void)j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      break;
    }
    case ApiRequest::Kind::kLoops:
      SW_FUZZ_CHECK(path == "/api/v1/loops");
      SW_FUZZ_CHECK(reg.LoopsJson(now).at("loops").size() == 2);
      break;
    case ApiRequest::Kind::kStacksJson: {
      SW_FUZZ_CHECK(path == "/api/v1/stacks");
      const StackQuery& q = r->stacks;
      SW_FUZZ_CHECK(!q.service || !q.service->empty());
      SW_FUZZ_CHECK(!q.loop || !q.loop->empty());
      const nlohmann::json j = reg.StacksJson(q, now);
      SW_FUZZ_CHECK(q.filtered() || !j.at("stacks").empty());
      for (const auto& s : j.at("stacks")) {
        if (q.service) {
          SW_FUZZ_CHECK(s.at("service") == *q.service);
        }
      }
      break;
    }
    case ApiRequest::Kind::kStacksFolded:
      SW_FUZZ_CHECK(path == "/api/v1/stacks");
      SW_FUZZ_CHECK(r->stacks.filtered() || !reg.StacksFolded(r->stacks, now).empty());
      break;
    case ApiRequest::Kind::kStacksPprof: {
      SW_FUZZ_CHECK(path == "/api/v1/stacks");
      const auto profile = reg.StacksPprof(r->stacks, now);
      // Always a gzip stream, even of no stacks.
      SW_FUZZ_CHECK(profile.ok() && profile->size() > 2 &&
                    static_cast<unsigned char>((*profile)[0]) == 0x1f);
      break;
    }
    case ApiRequest::Kind::kCalls: {
      SW_FUZZ_CHECK(path == "/api/v1/calls");
      const CallQuery& q = r->calls;
      SW_FUZZ_CHECK(q.limit >= 1 && q.limit <= 1000);
      const nlohmann::json j = reg.CallsJson(q, now);
      SW_FUZZ_CHECK(j.at("calls").size() <= q.limit);
      for (const auto& c : j.at("calls")) {
        if (q.service) {
          SW_FUZZ_CHECK(c.at("service") == *q.service);
        }
        if (q.call) {
          SW_FUZZ_CHECK(c.at("call") == *q.call);
        }
      }
      break;
    }
    case ApiRequest::Kind::kMetrics:
      SW_FUZZ_CHECK(path == "/metrics");
      break;
    case ApiRequest::Kind::kHealthz:
      SW_FUZZ_CHECK(path == "/healthz");
      break;
    case ApiRequest::Kind::kWebUi:
      SW_FUZZ_CHECK(r->asset != nullptr && !r->asset->body.empty());
      SW_FUZZ_CHECK(path == "/" || path == "/ui/" + std::string(r->asset->name));
      break;
  }
}

}  // namespace
}  // namespace stallwatch::daemon

SW_FUZZ_TARGET(SwFuzzHttpQuery) {
  const std::string_view text = stallwatch::fuzz::AsText(data, size);
  // As the HTTP server sees it: libevent parses the request target (a C string) into a URI.
  const std::string target(text.substr(0, text.find('\0')));
  if (evhttp_uri* uri = evhttp_uri_parse_with_flags(target.c_str(), EVHTTP_URI_NONCONFORMANT)) {
    const char* p = evhttp_uri_get_path(uri);
    const char* q = evhttp_uri_get_query(uri);
    stallwatch::daemon::Route(p ? p : "", q ? q : "");
    evhttp_uri_free(uri);
  }
  // Raw, whatever libevent would have refused.
  const size_t qm = text.find('?');
  stallwatch::daemon::Route(text.substr(0, qm),
                            qm == std::string_view::npos ? "" : text.substr(qm + 1));
  return 0;
}
