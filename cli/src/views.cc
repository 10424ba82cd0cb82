#include "views.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "report.h"
#include "stallwatch/common/finding_json.h"
#include "view_text.h"

namespace stallwatch::cli {

using nlohmann::json;

namespace {

using internal::ArrayOf;
using internal::KeyOf;
using internal::ParseJson;

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string LocalTime(int64_t unix_ns, bool with_date = true) {
  const time_t t = static_cast<time_t>(unix_ns / 1'000'000'000);
  tm tm_local{};
  localtime_r(&t, &tm_local);
  char buf[32];
  std::strftime(buf, sizeof buf, with_date ? "%Y-%m-%d %H:%M:%S" : "%H:%M:%S", &tm_local);
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03d", static_cast<int>(unix_ns / 1'000'000 % 1000));
  return std::string(buf) + ms;
}

// "f(int) const" -> "f"; keeps "(anonymous namespace)" and template arguments; drops a symbol
// version ("clock_nanosleep@GLIBC_2.2.5").
std::string ShortFunction(const std::string& function) {
  std::string name = function;
  int depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '<') {
      ++depth;
    }
    if (c == '>') {
      --depth;
    }
    if (c == '(' && depth == 0) {
      if (name.compare(i, 21, "(anonymous namespace)") == 0) {
        i += 20;
        continue;
      }
      name.resize(i);
      break;
    }
  }
  if (const size_t at = name.find('@'); at != std::string::npos && at > 0) {
    name.resize(at);
  }
  return name;
}

// Frames of these modules are plumbing between the loop and the code that stalled it.
bool IsPlumbing(const Frame& f) {
  const std::string base = Basename(f.module);
  for (const char* prefix : {"libc.so", "libc-", "ld-linux", "linux-vdso", "[vdso]", "libpthread",
                             "libevent", "libstallwatch", "libasan", "libubsan", "libtsan"}) {
    if (base.rfind(prefix, 0) == 0) {
      return true;
    }
  }
  return f.function.empty() && f.module.empty();
}

// Libraries installed by the system: not the user's own code (libpq, libssl, libstdc++, …).
bool IsSystemModule(const std::string& module) {
  for (const char* dir :
       {"/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/lib32/", "/usr/lib32/"}) {
    if (module.rfind(dir, 0) == 0) {
      return true;
    }
  }
  return false;
}

// "Foo::Bar (x.cc:12)", or "module+0x1f0" without a function name.
std::string FrameLabel(const Frame& f) {
  std::string out;
  if (!f.function.empty()) {
    out = ShortFunction(f.function);
  } else {
    char off[32];
    std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(f.offset));
    out = (f.module.empty() ? std::string("??") : Basename(f.module)) + off;
  }
  if (!f.file.empty() && f.line > 0) {
    out += " (" + Basename(f.file) + ":" + std::to_string(f.line) + ")";
  }
  return out;
}

// One line of a stack: "function  (module+offset)  file:line".
std::string FrameText(const Frame& f) {
  std::string name = f.function.empty() ? "??" : f.function;
  char off[32];
  std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(f.offset));
  std::string out = name + "  (" + Basename(f.module) + off + ")";
  if (!f.file.empty()) {
    out += "  " + Basename(f.file) + ":" + std::to_string(f.line);
  }
  return out;
}

// What makes two frames one entry on screen: the function and line, or the exact pc when the
// function is unknown.
std::string FrameKey(const Frame& f) {
  if (f.function.empty()) {
    return f.module + "+" + std::to_string(f.offset);
  }
  return f.function + '\x1f' + f.file + '\x1f' + std::to_string(f.line);
}

std::string StackKey(const Stack& s, size_t end = std::string::npos) {
  std::string key;
  for (size_t i = 0; i < s.frames.size() && i < end; ++i) {
    key += FrameKey(s.frames[i]) + '\x1e';
  }
  return key;
}

