/* The offsets of the GIL's state in CPython 3.11's runtime, as the interpreter was compiled: its
 * internal atomics header is C11 only, so these are taken in C and compared in
 * python_layout_test.cc. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_gil.h>
#include <internal/pycore_runtime.h>
#include <stddef.h>

const size_t sw_py311_runtime_gil = offsetof(_PyRuntimeState, ceval.gil);
const size_t sw_py311_runtime_finalizing = offsetof(_PyRuntimeState, _finalizing);
const size_t sw_py311_gil_last_holder = offsetof(struct _gil_runtime_state, last_holder);
const size_t sw_py311_gil_locked = offsetof(struct _gil_runtime_state, locked);
const size_t sw_py311_gil_size = sizeof(struct _gil_runtime_state);
