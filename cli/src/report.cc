#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

namespace stallwatch::cli {

namespace {

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string Qps(double v) { return Fmt(v >= 1000 ? "%.0f" : "%.2f", v); }

std::string Deviation(const ExperimentRow& r) {
  if (r.expected_qps <= 0) return "";
  return Fmt("%+.1f%%", (r.qps / r.expected_qps - 1.0) * 100.0);
}

struct Column {
  std::string title;
  bool right;  // numbers are right-aligned
};

const std::vector<Column>& Columns() {
  static const std::vector<Column> kColumns = {{"mode", false},
                                               {"c", true},
                                               {"requests", true},
                                               {"QPS", true},
                                               {"expected", true},
                                               {"dev", true},
                                               {"mean", true},
                                               {"p95", true},
                                               {"errors", true},
                                               {"stalls", true},
                                               {"delay p99", true},
                                               {"class", false},
                                               {"top blocking frame", false}};
  return kColumns;
}

std::vector<std::string> Cells(const ExperimentRow& r) {
  return {ModeName(r.mode),
          std::to_string(r.concurrency),
          std::to_string(r.requests),
          Qps(r.qps),
          Qps(r.expected_qps),
          Deviation(r),
          HumanSeconds(r.mean_s),
          HumanSeconds(r.p95_s),
          std::to_string(r.errors),
          std::to_string(r.findings.stalls),
          HumanSeconds(r.findings.delay_p99_s),
          r.findings.stall_class.empty() ? "-" : r.findings.stall_class,
          r.findings.top_frame.empty() ? "-" : r.findings.top_frame};
}

std::string Pad(const std::string& s, size_t width, bool right) {
  if (s.size() >= width) return s;
  const std::string fill(width - s.size(), ' ');
  return right ? fill + s : s + fill;
}

std::string Table(const std::vector<ExperimentRow>& rows, const ReportContext& ctx) {
  const auto& cols = Columns();
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) cells.push_back(Cells(r));
  std::vector<size_t> width(cols.size());
  for (size_t i = 0; i < cols.size(); ++i) {
    width[i] = cols[i].title.size();
    for (const auto& row : cells) width[i] = std::max(width[i], row[i].size());
  }
  std::string out = "work " + HumanSeconds(ctx.work.count() / 1000.0) + " per request, " +
                    std::to_string(ctx.workers) + " offload workers, " +
                    HumanSeconds(std::chrono::duration<double>(ctx.run_duration).count()) +
                    " per run\n";
  auto line = [&](const std::vector<std::string>& v) {
    std::string l;
    for (size_t i = 0; i < cols.size(); ++i) {
      if (i > 0) l += "  ";
      l += Pad(v[i], width[i], cols[i].right);
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    return l + "\n";
  };
  std::vector<std::string> titles;
  for (const auto& c : cols) titles.push_back(c.title);
  out += line(titles);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  out += line(rule);
  for (const auto& row : cells) out += line(row);
  return out;
}

std::string Markdown(const std::vector<ExperimentRow>& rows, const ReportContext& ctx) {
  const auto& cols = Columns();
  std::string out = "Work " + HumanSeconds(ctx.work.count() / 1000.0) + " per request, " +
                    std::to_string(ctx.workers) + " offload workers, " +
                    HumanSeconds(std::chrono::duration<double>(ctx.run_duration).count()) +
                    " per run.\n\n|";
  for (const auto& c : cols) out += " " + c.title + " |";
  out += "\n|";
  for (const auto& c : cols) out += c.right ? "---:|" : "---|";
  out += "\n";
  for (const auto& r : rows) {
    out += "|";
    auto cells = Cells(r);
    for (size_t i = 0; i < cells.size(); ++i) {
      std::string cell = cells[i];
      if (i + 1 == cells.size() && cell != "-") cell = "`" + cell + "`";
      out += " " + cell + " |";
    }
    out += "\n";
  }
  return out;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

std::string Csv(const std::vector<ExperimentRow>& rows) {
  std::string out =
      "mode,concurrency,requests,qps,expected_qps,mean_s,p95_s,max_s,errors,stalls,"
      "max_stall_s,loop_delay_p99_s,class,syscall,top_frame\n";
  for (const auto& r : rows) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%s,%d,%llu,%.4f,%.4f,%.6f,%.6f,%.6f,%llu,%llu,%.6f,%.6f,",
                  ModeName(r.mode), r.concurrency, static_cast<unsigned long long>(r.requests),
                  r.qps, r.expected_qps, r.mean_s, r.p95_s, r.max_s,
                  static_cast<unsigned long long>(r.errors),
                  static_cast<unsigned long long>(r.findings.stalls), r.findings.max_stall_s,
                  r.findings.delay_p99_s);
    out += buf;
    out += CsvField(r.findings.stall_class) + "," + CsvField(r.findings.syscall) + "," +
           CsvField(r.findings.top_frame) + "\n";
  }
  return out;
}

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A "nice" tick step (1, 2 or 5 × 10^k) giving about `ticks` ticks up to max.
double NiceStep(double max, int ticks) {
  if (max <= 0) return 1;
  const double raw = max / ticks;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * p) return m * p;
  }
  return 10 * p;
}

}  // namespace