// Stacks of a stall or a group as shown.
struct ShownStall {
  const StallFinding* stall = nullptr;  // the newest of the group
  std::vector<Stack> stacks;            // merged for display
  std::string top;                      // headline frame
  bool top_earlier = false;             // from an earlier stall of the loop
  std::string signature;                // what a repeat must match
  size_t count = 1;
  int64_t oldest_ns = 0;
  double min_s = 0, max_s = 0;
};

ShownStall Shown(const StallFinding& s, const KnownTopFrames& known) {
  ShownStall out;
  out.stall = &s;
  out.stacks = MergeStacksForDisplay(s.stacks);
  if (!out.stacks.empty()) {
    out.top = UserTopFrame(out.stacks.front());
    out.signature = StackKey(out.stacks.front(), DispatchEntryIndex(out.stacks.front()));
  } else {
    out.top = EarlierTopFrame(s, known);
    out.top_earlier = !out.top.empty();
  }
  out.oldest_ns = s.start_ns;
  out.min_s = out.max_s = s.duration_s;
  return out;
}

// What a repeat of a stall must match: the loop, class, syscall and target, and the stack (or,
// when one of the two came without stacks, the top frame).
RepeatKey KeyForRepeat(const ShownStall& g) {
  const StallFinding& s = *g.stall;
  return {.loop = KeyOf(s),
          .stall_class = s.stall_class,
          .syscall = s.syscall,
          .fd_target = s.fd_target,
          .has_stacks = !g.stacks.empty(),
          .signature = g.signature,
          .top = g.top,
          .ongoing = s.ongoing};
}

// Whether `b` repeats `a` (either order).
bool Repeats(const RepeatKey& a, const RepeatKey& b) {
  if (a.ongoing || b.ongoing) {
    return false;
  }
  if (a.loop != b.loop || a.stall_class != b.stall_class || a.syscall != b.syscall ||
      a.fd_target != b.fd_target) {
    return false;
  }
  if (!a.has_stacks || !b.has_stacks) {
    return !a.top.empty() && a.top == b.top;
  }
  return a.signature == b.signature;
}

// A stack's frames, up to its dispatch entry unless `format.full`; what called it is one line.
void AppendFrames(const Stack& st, const StallsFormat& format, std::string* out) {
  const size_t entry = DispatchEntryIndex(st);
  // The dispatch entry itself is shown; what called it is folded.
  const size_t end = format.full || entry == std::string::npos ? st.frames.size() : entry + 1;
  const size_t limit = format.full ? end : std::min(end, format.max_frames);
  for (size_t i = 0; i < limit; ++i) {
    *out += "    " + FrameText(st.frames[i]) + "\n";
  }
  if (limit < end) {
    *out += "    … " + std::to_string(end - limit) + " more frames\n";
  }
  if (end < st.frames.size()) {
    const size_t folded = st.frames.size() - end;
    *out += "    … " + std::to_string(folded) + " frame" + (folded == 1 ? "" : "s") + " below " +
            ShortFunction(st.frames[entry].function) + " folded (--full shows them)\n";
  }
}

void AppendStack(const Stack& st, const StallsFormat& format, std::string* out) {
  *out += "  stack (" + std::to_string(st.samples) + " sample" + (st.samples == 1 ? "" : "s") +
          (st.method.empty() ? "" : ", " + st.method) + "):\n";
  AppendFrames(st, format, out);
}

