// The Python frame reader inside the process that runs Python (as the preloaded agent is): an
// embedded CPython 3.11 churns frames on a thread of its own while this thread, without the GIL,
// reads that thread's stack through the runtime found with dlsym. Plain pointer reads of the
// same frames crashed a host; these must never crash and never name what the thread does not run.
// Python.h first: it sets feature macros that system headers must see.
#include <Python.h>
// clang-format off: Python.h must stay first
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "python_frames.h"
// clang-format on

// CPython leaves some of its own allocations at Py_FinalizeEx by design; LeakSanitizer (the
// CI's ASan run) is told to ignore what libpython allocated, and only that. The name is the
// sanitizer runtime's hook.
// NOLINTNEXTLINE(bugprone-reserved-identifier)
extern "C" __attribute__((visibility("default"), used)) const char* __lsan_default_suppressions() {
  return "leak:libpython3.11.so\n";
}

namespace stallwatch::agent {
namespace {

constexpr const char* kScriptPath = "/srv/app/embedded_churn.py";
constexpr const char* kScript = R"(import ctypes, threading, time
api = ctypes.pythonapi
api.PyGILState_GetThisThreadState.restype = ctypes.c_void_p
state = {"stop": False}

def recurse(n):
    if n == 0:
        return leaf()
    return recurse(n - 1)

def leaf():
    d = {i: [i] * 3 for i in range(20)}
    return len(d)

def gen(n):
    for i in range(n):
        yield i

def fail():
    raise ValueError("churn")

def catch():
    try:
        fail()
    except ValueError:
        return 1

def churn():
    state["tstate"] = api.PyGILState_GetThisThreadState()
    while not state["stop"]:
        recurse(50)
        sum(gen(20))
        catch()
        list(range(100))

worker = threading.Thread(target=churn, daemon=True)
worker.start()
while "tstate" not in state:
    time.sleep(0.001)
)";

// Runs `code` in __main__; true if it raised nothing.
bool RunPython(const char* code, const char* filename) {
  PyObject* main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
  PyObject* compiled = Py_CompileString(code, filename, Py_file_input);
  if (compiled == nullptr) {
    PyErr_Print();
    return false;
  }
  PyObject* result = PyEval_EvalCode(compiled, main_dict, main_dict);
  Py_DECREF(compiled);
  if (result == nullptr) {
    PyErr_Print();
    return false;
  }
  Py_DECREF(result);
  return true;
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

uint64_t WorkerThreadState() {
  PyObject* main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
  PyObject* state = PyDict_GetItemString(main_dict, "state");
  PyObject* tstate = state != nullptr ? PyDict_GetItemString(state, "tstate") : nullptr;
  return tstate != nullptr ? PyLong_AsUnsignedLongLong(tstate) : 0;
}

TEST(PythonFramesOwnProcess, AChurningThreadOfThisProcessIsReadWithoutTheGil) {
  Py_InitializeEx(0);
  ASSERT_TRUE(RunPython(kScript, kScriptPath));
  const uint64_t tstate = WorkerThreadState();
  ASSERT_NE(tstate, 0u);
  PyThreadState* saved = PyEval_SaveThread();  // the worker runs from here on

  const auto reader = PythonFrameReader::ForProcess(getpid());
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ(reader->addrs().code_type, reinterpret_cast<uint64_t>(&PyCode_Type));
  EXPECT_EQ(reader->addrs().unicode_type, reinterpret_cast<uint64_t>(&PyUnicode_Type));
  EXPECT_EQ(reader->addrs().version_hex, static_cast<uint32_t>(Py_Version));

  const std::set<std::string> script_names = {
      "recurse", "leaf", "leaf.<locals>.<dictcomp>", "gen", "fail", "catch", "churn"};
  const std::set<std::string> threading_names = {"Thread._bootstrap", "Thread._bootstrap_inner",
                                                 "Thread.run"};
  // 2000 reads, or as many as 5 s allow (sanitizer builds on two busy cores read ~10x slower).
  // The stress run of bench/scripts/python_frames.py asks for more: SW_PY_READS reads within
  // SW_PY_READ_SECONDS.
  const int reads_wanted = EnvInt("SW_PY_READS", 2000);
  const auto read_budget = std::chrono::seconds(EnvInt("SW_PY_READ_SECONDS", 5));
  constexpr int kMinReads = 200;
  int ok = 0;
  int errors = 0;
  int whole = 0;  // ending in threading's Thread._bootstrap
  size_t deepest = 0;
  std::vector<int64_t> read_ns;
  read_ns.reserve(static_cast<size_t>(reads_wanted));
  const auto t0 = std::chrono::steady_clock::now();
  int reads = 0;
  for (int i = 0; i < reads_wanted && std::chrono::steady_clock::now() - t0 < read_budget; ++i) {
    ++reads;
    const auto r0 = std::chrono::steady_clock::now();
    const auto stack = reader->Read(tstate);
    read_ns.push_back(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - r0)
            .count());
    if (!stack.ok()) {
      ++errors;
      continue;
    }
    ++ok;
    for (const auto& f : *stack) {
      if (script_names.count(f.qualname) == 1) {
        ASSERT_EQ(f.filename, kScriptPath) << "read " << i;
      } else {
        ASSERT_TRUE(threading_names.count(f.qualname) == 1)
            << "read " << i << ": '" << f.qualname << "' " << f.filename;
        ASSERT_NE(f.filename.find("threading.py"), std::string::npos) << f.filename;
      }
      ASSERT_GE(f.line, 0);
    }
    if (!stack->empty() && stack->back().qualname == "Thread._bootstrap") {
      ++whole;
    }
    deepest = std::max(deepest, stack->size());
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::sort(read_ns.begin(), read_ns.end());
  const auto pct = [&](double p) {
    return read_ns.empty()
               ? 0.0
               : static_cast<double>(
                     read_ns[static_cast<size_t>(p * static_cast<double>(read_ns.size() - 1))]) /
                     1000.0;
  };
  std::printf(
      "torn reads (own process): %d of %d ok (%d whole, deepest %zu frames), %d errors, 0 wrong "
      "names, in %lld ms; read p50 %.1f us, p99 %.1f us\n",
      ok, reads, whole, deepest, errors, static_cast<long long>(ms), pct(0.5), pct(0.99));
  EXPECT_GE(reads, kMinReads);
  EXPECT_GE(ok, reads / 2);
  EXPECT_GT(deepest, 50u);

  PyEval_RestoreThread(saved);
  EXPECT_TRUE(RunPython("state['stop'] = True\nworker.join()\n", "<stop>"));
  EXPECT_EQ(Py_FinalizeEx(), 0);
}

}  // namespace
}  // namespace stallwatch::agent
