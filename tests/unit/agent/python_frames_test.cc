// Python frame decoding (agent/src/python_frames.h): the 3.11 location-table decoder on real
// co_linetable bytes, compact str decoding, and the frame walk over hand-built 3.11 objects in
// this process's memory (read back through process_vm_readv, as another process's would be).
#include "python_frames.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace stallwatch::agent::internal {
namespace {

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// co_linetable of functions compiled by /usr/bin/python3 (3.11.2) from a source file of
// "/srv/app/fixture.py", with the line of every code unit as co_positions() gives it (-1: None):
//   simple: two statements; loop: for/if/else (lines go back); far: a 28-line gap and a
//   two-line expression (long-form entries, a negative delta); handler: try/except/with and a
//   comprehension (no-line entries); <module>: its RESUME is on line 0.
struct LineFixture {
  const char* name;
  int first_line;
  const char* linetable_hex;
  std::vector<int> lines;
};

const std::vector<LineFixture>& Fixtures() {
  static const std::vector<LineFixture> kFixtures = {
      {"simple", 2, "8000d80809884189058041d80b0c88718935804c", {2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4}},
      {"loop",
       6,
       "8000d80c0d8045d80d0ff000040517f0000405178801d80b0c88718935f000030917d80c119051894a884588"
       "45e00c119051894a88458845d80b10804c",
       {6,  7,  7,  8,  8,  8,  8,  9,  9,  9,  9,  9,  10,
        10, 10, 10, 10, 10, 12, 12, 12, 12, 12, 12, 13, 13}},
      {"far",
       15,
       "8000d808098041f038000d0ed80c0df103010d0ef00001050f",
       {15, 16, 16, 44, 45, 44, 44, 44}},
      {"handler",
       47,
       "8000f00203050edd0e189813896f8c6fd0081df8dd0b15f00001050ef00001050ef00001050ed80c0d884188"
       "41884188418841f8f8f8f8f00301050ef8f8f8e5090d886bd1091ad4091af00001050d9861d8080cf0030105"
       "0df00001050df00001050df10001050df40001050df00001050df00001050df00001050df00001050df00001"
       "050df00001050df8f8f8f00001050df00001050df00001050df00001050de00b20d00b209575985191789478"
       "d00b20d10b20d40b20d00420",
       {47, 48, 49, 49, 49, 49, 49, 49, 49, 49, 49, 49, 49, 49, 49, 49, 49, -1, 50, 50, 50, 50,
        50, 50, 50, 50, 50, 51, 51, 51, 51, 51, 51, -1, -1, -1, -1, 50, -1, -1, -1, 52, 52, 52,
        52, 52, 52, 52, 52, 52, 52, 52, 52, 52, 52, 52, 52, 53, 52, 52, 52, 52, 52, 52, 52, 52,
        52, 52, 52, 52, 52, 52, 52, 52, -1, -1, -1, 52, 52, 52, 52, 54, 54, 54, 54, 54, 54, 54,
        54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54, 54}},
      {"<module>",
       1,
       "f003010101f004020111f000020111f000020111f008070111f000070111f000070111f0121e010ff0001e01"
       "0ff0001e010ff04001070121f000070121f000070121f000070121f000070121",
       {0, 2, 2, 2, 6, 6, 6, 15, 15, 15, 47, 47, 47, 47, 47}},
  };
  return kFixtures;
}

TEST(LineTable, EveryCodeUnitOfRealFunctionsHasCPythonsLine) {
  for (const auto& f : Fixtures()) {
    const auto table = FromHex(f.linetable_hex);
    for (size_t unit = 0; unit < f.lines.size(); ++unit) {
      EXPECT_EQ(PyLineForCodeUnit(table, f.first_line, static_cast<int>(unit)), f.lines[unit])
          << f.name << " code unit " << unit;
    }
    // Past the last entry: no line.
    EXPECT_EQ(PyLineForCodeUnit(table, f.first_line, static_cast<int>(f.lines.size())), -1)
        << f.name;
  }
}

TEST(LineTable, AFrameThatHasNotStartedIsOnItsFirstLine) {
  const auto& f = Fixtures()[0];
  EXPECT_EQ(PyLineForCodeUnit(FromHex(f.linetable_hex), f.first_line, -1), f.first_line);
}

TEST(LineTable, TruncatedOrGarbageTablesNeverReadOutside) {
  // Every prefix of a real table (a torn copy), and bytes that are no table at all.
  const auto table = FromHex(Fixtures()[3].linetable_hex);
  for (size_t n = 0; n <= table.size(); ++n) {
    std::vector<uint8_t> prefix(table.begin(), table.begin() + static_cast<ptrdiff_t>(n));
    for (int unit = 0; unit < 200; unit += 7) {
      const int line = PyLineForCodeUnit(prefix, 47, unit);
      EXPECT_TRUE(line == -1 || line >= 0) << n << " " << unit;
    }
  }
  const std::vector<uint8_t> garbage = {0x00, 0x13, 0x7f};
  EXPECT_EQ(PyLineForCodeUnit(garbage, 1, 0), -1);
  const std::vector<uint8_t> endless_varint = {0xf0, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f};
  EXPECT_EQ(PyLineForCodeUnit(endless_varint, 1, 0), -1);
  EXPECT_EQ(PyLineForCodeUnit({}, 1, 0), -1);
}

// PyASCIIObject.state words: kind in bits 2-4, compact bit 5, ascii bit 6, ready bit 7.
constexpr uint32_t kAsciiState = (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7);
constexpr uint32_t StateOfKind(uint32_t kind) { return (kind << 2) | (1u << 5) | (1u << 7); }

TEST(PythonFrameStrings, CompactStringsOfEachKindBecomeUtf8) {
  std::string out;
  const std::string ascii = "Handler.get";
  ASSERT_TRUE(PyCompactStringToUtf8(kAsciiState,
                                    {reinterpret_cast<const uint8_t*>(ascii.data()), ascii.size()},
                                    ascii.size(), &out));
  EXPECT_EQ(out, "Handler.get");
  const std::vector<uint8_t> latin1 = {'c', 'a', 'f', 0xe9};
  ASSERT_TRUE(PyCompactStringToUtf8(StateOfKind(1), latin1, 4, &out));
  EXPECT_EQ(out, "caf\xc3\xa9");
  const std::vector<uint8_t> ucs2 = {0x0d, 0x54, 0x4d, 0x52};  // U+540D U+524D
  ASSERT_TRUE(PyCompactStringToUtf8(StateOfKind(2), ucs2, 2, &out));
  EXPECT_EQ(out, "\xe5\x90\x8d\xe5\x89\x8d");
  const std::vector<uint8_t> ucs4 = {0x0d, 0xf6, 0x01, 0x00};  // U+1F60D
  ASSERT_TRUE(PyCompactStringToUtf8(StateOfKind(4), ucs4, 1, &out));
  EXPECT_EQ(out, "\xf0\x9f\x98\x8d");
}

TEST(PythonFrameStrings, WhatIsNotTextIsRefused) {
  std::string out = "unchanged";
  const std::vector<uint8_t> surrogate = {0x00, 0xd8};
  EXPECT_FALSE(PyCompactStringToUtf8(StateOfKind(2), surrogate, 1, &out));
  const std::vector<uint8_t> high = {0x80};
  EXPECT_FALSE(PyCompactStringToUtf8(kAsciiState, high, 1, &out));  // "ASCII" with bit 7 set
  const std::vector<uint8_t> nul = {'a', 0};
  EXPECT_FALSE(PyCompactStringToUtf8(kAsciiState, nul, 2, &out));
  EXPECT_FALSE(PyCompactStringToUtf8(kAsciiState & ~(1u << 5), nul, 1, &out));  // not compact
  EXPECT_FALSE(PyCompactStringToUtf8(StateOfKind(3), nul, 1, &out));            // no kind 3
  EXPECT_FALSE(PyCompactStringToUtf8(StateOfKind(2), nul, 2, &out));            // size mismatch
  EXPECT_EQ(out, "unchanged");
}

// ---- The walk, over 3.11 objects built by hand in this process. ----

constexpr PyLayout kL = kPy311Layout;

// Objects laid out as CPython 3.11 lays them out, kept alive (and 8-byte aligned) here; the
// "type objects" are addresses of dummies, compared only.
class FakeInterpreter {
 public:
  FakeInterpreter() {
    addrs_.version_hex = 0x030B02F0;
    addrs_.code_type = reinterpret_cast<uint64_t>(&code_type_);
    addrs_.unicode_type = reinterpret_cast<uint64_t>(&unicode_type_);
    addrs_.bytes_type = reinterpret_cast<uint64_t>(&bytes_type_);
  }
  const PythonRuntimeAddrs& addrs() const { return addrs_; }