// One entry of the listing: headline, repeats, syscall and target, hint, stacks.
std::string RenderStall(const ShownStall& g, const StallsFormat& format) {
  std::string out;
  const StallFinding& s = *g.stall;
  char head[512];
  std::snprintf(head, sizeof head, "%s  %s pid %lld loop %s  %s %s%s  %s",
                LocalTime(s.start_ns).c_str(), s.service.c_str(), static_cast<long long>(s.pid),
                s.loop.c_str(), s.ongoing ? "ONGOING for" : "stalled",
                HumanSeconds(s.duration_s).c_str(), s.estimated ? " (estimated)" : "",
                StallClassName(s.stall_class));
  out += head;
  if (!g.top.empty()) {
    out += "  in " + g.top + (g.top_earlier ? " (as before)" : "");
  }
  out += "\n";
  if (g.count > 1) {
    out += "  ×" + std::to_string(g.count) + ", same stack: from " + LocalTime(g.oldest_ns, false) +
           " to " + LocalTime(s.start_ns, false) + ", " +
           (HumanSeconds(g.min_s) == HumanSeconds(g.max_s)
                ? HumanSeconds(g.max_s)
                : HumanSeconds(g.min_s) + "–" + HumanSeconds(g.max_s)) +
           " each\n";
  }
  std::string detail;
  if (!s.syscall.empty()) {
    detail += "in " + s.syscall + "()";
  }
  if (!s.fd_target.empty()) {
    detail += (detail.empty() ? "on " : " on ") + s.fd_target;
  }
  char ratio[64];
  std::snprintf(ratio, sizeof ratio, "cpu %.0f%%", s.cpu_ratio * 100);
  detail += (detail.empty() ? "" : ", ") + std::string(ratio);
  out += "  " + detail + "\n";
  if (!s.hint.empty()) {
    out += "  hint: " + s.hint + "\n";
  }
  if (format.stacks) {
    size_t shown = 0;
    for (const Stack& st : g.stacks) {
      if (!format.full && shown++ == format.max_stacks) {
        out += "  … " + std::to_string(g.stacks.size() - format.max_stacks) + " more stacks\n";
        break;
      }
      AppendStack(st, format, &out);
    }
    if (g.stacks.empty()) {
      if (!s.sampling_note.empty()) {
        out += "  no stacks: " + s.sampling_note + "\n";
      }
      if (g.top_earlier) {
        out += "  same stack as before: " + g.top + "\n";
      }
    }
  }
  out += "\n";
  return out;
}

}  // namespace

size_t DisplayWidth(const std::string& s) {
  size_t n = 0;
  for (char c : s) {
    n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  }
  return n;
}

StatusOr<std::vector<StallFinding>> ParseStallsBody(const std::string& body) {
  auto j = ParseJson(body, "stalls");
  if (!j.ok()) {
    return j.status();
  }
  auto arr = ArrayOf(*j, "stalls");
  if (!arr.ok()) {
    return arr.status();
  }
  std::vector<StallFinding> out;
  for (const json& item : *arr) {
    if (!item.is_object() || item.value("kind", "stall") != "stall") {
      return InvalidArgumentError("expected stall findings from the daemon, got " +
                                  item.dump().substr(0, 80));
    }
    auto f = StallFromJson(item);
    if (!f.ok()) {
      return InvalidArgumentError("bad stall from the daemon: " + f.status().message());
    }
    out.push_back(std::move(*f));
  }
  return out;
}

