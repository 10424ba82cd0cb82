#include "unwinder.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "platform/proc.h"
#include "tail_call_pair.h"

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

// The stack scan takes a word pair for a frame record only when the second word is a return
// address in a module: a stack address kept in a local (next to a saved rbp) is not one, though
// libdw's dwfl_addrmodule alone answers it with the last module mapped below the stack.
TEST(Unwinder, OnlyAddressesInsideAModuleCountAsInAModule) {
  Unwinder u;
  ASSERT_TRUE(u.Init().ok());
  int on_stack = 0;
  const auto heap = std::make_unique<int>(0);
  EXPECT_TRUE(u.InModule(reinterpret_cast<uint64_t>(&SomeFunction)));
  EXPECT_TRUE(u.InModule(reinterpret_cast<uint64_t>(&std::memcpy)));  // libc
  EXPECT_FALSE(u.InModule(reinterpret_cast<uint64_t>(&on_stack)));
  EXPECT_FALSE(u.InModule(reinterpret_cast<uint64_t>(heap.get())));
  EXPECT_FALSE(u.InModule(0));
  EXPECT_FALSE(u.InModule(~uint64_t{0}));
}

TEST(DirectCallTarget, DecodesCallRel32AndNothingElse) {
  // call +0x10 ending at 0x1005: target 0x1015; call -0x20 ending at 0x1005: 0xfe5.
  const unsigned char fwd[5] = {0xE8, 0x10, 0x00, 0x00, 0x00};
  const unsigned char back[5] = {0xE8, 0xE0, 0xFF, 0xFF, 0xFF};
  const unsigned char indirect[5] = {0x00, 0x00, 0xFF, 0xD0, 0x90};  // ... call *%rax; nop
  EXPECT_EQ(DirectCallTarget(fwd, 0x1005), 0x1015u);
  EXPECT_EQ(DirectCallTarget(back, 0x1005), 0xfe5u);
  EXPECT_EQ(DirectCallTarget(indirect, 0x1005), 0u);
}

TEST(JumpsToInCode, FindsDirectJumpsToTheTargetOnly) {
  // At 0x1000: add $1,%edi (83 C7 01); jmp 0x1040 (E9 rel32 = 0x38 from 0x1008).
  const unsigned char jmp32[] = {0x83, 0xC7, 0x01, 0xE9, 0x38, 0x00, 0x00, 0x00};
  EXPECT_TRUE(JumpsToInCode(jmp32, sizeof jmp32, 0x1000, 0x1040));
  EXPECT_FALSE(JumpsToInCode(jmp32, sizeof jmp32, 0x1000, 0x1044));
  const unsigned char jmp8[] = {0x90, 0xEB, 0xFE};  // jmp to itself at 0x1001
  EXPECT_TRUE(JumpsToInCode(jmp8, sizeof jmp8, 0x1000, 0x1001));
  const unsigned char jne32[] = {0x0F, 0x85, 0x10, 0x00, 0x00, 0x00};  // jne 0x1016
  EXPECT_TRUE(JumpsToInCode(jne32, sizeof jne32, 0x1000, 0x1016));
  const unsigned char call[] = {0xE8, 0x10, 0x00, 0x00, 0x00};  // a call is not a jump
  EXPECT_FALSE(JumpsToInCode(call, sizeof call, 0x1000, 0x1015));
  const unsigned char cut[] = {0xE9, 0x10, 0x00};  // truncated: never read past the end
  EXPECT_FALSE(JumpsToInCode(cut, sizeof cut, 0x1000, 0x1015));
}

TEST(WithoutParameters, KeepsTheQualifiedNameOnly) {
  EXPECT_EQ(WithoutParameters("usleep"), "usleep");
  EXPECT_EQ(WithoutParameters("ns::C::f(int, std::string const&) const"), "ns::C::f");
  EXPECT_EQ(WithoutParameters("(anonymous namespace)::g(char (*) [4])"),
            "(anonymous namespace)::g");
  EXPECT_EQ(WithoutParameters("CLI::App::run_callback(bool, bool)"), "CLI::App::run_callback");
}