std::string HumanSeconds(double s) {
  if (s <= 0) return "0";
  if (s >= 1) return Fmt(s >= 100 ? "%.0fs" : (s >= 10 ? "%.1fs" : "%.2fs"), s);
  if (s >= 1e-3) {
    const double ms = s * 1e3;
    return Fmt(ms >= 100 ? "%.0fms" : (ms >= 10 ? "%.1fms" : "%.2fms"), ms);
  }
  return Fmt("%.0fus", s * 1e6);
}

bool ParseReportFormat(const std::string& s, ReportFormat* out) {
  static const std::map<std::string, ReportFormat> kNames = {{"table", ReportFormat::kTable},
                                                             {"markdown", ReportFormat::kMarkdown},
                                                             {"md", ReportFormat::kMarkdown},
                                                             {"csv", ReportFormat::kCsv},
                                                             {"json", ReportFormat::kJson}};
  auto it = kNames.find(s);
  if (it == kNames.end()) return false;
  *out = it->second;
  return true;
}

nlohmann::json ExperimentToJson(const std::vector<ExperimentRow>& rows, const ReportContext& ctx) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& r : rows) {
    runs.push_back({
        {"mode", ModeName(r.mode)},
        {"concurrency", r.concurrency},
        {"requests", r.requests},
        {"qps", r.qps},
        {"expected_qps", r.expected_qps},
        {"qps_ratio", r.expected_qps > 0 ? r.qps / r.expected_qps : 0.0},
        {"mean_s", r.mean_s},
        {"p95_s", r.p95_s},
        {"max_s", r.max_s},
        {"errors", r.errors},
        {"elapsed_s", r.elapsed_s},
        {"loop_kept_free_by_design", ModeKeepsLoopFree(r.mode)},
        {"findings",
         {{"stalls", r.findings.stalls},
          {"max_stall_s", r.findings.max_stall_s},
          {"loop_delay_p99_s", r.findings.delay_p99_s},
          {"loop_delay_max_s", r.findings.delay_max_s},
          {"class", r.findings.stall_class},
          {"syscall", r.findings.syscall},
          {"top_frame", r.findings.top_frame}}},
    });
  }
  return {{"work_s", ctx.work.count() / 1000.0},
          {"workers", ctx.workers},
          {"run_duration_s", std::chrono::duration<double>(ctx.run_duration).count()},
          {"runs", runs}};
}

std::string FormatExperiment(const std::vector<ExperimentRow>& rows, ReportFormat format,
                             const ReportContext& ctx) {
  switch (format) {
    case ReportFormat::kTable:
      return Table(rows, ctx);
    case ReportFormat::kMarkdown:
      return Markdown(rows, ctx);
    case ReportFormat::kCsv:
      return Csv(rows);
    case ReportFormat::kJson:
      return ExperimentToJson(rows, ctx).dump(2) + "\n";
  }
  return "";
}