  uint64_t Str(const std::string& s) {
    uint8_t* o = New(kL.ascii_data + s.size() + 1);
    Put<uint64_t>(o, kL.ob_type, addrs_.unicode_type);
    Put<int64_t>(o, kL.unicode_length, static_cast<int64_t>(s.size()));
    Put<uint32_t>(o, kL.unicode_state, kAsciiState);
    std::copy(s.begin(), s.end(), o + kL.ascii_data);
    return Addr(o);
  }
  uint64_t Bytes(const std::vector<uint8_t>& b) {
    uint8_t* o = New(kL.bytes_sval + b.size() + 1);
    Put<uint64_t>(o, kL.ob_type, addrs_.bytes_type);
    Put<int64_t>(o, kL.var_ob_size, static_cast<int64_t>(b.size()));
    std::memcpy(o + kL.bytes_sval, b.data(), b.size());
    return Addr(o);
  }
  // A code object of the "simple" fixture (11 code units, first line 2).
  uint64_t Code(const std::string& qualname, const std::string& filename) {
    const auto& f = Fixtures()[0];
    uint8_t* o = New(kL.code_code_adaptive + 2 * f.lines.size());
    Put<uint64_t>(o, kL.ob_type, addrs_.code_type);
    Put<int64_t>(o, kL.var_ob_size, static_cast<int64_t>(f.lines.size()));
    Put<int32_t>(o, kL.code_firstlineno, f.first_line);
    Put<uint64_t>(o, kL.code_qualname, Str(qualname));
    Put<uint64_t>(o, kL.code_filename, Str(filename));
    Put<uint64_t>(o, kL.code_linetable, Bytes(FromHex(f.linetable_hex)));
    return Addr(o);
  }
  // A frame at code unit `unit` of `code` (the "simple" fixture: unit 7 is on line 4).
  uint64_t Frame(uint64_t code, int unit, uint64_t previous, uint8_t owner = kFrameOwnedByThread) {
    uint8_t* o = New(kL.frame_size + 8);
    Put<uint64_t>(o, kL.frame_f_code, code);
    Put<uint64_t>(o, kL.frame_previous, previous);
    Put<uint64_t>(o, kL.frame_prev_instr, code + kL.code_code_adaptive + int64_t{2} * unit);
    Put<uint8_t>(o, kL.frame_owner, owner);
    return Addr(o);
  }
  void SetPrevious(uint64_t frame, uint64_t previous) {
    Put<uint64_t>(At(frame), kL.frame_previous, previous);
  }
  // The object made here at `addr`.
  uint8_t* At(uint64_t addr) {
    for (auto& s : storage_) {
      auto* p = reinterpret_cast<uint8_t*>(s.data());
      if (Addr(p) == addr) {
        return p;
      }
    }
    ADD_FAILURE() << "no object at " << addr;
    return reinterpret_cast<uint8_t*>(storage_.front().data());
  }
  template <typename T>
  static void Put(uint8_t* o, size_t offset, T v) {
    std::memcpy(o + offset, &v, sizeof(T));
  }
  // A PyThreadState whose cframe's current_frame is `innermost`.
  uint64_t ThreadState(uint64_t innermost) {
    uint8_t* cframe = New(32);
    Put<uint64_t>(cframe, kL.cframe_current_frame, innermost);
    uint8_t* ts = New(kL.tstate_cframe + 64);
    Put<uint64_t>(ts, kL.tstate_cframe, Addr(cframe));
    return Addr(ts);
  }

