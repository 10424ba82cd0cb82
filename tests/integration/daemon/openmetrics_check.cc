#include "openmetrics_check.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <set>
#include <string_view>

namespace stallwatch::daemon::testing {
namespace {

bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }
bool IsLabelNameStart(char c) { return IsNameStart(c) && c != ':'; }
bool IsLabelNameChar(char c) { return IsNameChar(c) && c != ':'; }

// A reader of one line; each method consumes what it read or fails leaving `error`.
class Line {
 public:
  explicit Line(std::string_view s) : s_(s) {}
  bool done() const { return pos_ == s_.size(); }
  size_t pos() const { return pos_; }
  std::string_view rest() const { return s_.substr(pos_); }
  std::string error;

  bool Expect(std::string_view what) {
    if (s_.substr(pos_, what.size()) != what) {
      return Fail("expected '" + std::string(what) + "'");
    }
    pos_ += what.size();
    return true;
  }
  bool Peek(std::string_view what) const { return s_.substr(pos_, what.size()) == what; }
  bool Fail(const std::string& what) {
    if (error.empty()) {
      error = what + " at column " + std::to_string(pos_ + 1);
    }
    return false;
  }

  std::optional<std::string> MetricName() {
    const size_t start = pos_;
    if (done() || !IsNameStart(s_[pos_])) {
      Fail("expected a metric name");
      return std::nullopt;
    }
    while (!done() && IsNameChar(s_[pos_])) {
      ++pos_;
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  std::optional<std::string> LabelName() {
    const size_t start = pos_;
    if (done() || !IsLabelNameStart(s_[pos_])) {
      Fail("expected a label name");
      return std::nullopt;
    }
    while (!done() && IsLabelNameChar(s_[pos_])) {
      ++pos_;
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  // "…" with \\, \" and \n escapes only; returns the unescaped value.
  std::optional<std::string> Quoted() {
    if (!Expect("\"")) {
      return std::nullopt;
    }
    std::string out;
    while (!done()) {
      const char c = s_[pos_++];
      if (c == '"') {
        return out;
      }
      if (c == '\n') {
        break;
      }
      if (c == '\\') {
        if (done()) {
          break;
        }
        const char e = s_[pos_++];
        if (e == '\\' || e == '"') {
          out += e;
        } else if (e == 'n') {
          out += '\n';
        } else {
          Fail("bad escape \\" + std::string(1, e));
          return std::nullopt;
        }
      } else {
        out += c;
      }
    }
    Fail("unterminated label value");
    return std::nullopt;
  }

  // {name="value",…}; `chars` counts the UTF-8 characters of names and values.
  std::optional<std::map<std::string, std::string>> LabelSet(size_t* chars = nullptr) {
    std::map<std::string, std::string> labels;
    if (!Expect("{")) {
      return std::nullopt;
    }
    if (Peek("}")) {
      ++pos_;
      return labels;
    }
    for (;;) {
      auto name = LabelName();
      if (!name || !Expect("=")) {
        return std::nullopt;
      }
      auto value = Quoted();
      if (!value) {
        return std::nullopt;
      }
      if (chars) {
        for (const std::string* s : {&*name, &*value}) {
          for (const char c : *s) {
            *chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
          }
        }
      }
      if (!labels.emplace(*name, *value).second) {
        Fail("label " + *name + " repeated");
        return std::nullopt;
      }
      if (Peek("}")) {
        ++pos_;
        return labels;
      }
      if (!Expect(",")) {
        return std::nullopt;
      }
    }
  }

  // A number as the ABNF's realnumber, or +Inf / -Inf / NaN.
  std::optional<double> Number() {
    const size_t start = pos_;
    while (!done() && s_[pos_] != ' ') {
      ++pos_;
    }
    const std::string text(s_.substr(start, pos_ - start));
    if (text == "+Inf" || text == "Inf" || text == "+inf" || text == "inf") {
      return HUGE_VAL;
    }
    if (text == "-Inf" || text == "-inf") {
      return -HUGE_VAL;
    }
    if (text == "NaN") {
      return std::nan("");
    }
    // realnumber: [sign] digits [. digits] [e [sign] digits] (or .digits); no hex, no words.
    size_t i = 0;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
      ++i;
    }
    size_t digits = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      ++i;
      ++digits;
    }
    if (i < text.size() && text[i] == '.') {
      ++i;
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        ++i;
        ++digits;
      }
    }
    if (digits == 0) {
      pos_ = start;
      Fail("expected a number, not '" + text + "'");
      return std::nullopt;
    }
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
      ++i;
      if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
        ++i;
      }
      size_t exp = 0;
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        ++i;
        ++exp;
      }
      if (exp == 0) {
        i = std::string::npos;
      }
    }
    if (i != text.size()) {
      pos_ = start;
      Fail("expected a number, not '" + text + "'");
      return std::nullopt;
    }
    return std::strtod(text.c_str(), nullptr);
  }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

