// The blocking-call ledger's table (agent/src/ledger.h): keyed by (site, call), bounded, read in
// windows by a cursor; the descriptor-mode cache and its classification.
#include "ledger.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>

namespace stallwatch::agent::internal {
namespace {

constexpr uint64_t kMs = 1'000'000;

TEST(LedgerBucket, HalfOctavesAndBounds) {
  EXPECT_EQ(LedgerBucket(0), 0);
  EXPECT_EQ(LedgerBucket(255), 0);
  EXPECT_EQ(LedgerBucket(256), 1);
  EXPECT_EQ(LedgerBucket(384), 2);  // upper half of [256, 512)
  EXPECT_EQ(LedgerBucket(512), 3);
  EXPECT_EQ(LedgerBucket(uint64_t{1} << 40), kLedgerBuckets - 1);
  for (const uint64_t v : {uint64_t{300}, uint64_t{1000}, 2 * kMs, 7 * kMs, 3'000 * kMs}) {
    const double mid = static_cast<double>(LedgerBucketValue(LedgerBucket(v)));
    EXPECT_NEAR(mid / static_cast<double>(v), 1.0, 0.35) << v;
  }
}

TEST(LedgerTable, CountsBySiteAndCallAndTakesWindows) {
  auto t = std::make_unique<LedgerTable>();
  LedgerCursor cursor;
  for (int i = 0; i < 100; ++i) {
    t->Record(0x1000, BlockingCall::kGetaddrinfo, 100'000);
  }
  t->Record(0x1000, BlockingCall::kUsleep, 2 * kMs);  // same site, other call: its own row
  t->Record(0x2000, BlockingCall::kUsleep, 3 * kMs);
  uint64_t overflow = 1;
  auto rows = cursor.Take(*t, &overflow);
  EXPECT_EQ(overflow, 0u);
  ASSERT_EQ(rows.size(), 3u);
  // Most total time first: getaddrinfo (10 ms), usleep at 0x2000 (3 ms), usleep at 0x1000.
  EXPECT_EQ(rows[0].call, BlockingCall::kGetaddrinfo);
  EXPECT_EQ(rows[0].site, 0x1000u);
  EXPECT_EQ(rows[0].count, 100u);
  EXPECT_EQ(rows[0].total_ns, 100 * 100'000u);
  EXPECT_EQ(rows[0].max_ns, 100'000u);
  EXPECT_LE(rows[0].p99_ns, rows[0].max_ns);
  EXPECT_GT(rows[0].p99_ns, 60'000u);
  EXPECT_EQ(rows[1].site, 0x2000u);
  EXPECT_EQ(rows[2].call, BlockingCall::kUsleep);

  // The next window holds only what came since.
  EXPECT_TRUE(cursor.Take(*t, &overflow).empty());
  t->Record(0x2000, BlockingCall::kUsleep, 1 * kMs);
  rows = cursor.Take(*t, &overflow);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].count, 1u);
  EXPECT_EQ(rows[0].total_ns, 1 * kMs);
  EXPECT_EQ(rows[0].max_ns, 1 * kMs);  // the window's, not the 3 ms of the first
}

TEST(LedgerTable, FullTableCountsOverflowAndKeepsWhatItHas) {
  auto t = std::make_unique<LedgerTable>();
  LedgerCursor cursor;
  constexpr int kSites = 4 * kLedgerSlots;
  for (int i = 0; i < kSites; ++i) {
    t->Record(0x400000 + 16 * static_cast<uint64_t>(i), BlockingCall::kFsync, 1000);
  }
  uint64_t overflow = 0;
  const auto rows = cursor.Take(*t, &overflow);
  EXPECT_LE(rows.size(), static_cast<size_t>(kLedgerSlots));
  uint64_t counted = 0;
  for (const auto& r : rows) {
    counted += r.count;
  }
  EXPECT_EQ(counted + overflow, static_cast<uint64_t>(kSites));
  EXPECT_GT(overflow, 0u);
  EXPECT_EQ(t->overflow(), overflow);
}

TEST(BlockingCalls, NamesRoundTrip) {
  for (int i = 0; i < kBlockingCallCount; ++i) {
    const auto c = static_cast<BlockingCall>(i);
    EXPECT_EQ(ParseBlockingCall(BlockingCallName(c)), c);
    EXPECT_STRNE(BlockingCallFamily(c), "");
  }
  EXPECT_EQ(ParseBlockingCall("read"), BlockingCall::kRead);
  EXPECT_STREQ(BlockingCallFamily(BlockingCall::kRead), "file");
  EXPECT_STREQ(BlockingCallFamily(BlockingCall::kReadBlocking), "socket");
  EXPECT_STREQ(BlockingCallName(BlockingCall::kPthreadMutexLock), "pthread_mutex_lock");
  EXPECT_EQ(ParseBlockingCall("fread"), BlockingCall::kCount);
}

TEST(FdMode, ClassifiedByKindAndBlockingFlag) {
  EXPECT_EQ(ClassifyFd(S_IFREG | 0644, O_RDWR), FdMode::kFile);
  EXPECT_EQ(ClassifyFd(S_IFREG | 0644, O_RDWR | O_NONBLOCK), FdMode::kFile);  // no effect on disk
  EXPECT_EQ(ClassifyFd(S_IFBLK | 0660, O_RDONLY), FdMode::kFile);
  EXPECT_EQ(ClassifyFd(S_IFSOCK | 0777, O_RDWR), FdMode::kBlockingStream);
  EXPECT_EQ(ClassifyFd(S_IFSOCK | 0777, O_RDWR | O_NONBLOCK), FdMode::kNotCounted);
  EXPECT_EQ(ClassifyFd(S_IFIFO | 0600, O_RDONLY), FdMode::kBlockingStream);
  EXPECT_EQ(ClassifyFd(S_IFIFO | 0600, O_RDONLY | O_NONBLOCK), FdMode::kNotCounted);
  EXPECT_EQ(ClassifyFd(S_IFCHR | 0666, O_RDWR), FdMode::kNotCounted);  // a tty, /dev/null
  EXPECT_EQ(ClassifyFd(0600, O_RDWR), FdMode::kNotCounted);            // eventfd, timerfd, epoll
  EXPECT_EQ(ClassifyFd(S_IFDIR | 0755, O_RDONLY), FdMode::kNotCounted);
}

TEST(FdModeCache, PutGetAndForget) {
  auto c = std::make_unique<FdModeCache>();
  uint8_t token = 0;
  EXPECT_EQ(c->Get(7, &token), FdMode::kUnknown);
  EXPECT_TRUE(c->Put(7, token, FdMode::kBlockingStream));
  EXPECT_EQ(c->Get(7, &token), FdMode::kBlockingStream);
  EXPECT_EQ(c->Get(8, &token), FdMode::kUnknown);  // its own entry
  c->Forget(7);
  EXPECT_EQ(c->Get(7, &token), FdMode::kUnknown);
  c->Forget(-1);  // out of range: nothing
  c->Forget(kFdModeFds);
}

TEST(FdModeCache, AClassificationThatRacedWithAForgetIsNotKept) {
  auto c = std::make_unique<FdModeCache>();
  uint8_t token = 0;
  ASSERT_EQ(c->Get(3, &token), FdMode::kUnknown);
  c->Forget(3);  // closed and reused while the loop thread classified the old descriptor
  EXPECT_FALSE(c->Put(3, token, FdMode::kFile));
  EXPECT_EQ(c->Get(3, &token), FdMode::kUnknown);
  EXPECT_TRUE(c->Put(3, token, FdMode::kNotCounted));  // the next classification sticks
  EXPECT_EQ(c->Get(3, &token), FdMode::kNotCounted);
  // The generation wraps after 64 Forgets; every one of them still clears the mode.
  for (int i = 0; i < 200; ++i) {
    c->Forget(3);
    ASSERT_EQ(c->Get(3, &token), FdMode::kUnknown);
    ASSERT_TRUE(c->Put(3, token, FdMode::kFile));
  }
}

TEST(FdModeCache, TheProcessCacheClassifiesRealDescriptors) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  g_fd_modes.Forget(p[0]);
  EXPECT_EQ(LedgerFdMode(p[0]), FdMode::kBlockingStream);
  ASSERT_EQ(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);  // not interposed here: forgotten by hand
  g_fd_modes.Forget(p[0]);
  EXPECT_EQ(LedgerFdMode(p[0]), FdMode::kNotCounted);
  close(p[0]);
  close(p[1]);
  g_fd_modes.Forget(p[0]);
  errno = 0;
  EXPECT_EQ(LedgerFdMode(p[0]), FdMode::kNotCounted);  // closed: EBADF, nothing cached
  EXPECT_EQ(errno, 0);                                 // the caller's errno is kept
  EXPECT_EQ(LedgerFdMode(-1), FdMode::kNotCounted);
  EXPECT_EQ(LedgerFdMode(kFdModeFds), FdMode::kNotCounted);
}

// CurrentPythonCaller on a hand-made thread state: tstate → cframe → current frame → code and
// instruction, read only for a site in the interpreter's code, the thread's own state, and a
// runtime that is not finalizing.
uint64_t g_fake_tstate = 0;
void* FakeGetThisThreadState() {
  return reinterpret_cast<void*>(g_fake_tstate);  // NOLINT(performance-no-int-to-ptr): a test's
}

TEST(PythonCaller, TheCurrentFramesCodeAndInstructionForTheInterpretersOwnCalls) {
  uint64_t frame[8] = {};
  frame[kPyFrameCode / 8] = 0xc0de00;
  frame[kPyFramePrevInstr / 8] = 0xc0de00 + 184 + 14;
  uint64_t cframe[2] = {};
  cframe[kPyCframeCurrentFrame / 8] = reinterpret_cast<uint64_t>(frame);
  uint64_t tstate[16] = {};
  tstate[kPyTstateCframe / 8] = reinterpret_cast<uint64_t>(cframe);
  const auto ts = reinterpret_cast<uint64_t>(tstate);
  std::atomic<uint64_t> finalizing{0};
  g_fake_tstate = ts;
  g_py_caller.finalizing.store(reinterpret_cast<uint64_t>(&finalizing));
  g_py_caller.get_tstate.store(&FakeGetThisThreadState);
  g_py_caller.text_hi.store(0x2000);
  g_py_caller.text_lo.store(0x1000);

  uint64_t code = 0;
  uint64_t instr = 0;
  ASSERT_TRUE(CurrentPythonCaller(ts, 0x1800, &code, &instr));
  EXPECT_EQ(code, 0xc0de00u);
  EXPECT_EQ(instr, 0xc0de00u + 184 + 14);
  EXPECT_FALSE(CurrentPythonCaller(ts, 0x2000, &code, &instr));  // not the interpreter's code
  EXPECT_FALSE(CurrentPythonCaller(0, 0x1800, &code, &instr));   // not a Python loop
  g_fake_tstate = 0;  // the thread state is being deleted
  EXPECT_FALSE(CurrentPythonCaller(ts, 0x1800, &code, &instr));
  g_fake_tstate = ts;
  finalizing.store(1);  // Py_FinalizeEx has begun
  EXPECT_FALSE(CurrentPythonCaller(ts, 0x1800, &code, &instr));
  finalizing.store(0);
  cframe[kPyCframeCurrentFrame / 8] = 0;  // no Python frame (the thread is in C only)
  EXPECT_FALSE(CurrentPythonCaller(ts, 0x1800, &code, &instr));
  g_py_caller.text_lo.store(0);
  g_py_caller.text_hi.store(0);
}

TEST(LedgerTable, APythonSiteKeepsItsCodeObjectAndNativeReturnAddress) {
  auto t = std::make_unique<LedgerTable>();
  LedgerCursor cursor;
  t->Record(0xc0de00 + 200, BlockingCall::kRead, 1000, 0xc0de00, 0x1800);
  t->Record(0xc0de00 + 200, BlockingCall::kRead, 3000, 0xc0de00, 0x1800);
  uint64_t overflow = 0;
  const auto rows = cursor.Take(*t, &overflow);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].site, 0xc0de00u + 200);
  EXPECT_EQ(rows[0].py_code, 0xc0de00u);
  EXPECT_EQ(rows[0].native, 0x1800u);
  EXPECT_EQ(rows[0].count, 2u);
  EXPECT_EQ(rows[0].total_ns, 4000u);
}

}  // namespace
}  // namespace stallwatch::agent::internal
