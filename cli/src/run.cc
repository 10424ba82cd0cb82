#include "run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "stallwatch/common/defaults.h"
#include "stallwatch/common/duration.h"

namespace stallwatch::cli {

bool Readable(const std::string& p) { return !p.empty() && access(p.c_str(), R_OK) == 0; }

std::string ExeDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) {
    return "";
  }
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

StatusOr<std::string> FindPreload(const RunOptions& opts) {
  if (!opts.preload.empty()) {
    if (Readable(opts.preload)) {
      return opts.preload;
    }
    return NotFoundError("--preload " + opts.preload + ": no such readable file");
  }
  std::vector<std::string> tried;
  if (const char* env = std::getenv("STALLWATCH_PRELOAD"); env != nullptr && *env != '\0') {
    tried.push_back(env);
  }
  const std::string dir = ExeDir();
  tried.push_back(dir + "/" SW_PRELOAD_FROM_BINDIR);
  tried.push_back(SW_PRELOAD_BUILD_PATH);
  std::string looked;
  for (const auto& p : tried) {
    if (Readable(p)) {
      return p;
    }
    looked += (looked.empty() ? "" : ", ") + p;
  }
  return NotFoundError("libstallwatch_preload.so not found (looked at " + looked +
                       "); give its path with --preload or STALLWATCH_PRELOAD");
}

namespace {
// The agent's side of the notification: agent/src/reporter.h, kRunNotifyEnv.
constexpr const char* kRunNotifyEnv = "STALLWATCH_RUN_NOTIFY";
constexpr const char* kNoLoopAfterEnv = "STALLWATCH_RUN_NO_LOOP_AFTER";
constexpr std::chrono::seconds kNoLoopAfter{10};
constexpr int kForwarded[] = {SIGTERM, SIGINT,  SIGHUP,   SIGQUIT,
                              SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

std::string Where(const std::string& endpoint) {
  if (endpoint == "off") {
    return "nowhere (--endpoint off)";
  }
  if (endpoint == "stderr") {
    return "stderr (JSON lines)";
  }
  if (endpoint.rfind("file:", 0) == 0) {
    return endpoint + " (JSON lines; stallwatch stalls --file)";
  }
  return "stallwatchd at " + endpoint + " (stallwatch top, stallwatch stalls)";
}

// An abstract datagram socket only this run knows the name of; -1 if none could be made (the
// run goes on without the "no loop seen" line).
int NotifySocket(std::string* name) {
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "stallwatch-run-%d-%08x%08x", static_cast<int>(getpid()), rd(),
                rd());
  *name = buf;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path + 1, name->data(), name->size());
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name->size())) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// One line per loop the agent of the program (or of a child it forked) attached to, from its
// datagram "PID LOOP\tWHAT" (agent/src/reporter.cc). Control characters are not printed.
void PrintAttached(const std::string& msg) {
  std::string clean;
  for (char c : msg) {
    clean += (static_cast<unsigned char>(c) < 0x20 && c != '\t') ? '?' : c;
  }
  const size_t space = clean.find(' ');
  if (space == std::string::npos) {
    return;
  }
  const size_t tab = clean.find('\t', space);
  const std::string pid = clean.substr(0, space);
  const std::string loop =
      clean.substr(space + 1, tab == std::string::npos ? std::string::npos : tab - space - 1);
  const std::string what = tab == std::string::npos ? "" : clean.substr(tab + 1);
  std::fprintf(stderr, "stallwatch run: watching loop '%s' of pid %s%s\n", loop.c_str(),
               pid.c_str(), what.empty() ? "" : (" (" + what + ")").c_str());
}

std::string Quoted(const std::vector<std::string>& command) {
  std::string s;
  for (const auto& a : command) {
    s += (s.empty() ? "" : " ") + a;
  }
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

}  // namespace

