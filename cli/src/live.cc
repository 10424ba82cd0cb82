#include "live.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "http_get.h"
#include "stallwatch/common/clock.h"
#include "stallwatch/common/defaults.h"
#include "stallwatch/common/finding_json.h"
#include "top.h"

namespace stallwatch::cli {

namespace {

// Stalls asked of the daemon: the listing, plus older ones whose stacks name the top frame of
// later stalls that came without (repeats of a known stack).
constexpr size_t kHistoryStalls = 200;
constexpr size_t kDaemonMaxStalls = defaults::kMaxStallsPerReply;
// Longest single wait in poll(): bounds how late a signal that arrives just before poll() is
// noticed; keys wake the wait at once.
constexpr int kMaxPollMs = 1000;

std::atomic<bool> g_resized{false};
static_assert(std::atomic<bool>::is_always_lock_free);

// Async-signal safe.
void OnResize(int) { g_resized.store(true); }

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

size_t TerminalRows(int fd) {
  winsize ws{};
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
    return ws.ws_row;
  }
  return 24;
}

// Keys from stdin while a view runs: no echo, no line buffering; restored by the destructor.
// Without a terminal on stdin it only waits.
class Keys {
 public:
  Keys() : tty_(isatty(STDIN_FILENO) != 0) {
    if (tty_ && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      restore_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
  }
  ~Keys() {
    if (restore_) {
      tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
    }
  }
  Keys(const Keys&) = delete;
  Keys& operator=(const Keys&) = delete;

  enum class Event { kTimeout, kQuit, kResize };
  // Waits until `deadline_ns` (monotonic), q (or Ctrl-C), `cancel`, or a terminal resize.
  Event WaitUntil(int64_t deadline_ns, const std::atomic<bool>* cancel) {
    for (;;) {
      if (cancel != nullptr && cancel->load()) {
        return Event::kQuit;
      }
      if (g_resized.exchange(false)) {
        return Event::kResize;
      }
      const int64_t left_ms = (deadline_ns - MonotonicNanos() + 999'999) / 1'000'000;
      if (left_ms <= 0) {
        return Event::kTimeout;
      }
      const int timeout = static_cast<int>(std::min<int64_t>(left_ms, kMaxPollMs));
      pollfd p{STDIN_FILENO, POLLIN, 0};
      const int n = poll(tty_ ? &p : nullptr, tty_ ? 1 : 0, timeout);
      if (n > 0 && (p.revents & POLLIN) != 0) {
        char buf[64];
        const ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
        for (ssize_t i = 0; i < got; ++i) {
          if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 3) {
            return Event::kQuit;
          }
        }
        if (got == 0) {
          tty_ = false;  // end of input: wait only
        }
      } else if (n > 0) {
        tty_ = false;  // hang-up or error on stdin
      }
    }
  }

 private:
  bool tty_;
  bool restore_ = false;
  termios saved_{};
};

// The alternate screen with the cursor hidden; left by the destructor.
class AlternateScreen {
 public:
  AlternateScreen() {
    std::fputs("\x1b[?1049h\x1b[?25l", stdout);
    std::fflush(stdout);
  }
  ~AlternateScreen() {
    std::fputs("\x1b[?25h\x1b[?1049l", stdout);
    std::fflush(stdout);
  }
  AlternateScreen(const AlternateScreen&) = delete;
  AlternateScreen& operator=(const AlternateScreen&) = delete;
};

void InstallResizeHandler() {
  struct sigaction sa {};
  sa.sa_handler = &OnResize;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGWINCH, &sa, nullptr);
}

// Draws `screen` from the top-left corner, at most `rows` lines, erasing what was there.
void Draw(const std::string& screen, size_t rows) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < screen.size()) {
    const size_t eol = screen.find('\n', pos);
    lines.push_back(screen.substr(pos, eol - pos));
    pos = eol == std::string::npos ? screen.size() : eol + 1;
  }
  const size_t room = rows > 1 ? rows - 1 : 1;  // the last row is for the key help
  if (lines.size() > room) {
    const size_t hidden = lines.size() - (room - 1);
    lines.resize(room - 1);
    lines.push_back("… " + std::to_string(hidden) + " more lines (a taller terminal shows them)");
  }
  std::string out = "\x1b[H";
  for (const std::string& l : lines) {
    out += l + "\x1b[K\r\n";
  }
  out += "\x1b[J(q or Ctrl-C to quit)";
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
}

