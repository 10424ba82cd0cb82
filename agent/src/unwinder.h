#pragma once
// DWARF unwinding and symbolization of the target process (platform::TargetPid(): this process,
// or the host a watchdog process serves) with elfutils libdw.
//
// Unwinds from a register set and a copy of the top of the stack (signal samples) or from a
// stack pointer and pc alone (a thread blocked in a syscall), reading other memory with
// process_vm_readv on the target pid so a bad address is an error, never a crash. Names come from
// the ELF symbol tables (so functions of an executable linked without -rdynamic are named),
// file:line from DWARF where debug info exists.
//
// Threading: one thread at a time: Init on the watchdog's warm-up thread, then the watchdog
// thread once Init's success is published to it (an atomic, release/acquire). Both threads share
// the watchdog's file table, which holds the ELF files. Not async-signal safe.

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "perf_map.h"
#include "stallwatch/findings.h"
#include "stallwatch/status.h"

struct Dwfl;

namespace stallwatch::agent::internal {

// The module of a frame named from a perf map (JIT code, in no ELF object).
inline constexpr const char* kJitModule = "[jit]";

struct UnwindInput {
  pid_t tid = 0;
  const uint64_t* regs = nullptr;        // DWARF registers 0..16 (x86_64), or null
  uint64_t sp = 0;                       // used when regs is null
  uint64_t pc = 0;                       // used when regs is null
  uint64_t rbp = 0;                      // optional with sp/pc: a frame-pointer guess
  const unsigned char* stack = nullptr;  // optional copy of [stack_base, stack_base+stack_len)
  uint64_t stack_base = 0;
  size_t stack_len = 0;
};

struct RawFrame {
  uint64_t pc = 0;
  bool activation = false;  // pc is exact (the interrupted instruction), not a return address
};

// The target of the direct near call (x86-64 `call rel32`, E8 + 4 bytes) that ends at
// `return_address`, given the 5 bytes before it; 0 when they are not such a call (an indirect
// call, or a frame that is not a call site at all). Pure.
uint64_t DirectCallTarget(const unsigned char (&code)[5], uint64_t return_address);

// Whether the machine code `code` (size bytes, loaded at `address`) holds a direct jump
// (jmp rel32, jmp rel8 or jcc rel32) to `target`. Pure; a byte scan, so it may see a jump that
// is not there, but only one to exactly `target`.
bool JumpsToInCode(const unsigned char* code, size_t size, uint64_t address, uint64_t target);
// Every target of such a jump found in the code. Pure.
std::vector<uint64_t> DirectJumpTargets(const unsigned char* code, size_t size, uint64_t address);

// A demangled function name without its parameter list: "ns::f(int) const" → "ns::f". Pure.
std::string WithoutParameters(const std::string& name);

// A frame that a tail call removed: `caller` called `missing`, which jumped (did not call) to
// `callee`, so the stack shows callee ← caller and `missing` is gone for good.
struct TailCall {
  size_t callee_index = 0;  // in the frames, innermost first; caller is callee_index + 1
  std::string callee;
  std::string missing;
  std::string caller;
  std::string missing_module;
};

class Unwinder {
 public:
  Unwinder();
  ~Unwinder();
  Unwinder(const Unwinder&) = delete;
  Unwinder& operator=(const Unwinder&) = delete;

  // Releases libdw's state and the ELF files it holds open. Called on a thread of the file table
  // that opened them (the watchdog's: see platform::DetachFileTable).
  void Shutdown();

  // Reports the modules of the process and attaches the unwinding state (warm-up).
  // `cancel` (optional) stops the warm-up between modules when set.
  [[nodiscard]] Status Init(const std::atomic<bool>* cancel = nullptr);
  // Innermost first; at most max_frames. Fails when not even one frame is found.
  [[nodiscard]] StatusOr<std::vector<RawFrame>> Unwind(const UnwindInput& in,
                                                       size_t max_frames = 64);
  // Function (demangled), module and offset; file:line is left to LineResolver.
  Frame Symbolize(const RawFrame& f);
  // Whether an ELF path is the agent's own library (libstallwatch or the preload shim).
  static bool IsOwnModule(const std::string& path);
  // The agent's own module in this process (resolved path), and, in a watchdog process, the
  // host's copy of it (set once, before any IsOwnModule call).
  static std::string OwnModulePath();
  static void SetOwnModule(const std::string& path);
  // The tail calls that `frames` (innermost first) show: a return address whose call
  // instruction is a direct call to another function than the frame below it, which jumps to
  // that frame's function (directly or through its PLT stub). Calls to a PLT stub (the stub
  // jumps on by design) and indirect calls cannot be judged and are skipped.
  std::vector<TailCall> FindTailCalls(const std::vector<RawFrame>& frames);
  // One sentence for the stall's hint about the first tail call outside libc and the dynamic
  // loader ("" when there is none).
  std::string TailCallNote(const std::vector<RawFrame>& frames);
  // Whether `address` lies inside a reported module's own address range. dwfl_addrmodule alone
  // also answers for addresses past the last module (the stack, on libdw 0.188).
  bool InModule(uint64_t address);
  // Re-reads the module list (after dlopen); rate-limited by the caller.
  void Refresh();

  // Used by the libdw callbacks.
  const UnwindInput* current() const { return current_; }

 private:
  // Whether the `size` bytes of code at `function` jump straight to `target`, directly or through
  // a PLT stub bound to it.
  bool JumpsTo(uint64_t function, uint64_t size, uint64_t target);
  // Loads every module's symbols, CFI and DWARF index now (see Init).
  void Warm(const std::atomic<bool>* cancel = nullptr);
  // The symbol name at pc from the ELF symbol table only (cheap; mangled).
  std::string FunctionName(uint64_t pc);
  // One unwind attempt; returns dwfl_getthread_frames' result (0: reached the outermost frame).
  // *outer_sp (optional): the outermost frame's stack pointer, 0 when the unwind does not know it.
  int UnwindOnce(const UnwindInput& in, size_t max_frames, std::vector<RawFrame>* out,
                 uint64_t* outer_sp = nullptr);
  bool AllInModules(const std::vector<RawFrame>& frames);
  // Whether the outermost frame is a thread's root (_start, __libc_start_*, start_thread, clone).
  bool EndsAtRoot(const std::vector<RawFrame>& frames);

  Dwfl* dwfl_ = nullptr;
  bool attached_ = false;
  const UnwindInput* current_ = nullptr;
  std::unordered_map<uint64_t, Frame> cache_;
  std::unique_ptr<PerfMap> perf_map_;  // created at the first pc in no module
  std::unordered_map<uint64_t, std::string> name_cache_;
};

// file:line of frames from DWARF, with a libdw session of its own (not the unwinder's), so it
// can run on another thread: the reporter's. Frames of the agent's own library are skipped.
// Threading: one thread at a time.
class LineResolver {
 public:
  LineResolver();
  ~LineResolver();
  LineResolver(const LineResolver&) = delete;
  LineResolver& operator=(const LineResolver&) = delete;

  // Fills file/line of frames that have none (innermost first: frame 0's offset is exact, the
  // others are return addresses).
  void AddLines(Stack* stack);

 private:
  bool Ensure();
  Dwfl* dwfl_ = nullptr;
  bool failed_ = false;
  std::unordered_map<std::string, uint64_t> module_start_;
  std::unordered_map<std::string, std::pair<std::string, int>> cache_;  // "module@addr"
};

}  // namespace stallwatch::agent::internal
