#pragma once
// The Python stack of one CPython 3.11 thread, read without the GIL and without following a raw
// pointer: every read of the interpreter's memory is a copy through process_vm_readv (on the own
// process a bad address is EFAULT, not SIGSEGV), every object is checked (its type, its sizes)
// before its fields are used, and the frame chain is bounded and cycle-guarded. The thread may
// run while it is read: a frame that no longer checks out ends the stack there (an innermost one
// that does not is an error), so a torn read gives a shorter stack or an error, never a crash or
// a name that is not a real one.
//
// The pure parts (the location-table decoder, the walk over a MemoryReader) are separate from the
// process_vm_readv reader so they are tested on fixtures and fake memory.
//
// Threading: a PythonFrameReader is immutable after ForProcess; Read may be called from any
// thread, concurrently (the watchdog thread or process, never a signal handler: it allocates).

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "stallwatch/status.h"

namespace stallwatch::agent {

struct PyFrameInfo {
  std::string qualname;  // co_qualname ("Handler.get", "<module>"); "?" if not a readable string
  std::string filename;  // co_filename; "?" likewise
  int line = 0;          // 0 if the location table has no line for the instruction
  // _PyInterpreterFrame.is_entry: the outermost Python frame of one C call of the interpreter
  // (_PyEval_EvalFrameDefault): a native stack shows one such call per run of frames up to an
  // entry frame, which is how the two stacks are merged.
  bool entry = false;
};

// Addresses in the process that is read: what a frame's objects are checked against. Zero means
// "find it": in the own process through dlsym, in another through the ELF dynamic symbols of the
// python3.X executable or libpython3.X.so mapped there.
struct PythonRuntimeAddrs {
  uint32_t version_hex = 0;   // the value of Py_Version (PY_VERSION_HEX, 0x030B02F0 = 3.11.2)
  uint64_t code_type = 0;     // &PyCode_Type
  uint64_t unicode_type = 0;  // &PyUnicode_Type
  uint64_t bytes_type = 0;    // &PyBytes_Type (co_linetable)
  uint64_t runtime = 0;       // &_PyRuntime (the GIL's state); 0: the GIL is not read
};

// The GIL as the runtime state had it when read: whether it was taken and by which thread state
// (the last holder, the holder while it is taken).
struct PyGilState {
  bool locked = false;
  uint64_t holder_tstate = 0;
};

namespace internal {

// Byte offsets of the fields read, for one CPython minor version (x86-64 / 64-bit LP64). A table
// rather than offsetof against the build machine's headers: the agent reads the interpreter that
// runs, whatever Python (if any) the agent was built beside. The 3.11 table is checked against
// libpython3.11-dev's headers by a test.
struct PyLayout {
  size_t ob_type = 8;
  size_t var_ob_size = 16;
  size_t tstate_cframe = 0;         // PyThreadState.cframe
  size_t cframe_current_frame = 0;  // _PyCFrame.current_frame
  size_t frame_f_code = 0;          // _PyInterpreterFrame.f_code
  size_t frame_previous = 0;
  size_t frame_prev_instr = 0;
  size_t frame_is_entry = 0;
  size_t frame_owner = 0;
  size_t frame_size = 0;  // bytes read per frame: up to and including owner
  size_t code_firstlineno = 0;
  size_t code_filename = 0;
  size_t code_qualname = 0;
  size_t code_linetable = 0;
  size_t code_code_adaptive = 0;       // _PyCode_CODE(co): the first code unit
  size_t unicode_length = 0;           // PyASCIIObject.length
  size_t unicode_state = 0;            // PyASCIIObject.state (the bit-field word)
  size_t ascii_data = 0;               // sizeof(PyASCIIObject): compact ASCII characters
  size_t compact_data = 0;             // sizeof(PyCompactUnicodeObject): other compact characters
  size_t bytes_sval = 0;               // PyBytesObject.ob_sval
  size_t tstate_interp = 0;            // PyThreadState.interp
  size_t tstate_native_thread_id = 0;  // PyThreadState.native_thread_id (the kernel's tid)
  size_t runtime_gil = 0;              // _PyRuntimeState.ceval.gil (struct _gil_runtime_state)
  size_t runtime_finalizing = 0;       // _PyRuntimeState._finalizing (non-null once finalizing)
  size_t gil_last_holder = 0;
  size_t gil_locked = 0;
  size_t gil_size = 0;  // sizeof(struct _gil_runtime_state): its mutex and condition variables
};

// CPython 3.11 (Include/internal/pycore_frame.h, cpython/{pystate,code,unicodeobject}.h).
inline constexpr PyLayout kPy311Layout = {
    .tstate_cframe = 56,
    .cframe_current_frame = 8,
    .frame_f_code = 32,
    .frame_previous = 48,
    .frame_prev_instr = 56,
    .frame_is_entry = 68,
    .frame_owner = 69,
    .frame_size = 70,
    .code_firstlineno = 72,
    .code_filename = 112,
    .code_qualname = 128,
    .code_linetable = 136,
    .code_code_adaptive = 184,
    .unicode_length = 16,
    .unicode_state = 32,
    .ascii_data = 48,
    .compact_data = 72,
    .bytes_sval = 32,
    .tstate_interp = 16,
    .tstate_native_thread_id = 160,
    .runtime_gil = 360,
    .runtime_finalizing = 24,
    .gil_last_holder = 8,
    .gil_locked = 16,
    .gil_size = 208,
};

// enum _frameowner of 3.11 (3.11 has no FRAME_OWNED_BY_CSTACK shim frames; 3.12 does).
inline constexpr uint8_t kFrameOwnedByThread = 0;
inline constexpr uint8_t kFrameOwnedByGenerator = 1;

// Longest qualname or filename accepted (in characters); longer is not a name.
inline constexpr size_t kMaxPyStringChars = 4096;
// Largest co_linetable read; a longer one leaves the frame's line 0.
inline constexpr size_t kMaxLineTableBytes = size_t{64} * 1024;

// The line of the code unit at `code_unit` (index into co_code_adaptive, -1 for a frame that has
// not started) from a 3.11 location table (Objects/locations.md), as PyCode_Addr2Line computes
// it: first_line for a negative index, -1 where the table says "no line" or ends before the
// index. Pure; never reads outside `table`.
int PyLineForCodeUnit(std::span<const uint8_t> table, int first_line, int code_unit);

// A compact str object's characters as UTF-8: `state` is the PyASCIIObject.state word, `chars`
// the bytes after the header (length * kind of them). False for a non-compact string, a kind
// other than 1/2/4, or a code point that is not valid Unicode text (a lone surrogate). Pure.
bool PyCompactStringToUtf8(uint32_t state, std::span<const uint8_t> chars, size_t length,
                           std::string* out);

// Copies of the read process's memory. Read returns false (and may leave `out` partly written)
// unless all `len` bytes were copied.
class MemoryReader {
 public:
  virtual ~MemoryReader() = default;
  virtual bool Read(uint64_t addr, void* out, size_t len) const = 0;
};

// process_vm_readv on `pid` (the own pid included).
class ProcessMemoryReader final : public MemoryReader {
 public:
  explicit ProcessMemoryReader(pid_t pid) : pid_(pid) {}
  bool Read(uint64_t addr, void* out, size_t len) const override;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

// The walk itself, over any MemoryReader: innermost first, at most max_frames. Errors: the
// thread state or its innermost frame does not check out. Pure but for `mem`.
StatusOr<std::vector<PyFrameInfo>> ReadPythonStack(const MemoryReader& mem, const PyLayout& layout,
                                                   const PythonRuntimeAddrs& addrs,
                                                   uint64_t tstate_addr, size_t max_frames);

// Where a code object's instruction is: co_qualname, co_filename and the line of the code unit at
// `instr` (an address inside the code object's co_code_adaptive, as _PyInterpreterFrame's
// prev_instr); `entry` false. Errors: not a code object, or `instr` outside its code. Pure but
// for `mem`.
StatusOr<PyFrameInfo> ReadPythonCodeLocation(const MemoryReader& mem, const PyLayout& layout,
                                             const PythonRuntimeAddrs& addrs, uint64_t code,
                                             uint64_t instr);

// The layout for a Py_Version value, or "Python X.Y is not supported for Python frames (3.11
// is)". Pure.
StatusOr<PyLayout> PyLayoutForVersion(uint32_t version_hex);

// The dynamic symbols `names` of an ELF file: file offsets turned into virtual addresses
// (st_value, unrelocated); a name not found is left 0. False if the file is not a readable
// 64-bit ELF file with a .dynsym.
bool ReadElfDynamicSymbols(const std::string& path, std::span<const char* const> names,
                           std::span<uint64_t> values, uint64_t* first_load_vaddr);

}  // namespace internal

class PythonFrameReader {
 public:
  // pid: the process whose memory is read (getpid() for the own process). Fields of `addrs`
  // left 0 are found (see PythonRuntimeAddrs); Py_Version is then read from that process.
  // Errors: no CPython in the process, its symbols not found, or a version other than 3.11
  // ("Python 3.12 is not supported for Python frames (3.11 is)"). Any thread; reads /proc and
  // ELF files when it has to find symbols.
  static StatusOr<PythonFrameReader> ForProcess(pid_t pid, PythonRuntimeAddrs addrs = {});

