// The hard-coded CPython 3.11 layout of agent/src/python_frames.h against libpython3.11-dev's
// headers: the offsets the reader uses are the ones the interpreter was compiled with.
// Python.h first: it sets feature macros that system headers must see.
#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_frame.h>
// clang-format off: the Python headers above must stay first
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>

#include "python_frames.h"
// clang-format on

// python_gil_layout.c: the GIL's internal header is C11 only.
extern "C" {
extern const size_t sw_py311_runtime_gil;
extern const size_t sw_py311_runtime_finalizing;
extern const size_t sw_py311_gil_last_holder;
extern const size_t sw_py311_gil_locked;
extern const size_t sw_py311_gil_size;
}

namespace stallwatch::agent::internal {
namespace {

static_assert(PY_MAJOR_VERSION == 3 && PY_MINOR_VERSION == 11, "built against 3.11 headers");

TEST(PythonFrameLayout, The311TableMatchesTheHeaders) {
  constexpr PyLayout l = kPy311Layout;
  EXPECT_EQ(l.ob_type, offsetof(PyObject, ob_type));
  EXPECT_EQ(l.var_ob_size, offsetof(PyVarObject, ob_size));
  EXPECT_EQ(l.tstate_cframe, offsetof(PyThreadState, cframe));
  EXPECT_EQ(l.cframe_current_frame, offsetof(_PyCFrame, current_frame));
  EXPECT_EQ(l.frame_f_code, offsetof(_PyInterpreterFrame, f_code));
  EXPECT_EQ(l.frame_previous, offsetof(_PyInterpreterFrame, previous));
  EXPECT_EQ(l.frame_prev_instr, offsetof(_PyInterpreterFrame, prev_instr));
  EXPECT_EQ(l.frame_is_entry, offsetof(_PyInterpreterFrame, is_entry));
  EXPECT_EQ(l.frame_owner, offsetof(_PyInterpreterFrame, owner));
  EXPECT_EQ(l.frame_size, offsetof(_PyInterpreterFrame, owner) + sizeof(char));
  EXPECT_EQ(l.code_firstlineno, offsetof(PyCodeObject, co_firstlineno));
  EXPECT_EQ(l.code_filename, offsetof(PyCodeObject, co_filename));
  EXPECT_EQ(l.code_qualname, offsetof(PyCodeObject, co_qualname));
  EXPECT_EQ(l.code_linetable, offsetof(PyCodeObject, co_linetable));
  EXPECT_EQ(l.code_code_adaptive, offsetof(PyCodeObject, co_code_adaptive));
  EXPECT_EQ(l.unicode_length, offsetof(PyASCIIObject, length));
  EXPECT_EQ(l.unicode_state, offsetof(PyASCIIObject, state));
  EXPECT_EQ(l.ascii_data, sizeof(PyASCIIObject));
  EXPECT_EQ(l.compact_data, sizeof(PyCompactUnicodeObject));
  EXPECT_EQ(l.bytes_sval, offsetof(PyBytesObject, ob_sval));
  EXPECT_EQ(l.tstate_interp, offsetof(PyThreadState, interp));
  EXPECT_EQ(l.tstate_native_thread_id, offsetof(PyThreadState, native_thread_id));
  EXPECT_EQ(l.runtime_gil, sw_py311_runtime_gil);
  EXPECT_EQ(l.runtime_finalizing, sw_py311_runtime_finalizing);
  EXPECT_EQ(l.gil_last_holder, sw_py311_gil_last_holder);
  EXPECT_EQ(l.gil_locked, sw_py311_gil_locked);
  EXPECT_EQ(l.gil_size, sw_py311_gil_size);
  EXPECT_EQ(kFrameOwnedByThread, FRAME_OWNED_BY_THREAD);
  EXPECT_EQ(kFrameOwnedByGenerator, FRAME_OWNED_BY_GENERATOR);
  EXPECT_EQ(sizeof(_Py_CODEUNIT), 2u);
  EXPECT_EQ(sizeof(Py_ssize_t), 8u);
}

TEST(PythonFrameLayout, TheStateBitsAreWhereTheDecoderLooks) {
  PyASCIIObject o;
  std::memset(&o, 0, sizeof(o));
  o.state.kind = PyUnicode_2BYTE_KIND;
  o.state.compact = 1;
  o.state.ready = 1;
  uint32_t word = 0;
  std::memcpy(&word, reinterpret_cast<const char*>(&o) + kPy311Layout.unicode_state, sizeof(word));
  const std::vector<uint8_t> ucs2 = {'o', 0, 'k', 0};
  std::string out;
  ASSERT_TRUE(PyCompactStringToUtf8(word, ucs2, 2, &out)) << std::hex << word;
  EXPECT_EQ(out, "ok");
  o.state.kind = PyUnicode_1BYTE_KIND;
  o.state.ascii = 1;
  std::memcpy(&word, reinterpret_cast<const char*>(&o) + kPy311Layout.unicode_state, sizeof(word));
  const std::vector<uint8_t> ascii = {'o', 'k'};
  ASSERT_TRUE(PyCompactStringToUtf8(word, ascii, 2, &out)) << std::hex << word;
  o.state.compact = 0;
  std::memcpy(&word, reinterpret_cast<const char*>(&o) + kPy311Layout.unicode_state, sizeof(word));
  EXPECT_FALSE(PyCompactStringToUtf8(word, ascii, 2, &out));
}

}  // namespace
}  // namespace stallwatch::agent::internal