JsonLinesStalls ParseStallsJsonLines(const std::string& content) {
  JsonLinesStalls out;
  std::map<std::tuple<int64_t, std::string, uint64_t>, size_t> index;  // pid, loop, id -> slot
  std::set<LoopKey> loops;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t eol = content.find('\n', pos);
    if (eol == std::string::npos) {
      eol = content.size();
    }
    std::string line = content.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
      line.pop_back();
    }
    if (line.empty()) {
      continue;
    }
    ++out.lines;
    auto bad = [&] {
      if (out.malformed++ == 0) {
        out.first_malformed = line_no;
      }
    };
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("kind") || !j["kind"].is_string()) {
      bad();
      continue;
    }
    const std::string kind = j["kind"].get<std::string>();
    if (kind == "delay") {
      auto d = DelayFromJson(j);
      if (!d.ok()) {
        bad();
        continue;
      }
      loops.insert({d->service, d->pid, d->loop});
      continue;
    }
    if (kind != "stall") {
      continue;  // other kinds of findings are not for this view
    }
    auto s = StallFromJson(j);
    if (!s.ok()) {
      bad();
      continue;
    }
    loops.insert(KeyOf(*s));
    const std::tuple<int64_t, std::string, uint64_t> key{
        s->pid, s->loop, s->stall_id != 0 ? s->stall_id : static_cast<uint64_t>(s->start_ns)};
    auto it = index.find(key);
    if (it == index.end()) {
      index[key] = out.stalls.size();
      out.stalls.push_back(std::move(*s));
      continue;
    }
    StallFinding& kept = out.stalls[it->second];
    if (s->stacks.empty() && !kept.stacks.empty()) {
      s->stacks = std::move(kept.stacks);
    }
    kept = std::move(*s);
  }
  std::stable_sort(out.stalls.begin(), out.stalls.end(),
                   [](const StallFinding& a, const StallFinding& b) {
                     if (a.ongoing != b.ongoing) {
                       return a.ongoing;
                     }
                     return a.start_ns > b.start_ns;
                   });
  out.loops.assign(loops.begin(), loops.end());
  return out;
}

std::vector<StallFinding> FilterStalls(std::vector<StallFinding> stalls, const StallFilter& f) {
  std::erase_if(stalls, [&](const StallFinding& s) {
    return (!f.service.empty() && s.service != f.service) ||
           (!f.loop.empty() && s.loop != f.loop) || (f.since_ns != 0 && s.start_ns < f.since_ns) ||
           (f.ongoing.has_value() && s.ongoing != *f.ongoing);
  });
  return stalls;
}

std::string NoMatchMessage(const StallFilter& f, const std::vector<LoopKey>& known,
                           const std::string& where) {
  constexpr size_t kMaxNames = 20;
  auto list = [](const std::set<std::string>& names) {
    if (names.empty()) {
      return std::string("none");
    }
    std::string out;
    size_t n = 0;
    for (const std::string& name : names) {
      if (n++ == kMaxNames) {
        out += ", … (" + std::to_string(names.size() - kMaxNames) + " more)";
        break;
      }
      out += (out.empty() ? "" : ", ") + name;
    }
    return out;
  };
  if (!f.service.empty()) {
    std::set<std::string> services;
    bool found = false;
    for (const auto& [service, pid, loop] : known) {
      services.insert(service);
      found |= service == f.service;
    }
    if (!found) {
      return "no service '" + f.service + "' in " + where + "; known services: " + list(services);
    }
  }
  if (!f.loop.empty()) {
    std::set<std::string> loops;
    bool found = false;
    for (const auto& [service, pid, loop] : known) {
      if (!f.service.empty() && service != f.service) {
        continue;
      }
      if (f.service.empty()) {
        std::string shown = loop;
        shown.append(" (").append(service).append(")");
        loops.insert(std::move(shown));
      } else {
        loops.insert(loop);
      }
      found |= loop == f.loop;
    }
    if (!found) {
      return "no loop '" + f.loop + "'" +
             (f.service.empty() ? "" : " of service '" + f.service + "'") + " in " + where +
             "; known loops: " + list(loops);
    }
  }
  return "";
}

std::vector<Stack> MergeStacksForDisplay(const std::vector<Stack>& stacks) {
  std::vector<Stack> out;
  std::map<std::string, size_t> index;
  for (const Stack& s : stacks) {
    const std::string key = StackKey(s);
    auto it = index.find(key);
    if (it == index.end()) {
      index[key] = out.size();
      out.push_back(s);
      continue;
    }
    Stack& kept = out[it->second];
    kept.samples += s.samples;
    if (kept.method != s.method) {
      kept.method.clear();  // both ways: say neither
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Stack& a, const Stack& b) { return a.samples > b.samples; });
  return out;
}

