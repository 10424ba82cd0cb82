#include "view_text.h"

namespace stallwatch::cli::internal {

using nlohmann::json;

StatusOr<json> ParseJson(const std::string& body, const char* what) {
  try {
    return json::parse(body);
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("the daemon's ") + what +
                                " answer is not JSON: " + e.what());
  }
}

StatusOr<json> ArrayOf(const json& j, const char* key) {
  if (j.is_array()) {
    return j;
  }
  if (j.is_object() && j.contains(key) && j[key].is_array()) {
    return j[key];
  }
  return InvalidArgumentError(std::string("expected {\"") + key + "\":[…]} from the daemon");
}

std::string Cut(const std::string& s, size_t width) {
  if (DisplayWidth(s) <= width) {
    return s;
  }
  if (width == 0) {
    return "";
  }
  std::string out;
  size_t cols = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool starts = (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
    if (starts && ++cols > width - 1) {
      break;
    }
    out += s[i];
  }
  return out + "…";
}

std::string CutLeft(const std::string& s, size_t width) {
  const size_t have = DisplayWidth(s);
  if (have <= width) {
    return s;
  }
  if (width == 0) {
    return "";
  }
  size_t skip = have - (width - 1);  // columns to drop
  size_t i = 0;
  while (i < s.size()) {
    const bool starts = (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
    if (starts) {
      if (skip == 0) {
        break;
      }
      --skip;
    }
    ++i;
  }
  return "…" + s.substr(i);
}

std::string Pad(const std::string& s, size_t width, bool right) {
  const size_t have = DisplayWidth(s);
  if (have >= width) {
    return s;
  }
  const std::string fill(width - have, ' ');
  return right ? fill + s : s + fill;
}

LoopKey KeyOf(const StallFinding& s) { return {s.service, s.pid, s.loop}; }

}  // namespace stallwatch::cli::internal
