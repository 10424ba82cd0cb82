// The watchdog engine's locking contract as the host sees it: Agent::Snapshot() (called on loop
// threads) never waits for the watchdog while it looks at a loop (sampling, unwinding).
#include "watchdog/engine.h"

#include <event2/event.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>

#include "runtime.h"
#include "stallwatch/agent.h"

namespace stallwatch::internal {
namespace {

using std::chrono::milliseconds;

Options ThreadOptions(SamplingMode sampling) {
  Options o;
  o.endpoint = "off";
  o.watchdog = WatchdogMode::kThread;
  o.sampling = sampling;
  o.loop_name = "held";
  return o;
}

// Holds the watchdog in its first look at a loop (as a long unwind would) and checks that a
// snapshot, taken from another thread meanwhile, does not wait for it.
void ExpectSnapshotWhileWatchdogHeld(SamplingMode sampling) {
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  {
    const Options o = ThreadOptions(sampling);
    auto agent = Agent::Attach(base, o);
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    auto rt = Runtime::Acquire(o);  // the agent's runtime
    ASSERT_TRUE(rt.ok());
    ASSERT_EQ((*rt)->watchdog_process(), nullptr);

    std::promise<void> entered;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<bool> held{false};
    (*rt)->SetLookHookForTest([&entered, released, &held] {
      if (held.exchange(true)) {
        return;
      }
      entered.set_value();
      released.wait();
    });
    // The watchdog looks at an idle loop at least every second.
    ASSERT_EQ(entered.get_future().wait_for(milliseconds(5000)), std::future_status::ready);

    auto snap = std::async(std::launch::async, [&] { return (*agent)->Snapshot(); });
    const bool returned = snap.wait_for(milliseconds(500)) == std::future_status::ready;
    release.set_value();
    EXPECT_TRUE(returned) << "Snapshot() waited for the watchdog's look at the loop";
    const LoopSnapshot s = snap.get();
    EXPECT_EQ(s.loop, "held");
    EXPECT_EQ(s.watchdog, "thread");
    EXPECT_FALSE(s.sampling_status.empty());
    (*rt)->SetLookHookForTest(nullptr);
  }
  event_base_free(base);
}

TEST(WatchdogEngineTest, SnapshotDoesNotWaitForTheWatchdogsLook) {
  ExpectSnapshotWhileWatchdogHeld(SamplingMode::kOn);
}

TEST(WatchdogEngineTest, SnapshotDoesNotWaitForTheWatchdogsLookWithSamplingOff) {
  ExpectSnapshotWhileWatchdogHeld(SamplingMode::kOff);
}

}  // namespace
}  // namespace stallwatch::internal