size_t DispatchEntryIndex(const Stack& stack) {
  size_t found = std::string::npos;
  for (size_t i = 0; i < stack.frames.size(); ++i) {
    const std::string name = ShortFunction(stack.frames[i].function);
    if (name == "event_base_loop" || name == "event_base_dispatch" || name == "uv_run" ||
        name == "aeMain") {
      found = i;
    }
  }
  return found;
}

std::string UserTopFrame(const Stack& stack) {
  const std::vector<Frame>& frames = stack.frames;
  if (frames.empty()) {
    return "";
  }
  const size_t entry = DispatchEntryIndex(stack);
  const size_t end = entry == std::string::npos ? frames.size() : entry;
  for (size_t i = 0; i < end; ++i) {
    if (!IsPlumbing(frames[i]) && !IsSystemModule(frames[i].module)) {
      return FrameLabel(frames[i]);
    }
  }
  for (size_t i = 0; i < end; ++i) {
    if (!IsPlumbing(frames[i])) {
      return FrameLabel(frames[i]);
    }
  }
  for (size_t i = 0; i < end; ++i) {
    if (!frames[i].function.empty()) {
      return FrameLabel(frames[i]);
    }
  }
  return FrameLabel(frames[end < frames.size() ? end : 0]);
}

std::string StallTopFrame(const StallFinding& stall) {
  const std::vector<Stack> merged = MergeStacksForDisplay(stall.stacks);
  return merged.empty() ? "" : UserTopFrame(merged.front());
}

void LearnTopFrames(const std::vector<StallFinding>& stalls, KnownTopFrames* known) {
  for (const StallFinding& s : stalls) {
    if (s.stacks.empty()) {
      continue;
    }
    const std::string top = StallTopFrame(s);
    if (top.empty()) {
      continue;
    }
    auto& slot = (*known)[KeyOf(s)];
    if (slot.second.empty() || slot.first <= s.start_ns) {
      slot = {s.start_ns, top};
    }
  }
}

std::string EarlierTopFrame(const StallFinding& stall, const KnownTopFrames& known) {
  auto it = known.find(KeyOf(stall));
  if (it == known.end() || it->second.first > stall.start_ns) {
    return "";
  }
  return it->second.second;
}

std::string FormatStalls(const std::vector<StallFinding>& stalls, const StallsFormat& format,
                         const KnownTopFrames& known_in) {
  if (stalls.empty()) {
    return "no stalls\n";
  }
  // Stalls listed earlier than those without stacks are older: learn from all of them. A loop's
  // latest stack before each stall is what a stall without stacks repeats.
  KnownTopFrames known = known_in;
  std::vector<ShownStall> groups;
  {
    std::vector<const StallFinding*> by_age;
    by_age.reserve(stalls.size());
    for (const StallFinding& s : stalls) {
      by_age.push_back(&s);
    }
    std::stable_sort(by_age.begin(), by_age.end(),
                     [](const auto* a, const auto* b) { return a->start_ns < b->start_ns; });
    // Oldest first: each stall without stacks gets the frame of the latest earlier one.
    std::map<const StallFinding*, std::string> earlier;
    for (const StallFinding* s : by_age) {
      if (s->stacks.empty()) {
        earlier[s] = EarlierTopFrame(*s, known);
      } else {
        LearnTopFrames({*s}, &known);
      }
    }
    for (const StallFinding& s : stalls) {
      ShownStall shown = Shown(s, {});
      if (s.stacks.empty()) {
        shown.top = earlier[&s];
        shown.top_earlier = !shown.top.empty();
      }
      if (!groups.empty() && Repeats(KeyForRepeat(groups.back()), KeyForRepeat(shown))) {
        ShownStall& g = groups.back();
        ++g.count;
        g.oldest_ns = std::min(g.oldest_ns, s.start_ns);
        g.min_s = std::min(g.min_s, s.duration_s);
        g.max_s = std::max(g.max_s, s.duration_s);
        if (!shown.stacks.empty()) {
          std::vector<Stack> all = g.stacks;
          all.insert(all.end(), shown.stacks.begin(), shown.stacks.end());
          g.stacks = MergeStacksForDisplay(all);
          if (g.top_earlier || g.top.empty()) {
            g.top = shown.top;
            g.top_earlier = false;
          }
        }
        continue;
      }
      groups.push_back(std::move(shown));
    }
  }
  std::string out;
  for (const ShownStall& g : groups) {
    out += RenderStall(g, format);
  }
  return out;
}

