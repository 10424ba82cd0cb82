#include "unwinder.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <dwarf.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <gelf.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "platform/proc.h"
#include "stallwatch/common/clock.h"

namespace stallwatch::agent::internal {
namespace {

char* g_debuginfo_path = nullptr;

// Separate debug info from the local disk only: /usr/lib/debug/.build-id/NN/REST.debug. Never
// dwfl_standard_find_debuginfo, which falls back to debuginfod (network requests from inside the
// host, and a dlopen of libdebuginfod that can fail at symbol lookup and kill the host). A
// module's own DWARF is used by libdw before this is called.
int FindDebuginfoLocally(Dwfl_Module* mod, void** /*userdata*/, const char* /*modname*/,
                         Dwarf_Addr /*base*/, const char* /*file_name*/,
                         const char* /*debuglink_file*/, GElf_Word /*debuglink_crc*/,
                         char** debuginfo_file_name) {
  // Separate debug files (Debian's -dbg packages) are large: indexing libc's alone costs ~100 ms
  // and tens of MiB. They are read only with STALLWATCH_DEBUGINFO=all; by default file:line come
  // from debug info embedded in a module (the host's own binaries built with -g).
  static const bool all = [] {
    const char* v = std::getenv("STALLWATCH_DEBUGINFO");
    return v != nullptr && std::strcmp(v, "all") == 0;
  }();
  if (!all) {
    return -1;
  }
  const unsigned char* bits = nullptr;
  GElf_Addr vaddr = 0;
  const int len = dwfl_module_build_id(mod, &bits, &vaddr);
  if (len < 2) {
    return -1;
  }
  std::string path = "/usr/lib/debug/.build-id/";
  static const char kHex[] = "0123456789abcdef";
  for (int i = 0; i < len; ++i) {
    path += kHex[bits[i] >> 4];
    path += kHex[bits[i] & 15];
    if (i == 0) {
      path += '/';
    }
  }
  path += ".debug";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    *debuginfo_file_name = strdup(path.c_str());
  }
  return fd;
}

const Dwfl_Callbacks kCallbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = FindDebuginfoLocally,
    .section_address = nullptr,
    .debuginfo_path = &g_debuginfo_path,
};

pid_t NextThread(Dwfl* /*dwfl*/, void* dwfl_arg, void** thread_argp) {
  auto* self = static_cast<Unwinder*>(dwfl_arg);
  if (*thread_argp != nullptr || self->current() == nullptr) {
    return 0;
  }
  *thread_argp = self;
  return self->current()->tid;
}

bool GetThread(Dwfl* /*dwfl*/, pid_t tid, void* dwfl_arg, void** thread_argp) {
  auto* self = static_cast<Unwinder*>(dwfl_arg);
  if (self->current() == nullptr || self->current()->tid != tid) {
    return false;
  }
  *thread_argp = self;
  return true;
}

bool MemoryRead(Dwfl* /*dwfl*/, Dwarf_Addr addr, Dwarf_Word* result, void* dwfl_arg) {
  auto* self = static_cast<Unwinder*>(dwfl_arg);
  const UnwindInput* in = self->current();
  if (in == nullptr) {
    return false;
  }
  // In the copy of the stack? (Subtractions only: a garbage address near 2^64 must not wrap
  // around into the range.)
  if (in->stack != nullptr && addr >= in->stack_base && in->stack_len >= sizeof(Dwarf_Word) &&
      addr - in->stack_base <= in->stack_len - sizeof(Dwarf_Word)) {
    std::memcpy(result, in->stack + (addr - in->stack_base), sizeof(Dwarf_Word));
    return true;
  }
  iovec local{result, sizeof(Dwarf_Word)};
  // NOLINTNEXTLINE(performance-no-int-to-ptr): an address in the target, for process_vm_readv
  iovec remote{reinterpret_cast<void*>(addr), sizeof(Dwarf_Word)};
  return ::process_vm_readv(platform::TargetPid(), &local, 1, &remote, 1, 0) ==
         static_cast<ssize_t>(sizeof(Dwarf_Word));
}

