#include "pprof.h"

#include <zlib.h>

#include <cstdio>
#include <map>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "profile.pb.h"

namespace stallwatch::daemon {
namespace {

namespace pb = perftools::profiles;

// Modules are laid out at synthetic addresses this far apart (64 GiB): a frame's address is its
// mapping's start plus its offset in the module, so addresses are distinct and inside their
// mapping without the process's real layout (agents send module offsets only).
constexpr int kMappingShift = 36;

// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD:
// profile.proto's strings are proto3 `string`s, which protobuf refuses (with an error log per
// field) to serialize unless valid, and agents send names as the programs have them.
std::string ValidUtf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    unsigned min = 0;
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      min = 0x10000;
    }
    unsigned cp = c & (0x3f >> n);
    size_t k = 1;
    for (; n > 0 && k <= n && i + k < s.size(); ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) {
        break;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (n == 0 || k != n + 1 || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      out += "\xEF\xBF\xBD";  // U+FFFD for the first byte; the rest is looked at again
      ++i;
      continue;
    }
    out.append(s, i, n + 1);
    i += n + 1;
  }
  return out;
}

class Builder {
 public:
  Builder() { Str(""); }

  int64_t Str(const std::string& s) {
    auto [it, added] = strings_.try_emplace(s, static_cast<int64_t>(strings_.size()));
    if (added) {
      p_.add_string_table(ValidUtf8(s));
    }
    return it->second;
  }

  uint64_t LocationOf(const Frame& f) {
    const uint64_t mapping = f.kind == "python" || f.module.empty() ? 0 : MappingOf(f);
    const uint64_t address =
        mapping == 0 ? 0 : (mapping << kMappingShift) + (f.offset & ((1ULL << kMappingShift) - 1));
    const uint64_t function = FunctionOf(f);
    auto [it, added] = locations_.try_emplace(std::make_tuple(mapping, address, function, f.line),
                                              locations_.size() + 1);
    if (added) {
      pb::Location* l = p_.add_location();
      l->set_id(it->second);
      l->set_mapping_id(mapping);
      l->set_address(address);
      pb::Line* line = l->add_line();
      line->set_function_id(function);
      line->set_line(f.line);
    }
    return it->second;
  }

  // Registers first the mapping of the first module (outermost frames first) whose name does
  // not say it is a shared object: the program, as a rule, whichever thread the loop ran on.
  void MainMappingFirst(const std::vector<StackTotal>& stacks) {
    for (const StackTotal& t : stacks) {
      if (t.stack == nullptr) {
        continue;
      }
      for (auto it = t.stack->frames.rbegin(); it != t.stack->frames.rend(); ++it) {
        const size_t slash = it->module.rfind('/');
        const std::string base =
            slash == std::string::npos ? it->module : it->module.substr(slash + 1);
        if (it->kind != "python" && !base.empty() && base.find(".so") == std::string::npos &&
            base.front() != '[') {
          MappingOf(*it);
          return;
        }
      }
    }
  }

  pb::Profile& profile() { return p_; }

 private:
  uint64_t MappingOf(const Frame& f) {
    auto [it, added] = mappings_.try_emplace(f.module, mappings_.size() + 1);
    const uint64_t id = it->second;
    if (added) {
      pb::Mapping* m = p_.add_mapping();
      m->set_id(id);
      m->set_memory_start(id << kMappingShift);
      m->set_memory_limit((id + 1) << kMappingShift);
      m->set_filename(Str(f.module));
      // Every location is named already: readers need not (and cannot) symbolize them.
      m->set_has_functions(true);
    }
    pb::Mapping* m = p_.mutable_mapping(static_cast<int>(id - 1));
    if (!f.file.empty()) {
      m->set_has_filenames(true);
    }
    if (f.line > 0) {
      m->set_has_line_numbers(true);
    }
    return id;
  }