void StallFollower::Seen(const std::vector<StallFinding>& stalls) {
  LearnTopFrames(stalls, &known_);
  for (const StallFinding& s : stalls) {
    Mark(s);
  }
}

bool StallFollower::Mark(const StallFinding& s) {
  const Id id{s.pid, s.loop, s.stall_id != 0 ? s.stall_id : static_cast<uint64_t>(s.start_ns)};
  auto it = closed_.find(id);
  if (it != closed_.end()) {
    if (it->second || s.ongoing) {
      return false;  // printed already, or still going on
    }
    it->second = true;
    return true;
  }
  closed_[id] = !s.ongoing;
  order_.push_back(id);
  if (order_.size() > kMaxRemembered) {
    closed_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

std::string StallFollower::Update(const std::vector<StallFinding>& stalls) {
  std::vector<const StallFinding*> by_age;
  by_age.reserve(stalls.size());
  for (const StallFinding& s : stalls) {
    by_age.push_back(&s);
  }
  std::stable_sort(by_age.begin(), by_age.end(),
                   [](const auto* a, const auto* b) { return a->start_ns < b->start_ns; });
  std::string out;
  for (const StallFinding* s : by_age) {
    if (!Mark(*s)) {
      if (!s->stacks.empty()) {
        LearnTopFrames({*s}, &known_);
      }
      continue;
    }
    if (json_) {
      out += ToJsonLine(*s) + "\n";
      continue;
    }
    ShownStall shown = Shown(*s, known_);
    if (!s->stacks.empty()) {
      LearnTopFrames({*s}, &known_);
    }
    const RepeatKey key = KeyForRepeat(shown);
    if (last_.has_value() && Repeats(*last_, key)) {
      ++repeats_;
      out += "  ×" + std::to_string(repeats_ + 1) +
             " same stack: " + LocalTime(s->start_ns, false) + " stalled " +
             HumanSeconds(s->duration_s) + "\n";
      continue;
    }
    out += RenderStall(shown, format_);
    last_ = key;
    repeats_ = 0;
  }
  return out;
}

StatusOr<std::string> FormatStacksBody(const std::string& body, bool full, size_t max_frames) {
  auto j = ParseJson(body, "stacks");
  if (!j.ok()) {
    return j.status();
  }
  auto arr = ArrayOf(*j, "stacks");
  if (!arr.ok()) {
    return arr.status();
  }
  // Merged by service and by function and line: the daemon merges by exact pc.
  std::map<std::string, std::vector<Stack>> by_service;
  uint64_t total = 0;
  try {
    for (const json& s : *arr) {
      Stack stack;
      stack.samples = s.value("samples", uint64_t{0});
      stack.method = s.value("method", "");
      if (s.contains("frames") && s["frames"].is_array()) {
        for (const json& f : s["frames"]) {
          Frame fr;
          fr.function = f.value("function", "");
          fr.module = f.value("module", "");
          fr.offset = f.value("offset", uint64_t{0});
          fr.file = f.value("file", "");
          fr.line = f.value("line", 0);
          stack.frames.push_back(std::move(fr));
        }
      }
      total += stack.samples;
      by_service[s.value("service", "")].push_back(std::move(stack));
    }
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string("bad stack from the daemon: ") + e.what());
  }
  struct Item {
    std::string service;
    Stack stack;
  };
  std::vector<Item> items;
  for (auto& [service, stacks] : by_service) {
    for (Stack& st : MergeStacksForDisplay(stacks)) {
      items.push_back({service, std::move(st)});
    }
  }
  if (items.empty()) {
    return std::string("no stacks\n");
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.stack.samples > b.stack.samples; });
  std::string out;
  for (const Item& it : items) {
    char head[128];
    std::snprintf(head, sizeof head, "%llu samples (%.1f%%)  ",
                  static_cast<unsigned long long>(it.stack.samples),
                  total > 0 ? 100.0 * static_cast<double>(it.stack.samples) / total : 0.0);
    out += head + it.service + "  top: " + UserTopFrame(it.stack) + "\n";
    AppendFrames(it.stack, {.full = full, .max_frames = max_frames}, &out);
    out += "\n";
  }
  return out;
}

