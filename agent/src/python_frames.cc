#include "python_frames.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "platform/proc.h"

namespace stallwatch::agent {
namespace internal {

namespace {

// Bits of PyASCIIObject.state (3.11: interned:2, kind:3, compact:1, ascii:1, ready:1).
constexpr uint32_t kStateKindShift = 2;
constexpr uint32_t kStateKindMask = 7;
constexpr uint32_t kStateCompact = 1u << 5;
constexpr uint32_t kStateAscii = 1u << 6;

// Location-table entry codes (Objects/locations.md).
constexpr int kLocOneLine0 = 10;  // 10, 11, 12: the line is 0, 1 or 2 past the previous one
constexpr int kLocOneLine2 = 12;
constexpr int kLocNoColumns = 13;
constexpr int kLocLong = 14;
constexpr int kLocNone = 15;

constexpr size_t kCodeUnitBytes = 2;  // sizeof(_Py_CODEUNIT)
// More code units than this in one code object is not a code object (3.11 caps a function's
// bytecode far below it in practice; the bound only keeps a torn ob_size from mattering).
constexpr int64_t kMaxCodeUnits = int64_t{1} << 24;
// A chain longer than this without a repeat is cut anyway (max_frames is usually lower).
constexpr size_t kMaxFramesHardCap = 4096;

// An unsigned varint of the location table: 6 bits a byte, bit 6 = more. False past the end.
bool ReadVarint(std::span<const uint8_t> t, size_t* i, uint32_t* out) {
  uint32_t val = 0;
  uint32_t shift = 0;
  while (true) {
    if (*i >= t.size() || shift > 30) {
      return false;
    }
    const uint8_t b = t[(*i)++];
    val |= static_cast<uint32_t>(b & 63) << shift;
    if ((b & 64) == 0) {
      break;
    }
    shift += 6;
  }
  *out = val;
  return true;
}

bool ReadSignedVarint(std::span<const uint8_t> t, size_t* i, int* out) {
  uint32_t u = 0;
  if (!ReadVarint(t, i, &u)) {
    return false;
  }
  *out = (u & 1) != 0 ? -static_cast<int>(u >> 1) : static_cast<int>(u >> 1);
  return true;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

template <typename T>
bool ReadValue(const MemoryReader& mem, uint64_t addr, T* out) {
  return mem.Read(addr, out, sizeof(T));
}

template <typename T>
T Field(const uint8_t* base, size_t offset) {
  T v;
  std::memcpy(&v, base + offset, sizeof(T));
  return v;
}

enum class StrResult { kOk, kNotAString, kUnreadable };

// A str object of the read process. kNotAString: the object is not a str (a torn frame);
// kUnreadable: a str this reader does not decode (legacy, too long): the caller says "?".
StrResult ReadPyString(const MemoryReader& mem, const PyLayout& l, const PythonRuntimeAddrs& a,
                       uint64_t addr, std::string* out) {
  std::array<uint8_t, 128> head{};
  if (addr == 0 || addr % 8 != 0 || l.ascii_data > head.size() ||
      !mem.Read(addr, head.data(), l.ascii_data)) {
    return StrResult::kNotAString;
  }
  if (Field<uint64_t>(head.data(), l.ob_type) != a.unicode_type) {
    return StrResult::kNotAString;
  }
  const auto length = Field<int64_t>(head.data(), l.unicode_length);
  const auto state = Field<uint32_t>(head.data(), l.unicode_state);
  if (length < 0) {
    return StrResult::kNotAString;
  }
  if (static_cast<uint64_t>(length) > kMaxPyStringChars || (state & kStateCompact) == 0) {
    return StrResult::kUnreadable;
  }
  const uint32_t kind = (state >> kStateKindShift) & kStateKindMask;
  if (kind != 1 && kind != 2 && kind != 4) {
    return StrResult::kNotAString;
  }
  const size_t n = static_cast<size_t>(length);
  std::vector<uint8_t> chars(n * kind);
  const uint64_t data = addr + ((state & kStateAscii) != 0 ? l.ascii_data : l.compact_data);
  if (!chars.empty() && !mem.Read(data, chars.data(), chars.size())) {
    return StrResult::kNotAString;
  }
  return PyCompactStringToUtf8(state, chars, n, out) ? StrResult::kOk : StrResult::kUnreadable;
}

// The line of a frame's instruction, or 0: a table that cannot be read costs the line only.
int FrameLine(const MemoryReader& mem, const PyLayout& l, const PythonRuntimeAddrs& a,
              uint64_t linetable, int first_line, int code_unit) {
  if (code_unit < 0) {
    return first_line;
  }
  std::array<uint8_t, 64> head{};
  if (linetable == 0 || l.bytes_sval > head.size() ||
      !mem.Read(linetable, head.data(), l.bytes_sval)) {
    return 0;
  }
  if (a.bytes_type != 0 && Field<uint64_t>(head.data(), l.ob_type) != a.bytes_type) {
    return 0;
  }
  const auto size = Field<int64_t>(head.data(), l.var_ob_size);
  if (size <= 0 || static_cast<uint64_t>(size) > kMaxLineTableBytes) {
    return 0;
  }
  std::vector<uint8_t> table(static_cast<size_t>(size));
  if (!mem.Read(linetable + l.bytes_sval, table.data(), table.size())) {
    return 0;
  }
  const int line = PyLineForCodeUnit(table, first_line, code_unit);
  return line < 0 ? 0 : line;
}

bool ReadCode(const MemoryReader& mem, const PyLayout& l, const PythonRuntimeAddrs& a,
              uint64_t code, uint64_t prev_instr, PyFrameInfo* info, std::string* why);

// One frame, checked; false if anything about it does not hold (the caller stops there).
bool ReadFrame(const MemoryReader& mem, const PyLayout& l, const PythonRuntimeAddrs& a,
               uint64_t frame_addr, PyFrameInfo* info, uint64_t* previous, std::string* why) {
  std::array<uint8_t, 128> frame{};
  if (frame_addr % 8 != 0 || l.frame_size > frame.size() ||
      !mem.Read(frame_addr, frame.data(), l.frame_size)) {
    *why = "frame not readable";
    return false;
  }
  const auto owner = Field<uint8_t>(frame.data(), l.frame_owner);
  if (owner != kFrameOwnedByThread && owner != kFrameOwnedByGenerator) {
    *why = "frame owner " + std::to_string(owner);
    return false;
  }
  info->entry = Field<uint8_t>(frame.data(), l.frame_is_entry) != 0;
  *previous = Field<uint64_t>(frame.data(), l.frame_previous);
  return ReadCode(mem, l, a, Field<uint64_t>(frame.data(), l.frame_f_code),
                  Field<uint64_t>(frame.data(), l.frame_prev_instr), info, why);
}

// The code object at `code` and the line of its instruction at `prev_instr` into *info (not
// `entry`). False with *why when they do not check out.
bool ReadCode(const MemoryReader& mem, const PyLayout& l, const PythonRuntimeAddrs& a,
              uint64_t code, uint64_t prev_instr, PyFrameInfo* info, std::string* why) {
  std::array<uint8_t, 256> co{};
  if (code == 0 || code % 8 != 0 || l.code_code_adaptive > co.size() ||
      !mem.Read(code, co.data(), l.code_code_adaptive)) {
    *why = "code object not readable";
    return false;
  }
  if (Field<uint64_t>(co.data(), l.ob_type) != a.code_type) {
    *why = "f_code is not a code object";
    return false;
  }
  const auto n_units = Field<int64_t>(co.data(), l.var_ob_size);
  if (n_units <= 0 || n_units > kMaxCodeUnits) {
    *why = "code object size";
    return false;
  }
  // prev_instr is one code unit before the first for a frame that has not started.
  const uint64_t first_unit = code + l.code_code_adaptive;
  const int64_t byte_offset = static_cast<int64_t>(prev_instr - first_unit);
  if (byte_offset % static_cast<int64_t>(kCodeUnitBytes) != 0 ||
      byte_offset < -static_cast<int64_t>(kCodeUnitBytes) ||
      byte_offset / static_cast<int64_t>(kCodeUnitBytes) >= n_units) {
    *why = "instruction pointer outside the code";
    return false;
  }
  const int code_unit = static_cast<int>(byte_offset / static_cast<int64_t>(kCodeUnitBytes));

  for (auto [offset, dst] :
       {std::pair{l.code_qualname, &info->qualname}, std::pair{l.code_filename, &info->filename}}) {
    switch (ReadPyString(mem, l, a, Field<uint64_t>(co.data(), offset), dst)) {
      case StrResult::kOk:
        break;
      case StrResult::kUnreadable:
        *dst = "?";
        break;
      case StrResult::kNotAString:
        *why = "name is not a str";
        return false;
    }
  }
  const auto first_line = Field<int32_t>(co.data(), l.code_firstlineno);
  info->line =
      FrameLine(mem, l, a, Field<uint64_t>(co.data(), l.code_linetable), first_line, code_unit);
  return true;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

int PyLineForCodeUnit(std::span<const uint8_t> table, int first_line, int code_unit) {
  if (code_unit < 0) {
    return first_line;
  }
  int line = first_line;
  int64_t start = 0;
  size_t i = 0;
  while (i < table.size()) {
    const uint8_t b = table[i];
    if ((b & 0x80) == 0) {
      return -1;  // not at the start of an entry: not a location table
    }
    const int code = (b >> 3) & 15;
    const int64_t units = (b & 7) + 1;
    size_t j = i + 1;
    bool has_line = true;
    if (code == kLocNone) {
      has_line = false;
    } else if (code == kLocLong || code == kLocNoColumns) {
      int delta = 0;
      if (!ReadSignedVarint(table, &j, &delta)) {
        return -1;
      }
      line += delta;
    } else if (code >= kLocOneLine0 && code <= kLocOneLine2) {
      line += code - kLocOneLine0;
    }  // codes 0-9: the short forms, same line
    if (code_unit < start + units) {
      return has_line ? line : -1;
    }
    start += units;
    // The rest of the entry (columns) has bit 7 clear; the next entry starts with it set.
    i = std::max(i + 1, j);
    while (i < table.size() && (table[i] & 0x80) == 0) {
      ++i;
    }
  }
  return -1;
}

bool PyCompactStringToUtf8(uint32_t state, std::span<const uint8_t> chars, size_t length,
                           std::string* out) {
  if ((state & kStateCompact) == 0) {
    return false;
  }
  const uint32_t kind = (state >> kStateKindShift) & kStateKindMask;
  const bool ascii = (state & kStateAscii) != 0;
  if ((kind != 1 && kind != 2 && kind != 4) || (ascii && kind != 1) ||
      chars.size() != length * kind) {
    return false;
  }
  std::string s;
  s.reserve(length);
  for (size_t i = 0; i < length; ++i) {
    uint32_t cp = 0;
    if (kind == 1) {
      cp = chars[i];
    } else if (kind == 2) {
      cp = static_cast<uint32_t>(chars[2 * i]) | (static_cast<uint32_t>(chars[2 * i + 1]) << 8);
    } else {
      std::memcpy(&cp, &chars[4 * i], 4);
    }
    // NUL is in no name CPython makes; a surrogate or past U+10FFFF is no text.
    if (cp == 0 || (ascii && cp >= 0x80) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return false;
    }
    AppendUtf8(cp, &s);
  }
  *out = std::move(s);
  return true;
}

bool ProcessMemoryReader::Read(uint64_t addr, void* out, size_t len) const {
  if (len == 0) {
    return true;
  }
  if (addr == 0 || addr + len < addr) {
    return false;
  }
  iovec local{out, len};
  iovec remote{reinterpret_cast<void*>(addr), len};  // NOLINT: an address in pid_, not followed
  return ::process_vm_readv(pid_, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(len);
}

StatusOr<std::vector<PyFrameInfo>> ReadPythonStack(const MemoryReader& mem, const PyLayout& layout,
                                                   const PythonRuntimeAddrs& addrs,
                                                   uint64_t tstate_addr, size_t max_frames) {
  uint64_t cframe = 0;
  uint64_t frame = 0;
  if (tstate_addr == 0 || tstate_addr % 8 != 0 ||
      !ReadValue(mem, tstate_addr + layout.tstate_cframe, &cframe)) {
    return UnavailableError("Python thread state at " + Hex(tstate_addr) + " is not readable");
  }
  if (cframe == 0 || cframe % 8 != 0 ||
      !ReadValue(mem, cframe + layout.cframe_current_frame, &frame)) {
    return UnavailableError("Python thread state at " + Hex(tstate_addr) +
                            " has no readable _PyCFrame");
  }
  max_frames = std::min(max_frames, kMaxFramesHardCap);
  std::vector<PyFrameInfo> frames;
  std::vector<uint64_t> seen;
  while (frame != 0 && frames.size() < max_frames) {
    if (std::find(seen.begin(), seen.end(), frame) != seen.end()) {
      break;  // a cycle: torn
    }
    seen.push_back(frame);
    PyFrameInfo info;
    uint64_t previous = 0;
    std::string why;
    if (!ReadFrame(mem, layout, addrs, frame, &info, &previous, &why)) {
      if (frames.empty()) {
        return UnavailableError("innermost Python frame at " + Hex(frame) +
                                " does not check out (" + why +
                                "): torn by the running thread, or no thread state");
      }
      break;  // the outer part of the stack changed under the read: what was read holds
    }
    frames.push_back(std::move(info));
    frame = previous;
  }
  return frames;
}

StatusOr<PyFrameInfo> ReadPythonCodeLocation(const MemoryReader& mem, const PyLayout& layout,
                                             const PythonRuntimeAddrs& addrs, uint64_t code,
                                             uint64_t instr) {
  PyFrameInfo info;
  std::string why;
  if (!ReadCode(mem, layout, addrs, code, instr, &info, &why)) {
    return UnavailableError("Python code object at " + Hex(code) + " does not check out (" + why +
                            ")");
  }
  return info;
}

StatusOr<PyLayout> PyLayoutForVersion(uint32_t version_hex) {
  const uint32_t major = (version_hex >> 24) & 0xFF;
  const uint32_t minor = (version_hex >> 16) & 0xFF;
  if (major == 3 && minor == 11) {
    return kPy311Layout;
  }
  return FailedPreconditionError("Python " + std::to_string(major) + "." + std::to_string(minor) +
                                 " is not supported for Python frames (3.11 is)");
}

bool ReadElfDynamicSymbols(const std::string& path, std::span<const char* const> names,
                           std::span<uint64_t> values, uint64_t* first_load_vaddr) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  auto pread_all = [fd](void* out, size_t len, uint64_t off) {
    return ::pread(fd, out, len, static_cast<off_t>(off)) == static_cast<ssize_t>(len);
  };
  Elf64_Ehdr eh{};
  if (!pread_all(&eh, sizeof(eh), 0) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(Elf64_Shdr) ||
      eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_shnum == 0 || eh.e_shnum > 4096 ||
      eh.e_phnum > 256) {
    return false;
  }
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  if (!pread_all(ph.data(), ph.size() * sizeof(Elf64_Phdr), eh.e_phoff)) {
    return false;
  }
  bool have_load = false;
  for (const auto& p : ph) {
    if (p.p_type == PT_LOAD) {
      *first_load_vaddr = p.p_vaddr - p.p_offset;  // the vaddr that file offset 0 maps at
      have_load = true;
      break;
    }
  }
  if (!have_load) {
    return false;
  }
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  if (!pread_all(sh.data(), sh.size() * sizeof(Elf64_Shdr), eh.e_shoff)) {
    return false;
  }
  constexpr uint64_t kMaxTableBytes = uint64_t{64} << 20;
  for (const auto& s : sh) {
    if (s.sh_type != SHT_DYNSYM || s.sh_link >= sh.size() || s.sh_entsize != sizeof(Elf64_Sym) ||
        s.sh_size > kMaxTableBytes || sh[s.sh_link].sh_size > kMaxTableBytes) {
      continue;
    }
    std::vector<Elf64_Sym> syms(s.sh_size / sizeof(Elf64_Sym));
    std::string strtab(sh[s.sh_link].sh_size, '\0');
    if (!pread_all(syms.data(), syms.size() * sizeof(Elf64_Sym), s.sh_offset) ||
        !pread_all(strtab.data(), strtab.size(), sh[s.sh_link].sh_offset)) {
      return false;
    }
    for (const auto& sym : syms) {
      if (sym.st_name >= strtab.size() || sym.st_shndx == SHN_UNDEF || sym.st_value == 0) {
        continue;
      }
      const std::string_view name(strtab.c_str() + sym.st_name);
      for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
        if (name == names[i]) {
          values[i] = sym.st_value;
        }
      }
    }
    return true;
  }
  return false;
}

}  // namespace internal

namespace {

constexpr std::array<const char*, 5> kSymbols = {"Py_Version", "PyCode_Type", "PyUnicode_Type",
                                                 "PyBytes_Type", "_PyRuntime"};

// A mapped file that is CPython's: python3.11, python3.11d, libpython3.11.so.1.0, ...
bool IsPythonModule(std::string_view path) {
  const size_t slash = path.rfind('/');
  std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
  if (base.substr(0, 3) == "lib") {
    base.remove_prefix(3);
  }
  if (base.substr(0, 7) != "python3") {
    return false;
  }
  base.remove_prefix(7);
  return base.empty() || base[0] == '.';
}

// The symbols of the CPython module mapped in pid, relocated to its load address.
Status FindRemoteSymbols(pid_t pid, std::array<uint64_t, kSymbols.size()>* out) {
  std::string maps;
  const std::string root = "/proc/" + std::to_string(pid);
  if (!agent::platform::ReadSmallFileLarge((root + "/maps").c_str(), &maps)) {
    return NotFoundError("cannot read " + root + "/maps");
  }
  // Lines "start-end perms offset dev inode path"; the mapping at file offset 0 gives the base.
  size_t pos = 0;
  while (pos < maps.size()) {
    size_t nl = maps.find('\n', pos);
    if (nl == std::string::npos) {
      nl = maps.size();
    }
    const std::string line = maps.substr(pos, nl - pos);
    pos = nl + 1;
    unsigned long long start = 0;
    unsigned long long end = 0;
    unsigned long long offset = 0;
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %*s %llx %*s %*s %n", &start, &end, &offset,
                    &path_at) < 3 ||
        path_at <= 0 || offset != 0) {
      continue;
    }
    const std::string path = line.substr(static_cast<size_t>(path_at));
    if (path.empty() || path[0] != '/' || !IsPythonModule(path)) {
      continue;
    }
    std::array<uint64_t, kSymbols.size()> values{};
    uint64_t file_base = 0;
    // Through the process's root: the file as the process sees it (another mount namespace).
    std::string file = root;
    file += "/root";
    file += path;
    if (!internal::ReadElfDynamicSymbols(file, kSymbols, values, &file_base)) {
      continue;
    }
    if (values[0] == 0) {
      continue;  // not the module with the interpreter in it
    }
    const uint64_t bias = start - (file_base & ~uint64_t{0xFFF});
    for (size_t i = 0; i < values.size(); ++i) {
      (*out)[i] = values[i] == 0 ? 0 : values[i] + bias;
    }
    return OkStatus();
  }
  return NotFoundError("no CPython module (python3.X, libpython3.X.so) with Py_Version in " + root +
                       "/maps");
}

}  // namespace

StatusOr<PythonFrameReader> PythonFrameReader::ForProcess(pid_t pid, PythonRuntimeAddrs addrs) {
  const bool complete = addrs.version_hex != 0 && addrs.code_type != 0 && addrs.unicode_type != 0 &&
                        addrs.bytes_type != 0;
  if (!complete) {
    std::array<uint64_t, kSymbols.size()> found{};
    if (pid == ::getpid()) {
      for (size_t i = 0; i < kSymbols.size(); ++i) {
        found[i] = reinterpret_cast<uint64_t>(::dlsym(RTLD_DEFAULT, kSymbols[i]));
      }
      if (found[0] == 0) {
        return NotFoundError("no CPython in this process (Py_Version not found)");
      }
    } else if (Status s = FindRemoteSymbols(pid, &found); !s.ok()) {
      return s;
    }
    if (addrs.version_hex == 0) {
      // Py_Version is an unsigned long; PY_VERSION_HEX fits its low 32 bits.
      uint64_t v = 0;
      if (!internal::ProcessMemoryReader(pid).Read(found[0], &v, sizeof(v))) {
        return UnavailableError("Py_Version of process " + std::to_string(pid) +
                                " is not readable");
      }
      addrs.version_hex = static_cast<uint32_t>(v);
    }
    if (addrs.code_type == 0) {
      addrs.code_type = found[1];
    }
    if (addrs.unicode_type == 0) {
      addrs.unicode_type = found[2];
    }
    if (addrs.bytes_type == 0) {
      addrs.bytes_type = found[3];
    }
    if (addrs.runtime == 0) {
      addrs.runtime = found[4];
    }
  }
  StatusOr<internal::PyLayout> layout = internal::PyLayoutForVersion(addrs.version_hex);
  if (!layout.ok()) {
    return layout.status();
  }
  if (addrs.code_type == 0 || addrs.unicode_type == 0) {
    return NotFoundError("PyCode_Type or PyUnicode_Type not found in process " +
                         std::to_string(pid));
  }
  return PythonFrameReader(pid, addrs, *layout);
}

StatusOr<std::vector<PyFrameInfo>> PythonFrameReader::Read(uint64_t tstate_addr,
                                                           size_t max_frames) const {
  return internal::ReadPythonStack(mem_, layout_, addrs_, tstate_addr, max_frames);
}

StatusOr<PyFrameInfo> PythonFrameReader::Locate(uint64_t code, uint64_t instr) const {
  return internal::ReadPythonCodeLocation(mem_, layout_, addrs_, code, instr);
}

StatusOr<PyGilState> PythonFrameReader::ReadGil() const {
  if (addrs_.runtime == 0) {
    return NotFoundError("_PyRuntime not found: the GIL's holder is not known");
  }
  const uint64_t gil = addrs_.runtime + layout_.runtime_gil;
  uint64_t holder = 0;
  int32_t locked = 0;
  if (!mem_.Read(gil + layout_.gil_last_holder, &holder, sizeof(holder)) ||
      !mem_.Read(gil + layout_.gil_locked, &locked, sizeof(locked))) {
    return UnavailableError("the GIL's state is not readable");
  }
  return PyGilState{.locked = locked == 1, .holder_tstate = holder};
}

StatusOr<pid_t> PythonFrameReader::NativeThreadId(uint64_t tstate, uint64_t same_interp_as) const {
  uint64_t interp = 0;
  uint64_t expected = 0;
  uint64_t tid = 0;
  if (tstate == 0 || !mem_.Read(tstate + layout_.tstate_interp, &interp, sizeof(interp)) ||
      !mem_.Read(same_interp_as + layout_.tstate_interp, &expected, sizeof(expected)) ||
      !mem_.Read(tstate + layout_.tstate_native_thread_id, &tid, sizeof(tid))) {
    return UnavailableError("the thread state is not readable");
  }
  if (interp == 0 || interp != expected || tid == 0 || tid > 0x3FFFFFFF) {
    return FailedPreconditionError("not a thread state of the loop's interpreter");
  }
  return static_cast<pid_t>(tid);
}

}  // namespace stallwatch::agent