// The samples a family of `type` may have: suffixes of its name.
std::vector<std::string> Suffixes(const std::string& type) {
  if (type == "counter") {
    return {"_total", "_created"};
  }
  if (type == "histogram") {
    return {"_bucket", "_count", "_sum", "_created"};
  }
  if (type == "summary") {
    return {"", "_count", "_sum", "_created"};
  }
  if (type == "info") {
    return {"_info"};
  }
  return {""};  // gauge, unknown, stateset
}

}  // namespace

OpenMetricsParse ParseOpenMetrics(const std::string& text) {
  OpenMetricsParse out;
  const std::set<std::string> kTypes = {"counter",  "gauge", "histogram", "gaugehistogram",
                                        "stateset", "info",  "summary",   "unknown"};
  std::string family;                   // the family whose lines these are
  std::set<std::string> done_families;  // families that have ended: never again
  std::set<std::string> helped;
  std::string current_series;  // the series (name without suffix + labels without le) in order
  std::set<std::string> done_series;
  struct HistState {
    double last_le = -HUGE_VAL;
    double last_count = 0;
    bool inf = false;
    std::optional<double> count;
    bool sum = false;
  };
  std::map<std::string, HistState> hists;
  size_t line_no = 0;
  size_t at = 0;
  bool eof = false;
  const auto fail = [&](const std::string& what) {
    out.error = "line " + std::to_string(line_no) + ": " + what;
    return out;
  };
  if (text.empty() || text.back() != '\n') {
    line_no = 1;
    return fail("the exposition does not end with a newline");
  }
  while (at < text.size()) {
    ++line_no;
    const size_t nl = text.find('\n', at);
    const std::string_view line(text.data() + at, nl - at);
    at = nl + 1;
    if (eof) {
      return fail("text after # EOF");
    }
    if (line.empty()) {
      return fail("empty line");
    }
    if (line == "# EOF") {
      eof = true;
      continue;
    }
    Line r(line);
    if (line[0] == '#') {
      if (!r.Expect("# ")) {
        return fail(r.error);
      }
      std::string kind;
      if (r.Peek("TYPE ")) {
        kind = "TYPE";
      } else if (r.Peek("HELP ")) {
        kind = "HELP";
      } else if (r.Peek("UNIT ")) {
        kind = "UNIT";
      } else {
        return fail("a comment other than # TYPE, # HELP, # UNIT, # EOF");
      }
      r.Expect(kind + " ");
      auto name = r.MetricName();
      if (!name) {
        return fail(r.error);
      }
      if (*name != family) {
        if (!family.empty()) {
          done_families.insert(family);
        }
        if (done_families.count(*name)) {
          return fail("family " + *name + " described again after other families");
        }
        family = *name;
      }
      if (kind == "TYPE") {
        if (!r.Expect(" ")) {
          return fail(r.error);
        }
        const std::string type(r.rest());
        if (!kTypes.count(type)) {
          return fail("unknown type '" + type + "'");
        }
        if (out.types.count(family)) {
          return fail("second # TYPE of " + family);
        }
        if (type == "counter" && family.ends_with("_total")) {
          return fail("counter family " + family + " named with its samples' _total");
        }
        out.types[family] = type;
      } else if (kind == "HELP") {
        if (!helped.insert(family).second) {
          return fail("second # HELP of " + family);
        }
        if (r.done()) {
          continue;
        }
        if (!r.Expect(" ")) {
          return fail(r.error);
        }
        // Escapes in help text: \\, \" and \n only.
        const std::string_view h = r.rest();
        for (size_t i = 0; i < h.size(); ++i) {
          if (h[i] == '\\') {
            if (i + 1 >= h.size() || (h[i + 1] != '\\' && h[i + 1] != '"' && h[i + 1] != 'n')) {
              return fail("bad escape in # HELP");
            }
            ++i;
          }
        }
      } else {
        if (!r.Expect(" ") || r.done() || !family.ends_with("_" + std::string(r.rest()))) {
          return fail("# UNIT must be a suffix of the family name");
        }
      }
      continue;
    }
    // A sample: name [labels] SP value [SP timestamp] [SP # SP exemplar]
    OpenMetricsSample s;
    auto name = r.MetricName();
    if (!name) {
      return fail(r.error);
    }
    s.name = *name;
    if (r.Peek("{")) {
      auto labels = r.LabelSet();
      if (!labels) {
        return fail(r.error);
      }
      s.labels = std::move(*labels);
    }
    if (!r.Expect(" ")) {
      return fail(r.error);
    }
    auto value = r.Number();
    if (!value) {
      return fail(r.error);
    }
    s.value = *value;
    if (r.Peek(" ") && !r.Peek(" #")) {
      r.Expect(" ");
      if (!r.Number()) {
        return fail("bad timestamp: " + r.error);
      }
    }
    s.line = std::string(line.substr(0, r.pos()));
    if (!r.done()) {
      if (!r.Expect(" # ")) {
        return fail(r.error);
      }
      size_t chars = 0;
      auto labels = r.LabelSet(&chars);
      if (!labels) {
        return fail(r.error);
      }
      if (chars > 128) {
        return fail("exemplar label set of " + std::to_string(chars) + " characters (max 128)");
      }
      s.has_exemplar = true;
      s.exemplar.labels = std::move(*labels);
      if (!r.Expect(" ")) {
        return fail(r.error);
      }
      auto ev = r.Number();
      if (!ev) {
        return fail(r.error);
      }
      s.exemplar.value = *ev;
      if (!r.done()) {
        if (!r.Expect(" ")) {
          return fail(r.error);
        }
        auto ts = r.Number();
        if (!ts) {
          return fail(r.error);
        }
        s.exemplar.has_timestamp = true;
        s.exemplar.timestamp = *ts;
      }
      if (!r.done()) {
        return fail("text after the exemplar");
      }
    }
    // The sample belongs to the current family, with a suffix its type allows.
    if (family.empty() || !out.types.count(family)) {
      return fail("sample " + s.name + " before any # TYPE of its family");
    }
    const std::string& type = out.types[family];
    std::string suffix;
    bool matched = false;
    for (const std::string& suf : Suffixes(type)) {
      if (s.name == family + suf) {
        suffix = suf;
        matched = true;
      }
    }
    if (!matched) {
      std::string what = "sample " + s.name;
      what += " in family " + family;
      what += " of type " + type;
      return fail(what);
    }
    if (s.has_exemplar && !(type == "counter" && suffix == "_total") &&
        !(type == "histogram" && suffix == "_bucket")) {
      return fail("exemplar on " + s.name + " (only on a counter's _total or a bucket)");
    }
    if (type == "counter" && (std::isnan(s.value) || s.value < 0)) {
      return fail("counter " + s.name + " negative or NaN");
    }
    // Series contiguous: one metric point's samples are not interleaved with another's.
    std::map<std::string, std::string> series_labels = s.labels;
    if (type == "histogram") {
      series_labels.erase("le");
    }
    std::string series = family + "{";
    for (const auto& [k, v] : series_labels) {
      series += k;
      series += '=';
      series += v;
      series += '\x1f';
    }
    if (series != current_series) {
      if (!current_series.empty()) {
        done_series.insert(current_series);
      }
      if (done_series.count(series)) {
        return fail("series " + s.line + " split: its samples are not contiguous");
      }
      current_series = series;
    }
    if (type == "histogram") {
      HistState& h = hists[series];
      if (suffix == "_bucket") {
        auto le = s.labels.find("le");
        if (le == s.labels.end()) {
          return fail("bucket without le");
        }
        Line lr(le->second);
        auto bound = lr.Number();
        if (!bound || !lr.done() || std::isnan(*bound)) {
          return fail("bad le '" + le->second + "'");
        }
        if (h.inf || *bound <= h.last_le) {
          return fail("le " + le->second + " not increasing");
        }
        if (s.value < h.last_count || s.value != std::floor(s.value)) {
          return fail("bucket count not cumulative or not an integer: " + s.line);
        }
        if (s.has_exemplar && (s.exemplar.value > *bound || s.exemplar.value <= h.last_le)) {
          return fail("exemplar value outside its bucket: " + std::string(line));
        }
        h.last_le = *bound;
        h.last_count = s.value;
        h.inf = std::isinf(*bound);
      } else if (suffix == "_count") {
        h.count = s.value;
      } else if (suffix == "_sum") {
        h.sum = true;
      }
    }
    out.samples.push_back(std::move(s));
  }
  if (!eof) {
    return fail("no # EOF at the end");
  }
  for (const auto& [series, h] : hists) {
    if (!h.inf) {
      return fail("histogram series " + series + " without a +Inf bucket");
    }
    if (!h.count || *h.count != h.last_count) {
      return fail("histogram series " + series + ": _count missing or not the +Inf bucket");
    }
    if (!h.sum) {
      return fail("histogram series " + series + " without _sum");
    }
  }
  return out;
}

}  // namespace stallwatch::daemon::testing
