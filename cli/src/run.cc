#include "run.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace stallwatch::cli {
namespace {

bool Readable(const std::string& p) { return !p.empty() && access(p.c_str(), R_OK) == 0; }

std::string ExeDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

}  // namespace

StatusOr<std::string> FindPreload(const RunOptions& opts) {
  if (!opts.preload.empty()) {
    if (Readable(opts.preload)) return opts.preload;
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
    if (Readable(p)) return p;
    looked += (looked.empty() ? "" : ", ") + p;
  }
  return NotFoundError("libstallwatch_preload.so not found (looked at " + looked +
                       "); give its path with --preload or STALLWATCH_PRELOAD");
}

Status ExecUnderShim(const RunOptions& opts, const std::vector<std::string>& command) {
  if (command.empty()) {
    return InvalidArgumentError("no program given: stallwatch run [OPTIONS] -- PROGRAM [ARGS...]");
  }
  auto preload = FindPreload(opts);
  if (!preload.ok()) return preload.status();
  std::string ld = *preload;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && *old != '\0') {
    ld += std::string(" ") + old;
  }
  setenv("LD_PRELOAD", ld.c_str(), 1);
  auto set = [](const char* var, const std::string& v) {
    if (!v.empty()) setenv(var, v.c_str(), 1);
  };
  set("STALLWATCH_SERVICE", opts.service);
  set("STALLWATCH_THRESHOLD", opts.threshold);
  set("STALLWATCH_ENDPOINT", opts.endpoint);
  set("STALLWATCH_SAMPLING", opts.sampling);
  std::vector<char*> argv;
  for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  return NotFoundError("cannot run '" + command[0] + "': " + std::strerror(errno));
}

}  // namespace stallwatch::cli
