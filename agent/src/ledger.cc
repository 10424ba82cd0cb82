#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "python_frames.h"
#include "stallwatch/common/blocking_calls.h"

namespace stallwatch::agent::internal {

__thread LedgerThread t_ledger __attribute__((tls_model("initial-exec"))) = {nullptr, 0};

FdModeCache g_fd_modes;
PyCallerSource g_py_caller;

static_assert(kPyTstateCframe == kPy311Layout.tstate_cframe &&
                  kPyCframeCurrentFrame == kPy311Layout.cframe_current_frame &&
                  kPyFrameCode == kPy311Layout.frame_f_code &&
                  kPyFramePrevInstr == kPy311Layout.frame_prev_instr,
              "the ledger's Python caller reads CPython 3.11's layout");

FdMode ClassifyFd(uint32_t st_mode, int status_flags) {
  switch (st_mode & S_IFMT) {
    case S_IFREG:
    case S_IFBLK:
      return FdMode::kFile;
    case S_IFSOCK:
    case S_IFIFO:
      return (status_flags & O_NONBLOCK) != 0 ? FdMode::kNotCounted : FdMode::kBlockingStream;
    default:
      return FdMode::kNotCounted;
  }
}

// Raw system calls: the interposed fcntl is not entered, and nothing here is counted.
// `token` was read before the calls: a Forget meanwhile fails the Put.
FdMode ClassifyFdSlow(int fd, uint8_t token) {
  const int saved = errno;
  const long flags = syscall(SYS_fcntl, fd, F_GETFL);
  struct stat st {};
  const long rc = flags < 0 ? -1 : syscall(SYS_fstat, fd, &st);
  errno = saved;
  if (rc != 0) {
    return FdMode::kNotCounted;  // not open (the call will say EBADF): nothing cached
  }
  const FdMode m = ClassifyFd(st.st_mode, static_cast<int>(flags));
  (void)g_fd_modes.Put(fd, token, m);
  return m;
}

namespace {

// The quantile a row reports.
constexpr double kRowQuantile = 0.99;

}  // namespace

static_assert(kBlockingCalls.size() == kBlockingCallCount,
              "BlockingCall and kBlockingCalls must list the same calls");
static_assert(kLedgerBuckets == kCallBuckets && kLedgerMinExp == kCallBucketMinExp &&
                  kLedgerMaxExp == kCallBucketMaxExp,
              "the ledger's buckets are the layout of \"calls\" findings (blocking_calls.h)");

// The names are string literals: their data is NUL-terminated.
const char* BlockingCallName(BlockingCall c) {
  const int i = static_cast<int>(c);
  return i >= 0 && i < kBlockingCallCount ? kBlockingCalls[i].name.data() : "";
}

const char* BlockingCallFamily(BlockingCall c) {
  const int i = static_cast<int>(c);
  return i >= 0 && i < kBlockingCallCount ? kBlockingCalls[i].family.data() : "";
}

BlockingCall ParseBlockingCall(std::string_view name) {
  for (int i = 0; i < kBlockingCallCount; ++i) {
    if (name == kBlockingCalls[i].name) {
      return static_cast<BlockingCall>(i);
    }
  }
  return BlockingCall::kCount;
}

uint64_t LedgerBucketValue(int bucket) {
  if (bucket <= 0) {
    return uint64_t{1} << (kLedgerMinExp - 1);
  }
  if (bucket >= kLedgerBuckets - 1) {
    return uint64_t{1} << kLedgerMaxExp;
  }
  const int exp = kLedgerMinExp + (bucket - 1) / 2;
  const uint64_t half = uint64_t{1} << (exp - 1);  // width of a half octave
  const uint64_t lower = (uint64_t{1} << exp) + ((bucket - 1) % 2) * half;
  return lower + half / 2;
}

LedgerCursor::LedgerCursor() : seen_(kLedgerSlots) {}

std::vector<LedgerRow> LedgerCursor::Take(LedgerTable& table, uint64_t* overflow) {
  std::vector<LedgerRow> rows;
  for (int i = 0; i < kLedgerSlots; ++i) {
    LedgerEntry& e = table.entry(i);
    const uint64_t site = e.site.load(std::memory_order_acquire);
    if (site == 0) {
      continue;
    }
    Seen& seen = seen_[i];
    const uint64_t count = e.count.load(std::memory_order_relaxed);
    if (count == seen.count) {
      continue;
    }
    LedgerRow row;
    row.site = site;
    row.py_code = e.py_code.load(std::memory_order_relaxed);
    row.native = e.native.load(std::memory_order_relaxed);
    row.call = static_cast<BlockingCall>(e.call.load(std::memory_order_relaxed) - 1);
    row.count = count - seen.count;
    const uint64_t total = e.total_ns.load(std::memory_order_relaxed);
    row.total_ns = total - seen.total_ns;
    row.max_ns = e.window_max_ns.exchange(0, std::memory_order_relaxed);
    uint32_t delta[kLedgerBuckets];
    uint64_t in_buckets = 0;
    for (int b = 0; b < kLedgerBuckets; ++b) {
      const uint32_t now = e.buckets[b].load(std::memory_order_relaxed);
      delta[b] = now - seen.buckets[b];
      seen.buckets[b] = now;
      in_buckets += delta[b];
      if (delta[b] != 0) {
        row.buckets.emplace_back(static_cast<uint32_t>(b), delta[b]);
      }
    }
    // The smallest bucket holding the 99th percentile, never above the window's maximum.
    const auto rank = static_cast<uint64_t>(kRowQuantile * static_cast<double>(in_buckets));
    uint64_t below = 0;
    for (int b = 0; b < kLedgerBuckets; ++b) {
      below += delta[b];
      if (below > rank || b == kLedgerBuckets - 1) {
        row.p99_ns = LedgerBucketValue(b);
        break;
      }
    }
    if (row.max_ns != 0) {
      row.p99_ns = std::min(row.p99_ns, row.max_ns);
    }
    seen.count = count;
    seen.total_ns = total;
    rows.push_back(row);
  }
  const uint64_t over = table.overflow();
  *overflow = over - overflow_seen_;
  overflow_seen_ = over;
  std::sort(rows.begin(), rows.end(),
            [](const LedgerRow& a, const LedgerRow& b) { return a.total_ns > b.total_ns; });
  return rows;
}

}  // namespace stallwatch::agent::internal
