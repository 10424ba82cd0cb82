// The Python frame reader (agent/src/python_frames.h) on real /usr/bin/python3 (3.11)
// processes: a thread blocked in time.sleep under two Python calls, and a thread that churns
// frames (recursion, generators, exceptions, allocation) while it is read as fast as possible.
// Each script prints its thread state's address and its runtime's addresses, then runs.
#include "python_frames.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace stallwatch::agent {
namespace {

constexpr const char* kPython = "/usr/bin/python3";

// Printed first by every script: "TSTATE VERSION &Py_Version &PyCode_Type &PyUnicode_Type
// &PyBytes_Type" in decimal.
constexpr const char* kPrologue = R"(import ctypes, sys, time
api = ctypes.pythonapi
api.PyGILState_GetThisThreadState.restype = ctypes.c_void_p
def _addr(name):
    return ctypes.addressof(ctypes.c_char.in_dll(api, name))
def announce():
    print(api.PyGILState_GetThisThreadState(), ctypes.c_ulong.in_dll(api, 'Py_Version').value,
          _addr('Py_Version'), _addr('PyCode_Type'), _addr('PyUnicode_Type'),
          _addr('PyBytes_Type'), flush=True)
)";

constexpr const char* kBlockedBody = R"(
class Handler:
    def get(self):
        inner()

def inner():
    announce()
    time.sleep(30)  # the sleep line

Handler().get()
)";

constexpr const char* kChurnBody = R"(
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

def main():
    announce()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recurse(50)
        sum(gen(20))
        catch()
        list(range(100))

main()
)";

struct Child {
  pid_t pid = -1;
  std::string script;
  uint64_t tstate = 0;
  PythonRuntimeAddrs addrs;
  uint64_t py_version_addr = 0;

  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (!script.empty()) {
      ::unlink(script.c_str());
    }
  }
};