  // The Python stack of the thread whose PyThreadState is at tstate_addr in that process,
  // innermost first, at most max_frames. Errors: the thread state is gone or not one, the
  // innermost frame does not check out (a torn read). Any thread, concurrently.
  StatusOr<std::vector<PyFrameInfo>> Read(uint64_t tstate_addr, size_t max_frames = 128) const;

  // The function, file and line of the instruction at `instr` of the code object at `code` (what
  // the blocking-call ledger records for a Python caller). Errors: the code object is gone or
  // not one, or `instr` is not in it. Any thread, concurrently.
  StatusOr<PyFrameInfo> Locate(uint64_t code, uint64_t instr) const;

  // Whether a thread of that process blocked in futex(uaddr, …) waits for the GIL: uaddr lies in
  // the GIL's state (its mutex or condition variables). Pure.
  bool IsGilFutex(uint64_t uaddr) const {
    const uint64_t gil = addrs_.runtime + layout_.runtime_gil;
    return addrs_.runtime != 0 && uaddr >= gil && uaddr < gil + layout_.gil_size;
  }
  // The GIL now. Errors: _PyRuntime not found, or not readable. Any thread.
  StatusOr<PyGilState> ReadGil() const;
  // The kernel's id of the thread whose PyThreadState is at `tstate`, checked to belong to the
  // same interpreter as `same_interp_as` (another thread state known to be good). Errors: not
  // readable, or not a thread state of that interpreter. Any thread.
  StatusOr<pid_t> NativeThreadId(uint64_t tstate, uint64_t same_interp_as) const;

  const PythonRuntimeAddrs& addrs() const { return addrs_; }

 private:
  PythonFrameReader(pid_t pid, const PythonRuntimeAddrs& addrs, const internal::PyLayout& layout)
      : mem_(pid), addrs_(addrs), layout_(layout) {}

  internal::ProcessMemoryReader mem_;
  PythonRuntimeAddrs addrs_;
  internal::PyLayout layout_;
};

}  // namespace stallwatch::agent
