#pragma once
// The agent's own logger ("stallwatch", stderr). Never registered with spdlog's global registry,
// so the host's spdlog setup is untouched. Logging never throws into the caller.

#include <spdlog/spdlog.h>

namespace stallwatch::agent::internal {

spdlog::logger& Log();

}  // namespace stallwatch::agent::internal