// TailCaller (built at -O2) ends in `jmp TailCallee`: the return address TailCallee sees is in
// CallsThroughTailCall, whose call instruction names TailCaller, not TailCallee.
TEST(Unwinder, FindsTheFrameATailCallRemovedFromARealO2Pair) {
#if defined(__SANITIZE_THREAD__)
  // TSan's function-exit hook runs after TailCallee returns, so TailCaller calls it (no tail
  // call to find; objdump of the TSan object shows `call`, not `jmp`): the plain and ASan builds
  // run this case.
  GTEST_SKIP() << "no tail call in a TSan build";
#endif
  Unwinder u;
  ASSERT_TRUE(u.Init().ok());
  const uint64_t ret = CallsThroughTailCall(1);
  const std::vector<RawFrame> frames = {{reinterpret_cast<uint64_t>(&TailCallee) + 1, true},
                                        {ret, false}};
  const auto calls = u.FindTailCalls(frames);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].callee_index, 0u);
  EXPECT_EQ(calls[0].callee, "TailCallee");
  EXPECT_EQ(calls[0].missing, "TailCaller");
  EXPECT_EQ(calls[0].caller, "CallsThroughTailCall");
  const std::string note = u.TailCallNote(frames);
  EXPECT_NE(note.find("TailCaller() is not on the stack"), std::string::npos) << note;
  EXPECT_NE(note.find("tail-called TailCallee()"), std::string::npos) << note;
}

TEST(Unwinder, ADirectCallIsNotATailCall) {
  Unwinder u;
  ASSERT_TRUE(u.Init().ok());
  const uint64_t ret = CallsDirectly(1);
  const std::vector<RawFrame> frames = {{reinterpret_cast<uint64_t>(&TailCallee) + 1, true},
                                        {ret, false}};
  EXPECT_TRUE(u.FindTailCalls(frames).empty());
  EXPECT_EQ(u.TailCallNote(frames), "");
}

// The common case: a function whose last act is a blocking libc call (here read() on an empty
// pipe) is compiled as `jmp read@plt`. The thread is unwound while it blocks, as the agent does
// (no signal: sp/pc from /proc/self/task/TID/syscall), and the frame between read() and
// CallsReadThroughTailCall is found to be ReadThroughTailCall through its PLT stub.
TEST(Unwinder, FindsATailCallIntoLibcThroughThePltOnABlockedThread) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Under a sanitizer the PLT's GOT slot holds the runtime's read() interceptor, not libc's read,
  // and the interceptor's frame stands between: the case runs in the plain build.
  GTEST_SKIP() << "read() is the sanitizer's interceptor here";
#endif
  Unwinder u;
  ASSERT_TRUE(u.Init().ok());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::atomic<pid_t> tid{0};
  std::thread blocked([&] {
    tid = platform::GetTid();
    CallsReadThroughTailCall(fds[0]);
  });
  std::optional<platform::SyscallInfo> sys;
  for (int i = 0; i < 500; ++i) {  // up to 5 s for the thread to block in read()
    if (tid.load() != 0) {
      sys = platform::ReadThreadSyscall(tid.load());
      if (sys && !sys->running && sys->nr == SYS_read) {
        break;
      }
    }
    sys.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<TailCall> calls;
  std::string note;
  if (sys) {
    UnwindInput in;
    in.tid = tid.load();
    in.sp = sys->sp;
    in.pc = sys->pc;
    auto frames = u.Unwind(in);
    if (frames.ok()) {
      calls = u.FindTailCalls(*frames);
      note = u.TailCallNote(*frames);
    }
  }
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  blocked.join();
  close(fds[0]);
  close(fds[1]);
  ASSERT_TRUE(sys.has_value()) << "the thread never blocked in read()";
  ASSERT_EQ(calls.size(), 1u) << note;
  EXPECT_EQ(calls[0].missing, "ReadThroughTailCall");
  EXPECT_EQ(calls[0].caller, "CallsReadThroughTailCall");
  EXPECT_NE(calls[0].callee.find("read"), std::string::npos) << calls[0].callee;
  EXPECT_NE(note.find("ReadThroughTailCall() is not on the stack"), std::string::npos) << note;
}

}  // namespace
}  // namespace stallwatch::agent::internal