 private:
  uint8_t* New(size_t bytes) {
    storage_.emplace_back((bytes + 7) / 8 + 1, 0);
    return reinterpret_cast<uint8_t*>(storage_.back().data());
  }
  static uint64_t Addr(const uint8_t* p) { return reinterpret_cast<uint64_t>(p); }

  std::deque<std::vector<uint64_t>> storage_;
  int code_type_ = 0;
  int unicode_type_ = 0;
  int bytes_type_ = 0;
  PythonRuntimeAddrs addrs_;
};

StatusOr<std::vector<PyFrameInfo>> Walk(const FakeInterpreter& py, uint64_t tstate,
                                        size_t max_frames = 128) {
  return ReadPythonStack(ProcessMemoryReader(getpid()), kL, py.addrs(), tstate, max_frames);
}

TEST(PythonFrames, AChainIsReadInnermostFirstWithNamesAndLines) {
  FakeInterpreter py;
  const uint64_t module = py.Frame(py.Code("<module>", "/srv/app.py"), 3, 0);
  const uint64_t get = py.Frame(py.Code("Handler.get", "/srv/app.py"), 7, module);
  const uint64_t inner = py.Frame(py.Code("inner", "/srv/app.py"), -1, get, kFrameOwnedByGenerator);
  const auto stack = Walk(py, py.ThreadState(inner));
  ASSERT_TRUE(stack.ok()) << stack.status().ToString();
  ASSERT_EQ(stack->size(), 3u);
  EXPECT_EQ((*stack)[0].qualname, "inner");
  EXPECT_EQ((*stack)[0].line, 2);  // not started: the first line
  EXPECT_EQ((*stack)[1].qualname, "Handler.get");
  EXPECT_EQ((*stack)[1].line, 4);
  EXPECT_EQ((*stack)[2].qualname, "<module>");
  EXPECT_EQ((*stack)[2].filename, "/srv/app.py");
  EXPECT_EQ((*stack)[2].line, 3);
  const auto two = Walk(py, py.ThreadState(inner), 2);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 2u);
}