int RunUnderShim(const RunOptions& opts, const std::vector<std::string>& command) {
  if (command.empty()) {
    std::fprintf(stderr,
                 "stallwatch run: no program given: stallwatch run [OPTIONS] -- PROGRAM "
                 "[ARGS...]\n");
    return 2;
  }
  auto preload = FindPreload(opts);
  if (!preload.ok()) {
    std::fprintf(stderr, "stallwatch run: %s\n", preload.status().message().c_str());
    return 127;
  }
  std::chrono::nanoseconds no_loop_after = kNoLoopAfter;
  if (const char* v = std::getenv(kNoLoopAfterEnv); v != nullptr && *v != '\0') {
    auto d = ParseDuration(v);
    if (!d.ok() || d->count() <= 0) {
      std::fprintf(stderr, "stallwatch run: bad %s '%s': expected a duration such as 10s\n",
                   kNoLoopAfterEnv, v);
      return 2;
    }
    no_loop_after = *d;
  }
  std::string ld = *preload;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') {
    ld += std::string(" ") + old;
  }
  setenv("LD_PRELOAD", ld.c_str(), 1);
  auto set = [](const char* var, const std::string& v) {
    if (!v.empty()) {
      setenv(var, v.c_str(), 1);
    }
  };
  set("STALLWATCH_SERVICE", opts.service);
  set("STALLWATCH_THRESHOLD", opts.threshold);
  set("STALLWATCH_ENDPOINT", opts.endpoint);
  set("STALLWATCH_SAMPLING", opts.sampling);
  std::string endpoint{defaults::kAgentEndpoint};
  if (const char* e = std::getenv("STALLWATCH_ENDPOINT"); e != nullptr && *e != '\0') {
    endpoint = e;
  }
  std::string notify_name;
  const int notify = NotifySocket(&notify_name);
  if (notify >= 0) {
    setenv(kRunNotifyEnv, notify_name.c_str(), 1);
  }

  // Signals are taken through a signalfd from here on; the child gets the old mask back.
  sigset_t mask, old_mask;
  sigemptyset(&mask);
  for (int sig : kForwarded) {
    sigaddset(&mask, sig);
  }
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, &old_mask);
  const int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  // The child reports a failed exec through this pipe; a successful one closes it (O_CLOEXEC).
  int exec_pipe[2] = {-1, -1};
  if (sfd < 0 || pipe2(exec_pipe, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "stallwatch run: cannot set up: %s\n", std::strerror(errno));
    return 127;
  }
  std::vector<char*> argv;
  argv.reserve(command.size() + 1);
  for (const auto& a : command) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  const pid_t child = fork();
  if (child < 0) {
    std::fprintf(stderr, "stallwatch run: fork: %s\n", std::strerror(errno));
    return 127;
  }
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    signal(SIGPIPE, SIG_DFL);  // stallwatch ignores it; the program gets the default back
    execvp(argv[0], argv.data());
    const int e = errno;
    (void)!write(exec_pipe[1], &e, sizeof(e));
    _exit(127);
  }
  close(exec_pipe[1]);
  int exec_errno = 0;
  ssize_t got;
  do {
    got = read(exec_pipe[0], &exec_errno, sizeof(exec_errno));
  } while (got < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (got == static_cast<ssize_t>(sizeof(exec_errno))) {
    waitpid(child, nullptr, 0);
    std::fprintf(stderr, "stallwatch run: cannot run '%s': %s\n", command[0].c_str(),
                 std::strerror(exec_errno));
    return 127;
  }
  std::fprintf(stderr,
               "stallwatch run: watching every event loop of '%s' (pid %d); findings go to %s\n",
               Quoted(command).c_str(), static_cast<int>(child), Where(endpoint).c_str());

  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + no_loop_after;
  bool loop_seen = notify < 0;  // no socket: say nothing rather than something wrong
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(child, &status, WNOHANG);
    if (r == child) {
      if (notify >= 0) {
        close(notify);
      }
      close(sfd);
      if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
      }
      if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
      }
      return 1;
    }
    int timeout_ms = -1;
    if (!loop_seen) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        loop_seen = true;
        std::fprintf(stderr,
                     "stallwatch run: no event loop seen in '%s' after %.0f s: it may not have "
                     "started one yet, or not wait in epoll (libevent and epoll loops are "
                     "watched), or be static or setuid (LD_PRELOAD does not reach those)\n",
                     command[0].c_str(), std::chrono::duration<double>(no_loop_after).count());
        continue;
      }
      timeout_ms = static_cast<int>(left);
    }
    pollfd fds[2] = {{sfd, POLLIN, 0}, {notify, POLLIN, 0}};
    const int n = poll(fds, notify >= 0 ? 2 : 1, timeout_ms);
    if (n < 0 && errno != EINTR) {
      break;
    }
    if (notify >= 0 && (fds[1].revents & POLLIN) != 0) {
      char buf[512];
      ssize_t got_n = 0;
      while ((got_n = recv(notify, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
        loop_seen = true;
        PrintAttached(std::string(buf, static_cast<size_t>(got_n)));
      }
    }
    if ((fds[0].revents & POLLIN) != 0) {
      signalfd_siginfo si{};
      while (read(sfd, &si, sizeof(si)) == static_cast<ssize_t>(sizeof(si))) {
        if (si.ssi_signo == SIGCHLD) {
          continue;
        }
        // A signal the terminal sent to the foreground process group reached the program too.
        const bool from_process =
            si.ssi_code == SI_USER || si.ssi_code == SI_QUEUE || si.ssi_code == SI_TKILL;
        if (from_process && static_cast<pid_t>(si.ssi_pid) != child) {
          kill(child, static_cast<int>(si.ssi_signo));
        }
      }
    }
  }
  // poll failed: wait for the program without watching.
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace stallwatch::cli
