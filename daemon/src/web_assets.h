#pragma once
// The daemon's web UI (docs/daemon.md, "Web UI"): the files of daemon/web/, built into the
// binary as string literals by daemon/web/embed.cmake (web_assets.cc is generated at build time),
// served from memory by the HTTP server.
//
// Threading: immutable data, read from any thread.

#include <span>
#include <string_view>

namespace stallwatch::daemon {

struct WebAsset {
  std::string_view name;          // file name under daemon/web/, e.g. "app.js"
  std::string_view content_type;  // e.g. "text/javascript; charset=utf-8"
  std::string_view body;
};

// Every file of the UI (generated web_assets.cc).
std::span<const WebAsset> WebAssets();

// The file named `name`, or null.
const WebAsset* FindWebAsset(std::string_view name);

}  // namespace stallwatch::daemon