StatusOr<std::string> ReadFile(const std::string& path, size_t offset = 0) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFoundError("cannot read " + path + ": " + std::strerror(errno) +
                         " (expected the JSON Lines file of a file: endpoint)");
  }
  in.seekg(static_cast<std::streamoff>(offset));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `lines_before`: lines of the file before the part parsed (when following it).
void ReportMalformed(const std::string& path, const JsonLinesStalls& parsed,
                     size_t lines_before = 0) {
  if (parsed.malformed == 0) {
    return;
  }
  std::fprintf(stderr,
               "stallwatch stalls: %s: %zu of %zu lines are not findings, skipped (first: line "
               "%zu)\n",
               path.c_str(), parsed.malformed, parsed.lines, lines_before + parsed.first_malformed);
}

std::vector<LoopKey> KeysOf(const std::vector<StallFinding>& stalls) {
  std::vector<LoopKey> out;
  out.reserve(stalls.size());
  for (const StallFinding& s : stalls) {
    out.emplace_back(s.service, s.pid, s.loop);
  }
  return out;
}

// The loops the daemon knows (for naming them when a filter matches none).
std::vector<LoopKey> DaemonLoops(const std::string& daemon) {
  std::vector<LoopKey> out;
  auto body = DaemonGet(daemon, "/api/v1/loops");
  if (!body.ok()) {
    return out;
  }
  auto rows = ParseLoopsBody(*body, {}, 0, nullptr, nullptr);
  if (!rows.ok()) {
    return out;
  }
  for (const LoopRow& r : *rows) {
    out.emplace_back(r.service, r.pid, r.loop);
  }
  return out;
}

std::string StallsPath(const StallsOptions& o, size_t limit) {
  std::string path = "/api/v1/stalls?limit=" + std::to_string(limit);
  if (!o.filter.service.empty()) {
    path += "&service=" + UrlEncode(o.filter.service);
  }
  if (o.filter.ongoing.has_value()) {
    path += *o.filter.ongoing ? "&ongoing=true" : "&ongoing=false";
  }
  return path;
}

std::string JsonArray(const std::vector<StallFinding>& stalls) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& st : stalls) {
    arr.push_back(ToJson(st));
  }
  return arr.dump() + "\n";
}

}  // namespace

StatusOr<std::string> DaemonGet(const std::string& daemon, const std::string& path) {
  auto r = HttpGet(BaseUrl(daemon) + path);
  if (!r.ok()) {
    return Status(r.status().code(),
                  r.status().message() + " (is stallwatchd running? set --daemon URL)");
  }
  if (r->status != 200) {
    return UnavailableError("daemon answered " + std::to_string(r->status) + ": " +
                            Trimmed(r->body));
  }
  return r->body;
}

size_t TerminalColumns(int fd) {
  winsize ws{};
  if (isatty(fd) != 0 && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    return ws.ws_col;
  }
  if (const char* env = std::getenv("COLUMNS"); env != nullptr) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v < 10000) {
      return static_cast<size_t>(v);
    }
  }
  return 80;
}

Status RunTop(const TopOptions& options, const std::atomic<bool>* cancel) {
  const bool tty = isatty(STDOUT_FILENO) != 0;
  const int iterations = options.iterations > 0 ? options.iterations : (tty ? 0 : 1);
  Keys keys;
  std::optional<AlternateScreen> alternate;
  if (tty) {
    InstallResizeHandler();
    alternate.emplace();
  }
  StallRate rate;
  KnownTopFrames known;
  std::vector<LoopRow> rows;
  std::string error;
  const std::string source = BaseUrl(options.daemon);
  auto screen = [&] {
    const size_t width = TerminalColumns(STDOUT_FILENO);
    if (error.empty()) {
      return FormatTop(rows, source, width);
    }
    return "stallwatch top — " + source + "\n" + error + "\n(retrying)\n";
  };
  for (int i = 0; iterations == 0 || i < iterations; ++i) {
    error.clear();
    auto loops = DaemonGet(options.daemon, "/api/v1/loops");
    auto stalls =
        DaemonGet(options.daemon, "/api/v1/stalls?limit=" + std::to_string(kHistoryStalls));
    std::vector<StallFinding> recent;
    if (stalls.ok()) {
      if (auto s = ParseStallsBody(*stalls); s.ok()) {
        recent = std::move(*s);
      }
    }
    if (!loops.ok()) {
      error = loops.status().message();
    } else if (auto parsed = ParseLoopsBody(*loops, recent, RealtimeNanos(), &rate, &known);
               !parsed.ok()) {
      error = parsed.status().message();
    } else {
      rows = std::move(*parsed);
    }
    if (!tty) {
      if (!error.empty()) {
        return UnavailableError(error);
      }
      if (i > 0) {
        std::fputs("\n", stdout);
      }
      std::fputs(screen().c_str(), stdout);
      std::fflush(stdout);
    } else {
      Draw(screen(), TerminalRows(STDOUT_FILENO));
    }
    if (iterations != 0 && i + 1 >= iterations) {
      break;
    }
    // Until the next refresh: a key quits at once whatever the interval; a resize redraws.
    const int64_t deadline = MonotonicNanos() + options.interval.count();
    Keys::Event ev;
    while ((ev = keys.WaitUntil(deadline, cancel)) == Keys::Event::kResize) {
      if (tty) {
        Draw(screen(), TerminalRows(STDOUT_FILENO));
      }
    }
    if (ev == Keys::Event::kQuit) {
      break;
    }
  }
  return OkStatus();
}

