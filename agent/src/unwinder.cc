#include "unwinder.h"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdwfl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace stallwatch::agent::internal {
namespace {

char* g_debuginfo_path = nullptr;

const Dwfl_Callbacks kCallbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = nullptr,
    .debuginfo_path = &g_debuginfo_path,
};

pid_t NextThread(Dwfl* /*dwfl*/, void* dwfl_arg, void** thread_argp) {
  auto* self = static_cast<Unwinder*>(dwfl_arg);
  if (*thread_argp != nullptr || self->current() == nullptr) return 0;
  *thread_argp = self;
  return self->current()->tid;
}

bool GetThread(Dwfl* /*dwfl*/, pid_t tid, void* dwfl_arg, void** thread_argp) {
  auto* self = static_cast<Unwinder*>(dwfl_arg);
  if (self->current() == nullptr || self->current()->tid != tid) return false;
  *thread_argp = self;
  return true;
}

bool MemoryRead(Dwfl* /*dwfl*/, Dwarf_Addr addr, Dwarf_Word* result, void* dwfl_arg) {
  auto* self = static_cast<Unwinder*>(dwfl_arg);
  const UnwindInput* in = self->current();
  if (in == nullptr) return false;
  if (in->stack != nullptr && addr >= in->stack_base &&
      addr + sizeof(Dwarf_Word) <= in->stack_base + in->stack_len) {
    std::memcpy(result, in->stack + (addr - in->stack_base), sizeof(Dwarf_Word));
    return true;
  }
  iovec local{result, sizeof(Dwarf_Word)};
  iovec remote{reinterpret_cast<void*>(addr), sizeof(Dwarf_Word)};
  return ::process_vm_readv(::getpid(), &local, 1, &remote, 1, 0) ==
         static_cast<ssize_t>(sizeof(Dwarf_Word));
}

bool SetInitialRegisters(Dwfl_Thread* thread, void* thread_arg) {
  auto* self = static_cast<Unwinder*>(thread_arg);
  const UnwindInput* in = self->current();
  if (in == nullptr) return false;
  if (in->regs != nullptr) {
    Dwarf_Word regs[17];
    for (int i = 0; i < 17; ++i) regs[i] = in->regs[i];
    return dwfl_thread_state_registers(thread, 0, 17, regs);
  }
  Dwarf_Word sp = in->sp;
  if (!dwfl_thread_state_registers(thread, 7, 1, &sp)) return false;  // rsp
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
  std::vector<RawFrame>* out;
  size_t max;
};

int OnFrame(Dwfl_Frame* state, void* arg) {
  auto* c = static_cast<FrameCollector*>(arg);
  Dwarf_Addr pc = 0;
  bool activation = false;
  if (!dwfl_frame_pc(state, &pc, &activation)) return DWARF_CB_ABORT;
  if (pc == 0) return DWARF_CB_ABORT;
  c->out->push_back(RawFrame{pc, activation});
  return c->out->size() >= c->max ? DWARF_CB_ABORT : DWARF_CB_OK;
}

std::string Demangle(const char* name) {
  if (name == nullptr) return "";
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

Unwinder::~Unwinder() {
  if (dwfl_ != nullptr) dwfl_end(dwfl_);
}

Status Unwinder::Init() {
  if (dwfl_ != nullptr) return OkStatus();
  dwfl_ = dwfl_begin(&kCallbacks);
  if (dwfl_ == nullptr) return InternalError(std::string("dwfl_begin: ") + dwfl_errmsg(-1));
  dwfl_report_begin(dwfl_);
  if (dwfl_linux_proc_report(dwfl_, ::getpid()) != 0) {
    dwfl_report_end(dwfl_, nullptr, nullptr);
    return UnavailableError(std::string("reading this process's modules: ") + dwfl_errmsg(-1));
  }
  dwfl_report_end(dwfl_, nullptr, nullptr);
  attached_ = dwfl_attach_state(dwfl_, nullptr, ::getpid(), &kThreadCallbacks, this);
  if (!attached_) {
    return UnavailableError(std::string("dwfl_attach_state: ") + dwfl_errmsg(-1));
  }
  return OkStatus();
}

void Unwinder::Refresh() {
  if (dwfl_ == nullptr) return;
  dwfl_report_begin_add(dwfl_);
  dwfl_linux_proc_report(dwfl_, ::getpid());
  dwfl_report_end(dwfl_, nullptr, nullptr);
}

StatusOr<std::vector<RawFrame>> Unwinder::Unwind(const UnwindInput& in, size_t max_frames) {
  if (!attached_) return UnavailableError("unwinder not initialised");
  std::vector<RawFrame> frames;
  FrameCollector collector{&frames, max_frames};
  current_ = &in;
  dwfl_getthread_frames(dwfl_, in.tid, OnFrame, &collector);
  current_ = nullptr;
  if (frames.empty()) return InternalError(std::string("unwind failed: ") + dwfl_errmsg(-1));
  return frames;
}

Frame Unwinder::Symbolize(const RawFrame& f) {
  // A return address points after the call; look up the call instruction itself.
  const uint64_t pc = f.activation ? f.pc : f.pc - 1;
  if (auto it = cache_.find(pc); it != cache_.end()) return it->second;
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
    if (Dwfl_Line* line = dwfl_module_getsrc(mod, pc)) {
      int lineno = 0;
      const char* file = dwfl_lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr);
      if (file != nullptr) {
        out.file = file;
        out.line = lineno;
      }
    }
  } else {
    out.offset = f.pc;
  }
  if (cache_.size() > 16384) cache_.clear();
  cache_.emplace(pc, out);
  return out;
}

}  // namespace stallwatch::agent::internal