bool SetInitialRegisters(Dwfl_Thread* thread, void* thread_arg) {
  auto* self = static_cast<Unwinder*>(thread_arg);
  const UnwindInput* in = self->current();
  if (in == nullptr) {
    return false;
  }
  if (in->regs != nullptr) {
    Dwarf_Word regs[17];
    for (int i = 0; i < 17; ++i) {
      regs[i] = in->regs[i];
    }
    return dwfl_thread_state_registers(thread, 0, 17, regs);
  }
  Dwarf_Word sp = in->sp;
  if (!dwfl_thread_state_registers(thread, 7, 1, &sp)) {
    return false;  // rsp
  }
  if (in->rbp != 0) {
    Dwarf_Word bp = in->rbp;
    if (!dwfl_thread_state_registers(thread, 6, 1, &bp)) {
      return false;  // rbp
    }
  }
  dwfl_thread_state_register_pc(thread, in->pc);
  return true;
}

const Dwfl_Thread_Callbacks kThreadCallbacks = {
    .next_thread = NextThread,
    .get_thread = GetThread,
    .memory_read = MemoryRead,
    .set_initial_registers = SetInitialRegisters,
    .detach = nullptr,
    .thread_detach = nullptr,
};

struct FrameCollector {
  std::vector<RawFrame>* out = nullptr;
  size_t max = 0;
  uint64_t last_sp = 0;  // the stack pointer of the last frame collected (0: unknown)
};

int OnFrame(Dwfl_Frame* state, void* arg) {
  auto* c = static_cast<FrameCollector*>(arg);
  Dwarf_Addr pc = 0;
  bool activation = false;
  if (!dwfl_frame_pc(state, &pc, &activation)) {
    return DWARF_CB_ABORT;
  }
  if (pc == 0) {
    return DWARF_CB_ABORT;
  }
  Dwarf_Word sp = 0;
  c->last_sp = dwfl_frame_reg(state, 7, &sp) == 0 ? sp : 0;  // rsp
  c->out->push_back(RawFrame{pc, activation});
  return c->out->size() >= c->max ? DWARF_CB_ABORT : DWARF_CB_OK;
}

std::string Demangle(const char* name) {
  if (name == nullptr) {
    return "";
  }
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status == 0 && d != nullptr) {
    std::string s(d);
    std::free(d);
    return s;
  }
  std::free(d);
  return name;
}

}  // namespace

Unwinder::Unwinder() = default;

Unwinder::~Unwinder() { Shutdown(); }

void Unwinder::Shutdown() {
  if (dwfl_ != nullptr) {
    dwfl_end(dwfl_);
  }
  dwfl_ = nullptr;
}

Status Unwinder::Init(const std::atomic<bool>* cancel) {
  if (dwfl_ != nullptr) {
    return OkStatus();
  }
  dwfl_ = dwfl_begin(&kCallbacks);
  if (dwfl_ == nullptr) {
    return InternalError(std::string("dwfl_begin: ") + dwfl_errmsg(-1));
  }
  dwfl_report_begin(dwfl_);
  if (dwfl_linux_proc_report(dwfl_, platform::TargetPid()) != 0) {
    dwfl_report_end(dwfl_, nullptr, nullptr);
    return UnavailableError(std::string("reading this process's modules: ") + dwfl_errmsg(-1));
  }
  dwfl_report_end(dwfl_, nullptr, nullptr);
  attached_ = dwfl_attach_state(dwfl_, nullptr, platform::TargetPid(), &kThreadCallbacks, this);
  if (!attached_) {
    return UnavailableError(std::string("dwfl_attach_state: ") + dwfl_errmsg(-1));
  }
  Warm(cancel);
  return OkStatus();
}

void Unwinder::Warm(const std::atomic<bool>* cancel) {
  // libdw loads symbol tables and call-frame information of a module on first use; load them now,
  // before the first stall needs them. DWARF line tables (file:line) stay lazy: indexing every
  // module's debug info up front costs tens of MiB; only modules that show up on a stack pay it.
  dwfl_getmodules(
      dwfl_,
      [](Dwfl_Module* mod, void**, const char*, Dwarf_Addr start, void* arg) -> int {
        const auto* stop = static_cast<const std::atomic<bool>*>(arg);
        if (stop != nullptr && stop->load(std::memory_order_relaxed)) {
          return DWARF_CB_ABORT;
        }
        (void)start;
        dwfl_module_getsymtab(mod);
        Dwarf_Addr bias = 0;
        dwfl_module_eh_cfi(mod, &bias);
        return DWARF_CB_OK;
      },
      const_cast<std::atomic<bool>*>(cancel), 0);
}

