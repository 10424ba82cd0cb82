// The per-stall stack records behind filtered /api/v1/stacks queries (daemon/src/stack_records.cc):
// selection by service, loop, class and time span, merging, and the count and byte bounds.
#include "stack_records.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace stallwatch::daemon {
namespace {

Stack StackOf(const std::string& fn) {
  Stack s;
  s.frames = {Frame{fn, "/bin/app", 16, "app.cc", 7}, Frame{"main", "/bin/app", 8, "", 0}};
  return s;
}

// Adds one record of `fn` (key "svc;main;fn") spanning [from, to].
void Add(StackRecords& r, const std::string& service, const std::string& loop, StallClass cls,
         const std::string& fn, int64_t from, int64_t to, uint64_t samples, int64_t stall_ns = 0) {
  r.Add(service + ";main;" + fn, StackOf(fn), service, loop, cls, from, to, samples, stall_ns);
}

std::string Names(const std::vector<StackTotal>& totals) {
  std::string out;
  for (const auto& t : totals) {
    out += out.empty() ? "" : ",";
    out += t.stack->frames[0].function;
    out += "=";
    out += std::to_string(t.samples);
  }
  return out;
}

TEST(StackRecords, SelectsByServiceLoopClassAndOverlappingSpan) {
  StackRecords r(100, 1 << 20);
  Add(r, "a", "main", StallClass::kCpu, "f", 100, 200, 3, 30);
  Add(r, "a", "main", StallClass::kCpu, "f", 200, 300, 2, 20);
  Add(r, "a", "io", StallClass::kBlocked, "g", 250, 260, 4, 40);
  Add(r, "b", "main", StallClass::kCpu, "h", 500, 600, 1, 10);
  StackQuery q;
  EXPECT_EQ(Names(r.Select(q, 0, false)), "f=5,g=4,h=1");
  q.service = "a";
  EXPECT_EQ(Names(r.Select(q, 0, false)), "f=5,g=4");
  q.loop = "io";
  EXPECT_EQ(Names(r.Select(q, 0, false)), "g=4");
  q = {};
  q.stall_class = StallClass::kCpu;
  EXPECT_EQ(Names(r.Select(q, 0, false)), "f=5,h=1");
  // Spans overlap [since, until], both inclusive.
  q = {};
  q.since = TimeBound{300, false};
  EXPECT_EQ(Names(r.Select(q, 0, false)), "f=2,h=1");
  q.until = TimeBound{499, false};
  EXPECT_EQ(Names(r.Select(q, 0, false)), "f=2");
  q = {};
  q.until = TimeBound{100, false};
  EXPECT_EQ(Names(r.Select(q, 0, false)), "f=3");
  // A duration ago is resolved at the request's time.
  q = {};
  q.since = TimeBound{150, true};
  EXPECT_EQ(Names(r.Select(q, 700, false)), "h=1");
  // Stall time adds up with the samples; by loop and class keeps them apart and says which.
  q = {};
  const auto by = r.Select(q, 0, true);
  ASSERT_EQ(by.size(), 3u);
  EXPECT_EQ(by[0].stall_ns, 50);
  EXPECT_EQ(by[0].loop, "main");
  EXPECT_EQ(by[0].stall_class, "cpu");
  EXPECT_EQ(by[1].stall_class, "blocked");
  EXPECT_EQ(by[1].loop, "io");
  EXPECT_EQ(r.Select(q, 0, false)[0].loop, "") << "merged over loops";
}

TEST(StackRecords, OldestAreDroppedAtTheCountAndByteBoundsAndCounted) {
  StackRecords r(3, 1 << 20);
  for (int64_t i = 0; i < 5; ++i) {
    Add(r, "a", "main", StallClass::kCpu, "f" + std::to_string(i), i * 10, i * 10 + 5, 2);
  }
  EXPECT_EQ(r.size(), 3u);
  EXPECT_EQ(Names(r.Select({}, 0, false)), "f2=2,f3=2,f4=2");
  EXPECT_EQ(r.samples_not_kept(), 4u);
  EXPECT_EQ(r.complete_since_ns(), 15);

  // Bytes: one shape shared by every record is counted once.
  StackRecords shared(1000, 1 << 20);
  Add(shared, "a", "main", StallClass::kCpu, "f", 0, 1, 1);
  const size_t one = shared.bytes();
  Add(shared, "a", "main", StallClass::kCpu, "f", 1, 2, 1);
  const size_t record = shared.bytes() - one;
  EXPECT_LT(record, one) << "a second record of the same stack does not copy it";
  StackRecords tight(1000, one + 3 * record);
  for (int i = 0; i < 10; ++i) {
    Add(tight, "a", "main", StallClass::kCpu, "f", i, i + 1, 1);
  }
  EXPECT_EQ(tight.size(), 4u);
  EXPECT_LE(tight.bytes(), one + 3 * record);
  EXPECT_EQ(tight.samples_not_kept(), 6u);
  // Too large for the bound at all: not kept, counted.
  StackRecords tiny(10, 16);
  Add(tiny, "a", "main", StallClass::kCpu, "f", 0, 1, 7);
  EXPECT_EQ(tiny.size(), 0u);
  EXPECT_EQ(tiny.samples_not_kept(), 7u);
}

// Making room drops the last record of the very stack being added: the stack stays valid.
TEST(StackRecords, AStackWhoseLastRecordIsDroppedToMakeRoomForItSurvives) {
  StackRecords r(1, 1 << 20);
  Add(r, "a", "main", StallClass::kCpu, "f", 0, 1, 1);
  Add(r, "a", "main", StallClass::kCpu, "f", 1, 2, 2);
  ASSERT_EQ(r.size(), 1u);
  const auto all = r.Select({}, 0, false);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].stack->frames[0].function, "f");
  EXPECT_EQ(all[0].stack->frames[0].file, "app.cc");
  EXPECT_EQ(all[0].samples, 2u);
  Add(r, "a", "main", StallClass::kCpu, "g", 2, 3, 1);
  EXPECT_EQ(Names(r.Select({}, 0, false)), "g=1");
  Add(r, "a", "main", StallClass::kCpu, "g", 3, 4, 1);
  Add(r, "a", "main", StallClass::kCpu, "f", 4, 5, 1);
  EXPECT_EQ(Names(r.Select({}, 0, false)), "f=1");
}

}  // namespace
}  // namespace stallwatch::daemon
