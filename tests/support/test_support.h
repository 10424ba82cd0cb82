#pragma once
// Helpers shared by the test programs: a free loopback port, polling for a condition, and
// running a command bounded in time.

#include <chrono>
#include <functional>
#include <string>

namespace stallwatch::testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int FreeLoopbackPort();

// Waits until pred() holds, polling every `poll`, for at most `timeout`; the last result of
// pred() (checked once more after the deadline).
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
             std::chrono::milliseconds poll = std::chrono::milliseconds(50));

// What a shell command printed (stdout and stderr together) and its exit code (-1 when it did
// not exit normally or could not be started).
struct CommandResult {
  int code = -1;
  std::string out;
};

// Runs `command` (a shell command line or script) in sh, ended by timeout(1) after `limit`
// (exit code 124 then).
CommandResult RunCommand(const std::string& command,
                         std::chrono::seconds limit = std::chrono::seconds(60));

}  // namespace stallwatch::testing
