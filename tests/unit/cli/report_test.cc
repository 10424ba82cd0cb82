#include "report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace stallwatch::cli {
namespace {

std::vector<ExperimentRow> Rows() {
  ExperimentRow block;
  block.mode = Mode::kBlock;
  block.concurrency = 5;
  block.requests = 20;
  block.qps = 1.96;
  block.expected_qps = 2.0;
  block.mean_s = 2.549;
  block.p95_s = 2.552;
  block.findings.stalls = 4;
  block.findings.delay_p99_s = 2.5;
  block.findings.stall_class = "blocked";
  block.findings.syscall = "clock_nanosleep";
  block.findings.top_frame = "stallwatch::cli::BlockingSleepOnLoop";
  ExperimentRow async;
  async.mode = Mode::kAsync;
  async.concurrency = 10;
  async.requests = 200;
  async.qps = 19.06;
  async.expected_qps = 20.0;
  async.mean_s = 0.5247;
  async.p95_s = 0.534;
  async.errors = 1;
  async.findings.delay_p99_s = 0.000150;
  return {block, async};
}

const ReportContext kCtx{};

TEST(HumanSeconds, Units) {
  EXPECT_EQ(HumanSeconds(0), "0");
  EXPECT_EQ(HumanSeconds(2.549), "2.55s");
  EXPECT_EQ(HumanSeconds(10.2), "10.2s");
  EXPECT_EQ(HumanSeconds(0.513), "513ms");
  EXPECT_EQ(HumanSeconds(0.0421), "42.1ms");
  EXPECT_EQ(HumanSeconds(0.0012), "1.20ms");
  EXPECT_EQ(HumanSeconds(0.000087), "87us");
}

TEST(ReportFormat, Names) {
  ReportFormat f;
  EXPECT_TRUE(ParseReportFormat("markdown", &f));
  EXPECT_EQ(f, ReportFormat::kMarkdown);
  EXPECT_TRUE(ParseReportFormat("md", &f));
  EXPECT_TRUE(ParseReportFormat("csv", &f));
  EXPECT_EQ(f, ReportFormat::kCsv);
  EXPECT_FALSE(ParseReportFormat("html", &f));
}

TEST(FormatExperiment, TableAlignsColumns) {
  const std::string t = FormatExperiment(Rows(), ReportFormat::kTable, kCtx);
  EXPECT_NE(t.find("work 500ms per request, 5 offload workers, 10.0s per run"), std::string::npos)
      << t;
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < t.size()) {
    const size_t eol = t.find('\n', pos);
    lines.push_back(t.substr(pos, eol - pos));
    pos = eol + 1;
  }
  ASSERT_EQ(lines.size(), 5u) << t;
  EXPECT_EQ(lines[1].rfind("mode", 0), 0u);
  // The QPS column is right-aligned: "1.96" and "19.06" end at the same column.
  const size_t q1 = lines[3].find("1.96") + 4, q2 = lines[4].find("19.06") + 5;
  EXPECT_EQ(q1, q2) << t;
  EXPECT_NE(lines[3].find("-2.0%"), std::string::npos) << t;
  EXPECT_NE(lines[3].find("2.55s"), std::string::npos);
  EXPECT_NE(lines[3].find("blocked  stallwatch::cli::BlockingSleepOnLoop"), std::string::npos);
  EXPECT_NE(lines[4].find("-4.7%"), std::string::npos) << t;
  EXPECT_NE(lines[4].find("150us"), std::string::npos) << t;
}

TEST(FormatExperiment, Markdown) {
  const std::string md = FormatExperiment(Rows(), ReportFormat::kMarkdown, kCtx);
  EXPECT_NE(md.find("| mode | c | requests | QPS | expected |"), std::string::npos) << md;
  EXPECT_NE(md.find("|---|---:|---:|"), std::string::npos) << md;
  EXPECT_NE(md.find("| block | 5 | 20 | 1.96 | 2.00 | -2.0% |"), std::string::npos) << md;
  EXPECT_NE(md.find("`stallwatch::cli::BlockingSleepOnLoop` |"), std::string::npos) << md;
  EXPECT_NE(md.find("| async | 10 | 200 | 19.06 | 20.00 | -4.7% |"), std::string::npos) << md;
}

