#include "unwinder.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "platform/proc.h"

namespace stallwatch::agent::internal {
namespace {

__attribute__((noinline)) int SomeFunction(int x) { return x * 3 + 1; }

// A garbage stack pointer near 2^64 with a copied stack elsewhere: reading the return address
// at [rsp] must fail cleanly (an address past the copy must not wrap around into it) instead of
// reading far outside the copy and crashing the host.
TEST(Unwinder, GarbageStackPointerNearTheTopOfTheAddressSpaceFailsCleanly) {
  Unwinder u;
  ASSERT_TRUE(u.Init().ok());
  unsigned char copy[64];
  std::memset(copy, 0, sizeof(copy));
  uint64_t regs[17] = {};
  regs[7] = ~uint64_t{7};  // rsp = 0xfffffffffffffff8: rsp + 8 wraps to 0
  regs[16] = reinterpret_cast<uint64_t>(&SomeFunction) + 1;  // rip inside a function with CFI
  UnwindInput in;
  in.tid = platform::GetTid();
  in.regs = regs;
  in.stack = copy;
  in.stack_base = 0x1000;
  in.stack_len = sizeof(copy);
  auto r = u.Unwind(in, 8);
  // One frame (the interrupted pc) or an error; never more, never a crash.
  if (r.ok()) {
    EXPECT_LE(r->size(), 1u);
  }
  // Reads inside the copy still come from it: a stack pointer in the copy unwinds one level
  // and stops at the zero return address.
  regs[7] = 0x1000;
  auto ok = u.Unwind(in, 8);
  if (ok.ok()) {
    EXPECT_GE(ok->size(), 1u);
    EXPECT_EQ((*ok)[0].pc, regs[16]);
  }
}

}  // namespace
}  // namespace stallwatch::agent::internal