// The blocking-call ledger's Python caller: a code object and an instruction in it, located later.
TEST(PythonCodeLocation, AnInstructionOfACodeObjectIsItsFunctionFileAndLine) {
  FakeInterpreter py;
  const uint64_t code = py.Code("Handler.get", "/srv/app.py");
  const ProcessMemoryReader mem(getpid());
  const auto at = ReadPythonCodeLocation(mem, kL, py.addrs(), code,
                                         code + kL.code_code_adaptive + uint64_t{2} * 7);
  ASSERT_TRUE(at.ok()) << at.status().ToString();
  EXPECT_EQ(at->qualname, "Handler.get");
  EXPECT_EQ(at->filename, "/srv/app.py");
  EXPECT_EQ(at->line, 4);
  EXPECT_FALSE(at->entry);
  // Outside the code, not a code object, or gone: errors, never a name.
  EXPECT_FALSE(ReadPythonCodeLocation(mem, kL, py.addrs(), code,
                                      code + kL.code_code_adaptive + uint64_t{2} * 99)
                   .ok());
  EXPECT_FALSE(ReadPythonCodeLocation(mem, kL, py.addrs(), py.Str("x"), code).ok());
  EXPECT_FALSE(ReadPythonCodeLocation(mem, kL, py.addrs(), 8, 16).ok());
}

TEST(PythonFrames, AThreadWithoutPythonFramesHasAnEmptyStack) {
  FakeInterpreter py;
  const auto stack = Walk(py, py.ThreadState(0));
  ASSERT_TRUE(stack.ok());
  EXPECT_TRUE(stack->empty());
}

TEST(PythonFrames, ACycleInTheChainEndsIt) {
  FakeInterpreter py;
  const uint64_t a = py.Frame(py.Code("a", "/x.py"), 0, 0);
  const uint64_t b = py.Frame(py.Code("b", "/x.py"), 0, a);
  py.SetPrevious(a, b);
  const auto stack = Walk(py, py.ThreadState(b));
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ(stack->size(), 2u);
}