// Starts kPython on the script and reads its first line (at most 10 s).
::testing::AssertionResult Start(const std::string& body, Child* c) {
  char path[] = "/tmp/sw_pyframes_XXXXXX.py";
  const int fd = ::mkstemps(path, 3);
  if (fd < 0) {
    return ::testing::AssertionFailure() << "mkstemps";
  }
  ::close(fd);
  c->script = path;
  std::ofstream(c->script) << kPrologue << body;
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    return ::testing::AssertionFailure() << "pipe";
  }
  c->pid = ::fork();
  if (c->pid == 0) {
    ::dup2(out[1], 1);
    ::execl(kPython, kPython, c->script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) {
      continue;
    }
    char buf[256];
    const ssize_t n = ::read(out[0], buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    line.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  std::istringstream in(line);
  unsigned long long version = 0;
  in >> c->tstate >> version >> c->py_version_addr >> c->addrs.code_type >> c->addrs.unicode_type >>
      c->addrs.bytes_type;
  c->addrs.version_hex = static_cast<uint32_t>(version);
  if (!in || c->tstate == 0) {
    return ::testing::AssertionFailure() << "the script printed '" << line << "'";
  }
  return ::testing::AssertionSuccess();
}

int LineOf(const std::string& script, const std::string& needle) {
  std::ifstream in(script);
  std::string text;
  for (int n = 1; std::getline(in, text); ++n) {
    if (text.find(needle) != std::string::npos) {
      return n;
    }
  }
  return -1;
}

TEST(PythonFramesRemote, ABlockedThreadsStackIsReadInnermostFirst) {
  Child c;
  ASSERT_TRUE(Start(kBlockedBody, &c));
  ASSERT_EQ(c.addrs.version_hex >> 16, 0x030Bu) << std::hex << c.addrs.version_hex;
  const auto reader = PythonFrameReader::ForProcess(c.pid, c.addrs);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  // The thread reaches time.sleep right after it printed.
  StatusOr<std::vector<PyFrameInfo>> stack = InternalError("not read");
  for (int i = 0; i < 100; ++i) {
    stack = reader->Read(c.tstate);
    if (stack.ok() && stack->size() == 3 && (*stack)[0].line == LineOf(c.script, "sleep line")) {
      break;
    }
    ::usleep(20'000);
  }
  ASSERT_TRUE(stack.ok()) << stack.status().ToString();
  ASSERT_EQ(stack->size(), 3u);
  EXPECT_EQ((*stack)[0].qualname, "inner");
  EXPECT_EQ((*stack)[0].filename, c.script);
  EXPECT_EQ((*stack)[0].line, LineOf(c.script, "sleep line"));
  EXPECT_EQ((*stack)[1].qualname, "Handler.get");
  EXPECT_EQ((*stack)[1].line, LineOf(c.script, "        inner()"));
  EXPECT_EQ((*stack)[2].qualname, "<module>");
  EXPECT_EQ((*stack)[2].line, LineOf(c.script, "Handler().get()"));
  EXPECT_EQ((*stack)[2].filename, c.script);
  // 3.11 runs Python-to-Python calls in the same C call of the interpreter: only the module's
  // frame, which the C code entered, is an entry frame.
  EXPECT_FALSE((*stack)[0].entry);
  EXPECT_FALSE((*stack)[1].entry);
  EXPECT_TRUE((*stack)[2].entry);
}

TEST(PythonFramesRemote, TheRuntimesAddressesAreFoundFromItsElfSymbols) {
  Child c;
  ASSERT_TRUE(Start(kBlockedBody, &c));
  const auto reader = PythonFrameReader::ForProcess(c.pid);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ(reader->addrs().version_hex, c.addrs.version_hex);
  EXPECT_EQ(reader->addrs().code_type, c.addrs.code_type);
  EXPECT_EQ(reader->addrs().unicode_type, c.addrs.unicode_type);
  EXPECT_EQ(reader->addrs().bytes_type, c.addrs.bytes_type);
  const auto stack = reader->Read(c.tstate);
  ASSERT_TRUE(stack.ok()) << stack.status().ToString();
  ASSERT_FALSE(stack->empty());
  EXPECT_EQ(stack->back().qualname, "<module>");
}

TEST(PythonFramesRemote, GarbageAddressesInARealProcessAreErrors) {
  Child c;
  ASSERT_TRUE(Start(kBlockedBody, &c));
  const auto reader = PythonFrameReader::ForProcess(c.pid, c.addrs);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  for (uint64_t addr :
       {uint64_t{0}, uint64_t{0x1000}, c.addrs.code_type, c.py_version_addr, c.tstate + 8}) {
    const auto stack = reader->Read(addr);
    EXPECT_TRUE(!stack.ok() || stack->empty()) << std::hex << addr;
  }
}

TEST(PythonFramesRemote, ARunningThreadIsReadTornButNeverWrong) {
  Child c;
  ASSERT_TRUE(Start(kChurnBody, &c));
  const auto reader = PythonFrameReader::ForProcess(c.pid, c.addrs);
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  // "announce": the first reads may find the thread still returning from it.
  const std::set<std::string> names = {"recurse", "leaf",     "leaf.<locals>.<dictcomp>",
                                       "gen",     "fail",     "catch",
                                       "main",    "announce", "<module>"};
  int lines = 0;
  {
    std::ifstream in(c.script);
    for (std::string l; std::getline(in, l);) {
      ++lines;
    }
  }
  // 2000 reads, or as many as 5 s allow (sanitizer builds on two busy cores read ~10x slower).
  constexpr int kReads = 2000;
  constexpr auto kReadBudget = std::chrono::seconds(5);
  constexpr int kMinReads = 200;
  int ok = 0;
  int errors = 0;
  int whole = 0;  // ending in <module>
  size_t deepest = 0;
  const auto t0 = std::chrono::steady_clock::now();
  int reads = 0;
  for (int i = 0; i < kReads && std::chrono::steady_clock::now() - t0 < kReadBudget; ++i) {
    ++reads;
    const auto stack = reader->Read(c.tstate);
    if (!stack.ok()) {
      ++errors;
      continue;
    }
    ++ok;
    for (const auto& f : *stack) {
      ASSERT_TRUE(names.count(f.qualname) == 1) << "read " << i << ": '" << f.qualname << "'";
      ASSERT_EQ(f.filename, c.script) << "read " << i;
      ASSERT_TRUE(f.line >= 0 && f.line <= lines) << f.qualname << ":" << f.line;
    }
    if (!stack->empty() && stack->back().qualname == "<module>") {
      ++whole;
      ASSERT_GE(stack->size(), 2u);
      EXPECT_EQ((*stack)[stack->size() - 2].qualname, "main") << "read " << i;
    }
    deepest = std::max(deepest, stack->size());
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("torn reads: %d of %d ok (%d whole, deepest %zu frames), %d errors, in %lld ms\n", ok,
              reads, whole, deepest, errors, static_cast<long long>(ms));
  int status = 0;
  EXPECT_EQ(::waitpid(c.pid, &status, WNOHANG), 0) << "the child died";
  EXPECT_GE(reads, kMinReads);
  EXPECT_GE(ok, reads / 2);
  EXPECT_GT(deepest, 50u);  // recursion to depth 50 was seen
}

}  // namespace
}  // namespace stallwatch::agent
