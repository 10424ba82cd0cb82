#include "watchdog/region.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace stallwatch::internal {
namespace {

StallFinding Stall(uint64_t id, size_t note_bytes = 16) {
  StallFinding f;
  f.stall_id = id;
  f.loop = "main";
  f.sampling_note = std::string(note_bytes, 'x');
  return f;
}

// The published text read back into a host's snapshot: the recent stalls' ids, oldest first.
std::string PulledIds(const SharedText& text) {
  agent::internal::PublishedSnapshot host;
  PullSnapshot(text, &host);
  std::string ids;
  for (const auto& f : host.recent) {
    ids += (ids.empty() ? "" : ",") + std::to_string(f.stall_id);
  }
  return ids;
}

TEST(SnapshotWriterTest, FollowsTheRecentStallsAsTheyCloseAndAge) {
  auto text = std::make_unique<SharedText>();
  agent::internal::PublishedSnapshot snap;
  snap.name = "main";
  SnapshotWriter writer;
  writer.Publish(snap, text.get());
  EXPECT_EQ(PulledIds(*text), "");
  for (uint64_t id = 1; id <= 3; ++id) {
    snap.recent.push_back(Stall(id));
    writer.Publish(snap, text.get());
  }
  EXPECT_EQ(PulledIds(*text), "1,2,3");
  snap.recent.pop_front();  // the oldest ages out, a new one closes
  snap.recent.push_back(Stall(4));
  snap.ongoing = Stall(5);
  writer.Publish(snap, text.get());
  EXPECT_EQ(PulledIds(*text), "2,3,4");
  agent::internal::PublishedSnapshot host;
  PullSnapshot(*text, &host);
  EXPECT_EQ(host.name, "main");
  ASSERT_TRUE(host.ongoing.has_value());
  EXPECT_EQ(host.ongoing->stall_id, 5u);
  // What a writer without memory publishes is the same.
  auto fresh = std::make_unique<SharedText>();
  PublishSnapshot(snap, fresh.get());
  EXPECT_EQ(ReadText(*fresh), ReadText(*text));
}

TEST(SnapshotWriterTest, LeavesOutTheOldestStallsThatDoNotFit) {
  auto text = std::make_unique<SharedText>();
  agent::internal::PublishedSnapshot snap;
  snap.name = "main";
  SnapshotWriter writer;
  // Five stalls of a quarter of the text each: the newest three fit.
  for (uint64_t id = 1; id <= 5; ++id) {
    snap.recent.push_back(Stall(id, kSnapshotBytes / 4));
    writer.Publish(snap, text.get());
  }
  EXPECT_EQ(PulledIds(*text), "3,4,5");
  EXPECT_LE(ReadText(*text).size(), kSnapshotBytes);
}

}  // namespace
}  // namespace stallwatch::internal