TEST(FormatExperiment, Csv) {
  const std::string csv = FormatExperiment(Rows(), ReportFormat::kCsv, kCtx);
  EXPECT_EQ(csv.rfind("mode,concurrency,requests,qps,expected_qps,mean_s,p95_s,max_s,errors,", 0),
            0u);
  EXPECT_NE(csv.find("\nblock,5,20,1.9600,2.0000,2.549000,2.552000,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",blocked,clock_nanosleep,stallwatch::cli::BlockingSleepOnLoop\n"),
            std::string::npos)
      << csv;
  EXPECT_NE(csv.find("\nasync,10,200,19.0600,20.0000,"), std::string::npos) << csv;
  // A top frame with a comma is quoted.
  auto rows = Rows();
  rows[0].findings.top_frame = "f<int, int>";
  const std::string quoted = FormatExperiment(rows, ReportFormat::kCsv, kCtx);
  EXPECT_NE(quoted.find(",\"f<int, int>\"\n"), std::string::npos) << quoted;
}

TEST(FormatExperiment, Json) {
  const auto j = nlohmann::json::parse(FormatExperiment(Rows(), ReportFormat::kJson, kCtx));
  EXPECT_DOUBLE_EQ(j["work_s"].get<double>(), 0.5);
  EXPECT_EQ(j["workers"], 5);
  ASSERT_EQ(j["runs"].size(), 2u);
  const auto& b = j["runs"][0];
  EXPECT_EQ(b["mode"], "block");
  EXPECT_EQ(b["concurrency"], 5);
  EXPECT_NEAR(b["qps_ratio"].get<double>(), 0.98, 1e-9);
  EXPECT_EQ(b["findings"]["class"], "blocked");
  EXPECT_EQ(b["findings"]["stalls"], 4);
  EXPECT_EQ(b["loop_kept_free_by_design"], false);
  EXPECT_EQ(j["runs"][1]["loop_kept_free_by_design"], true);
  EXPECT_EQ(j["runs"][1]["errors"], 1);
}

TEST(RenderQpsSvg, OneSeriesPerModeWithinTheCanvas) {
  const std::string svg = RenderQpsSvg(Rows(), kCtx);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  size_t series = 0;
  for (size_t p = svg.find("<g><title>"); p != std::string::npos;
       p = svg.find("<g><title>", p + 1)) {
    ++series;
  }
  EXPECT_EQ(series, 2u);
  EXPECT_NE(svg.find("<title>block c=5: 1.96 req/s (expected 2.00)</title>"), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  // Every point lies inside the 760×440 canvas.
  for (size_t p = svg.find("cx=\""); p != std::string::npos; p = svg.find("cx=\"", p + 1)) {
    const double cx = std::stod(svg.substr(p + 4));
    const size_t q = svg.find("cy=\"", p);
    const double cy = std::stod(svg.substr(q + 4));
    EXPECT_GT(cx, 0);
    EXPECT_LT(cx, 760);
    EXPECT_GT(cy, 0);
    EXPECT_LT(cy, 440);
  }
}

TEST(FormatProgressLine, OneLine) {
  const std::string line = FormatProgressLine(3, 18, Rows()[0]);
  EXPECT_EQ(line,
            "[3/18] block c=5: 1.96 req/s (expected 2.00), mean 2.55s, p95 2.55s, 0 errors, 4 "
            "stalls in stallwatch::cli::BlockingSleepOnLoop");
  ExperimentRow one = Rows()[0];
  one.findings.stalls = 1;
  EXPECT_NE(FormatProgressLine(1, 1, one).find(", 1 stall in "), std::string::npos);
}

}  // namespace
}  // namespace stallwatch::cli
