#pragma once
// Small helpers shared by the agent benchmarks: clocks, /proc readers, statistics, flags.
// Benchmark code only; not part of the product. Everything here is single-threaded unless said.

#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "stallwatch/common/clock.h"

namespace stallwatch::bench {

// The 1-minute load average, or -1.
inline double LoadAvg1() {
  std::ifstream f("/proc/loadavg");
  double l = -1;
  f >> l;
  return l;
}

inline std::string LoadAvgLine() {
  std::ifstream f("/proc/loadavg");
  std::string s;
  std::getline(f, s);
  return s;
}

// Spins on the monotonic clock for `ns`; returns the measured [start, end) span in ns.
inline int64_t SpinFor(int64_t ns, int64_t* start_out = nullptr) {
  const int64_t start = MonotonicNanos();
  int64_t now = start;
  while (now - start < ns) {
    now = MonotonicNanos();
  }
  if (start_out) {
    *start_out = start;
  }
  return now - start;
}

template <typename T>
T Percentile(std::vector<T> v, double q) {
  if (v.empty()) {
    return T{};
  }
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(std::llround(q * (v.size() - 1))));
  return v[i];
}

template <typename T>
T Median(std::vector<T> v) {
  return Percentile(std::move(v), 0.5);
}

// Value of a "Key:   N kB" line of /proc/self/status, in kB, or -1.
inline long StatusKb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') {
      return std::strtol(line.c_str() + n + 1, nullptr, 10);
    }
  }
  return -1;
}

// Cumulative on-CPU time of a thread of this process (first field of schedstat), ns, or -1.
inline int64_t ThreadRunNs(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/schedstat");
  long long run = -1;
  f >> run;
  return run;
}

inline std::vector<pid_t> ThreadIds() {
  std::vector<pid_t> out;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') {
        out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
      }
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// --name=value / --name value flags; returns def when absent.
inline std::string Flag(int argc, char** argv, const std::string& name, const std::string& def) {
  const std::string eq = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.compare(0, eq.size(), eq) == 0) {
      return a.substr(eq.size());
    }
    if (a == "--" + name && i + 1 < argc) {
      return argv[i + 1];
    }
  }
  return def;
}

inline std::vector<double> ParseList(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) {
      out.push_back(std::atof(item.c_str()));
    }
  }
  return out;
}

inline void PrintHeader(const char* what) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::printf("# %s  host=%s  ncpu=%ld  loadavg=%s\n", what, host, sysconf(_SC_NPROCESSORS_ONLN),
              LoadAvgLine().c_str());
}

}  // namespace stallwatch::bench

namespace stallwatch::bench {

// Monotonic time of the next expiry of this process's first timerfd (the agent's probe when
// the program has none of its own), from /proc/self/fdinfo; -1 if none. Accurate to the few
// microseconds the read takes.
inline int64_t TimerfdNextExpiry() {
  DIR* d = opendir("/proc/self/fd");
  if (!d) {
    return -1;
  }
  int64_t result = -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') {
      continue;
    }
    char link[256] = {};
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    if (readlink(path.c_str(), link, sizeof link - 1) <= 0) {
      continue;
    }
    if (std::strcmp(link, "anon_inode:[timerfd]") != 0) {
      continue;
    }
    const int64_t before = MonotonicNanos();
    std::ifstream f(std::string("/proc/self/fdinfo/") + e->d_name);
    std::string line;
    while (std::getline(f, line)) {
      long long sec = 0, nsec = 0;
      if (std::sscanf(line.c_str(), "it_value: (%lld, %lld)", &sec, &nsec) == 2) {
        const int64_t after = MonotonicNanos();
        result = (before + after) / 2 + sec * 1'000'000'000 + nsec;
        break;
      }
    }
    if (result >= 0) {
      break;
    }
  }
  closedir(d);
  return result;
}

}  // namespace stallwatch::bench