TEST(PythonFrames, AnOuterFrameThatDoesNotCheckOutCutsTheStackThere) {
  FakeInterpreter py;
  const uint64_t code = py.Code("outer", "/x.py");
  // f_code points at a str, not a code object.
  const uint64_t bad = py.Frame(py.Str("not code"), 0, 0);
  const uint64_t inner = py.Frame(code, 0, bad);
  auto stack = Walk(py, py.ThreadState(inner));
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ(stack->size(), 1u);
  // A frame copied into a frame object (owner 2) is no longer on the thread's stack.
  const uint64_t moved = py.Frame(code, 0, 0, 2);
  stack = Walk(py, py.ThreadState(py.Frame(code, 0, moved)));
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ(stack->size(), 1u);
  // An instruction pointer outside the code object.
  stack = Walk(py, py.ThreadState(py.Frame(code, 0, py.Frame(code, 500, 0))));
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ(stack->size(), 1u);
  // previous pointing at unmapped memory.
  stack = Walk(py, py.ThreadState(py.Frame(code, 0, 0x1000)));
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ(stack->size(), 1u);
}

TEST(PythonFrames, AnInnermostFrameThatDoesNotCheckOutIsAnError) {
  FakeInterpreter py;
  auto stack = Walk(py, py.ThreadState(py.Frame(py.Str("not code"), 0, 0)));
  ASSERT_FALSE(stack.ok());
  EXPECT_NE(stack.status().message().find("not a code object"), std::string::npos)
      << stack.status().message();
  stack = Walk(py, py.ThreadState(0x1000));
  EXPECT_FALSE(stack.ok());
}

TEST(PythonFrames, ANameThatIsNotAStrIsATornFrameAndAnUndecodableStrIsAQuestionMark) {
  FakeInterpreter py;
  const uint64_t code = py.Code("f", "/x.py");
  // co_qualname → a bytes object: torn.
  FakeInterpreter::Put<uint64_t>(py.At(code), kL.code_qualname, py.Bytes({'f'}));
  EXPECT_FALSE(Walk(py, py.ThreadState(py.Frame(code, 0, 0))).ok());
  // co_qualname → a str longer than any name: "?".
  const uint64_t code2 = py.Code("g", "/x.py");
  const uint64_t long_str = py.Str(std::string(kMaxPyStringChars + 1, 'x'));
  FakeInterpreter::Put<uint64_t>(py.At(code2), kL.code_qualname, long_str);
  const auto stack = Walk(py, py.ThreadState(py.Frame(code2, 0, 0)));
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ((*stack)[0].qualname, "?");
  EXPECT_EQ((*stack)[0].filename, "/x.py");
}

TEST(PythonFrames, GarbageThreadStateAddressesAreErrors) {
  FakeInterpreter py;
  for (uint64_t addr : {uint64_t{0}, uint64_t{0x1000}, uint64_t{0x1003}, ~uint64_t{0} - 7}) {
    EXPECT_FALSE(Walk(py, addr).ok()) << addr;
  }
  // Through the public reader, with this process's (fake) runtime addresses.
  const auto reader = PythonFrameReader::ForProcess(getpid(), py.addrs());
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_FALSE(reader->Read(0x1000).ok());
  EXPECT_FALSE(reader->Read(0).ok());
}

TEST(PythonFrames, OtherVersionsAreRefusedInOneLine) {
  FakeInterpreter py;
  PythonRuntimeAddrs a = py.addrs();
  a.version_hex = 0x030C01F0;
  auto reader = PythonFrameReader::ForProcess(getpid(), a);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().message(), "Python 3.12 is not supported for Python frames (3.11 is)");
  a.version_hex = 0x030A0CF0;
  reader = PythonFrameReader::ForProcess(getpid(), a);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().message(), "Python 3.10 is not supported for Python frames (3.11 is)");
  EXPECT_TRUE(PyLayoutForVersion(0x030B00A1).ok());  // 3.11.0a1 … 3.11.x
}

TEST(PythonFrames, AProcessWithoutCPythonIsNotFound) {
  // This test binary has no Py_Version symbol.
  const auto reader = PythonFrameReader::ForProcess(getpid());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace stallwatch::agent::internal
