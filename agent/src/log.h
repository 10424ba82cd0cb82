#pragma once
// The agent's own logger ("stallwatch: LEVEL: text" on stderr). Never registered with spdlog's
// global registry, so the host's spdlog setup is untouched.
//
// Log lines are written with LogInfo/LogWarn/LogError, which are noexcept: a failure to format
// or write (bad_alloc, a closed stderr) is swallowed, never thrown into the caller, which may be
// a signal-free watchdog loop or a host's thread inside a hook. Names chosen outside the agent's
// code (loop and service names, paths) go through stallwatch::EscapeForLog
// (stallwatch/common/log_text.h); a line that can repeat goes through a LogRateLimit.

#include <spdlog/spdlog.h>

#include <utility>

namespace stallwatch::agent::internal {

spdlog::logger& Log();

template <typename... Args>
void LogAt(spdlog::level::level_enum level, spdlog::format_string_t<Args...> fmt,
           Args&&... args) noexcept {
  try {
    Log().log(level, fmt, std::forward<Args>(args)...);
  } catch (...) {
    // Logging is best effort: the caller goes on.
  }
}

template <typename... Args>
void LogInfo(spdlog::format_string_t<Args...> fmt, Args&&... args) noexcept {
  LogAt(spdlog::level::info, fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void LogWarn(spdlog::format_string_t<Args...> fmt, Args&&... args) noexcept {
  LogAt(spdlog::level::warn, fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void LogError(spdlog::format_string_t<Args...> fmt, Args&&... args) noexcept {
  LogAt(spdlog::level::err, fmt, std::forward<Args>(args)...);
}

}  // namespace stallwatch::agent::internal