namespace {

// 1243 → "1 243": counts read at a glance.
std::string Grouped(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) {
      out += ' ';
    }
    out += digits[i];
  }
  return out;
}

// The span the figures add up over: "in 42 s", "in 10 min", "in 3.5 h".
std::string Span(double s) {
  char buf[32];
  if (s < 120) {
    std::snprintf(buf, sizeof(buf), "in %.0f s", s);
  } else if (s < 2 * 3600) {
    std::snprintf(buf, sizeof(buf), "in %.0f min", s / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "in %.1f h", s / 3600);
  }
  return buf;
}

}  // namespace

StatusOr<std::string> FormatCallsBody(const std::string& body) {
  auto j = ParseJson(body, "/api/v1/calls");
  if (!j.ok()) {
    return j.status();
  }
  auto calls = ArrayOf(*j, "calls");
  if (!calls.ok()) {
    return calls.status();
  }
  if (calls->empty()) {
    return std::string(
        "No blocking calls on a watched loop thread (yet): the ledger counts name resolution, "
        "sleeps, disk syncs, blocking connects, waits and locks made by loop threads.\n");
  }
  std::string out;
  std::string group;
  for (const auto& c : *calls) {
    try {
      const std::string g = c.at("service").get<std::string>() + " (process " +
                            std::to_string(c.at("process").get<int64_t>()) + ", pid " +
                            std::to_string(c.at("pid").get<int64_t>()) + ") loop " +
                            c.at("loop").get<std::string>();
      if (g != group) {
        out += g + ":\n";
        group = g;
      }
      const json& site = c.at("site");
      std::string where = site.value("function", "");
      const std::string file = site.value("file", "");
      const int64_t line = site.value("line", int64_t{0});
      if (where.empty()) {
        where = site.value("module", "?");
      }
      if (!file.empty()) {
        where += " (" + file + (line > 0 ? ":" + std::to_string(line) : "") + ")";
      }
      out += "  " + c.at("call").get<std::string>() + " from " + where + ": " +
             Grouped(c.at("count").get<uint64_t>()) +
             (c.at("count").get<uint64_t>() == 1 ? " call, " : " calls, ") +
             HumanSeconds(c.at("p99_s").get<double>()) + " p99, " +
             HumanSeconds(c.at("max_s").get<double>()) + " max, " +
             HumanSeconds(c.at("total_s").get<double>()) + " total " +
             Span(c.at("observed_s").get<double>()) + "\n";
    } catch (const json::exception&) {
      return InvalidArgumentError(
          "the daemon's /api/v1/calls answer has an entry without service, pid, loop, call, "
          "site, count or times");
    }
  }
  const uint64_t shown = calls->size();
  const uint64_t sites = j->value("sites", shown);
  if (sites > shown) {
    out += "(" + Grouped(sites - shown) + " more call sites; --limit shows more)\n";
  }
  const uint64_t overflow = j->value("overflow", uint64_t{0});
  const uint64_t not_kept = j->value("sites_not_kept", uint64_t{0});
  if (overflow + not_kept > 0) {
    out += Grouped(overflow + not_kept) +
           " calls were counted without their call site (the agent's or the daemon's site "
           "table was full); they are in stallwatch_blocking_calls_total.\n";
  }
  return out;
}

}  // namespace stallwatch::cli
