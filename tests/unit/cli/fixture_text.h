#pragma once
// Test helpers of the CLI's view tests: a fixture file's text and a text's lines.

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace stallwatch::cli::testing {

// The content of tests/fixtures/cli/NAME (SW_CLI_FIXTURES); "" if it cannot be read.
inline std::string Fixture(const std::string& name) {
  std::ifstream in(std::string(SW_CLI_FIXTURES) + "/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `text` split at '\n' (a last line without one counts; no empty line after a final '\n').
inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t eol = text.find('\n', pos);
    out.push_back(text.substr(pos, eol - pos));
    pos = eol == std::string::npos ? text.size() : eol + 1;
  }
  return out;
}

}  // namespace stallwatch::cli::testing
