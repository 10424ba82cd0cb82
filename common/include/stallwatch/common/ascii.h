#pragma once
// ASCII text from protocols (HTTP header names and values, media types), where case does not
// count.

#include <algorithm>
#include <cctype>
#include <string_view>

namespace stallwatch {

// Whether `a` and `b` are the same but for the case of ASCII letters. Pure.
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace stallwatch
