// The stallwatchd binary: --version and --help exit 0, a bad flag exits 2 after one line, and a
// config file (--config) with an unknown or misspelled key is refused naming file and line,
// while the shipped config and a config of known keys are accepted.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "test_support.h"

namespace {

using Result = stallwatch::testing::CommandResult;

// Runs the daemon bounded in time: one that wrongly starts is ended after 10 s (124).
Result Stallwatchd(const std::string& args) {
  return stallwatch::testing::RunCommand(std::string("exec ") + SW_STALLWATCHD_BIN + " " + args,
                                         std::chrono::seconds(10));
}

size_t Lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) {
    n += c == '\n' ? 1 : 0;
  }
  return n;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/stallwatchd-binary-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& text) const {
    std::string file = path_ + "/" + name;
    std::ofstream(file) << text;
    return file;
  }

 private:
  std::string path_;
};

// A config that would start a daemon on private addresses, so a key that is wrongly ignored
// cannot touch the system's socket.
std::string PrivateAddresses(const TempDir& dir) {
  return "agent-socket = \"" + dir.path() + "/agent.sock\"\nhttp-listen = \"127.0.0.1:" +
         std::to_string(stallwatch::testing::FreeLoopbackPort()) + "\"\n";
}

TEST(StallwatchdBinary, VersionAndHelpExit0) {
  Result r = Stallwatchd("--version");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("stallwatchd ", 0), 0u) << r.out;
  EXPECT_EQ(Lines(r.out), 1u) << r.out;
  r = Stallwatchd("--help");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--version"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--config"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--max-stack-records-mib"), std::string::npos) << r.out;
}

TEST(StallwatchdBinary, BadFlagsGiveOneLineAndExit2) {
  struct Case {
    const char* args;
    const char* says;
  } cases[] = {
      {"--http-lisen 127.0.0.1:1", "--http-lisen"},
      {"--log-level loud", "--log-level"},
      {"--max-agents 0", "--max-agents"},
      {"--frame-timeout 0s", "--frame-timeout"},
      {"--expire-after soon", "--expire-after"},
      {"--agent-socket", "--agent-socket"},
      {"--config /nonexistent/stallwatchd.conf", "/nonexistent/stallwatchd.conf"},
      {"--agent-socket-mode 999", "--agent-socket-mode"},
      {"--max-stack-records 0", "--max-stack-records"},
      {"--max-stack-records-mib 0", "--max-stack-records-mib"},
  };
  for (const auto& c : cases) {
    const Result r = Stallwatchd(c.args);
    EXPECT_EQ(r.code, 2) << c.args << ":\n" << r.out;
    EXPECT_NE(r.out.find(c.says), std::string::npos) << c.args << ":\n" << r.out;
    // The error, then CLI11's "Run with --help for more information."
    EXPECT_LE(Lines(r.out), 2u) << c.args << ":\n" << r.out;
  }
}

TEST(StallwatchdBinary, ConfigWithAnUnknownKeyIsRefusedNamingTheLine) {
  TempDir dir;
  const std::string file = dir.Write(
      "typo.conf", "# stallwatchd\n" + PrivateAddresses(dir) + "http-lisen = \"0.0.0.0:9466\"\n");
  Result r = Stallwatchd("--config " + file);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out.rfind("stallwatchd: config " + file + ":4: unknown key 'http-lisen' (", 0), 0u)
      << r.out;
  EXPECT_NE(r.out.find("did you mean 'http-listen'?"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("known: agent-listen, agent-socket, "), std::string::npos) << r.out;
  EXPECT_EQ(Lines(r.out), 1u) << r.out;

  // A key without a value (INI flag form), and a quoted key.
  const std::string flag = dir.Write("flag.conf", PrivateAddresses(dir) + "\n; comment\nverbose\n");
  r = Stallwatchd("--config " + flag);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(flag + ":5: unknown key 'verbose'"), std::string::npos) << r.out;
  const std::string quoted =
      dir.Write("quoted.conf", "\"max-agent\" = 10\n" + PrivateAddresses(dir));
  r = Stallwatchd("--config " + quoted);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(quoted + ":1: unknown key 'max-agent' (did you mean 'max-agents'?"),
            std::string::npos)
      << r.out;

  // A section would make CLI11 look for keys named section.key: refused as such.
  const std::string section = dir.Write("section.conf", PrivateAddresses(dir) + "[daemon]\n");
  r = Stallwatchd("--config " + section);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(section + ":3: unknown section '[daemon]'"), std::string::npos) << r.out;
}

TEST(StallwatchdBinary, ShippedConfigHasOnlyKnownKeys) {
  // The shipped file with a misspelled key appended: the error names the appended line, so every
  // line before it was accepted.
  std::ifstream in(SW_SHIPPED_CONFIG);
  ASSERT_TRUE(in) << SW_SHIPPED_CONFIG;
  std::stringstream shipped;
  shipped << in.rdbuf();
  const size_t lines = Lines(shipped.str());
  TempDir dir;
  const std::string file = dir.Write(
      "stallwatchd.conf", shipped.str() + PrivateAddresses(dir) + "log_level = \"info\"\n");
  const Result r = Stallwatchd("--config " + file);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out.rfind("stallwatchd: config " + file + ":" + std::to_string(lines + 3) +
                            ": unknown key 'log_level' (did you mean 'log-level'?",
                        0),
            0u)
      << r.out;
}

TEST(StallwatchdBinary, ConfigOfKnownKeysStarts) {
  TempDir dir;
  const std::string socket = dir.path() + "/agent.sock";
  const std::string good = dir.Write(
      "good.conf",
      "# comment\n[default]\n" + PrivateAddresses(dir) +
          "max-agents = 16\nlog-level = \"warn\"  # inline comment\nexpire-after = \"1m\"\n");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(SW_STALLWATCHD_BIN, SW_STALLWATCHD_BIN, "--config", good.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Started when the socket the config names exists; a refused config would have exited.
  bool started = false;
  int status = 0;
  for (int i = 0; i < 200 && !started; ++i) {
    struct stat st {};
    started = stat(socket.c_str(), &st) == 0;
    if (!started && waitpid(pid, &status, WNOHANG) == pid) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!started) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "stallwatchd did not start with " << good << " (status " << status << ")";
  }
  kill(pid, SIGTERM);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