std::string Unwinder::FunctionName(uint64_t pc) {
  if (auto it = name_cache_.find(pc); it != name_cache_.end()) {
    return it->second;
  }
  Dwfl_Module* mod = dwfl_ != nullptr ? dwfl_addrmodule(dwfl_, pc) : nullptr;
  GElf_Off off = 0;
  GElf_Sym sym;
  const char* name = mod != nullptr
                         ? dwfl_module_addrinfo(mod, pc, &off, &sym, nullptr, nullptr, nullptr)
                         : nullptr;
  if (name_cache_.size() > 16384) {
    name_cache_.clear();
  }
  return name_cache_.emplace(pc, name != nullptr ? name : "").first->second;
}

void Unwinder::Refresh() {
  if (dwfl_ == nullptr) {
    return;
  }
  dwfl_report_begin_add(dwfl_);
  dwfl_linux_proc_report(dwfl_, platform::TargetPid());
  dwfl_report_end(dwfl_, nullptr, nullptr);
  Warm();
}

int Unwinder::UnwindOnce(const UnwindInput& in, size_t max_frames, std::vector<RawFrame>* out,
                         uint64_t* outer_sp) {
  out->clear();
  FrameCollector collector{out, max_frames};
  current_ = &in;
  const int rc = dwfl_getthread_frames(dwfl_, in.tid, OnFrame, &collector);
  current_ = nullptr;
  if (outer_sp != nullptr) {
    *outer_sp = collector.last_sp;
  }
  return out->size() >= max_frames ? 0 : rc;
}

bool Unwinder::EndsAtRoot(const std::vector<RawFrame>& frames) {
  if (frames.empty()) {
    return false;
  }
  if (frames.size() >= 64) {
    return true;  // as deep as we go: not truncated by a missing rbp
  }
  const RawFrame& f = frames.back();
  const std::string fn = FunctionName(f.activation ? f.pc : f.pc - 1);  // no DWARF needed
  return fn == "_start" || fn.find("__libc_start") != std::string::npos ||
         fn.find("start_thread") != std::string::npos || fn.find("clone") != std::string::npos;
}

bool Unwinder::InModule(uint64_t address) {
  Dwfl_Module* m = dwfl_addrmodule(dwfl_, address);
  Dwarf_Addr low = 0, high = 0;
  return m != nullptr &&
         dwfl_module_info(m, nullptr, &low, &high, nullptr, nullptr, nullptr, nullptr) != nullptr &&
         address >= low && address < high;
}

bool Unwinder::AllInModules(const std::vector<RawFrame>& frames) {
  for (const auto& f : frames) {
    if (!InModule(f.activation ? f.pc : f.pc - 1)) {
      return false;
    }
  }
  return true;
}

StatusOr<std::vector<RawFrame>> Unwinder::Unwind(const UnwindInput& in, size_t max_frames) {
  if (!attached_) {
    return UnavailableError("unwinder not initialised");
  }
  std::vector<RawFrame> frames;
  uint64_t outer_sp = 0;
  const int rc = UnwindOnce(in, max_frames, &frames, &outer_sp);
  if (frames.empty()) {
    return InternalError(std::string("unwind failed: ") + dwfl_errmsg(-1));
  }
  (void)rc;  // libdw also reports 0 when it stops for want of a register: check the root
  if (in.regs != nullptr || in.rbp != 0 || EndsAtRoot(frames)) {
    return frames;
  }

  // Stopped with an error from sp/pc alone: look for frame records on the (stable) stack. The
  // first frame that needs rbp keeps its record at or above its own stack pointer, so the scan
  // starts at the outermost unwound frame's sp: the words below it are the dead frames of
  // earlier calls, whose stale records would skip live frames.
  const uint64_t scan_from = std::max(outer_sp, in.sp);
  constexpr size_t kScanBytes = size_t{64} * 1024;
  constexpr int kMaxCandidates = 12;
  std::vector<uint64_t> words(kScanBytes / 8);
  size_t got = 0;
  for (size_t off = 0; off < kScanBytes; off += 4096) {
    const uint64_t addr = scan_from + off;
    const size_t len = std::min<size_t>(4096 - (addr % 4096), kScanBytes - off);
    iovec local{reinterpret_cast<char*>(words.data()) + off, len};
    iovec remote{reinterpret_cast<void*>(addr), len};  // NOLINT(performance-no-int-to-ptr)
    if (::process_vm_readv(platform::TargetPid(), &local, 1, &remote, 1, 0) !=
        static_cast<ssize_t>(len)) {
      break;
    }
    got = off + len;
    off = off + len - 4096;  // keep page alignment after a first partial page
  }
  const size_t n = got / 8;
  int tried = 0;
  std::vector<RawFrame> best = frames, attempt;
  bool best_root = false;
  for (size_t i = 0; i + 1 < n && tried < kMaxCandidates; ++i) {
    const uint64_t a = scan_from + i * 8;
    const uint64_t next = words[i], ret = words[i + 1];
    if (next <= a || next >= a + (1u << 20) || (next & 7) != 0) {
      continue;
    }
    if (!InModule(ret - 1)) {
      continue;  // a stack address kept in a local is not a return address
    }
    ++tried;
    UnwindInput retry = in;
    retry.rbp = a;
    UnwindOnce(retry, max_frames, &attempt);
    if (attempt.size() <= frames.size() || !AllInModules(attempt)) {
      continue;
    }
    const bool root = EndsAtRoot(attempt);
    if ((root && !best_root) || (root == best_root && attempt.size() > best.size())) {
      best = attempt;
      best_root = root;
      if (best_root) {
        break;
      }
    }
  }
  return best;
}

