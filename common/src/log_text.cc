#include "stallwatch/common/log_text.h"

#include <algorithm>
#include <cstdio>

namespace stallwatch {

std::string EscapeForLog(std::string_view s, size_t max_bytes) {
  size_t n = std::min(s.size(), max_bytes);
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) {
    --n;
  }
  std::string out;
  out.reserve(n + 3);
  for (const char ch : s.substr(0, n)) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", c);
      out += b;
    } else {
      out.push_back(ch);
    }
  }
  if (n < s.size()) {
    out += "...";
  }
  return out;
}

}  // namespace stallwatch