  uint64_t FunctionOf(const Frame& f) {
    std::string name = f.function;
    if (name.empty()) {
      // As the folded format names it (stack_store.cc): the module's base name and offset.
      const size_t slash = f.module.rfind('/');
      char off[32];
      std::snprintf(off, sizeof(off), "+0x%llx", static_cast<unsigned long long>(f.offset));
      name = (slash == std::string::npos ? f.module : f.module.substr(slash + 1)) + off;
    }
    const int64_t name_id = Str(name), file_id = Str(f.file);
    auto [it, added] =
        functions_.try_emplace(std::make_pair(name_id, file_id), functions_.size() + 1);
    if (added) {
      pb::Function* fn = p_.add_function();
      fn->set_id(it->second);
      fn->set_name(name_id);
      fn->set_system_name(name_id);
      fn->set_filename(file_id);
    }
    return it->second;
  }

  pb::Profile p_;
  std::unordered_map<std::string, int64_t> strings_;
  std::map<std::string, uint64_t> mappings_;
  std::map<std::pair<int64_t, int64_t>, uint64_t> functions_;  // (name, file)
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, int>, uint64_t> locations_;
};

StatusOr<std::string> Gzip(const std::string& in) {
  z_stream z{};
  // windowBits 15 + 16: a gzip header and trailer rather than zlib's.
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return InternalError("gzip: deflateInit2 failed");
  }
  std::string out(deflateBound(&z, static_cast<uLong>(in.size())) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  const size_t n = z.total_out;
  deflateEnd(&z);
  if (rc != Z_STREAM_END) {
    return InternalError("gzip: deflate failed (" + std::to_string(rc) + ")");
  }
  out.resize(n);
  return out;
}

}  // namespace

StatusOr<std::string> EncodePprof(const std::vector<StackTotal>& stacks,
                                  const PprofOptions& options) {
  Builder b;
  pb::Profile& p = b.profile();
  pb::ValueType* samples = p.add_sample_type();
  samples->set_type(b.Str("samples"));
  samples->set_unit(b.Str("count"));
  pb::ValueType* stall = p.add_sample_type();
  stall->set_type(b.Str("stall_time"));
  stall->set_unit(b.Str("nanoseconds"));
  p.set_default_sample_type(b.Str("stall_time"));
  p.set_time_nanos(options.time_ns);
  p.set_duration_nanos(options.duration_ns);
  for (const std::string& c : options.comments) {
    p.add_comment(b.Str(c));
  }
  auto label = [&](pb::Sample* s, const char* key, const std::string& value) {
    if (value.empty()) {
      return;
    }
    pb::Label* l = s->add_label();
    l->set_key(b.Str(key));
    l->set_str(b.Str(value));
  };
  // Readers take the first mapping for the main binary ("File:" in `go tool pprof`): the first
  // module that is not a shared object, searched from the outermost frames in, comes first.
  b.MainMappingFirst(stacks);
  for (const StackTotal& t : stacks) {
    if (t.stack == nullptr || t.stack->frames.empty()) {
      continue;
    }
    pb::Sample* s = p.add_sample();
    for (const Frame& f : t.stack->frames) {  // innermost first, as pprof wants
      s->add_location_id(b.LocationOf(f));
    }
    s->add_value(static_cast<int64_t>(t.samples));
    s->add_value(t.stall_ns);
    label(s, "service", t.service);
    label(s, "loop", t.loop);
    label(s, "class", t.stall_class);
  }
  std::string raw;
  if (!p.SerializeToString(&raw)) {
    return InternalError("pprof: cannot serialize the profile");
  }
  return Gzip(raw);
}

StatusOr<std::string> GunzipForTest(const std::string& gz) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) {
    return InternalError("gunzip: inflateInit2 failed");
  }
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  z.avail_in = static_cast<uInt>(gz.size());
  std::string out;
  char buf[16384];
  int rc = Z_OK;
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof(buf);
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - z.avail_out);
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END) {
    return InvalidArgumentError("not a complete gzip stream");
  }
  return out;
}

}  // namespace stallwatch::daemon