namespace {
// The host's copy of the agent, when this process is a watchdog process serving a host.
std::string* g_own_module_override = nullptr;
}  // namespace

void Unwinder::SetOwnModule(const std::string& path) {
  g_own_module_override = new std::string(path);  // set once at start-up, never freed
}

std::string Unwinder::OwnModulePath() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&Demangle), &info) != 0 && info.dli_fname != nullptr) {
    char real[4096];
    if (realpath(info.dli_fname, real) != nullptr) {
      return std::string(real);
    }
    return std::string(info.dli_fname);
  }
  return std::string();
}

bool Unwinder::IsOwnModule(const std::string& path) {
  static const std::string own =
      g_own_module_override != nullptr ? *g_own_module_override : OwnModulePath();
  if (own.empty() || path.empty()) {
    return false;
  }
  if (path == own) {
    return true;
  }
  // Module paths from libdw are those of /proc/self/maps (already resolved); compare the file
  // names' identity only when the strings differ.
  struct stat a {
  }, b{};
  return ::stat(path.c_str(), &a) == 0 && ::stat(own.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

Frame Unwinder::Symbolize(const RawFrame& f) {
  // A return address points after the call; look up the call instruction itself.
  const uint64_t pc = f.activation ? f.pc : f.pc - 1;
  if (auto it = cache_.find(pc); it != cache_.end()) {
    return it->second;
  }
  Frame out;
  Dwfl_Module* mod = dwfl_ != nullptr ? dwfl_addrmodule(dwfl_, pc) : nullptr;
  if (mod == nullptr && dwfl_ != nullptr) {
    Refresh();
    mod = dwfl_addrmodule(dwfl_, pc);
  }
  if (mod != nullptr) {
    Dwarf_Addr start = 0;
    const char* mainfile = nullptr;
    const char* modname =
        dwfl_module_info(mod, nullptr, &start, nullptr, nullptr, nullptr, &mainfile, nullptr);
    out.module = mainfile != nullptr ? mainfile : (modname != nullptr ? modname : "");
    out.offset = f.pc - start;
    GElf_Off sym_off = 0;
    GElf_Sym sym;
    const char* name = dwfl_module_addrinfo(mod, pc, &sym_off, &sym, nullptr, nullptr, nullptr);
    out.function = Demangle(name);
    // file:line: LineResolver, on the reporter thread.
  } else {
    out.offset = f.pc;
  }
  // No symbol: JIT code, named from the process's perf map when it writes one (node
  // --perf-basic-prof, python -X perf). Not only outside every module: a module's reported range
  // can span JIT regions (Node maps its text a second time, high up, so libdw's range for
  // /usr/bin/node covers the anonymous mappings in between).
  if (out.function.empty()) {
    if (perf_map_ == nullptr) {
      perf_map_ = std::make_unique<PerfMap>(platform::TargetPid());
    }
    if (std::string jit = perf_map_->Lookup(pc, MonotonicNanos()); !jit.empty()) {
      out.function = std::move(jit);
      out.module = kJitModule;
      out.offset = 0;
      out.kind = "jit";
    }
  }
  if (cache_.size() > 16384) {
    cache_.clear();
  }
  cache_.emplace(pc, out);
  return out;
}

uint64_t DirectCallTarget(const unsigned char (&code)[5], uint64_t return_address) {
  if (code[0] != 0xE8) {
    return 0;
  }
  int32_t rel = 0;
  std::memcpy(&rel, code + 1, sizeof rel);  // little-endian, as the CPU reads it
  return return_address + static_cast<uint64_t>(static_cast<int64_t>(rel));
}

namespace {

// The name of the ELF section holding `addr` of `mod` ("" when unknown).
std::string SectionName(Dwfl_Module* mod, uint64_t addr) {
  Dwarf_Addr rel = addr;
  Dwarf_Addr bias = 0;
  Elf_Scn* scn = dwfl_module_address_section(mod, &rel, &bias);
  Elf* elf = dwfl_module_getelf(mod, &bias);
  size_t shstrndx = 0;
  GElf_Shdr shdr;
  if (scn == nullptr || elf == nullptr || elf_getshdrstrndx(elf, &shstrndx) != 0 ||
      gelf_getshdr(scn, &shdr) == nullptr) {
    return "";
  }
  const char* name = elf_strptr(elf, shstrndx, shdr.sh_name);
  return name != nullptr ? name : "";
}

// Whether a module is libc or the dynamic loader: their internal tail calls are not the
// user's concern.
bool IsSystemRuntime(const std::string& module) {
  const std::string base = module.substr(module.rfind('/') + 1);
  return base.rfind("libc.so", 0) == 0 || base.rfind("libc-", 0) == 0 ||
         base.rfind("ld-linux", 0) == 0 || base.rfind("libpthread", 0) == 0;
}

// Reads `len` bytes of the target process at `addr` (process_vm_readv: a bad address is an
// error, not a crash).
bool ReadTarget(uint64_t addr, void* out, size_t len) {
  iovec local{out, len};
  iovec remote{reinterpret_cast<void*>(addr), len};  // NOLINT(performance-no-int-to-ptr)
  return ::process_vm_readv(platform::TargetPid(), &local, 1, &remote, 1, 0) ==
         static_cast<ssize_t>(len);
}

// Where the PLT stub at `stub` jumps: the function its GOT slot holds (bound once the call has
// been made), or 0. Stubs are `jmp *rel32(%rip)` (FF 25), possibly after endbr64 and a bnd prefix.
uint64_t PltStubDestination(uint64_t stub) {
  unsigned char code[16];
  if (!ReadTarget(stub, code, sizeof code)) {
    return 0;
  }
  for (size_t at = 0; at + 6 <= sizeof code; ++at) {
    if (code[at] != 0xFF || code[at + 1] != 0x25) {
      continue;
    }
    int32_t rel = 0;
    std::memcpy(&rel, code + at + 2, sizeof rel);
    const uint64_t slot = stub + at + 6 + static_cast<uint64_t>(static_cast<int64_t>(rel));
    uint64_t dest = 0;
    return ReadTarget(slot, &dest, sizeof dest) ? dest : 0;
  }
  return 0;
}

}  // namespace

bool Unwinder::JumpsTo(uint64_t function, uint64_t size, uint64_t target) {
  constexpr uint64_t kMaxScan = uint64_t{64} * 1024;
  if (size == 0 || size > kMaxScan) {
    return false;
  }
  std::vector<unsigned char> code(size);
  if (!ReadTarget(function, code.data(), code.size())) {
    return false;
  }
  for (const uint64_t to : DirectJumpTargets(code.data(), code.size(), function)) {
    if (to == target) {
      return true;
    }
    // A tail call into another library goes through this module's PLT stub for it.
    Dwfl_Module* mod = dwfl_addrmodule(dwfl_, to);
    if (mod != nullptr && SectionName(mod, to).rfind(".plt", 0) == 0 &&
        PltStubDestination(to) == target) {
      return true;
    }
  }
  return false;
}

namespace {}  // namespace

bool JumpsToInCode(const unsigned char* code, size_t size, uint64_t address, uint64_t target) {
  const auto all = DirectJumpTargets(code, size, address);
  return std::find(all.begin(), all.end(), target) != all.end();
}

std::vector<uint64_t> DirectJumpTargets(const unsigned char* code, size_t size, uint64_t address) {
  std::vector<uint64_t> out;
  for (size_t i = 0; i < size; ++i) {
    const auto rel32 = [&](size_t at) {
      int32_t rel = 0;
      std::memcpy(&rel, code + at, sizeof rel);
      return static_cast<uint64_t>(static_cast<int64_t>(rel));
    };
    const uint64_t pc = address + i;
    if (code[i] == 0xE9 && i + 5 <= size) {
      out.push_back(pc + 5 + rel32(i + 1));
    }
    if (code[i] == 0xEB && i + 2 <= size) {
      out.push_back(pc + 2 +
                    static_cast<uint64_t>(static_cast<int64_t>(static_cast<int8_t>(code[i + 1]))));
    }
    // jcc rel32 (0F 80..8F): a conditional tail call.
    if (code[i] == 0x0F && i + 6 <= size && (code[i + 1] & 0xF0) == 0x80) {
      out.push_back(pc + 6 + rel32(i + 2));
    }
  }
  return out;
}

std::string WithoutParameters(const std::string& name) {
  // Drop a trailing " const", then the parenthesized list that ends the name (matched from the
  // end, so "(anonymous namespace)::f(int)" keeps its namespace).
  std::string n = name;
  for (const char* suffix : {" const", " volatile", " &", " &&"}) {
    const std::string sfx = suffix;
    if (n.size() > sfx.size() && n.compare(n.size() - sfx.size(), sfx.size(), sfx) == 0) {
      n.resize(n.size() - sfx.size());
    }
  }
  if (n.empty() || n.back() != ')') {
    return n;
  }
  int depth = 0;
  for (size_t i = n.size(); i-- > 0;) {
    if (n[i] == ')') {
      ++depth;
    }
    if (n[i] == '(' && --depth == 0) {
      return i > 0 ? n.substr(0, i) : n;
    }
  }
  return n;
}

std::vector<TailCall> Unwinder::FindTailCalls(const std::vector<RawFrame>& frames) {
  std::vector<TailCall> out;
  if (dwfl_ == nullptr) {
    return out;
  }
  for (size_t i = 0; i + 1 < frames.size(); ++i) {
    const RawFrame& callee = frames[i];
    const RawFrame& caller = frames[i + 1];
    if (caller.activation || caller.pc < 5) {
      continue;
    }
    // Where the callee's function starts.
    const uint64_t callee_pc = callee.activation ? callee.pc : callee.pc - 1;
    Dwfl_Module* callee_mod = dwfl_addrmodule(dwfl_, callee_pc);
    if (callee_mod == nullptr) {
      continue;
    }
    GElf_Off callee_off = 0;
    GElf_Sym callee_sym;
    const char* callee_name = dwfl_module_addrinfo(callee_mod, callee_pc, &callee_off, &callee_sym,
                                                   nullptr, nullptr, nullptr);
    if (callee_name == nullptr) {
      continue;
    }
    const uint64_t callee_start = callee_pc - callee_off;
    // The call instruction before the return address, read as any other memory of the target
    // (a bad address is an error, not a crash).
    unsigned char code[5];
    iovec local{code, sizeof code};
    // NOLINTNEXTLINE(performance-no-int-to-ptr): an address in the target
    iovec remote{reinterpret_cast<void*>(caller.pc - 5), sizeof code};
    if (::process_vm_readv(platform::TargetPid(), &local, 1, &remote, 1, 0) !=
        static_cast<ssize_t>(sizeof code)) {
      continue;
    }
    const uint64_t target = DirectCallTarget(code, caller.pc);
    if (target == 0 || target == callee_start) {
      continue;
    }
    Dwfl_Module* target_mod = dwfl_addrmodule(dwfl_, target);
    if (target_mod == nullptr || SectionName(target_mod, target).rfind(".plt", 0) == 0) {
      continue;
    }
    GElf_Off target_off = 0;
    GElf_Sym target_sym;
    const char* target_name = dwfl_module_addrinfo(target_mod, target, &target_off, &target_sym,
                                                   nullptr, nullptr, nullptr);
    if (target_name == nullptr || target_off != 0) {
      continue;  // not a function's entry
    }
    const std::string missing = target_name;
    const std::string callee_str = callee_name;
    // A function's split-off part (foo.cold, foo.part.0) is the same function.
    if (callee_str == missing || callee_str.rfind(missing + ".", 0) == 0) {
      continue;
    }
    // Only what the code proves: the missing function jumps straight to the callee. (Five bytes
    // before a return address can look like a call by chance; an indirect jump is not judged.)
    if (!JumpsTo(target, target_sym.st_size, callee_start)) {
      continue;
    }
    TailCall t;
    t.callee_index = i;
    t.callee = Symbolize(callee).function;
    t.missing = Symbolize(RawFrame{target, true}).function;
    t.caller = Symbolize(caller).function;
    t.missing_module = Symbolize(RawFrame{target, true}).module;
    out.push_back(std::move(t));
  }
  return out;
}

std::string Unwinder::TailCallNote(const std::vector<RawFrame>& frames) {
  for (const TailCall& t : FindTailCalls(frames)) {
    if (IsSystemRuntime(t.missing_module)) {
      continue;
    }
    // "f()": the name without its parameter list (hints are short; the daemon caps them).
    const auto fn = [](const std::string& name) { return WithoutParameters(name) + "()"; };
    return "Note: " + fn(t.missing) + " is not on the stack: " + fn(t.caller) +
           " called it and it tail-called " + fn(t.callee) +
           " (a jump, not a call), which removed its frame for good; look in " + fn(t.missing) +
           " for the code that led to " + fn(t.callee) + ".";
  }
  return "";
}

LineResolver::LineResolver() = default;

LineResolver::~LineResolver() {
  if (dwfl_ != nullptr) {
    dwfl_end(dwfl_);
  }
}

bool LineResolver::Ensure() {
  if (dwfl_ != nullptr || failed_) {
    return dwfl_ != nullptr;
  }
  dwfl_ = dwfl_begin(&kCallbacks);
  if (dwfl_ == nullptr) {
    failed_ = true;
    return false;
  }
  dwfl_report_begin(dwfl_);
  dwfl_linux_proc_report(dwfl_, platform::TargetPid());
  dwfl_report_end(dwfl_, nullptr, nullptr);
  return true;
}

void LineResolver::AddLines(Stack* stack) {
  if (!Ensure()) {
    return;
  }
  for (size_t i = 0; i < stack->frames.size(); ++i) {
    Frame& f = stack->frames[i];
    if (!f.file.empty() || f.module.empty() || Unwinder::IsOwnModule(f.module)) {
      continue;
    }
    const uint64_t lookup = f.offset - (i == 0 ? 0 : 1);
    const std::string key = f.module + "@" + std::to_string(lookup);
    if (auto it = cache_.find(key); it != cache_.end()) {
      f.file = it->second.first;
      f.line = it->second.second;
      continue;
    }
    auto start = module_start_.find(f.module);
    if (start == module_start_.end()) {
      // Refresh the module list once per unknown module (a dlopen since the last look).
      dwfl_report_begin_add(dwfl_);
      dwfl_linux_proc_report(dwfl_, platform::TargetPid());
      dwfl_report_end(dwfl_, nullptr, nullptr);
      struct Find {
        const std::string* path = nullptr;
        uint64_t start = 0;
        bool found = false;
      } find{&f.module};
      dwfl_getmodules(
          dwfl_,
          [](Dwfl_Module*, void**, const char* name, Dwarf_Addr low, void* arg) -> int {
            auto* x = static_cast<Find*>(arg);
            // The module name is its path in /proc/self/maps, as the unwinder reported it.
            if (name != nullptr && *x->path == name) {
              x->start = low;
              x->found = true;
              return DWARF_CB_ABORT;
            }
            return DWARF_CB_OK;
          },
          &find, 0);
      start = module_start_.emplace(f.module, find.found ? find.start : 0).first;
    }
    std::pair<std::string, int> fl{"", 0};
    if (start->second != 0) {
      const Dwarf_Addr addr = start->second + lookup;
      if (Dwfl_Module* mod = dwfl_addrmodule(dwfl_, addr)) {
        if (Dwfl_Line* line = dwfl_module_getsrc(mod, addr)) {
          int lineno = 0;
          const char* file = dwfl_lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr);
          if (file != nullptr) {
            fl = {file, lineno};
          }
        }
      }
    }
    if (cache_.size() > 16384) {
      cache_.clear();
    }
    cache_.emplace(key, fl);
    f.file = fl.first;
    f.line = fl.second;
  }
}

}  // namespace stallwatch::agent::internal