Status RunStalls(const StallsOptions& o, const std::atomic<bool>* cancel) {
  StallFilter filter = o.filter;
  if (o.since.count() > 0) {
    filter.since_ns = RealtimeNanos() - o.since.count();
  }
  std::vector<StallFinding> all;
  std::vector<LoopKey> known_loops;
  size_t file_offset = 0;
  size_t file_lines = 0;  // lines before file_offset
  const std::string where = o.file.empty() ? "the daemon's stalls" : o.file;
  if (!o.file.empty()) {
    auto content = ReadFile(o.file);
    if (!content.ok()) {
      return content.status();
    }
    // Only whole lines: a writer may be in the middle of one.
    const size_t last_nl = content->rfind('\n');
    file_offset = last_nl == std::string::npos ? 0 : last_nl + 1;
    if (!o.follow) {
      file_offset = content->size();
    }
    const std::string whole = content->substr(0, file_offset);
    file_lines = static_cast<size_t>(std::count(whole.begin(), whole.end(), '\n'));
    JsonLinesStalls parsed = ParseStallsJsonLines(whole);
    ReportMalformed(o.file, parsed);
    all = std::move(parsed.stalls);
    known_loops = std::move(parsed.loops);
  } else {
    auto body =
        DaemonGet(o.daemon, StallsPath(o, std::min(kDaemonMaxStalls, o.limit + kHistoryStalls)));
    if (!body.ok()) {
      return body.status();
    }
    auto stalls = ParseStallsBody(*body);
    if (!stalls.ok()) {
      return stalls.status();
    }
    all = std::move(*stalls);
  }
  KnownTopFrames known;
  LearnTopFrames(all, &known);
  std::vector<StallFinding> shown = FilterStalls(all, filter);
  if (shown.size() > o.limit) {
    shown.resize(o.limit);
  }
  if (shown.empty() && (!filter.service.empty() || !filter.loop.empty())) {
    if (o.file.empty()) {
      known_loops = DaemonLoops(o.daemon);
      for (const LoopKey& k : KeysOf(all)) {
        known_loops.push_back(k);
      }
    }
    const std::string message = NoMatchMessage(filter, known_loops, where);
    if (!message.empty()) {
      if (!o.follow) {
        return NotFoundError(message);
      }
      std::fprintf(stderr, "stallwatch stalls: %s; following\n", message.c_str());
    }
  }
  if (o.json) {
    if (!o.follow) {
      std::fputs(JsonArray(shown).c_str(), stdout);
    } else {
      for (auto it = shown.rbegin(); it != shown.rend(); ++it) {
        std::fputs((ToJsonLine(*it) + "\n").c_str(), stdout);
      }
    }
  } else if (!o.follow || !shown.empty()) {
    std::fputs(FormatStalls(shown, o.format, known).c_str(), stdout);
  }
  std::fflush(stdout);
  if (!o.follow) {
    return OkStatus();
  }

  // --follow: poll the daemon (or the file's new lines) until Ctrl-C or q.
  StallFollower follower(o.format, o.json);
  follower.Seen(all);
  if (isatty(STDERR_FILENO) != 0) {
    std::fprintf(stderr, "(following %s; q or Ctrl-C to stop)\n",
                 o.file.empty() ? BaseUrl(o.daemon).c_str() : o.file.c_str());
  }
  Keys keys;
  for (;;) {
    const int64_t deadline = MonotonicNanos() + o.interval.count();
    Keys::Event ev;
    while ((ev = keys.WaitUntil(deadline, cancel)) == Keys::Event::kResize) {
    }
    if (ev == Keys::Event::kQuit) {
      break;
    }
    std::vector<StallFinding> fresh;
    if (!o.file.empty()) {
      struct stat st {};
      if (stat(o.file.c_str(), &st) == 0 && static_cast<size_t>(st.st_size) < file_offset) {
        file_offset = 0;  // truncated or replaced: read it from the start
        file_lines = 0;
      }
      auto content = ReadFile(o.file, file_offset);
      if (!content.ok()) {
        continue;  // rotated away for now
      }
      const size_t last_nl = content->rfind('\n');
      if (last_nl == std::string::npos) {
        continue;
      }
      const std::string chunk = content->substr(0, last_nl + 1);
      JsonLinesStalls parsed = ParseStallsJsonLines(chunk);
      file_offset += chunk.size();
      ReportMalformed(o.file, parsed, file_lines);
      file_lines += static_cast<size_t>(std::count(chunk.begin(), chunk.end(), '\n'));
      fresh = std::move(parsed.stalls);
    } else {
      auto body = DaemonGet(o.daemon, StallsPath(o, kHistoryStalls));
      if (!body.ok()) {
        std::fprintf(stderr, "stallwatch stalls: %s (retrying)\n", body.status().message().c_str());
        continue;
      }
      auto stalls = ParseStallsBody(*body);
      if (!stalls.ok()) {
        continue;
      }
      fresh = std::move(*stalls);
    }
    // --since does not apply to what is new; the rest of the filter does.
    StallFilter live = filter;
    live.since_ns = 0;
    fresh = FilterStalls(std::move(fresh), live);
    const std::string text = follower.Update(fresh);
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
  }
  return OkStatus();
}

