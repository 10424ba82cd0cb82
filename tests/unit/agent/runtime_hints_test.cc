// Hints in the terms of the runtime that runs the loop (classifier.h, RuntimeAdvice).
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "classifier.h"

namespace stallwatch::agent::internal {
namespace {

TEST(RuntimeHints, PythonSleepsAreToldToAwaitAsyncioSleep) {
  const std::string h = HintFor(StallClass::kBlocked, "clock_nanosleep", "", {}, "python");
  EXPECT_NE(h.find("await asyncio.sleep()"), std::string::npos) << h;
  EXPECT_NE(h.find("clock_nanosleep()"), std::string::npos) << h;
  EXPECT_EQ(h.find("evtimer_add"), std::string::npos) << h;
}

TEST(RuntimeHints, ABlockingClientInPythonGetsAnAsyncClientOrAnExecutor) {
  const std::string h =
      HintFor(StallClass::kBlocked, "poll", "socket tcp 127.0.0.1:1 -> 127.0.0.1:2", {}, "python");
  EXPECT_NE(h.find("run_in_executor"), std::string::npos) << h;
  EXPECT_NE(h.find("poll() on socket tcp 127.0.0.1:1 -> 127.0.0.1:2"), std::string::npos) << h;
}

TEST(RuntimeHints, RulesKeepTheirDiagnosisInTheRuntimesTerms) {
  const std::string py =
      HintFor(StallClass::kBlocked, "poll", "socket udp 10.0.0.1:5 -> 10.0.0.2:53", {}, "python");
  EXPECT_NE(py.find("DNS lookup"), std::string::npos) << py;
  EXPECT_NE(py.find("loop.getaddrinfo()"), std::string::npos) << py;
  const std::string c =
      HintFor(StallClass::kBlocked, "poll", "socket udp 10.0.0.1:5 -> 10.0.0.2:53");
  EXPECT_NE(c.find("evdns_getaddrinfo"), std::string::npos) << c;
  const std::string redis = HintFor(StallClass::kBlocked, "fdatasync", "", {}, "redis");
  EXPECT_NE(redis.find("appendfsync everysec"), std::string::npos) << redis;
}

TEST(RuntimeHints, NodeAndRedisCpuStallsNameTheirRemedies) {
  EXPECT_NE(HintFor(StallClass::kCpu, "", "", {}, "node").find("worker_threads"),
            std::string::npos);
  EXPECT_NE(HintFor(StallClass::kCpu, "", "", {}, "redis").find("SLOWLOG GET"), std::string::npos);
  EXPECT_NE(HintFor(StallClass::kBlocked, "epoll_pwait", "anon_inode:[eventpoll]", {}, "node")
                .find("child_process.*Sync"),
            std::string::npos);
}

TEST(RuntimeHints, AnUnknownRuntimeGetsTheDefaultWording) {
  EXPECT_EQ(HintFor(StallClass::kCpu, "", "", {}, "erlang"), HintFor(StallClass::kCpu, "", ""));
  EXPECT_EQ(HintFor(StallClass::kBlocked, "nanosleep", "", {}, ""),
            HintFor(StallClass::kBlocked, "nanosleep", ""));
}

TEST(RuntimeHints, EveryRowNamesAKnownCaseAndHasAtMostOnePlaceholder) {
  std::set<std::string> cases = {"cpu", "sleep", "futex", "blocked"};
  for (const auto& r : HintRules()) {
    cases.insert(std::string(r.name));
  }
  std::set<std::string> seen;
  for (const auto& a : RuntimeAdviceTable()) {
    EXPECT_EQ(cases.count(std::string(a.what)), 1u) << a.runtime << "/" << a.what;
    EXPECT_TRUE(seen.insert(std::string(a.runtime) + "/" + std::string(a.what)).second)
        << "duplicate row " << a.runtime << "/" << a.what;
    const std::string h(a.hint);
    EXPECT_LE(h.find("%s") == std::string::npos
                  ? 0
                  : 1 + (h.find("%s", h.find("%s") + 1) != std::string::npos),
              1)
        << h;
  }
}

}  // namespace
}  // namespace stallwatch::agent::internal