std::string RenderQpsSvg(const std::vector<ExperimentRow>& rows, const ReportContext& ctx) {
  constexpr double kW = 760, kH = 440, kLeft = 70, kRight = 190, kTop = 40, kBottom = 60;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  static const char* kColors[] = {"#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#17becf"};
  std::map<Mode, std::vector<const ExperimentRow*>> by_mode;
  double max_c = 1, max_q = 1;
  for (const auto& r : rows) {
    by_mode[r.mode].push_back(&r);
    max_c = std::max(max_c, static_cast<double>(r.concurrency));
    max_q = std::max({max_q, r.qps, r.expected_qps});
  }
  const double ystep = NiceStep(max_q * 1.05, 6);
  const double ymax = std::ceil(max_q * 1.05 / ystep) * ystep;
  const double xstep = NiceStep(max_c, 6);
  const double xmax = std::ceil(max_c / xstep) * xstep;
  auto X = [&](double c) { return kLeft + c / xmax * pw; };
  auto Y = [&](double q) { return kTop + ph - q / ymax * ph; };
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
                "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                kW, kH, kW, kH);
  s += buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.0f\" y=\"22\" font-size=\"15\" font-weight=\"bold\">QPS vs "
                "concurrency (work %s, %d workers; dashed: expected)</text>\n",
                kLeft, XmlEscape(HumanSeconds(ctx.work.count() / 1000.0)).c_str(), ctx.workers);
  s += buf;
  for (double y = 0; y <= ymax + 1e-9; y += ystep) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                  kLeft, Y(y), kLeft + pw, Y(y), kLeft - 6, Y(y) + 4, y);
    s += buf;
  }
  for (double x = 0; x <= xmax + 1e-9; x += xstep) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                  X(x), kTop, X(x), kTop + ph, X(x), kTop + ph + 18, x);
    s += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                "stroke=\"#333\"/>\n"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">concurrency "
                "(connections)</text>\n"
                "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
                "%.1f)\">requests per second</text>\n",
                kLeft, kTop, pw, ph, kLeft + pw / 2, kH - 18, kTop + ph / 2, kTop + ph / 2);
  s += buf;
  int legend = 0;
  for (const auto& [mode, points] : by_mode) {
    const char* color = kColors[static_cast<int>(mode) % 6];
    std::string measured, expected;
    for (const ExperimentRow* r : points) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", X(r->concurrency), Y(r->qps));
      measured += buf;
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", X(r->concurrency), Y(r->expected_qps));
      expected += buf;
    }
    s += "<g><title>" + std::string(ModeName(mode)) + "</title>\n";
    s += "<polyline fill=\"none\" stroke=\"" + std::string(color) +
         "\" stroke-width=\"1.5\" stroke-dasharray=\"5,4\" opacity=\"0.7\" points=\"" + expected +
         "\"/>\n";
    s += "<polyline fill=\"none\" stroke=\"" + std::string(color) +
         "\" stroke-width=\"2.5\" points=\"" + measured + "\"/>\n";
    for (const ExperimentRow* r : points) {
      std::snprintf(buf, sizeof buf,
                    "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>%s c=%d: %.2f "
                    "req/s (expected %.2f)</title></circle>\n",
                    X(r->concurrency), Y(r->qps), color, ModeName(mode), r->concurrency, r->qps,
                    r->expected_qps);
      s += buf;
    }
    s += "</g>\n";
    const double ly = kTop + 10 + legend * 22;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                  "stroke-width=\"2.5\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                  kLeft + pw + 16, ly, kLeft + pw + 40, ly, color, kLeft + pw + 46, ly + 4,
                  ModeName(mode));
    s += buf;
    ++legend;
  }
  s += "</svg>\n";
  return s;
}

std::string FormatProgressLine(size_t index, size_t total, const ExperimentRow& r) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "[%zu/%zu] %s c=%d: %.2f req/s (expected %.2f), mean %s, p95 %s, %llu errors, "
                "%llu %s%s%s",
                index, total, ModeName(r.mode), r.concurrency, r.qps, r.expected_qps,
                HumanSeconds(r.mean_s).c_str(), HumanSeconds(r.p95_s).c_str(),
                static_cast<unsigned long long>(r.errors),
                static_cast<unsigned long long>(r.findings.stalls),
                r.findings.stalls == 1 ? "stall" : "stalls",
                r.findings.top_frame.empty() ? "" : " in ", r.findings.top_frame.c_str());
  return buf;
}

}  // namespace stallwatch::cli