std::string StacksPath(const StacksOptions& o) {
  const std::string wire_format = o.format == "text" ? "json" : o.format;
  std::string path = "/api/v1/stacks?format=" + UrlEncode(wire_format);
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"service", &o.service},
        {"loop", &o.loop},
        {"class", &o.stall_class},
        {"since", &o.since},
        {"until", &o.until}}) {
    if (!value->empty()) {
      path += std::string("&") + name + "=" + UrlEncode(*value);
    }
  }
  return path;
}

std::string CallsPath(const CallsOptions& o) {
  std::string path = "/api/v1/calls?limit=" + std::to_string(o.limit);
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"service", &o.service},
        {"loop", &o.loop},
        {"call", &o.call},
        {"family", &o.family}}) {
    if (!value->empty()) {
      path += std::string("&") + name + "=" + UrlEncode(*value);
    }
  }
  if (o.pid > 0) {
    path += "&pid=" + std::to_string(o.pid);
  }
  return path;
}

Status RunCalls(const CallsOptions& o) {
  auto body = DaemonGet(o.daemon, CallsPath(o));
  if (!body.ok()) {
    return body.status();
  }
  std::string out;
  if (o.json) {
    out = std::move(*body);
    if (!out.empty() && out.back() != '\n') {
      out.push_back('\n');
    }
  } else {
    auto text = FormatCallsBody(*body);
    if (!text.ok()) {
      return text.status();
    }
    out = std::move(*text);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
  return OkStatus();
}

Status RunStacks(const StacksOptions& o) {
  const bool to_stdout = o.output.empty() || o.output == "-";
  if (o.format == "pprof" && to_stdout && isatty(STDOUT_FILENO) != 0) {
    return FailedPreconditionError(
        "refusing to write a binary pprof profile to a terminal; use -o FILE (e.g. -o "
        "stalls.pb.gz) or redirect stdout");
  }
  auto body = DaemonGet(o.daemon, StacksPath(o));
  if (!body.ok()) {
    return body.status();
  }
  std::string out;
  if (o.format == "text") {
    auto text = FormatStacksBody(*body, o.full);
    if (!text.ok()) {
      return text.status();
    }
    out = std::move(*text);
  } else {
    out = std::move(*body);
    if (o.format != "pprof" && !out.empty() && out.back() != '\n') {
      out.push_back('\n');
    }
  }
  if (to_stdout) {
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    return OkStatus();
  }
  std::ofstream f(o.output, std::ios::binary | std::ios::trunc);
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  f.close();
  if (!f) {
    return UnavailableError("cannot write " + o.output + ": " + std::strerror(errno));
  }
  return OkStatus();
}

}  // namespace stallwatch::cli
