// /metrics in OpenMetrics: served when the scraper's Accept header asks for it, valid by a strict
// reading of the format, the same series as the text format (which is unchanged), and the stall
// duration buckets carrying the id of the latest stall each counted, an id the stall API
// resolves.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "api_query.h"
#include "openmetrics_check.h"
#include "registry.h"
#include "stallwatch/common/histogram.h"
#include "test_support.h"
#include "test_util.h"

namespace stallwatch::daemon {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::OpenMetricsSample;
using testing::ParseOpenMetrics;

constexpr Registry::Format kOm = Registry::Format::kOpenMetrics;

Now At(int64_t seconds) {
  Now n;
  n.mono_ns = seconds * 1'000'000'000;
  n.unix_ns = 1'700'000'000'000'000'000 + n.mono_ns;
  return n;
}

wire::Hello Hello(const std::string& service, int64_t pid, std::vector<std::string> loops) {
  wire::Hello h;
  h.service = service;
  h.pid = pid;
  h.loops = std::move(loops);
  return h;
}

StallFinding Closed(const std::string& service, int64_t pid, const std::string& loop, uint64_t id,
                    double duration_s, int64_t start_ns) {
  StallFinding f;
  f.service = service;
  f.pid = pid;
  f.loop = loop;
  f.stall_id = id;
  f.start_ns = start_ns;
  f.duration_s = duration_s;
  f.ongoing = false;
  f.stall_class = StallClass::kCpu;
  Stack s;
  s.samples = 1;
  s.frames = {Frame{"spin", "/app", 1, "", 0}};
  f.stacks.push_back(s);
  return f;
}

// The sample lines of the text format (comments dropped), sorted.
std::vector<std::string> TextSamples(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t nl = text.find('\n', at);
    const std::string line = text.substr(at, nl - at);
    at = nl == std::string::npos ? text.size() : nl + 1;
    if (!line.empty() && line[0] != '#') {
      out.push_back(line);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The same of the OpenMetrics text: its sample lines without exemplars, sorted.
std::vector<std::string> OmSamples(const std::vector<OpenMetricsSample>& samples) {
  std::vector<std::string> out;
  out.reserve(samples.size());
  for (const auto& s : samples) {
    out.push_back(s.line);
  }
  std::sort(out.begin(), out.end());
  return out;
}

const OpenMetricsSample* Bucket(const std::vector<OpenMetricsSample>& samples,
                                const std::string& loop, const std::string& le) {
  for (const auto& s : samples) {
    if (s.name == "stallwatch_stall_duration_seconds_bucket" && s.labels.at("loop") == loop &&
        s.labels.at("le") == le) {
      return &s;
    }
  }
  return nullptr;
}

TEST(OpenMetrics, AcceptHeaderNegotiation) {
  // Prometheus 2.x's scrape header.
  EXPECT_TRUE(WantsOpenMetrics(
      "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
      "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
  EXPECT_TRUE(WantsOpenMetrics("application/openmetrics-text"));
  EXPECT_TRUE(WantsOpenMetrics("Application/OpenMetrics-Text; version=1.0.0"));
  EXPECT_TRUE(WantsOpenMetrics("text/plain;q=0.5, application/openmetrics-text;q=0.6"));
  EXPECT_FALSE(WantsOpenMetrics(""));
  EXPECT_FALSE(WantsOpenMetrics("*/*"));
  EXPECT_FALSE(WantsOpenMetrics("text/plain"));
  EXPECT_FALSE(WantsOpenMetrics("text/plain;version=0.0.4"));
  EXPECT_FALSE(WantsOpenMetrics("application/openmetrics-text;q=0, text/plain"));
  EXPECT_FALSE(WantsOpenMetrics("application/openmetrics-text;q=0.2, text/plain;q=0.9"));
  EXPECT_FALSE(WantsOpenMetrics("application/openmetrics-text;q=bogus"));
  EXPECT_FALSE(WantsOpenMetrics("application/json"));
}

// The checker itself refuses what it must (else the tests below would prove nothing).
TEST(OpenMetrics, CheckerRefusesInvalidExpositions) {
  const std::string good =
      "# TYPE a counter\n# HELP a An \\\"a\\\".\na_total{x=\"1\"} 3 # {id=\"7\"} 1 1700000000.5\n"
      "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1 # {id=\"1\"} 0.4\nh_bucket{le=\"+Inf\"} 2\n"
      "h_count 2\nh_sum 1.4\n# EOF\n";
  ASSERT_EQ(ParseOpenMetrics(good).error, "");
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"no EOF", "# TYPE a gauge\na 1\n"},
      {"after EOF", "# TYPE a gauge\na 1\n# EOF\na 2\n"},
      {"counter named _total", "# TYPE a_total counter\na_total 1\n# EOF\n"},
      {"sample before TYPE", "a 1\n# EOF\n"},
      {"wrong suffix", "# TYPE a counter\na 1\n# EOF\n"},
      {"family twice", "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n"},
      {"bad escape", "# TYPE a gauge\na{x=\"\\t\"} 1\n# EOF\n"},
      {"bad number", "# TYPE a gauge\na 0x1\n# EOF\n"},
      {"empty line", "# TYPE a gauge\n\na 1\n# EOF\n"},
      {"exemplar on a gauge", "# TYPE a gauge\na 1 # {id=\"1\"} 1\n# EOF\n"},
      {"exemplar of 129 characters",
       "# TYPE a counter\na_total 1 # {id=\"" + std::string(127, 'x') + "\"} 1\n# EOF\n"},
      {"exemplar outside its bucket",
       "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1 # {id=\"1\"} 0.7\nh_bucket{le=\"+Inf\"} 1\n"
       "h_count 1\nh_sum 0.7\n# EOF\n"},
      {"le not increasing",
       "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} "
       "1\nh_count 1\nh_sum 1\n# EOF\n"},
      {"no +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\nh_sum 1\n# EOF\n"},
      {"count not +Inf",
       "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 1\n# EOF\n"},
      {"series split", "# TYPE g gauge\ng{a=\"1\"} 1\ng{a=\"2\"} 1\ng{a=\"1\"} 2\n# EOF\n"},
  };
  EXPECT_EQ(ParseOpenMetrics("# TYPE a counter\na_total 1 # {id=\"" + std::string(126, 'x') +
                             "\"} 1\n# EOF\n")
                .error,
            "")
      << "128 characters are allowed";
  for (const auto& [what, text] : bad) {
    EXPECT_NE(ParseOpenMetrics(text).error, "") << what;
  }
}

TEST(OpenMetrics, BucketsCarryTheLatestStallOfEachAndTheApiResolvesIt) {
  Registry r;
  const auto c = r.Connect("test", At(0));
  ASSERT_FALSE(r.Apply(c, Hello("svc", 42, {"main", "io"}), At(0)).has_value());
  const int64_t t0 = At(10).unix_ns;
  // le=0.1 gets stalls 1 then 3; le=0.5 gets 2; loop "io" its own stall 1 in le=+Inf.
  ASSERT_FALSE(r.Apply(c, Closed("svc", 42, "main", 1, 0.07, t0), At(11)).has_value());
  ASSERT_FALSE(r.Apply(c, Closed("svc", 42, "main", 2, 0.3, t0 + 1'000'000'000), At(12)));
  ASSERT_FALSE(r.Apply(c, Closed("svc", 42, "main", 3, 0.1, t0 + 2'000'000'000), At(13)));
  ASSERT_FALSE(r.Apply(c, Closed("svc", 42, "io", 1, 75, t0), At(14)));

  const std::string om = r.MetricsText(At(20), kOm);
  const auto parsed = ParseOpenMetrics(om);
  ASSERT_EQ(parsed.error, "") << om;
  EXPECT_EQ(parsed.types.at("stallwatch_stall_duration_seconds"), "histogram");
  EXPECT_EQ(parsed.types.at("stallwatch_stalls"), "counter");

  const OpenMetricsSample* b01 = Bucket(parsed.samples, "main", "0.1");
  ASSERT_NE(b01, nullptr);
  ASSERT_TRUE(b01->has_exemplar) << om;
  EXPECT_EQ(b01->exemplar.labels,
            (std::map<std::string, std::string>{{"pid", "42"}, {"stall_id", "3"}}));
  EXPECT_EQ(b01->exemplar.value, 0.1);
  ASSERT_TRUE(b01->exemplar.has_timestamp);
  // The stall's end: its start + 0.1 s, in Unix seconds (milliseconds kept).
  EXPECT_NEAR(b01->exemplar.timestamp, static_cast<double>(t0 + 2'100'000'000) / 1e9, 1e-3);
  const OpenMetricsSample* b05 = Bucket(parsed.samples, "main", "0.5");
  ASSERT_NE(b05, nullptr);
  ASSERT_TRUE(b05->has_exemplar);
  EXPECT_EQ(b05->exemplar.labels.at("stall_id"), "2");
  EXPECT_EQ(b05->exemplar.value, 0.3);
  for (const char* le : {"0.05", "0.25", "1", "60"}) {
    const OpenMetricsSample* b = Bucket(parsed.samples, "main", le);
    ASSERT_NE(b, nullptr);
    EXPECT_FALSE(b->has_exemplar) << "no stall fell in le=" << le;
  }
  const OpenMetricsSample* inf = Bucket(parsed.samples, "io", "+Inf");
  ASSERT_NE(inf, nullptr);
  ASSERT_TRUE(inf->has_exemplar);
  EXPECT_EQ(inf->exemplar.labels.at("stall_id"), "1");
  size_t exemplars = 0;
  for (const auto& s : parsed.samples) {
    exemplars += s.has_exemplar ? 1 : 0;
  }
  EXPECT_EQ(exemplars, 3u);

  // The exemplar, with its series' service and loop, names one stall: the one the API returns
  // (as the web UI's stall page asks for it).
  StallQuery q;
  q.service = b01->labels.at("service");
  q.loop = b01->labels.at("loop");
  q.pid = std::stoll(b01->exemplar.labels.at("pid"));
  q.stall_id = std::stoull(b01->exemplar.labels.at("stall_id"));
  const json stalls = r.StallsJson(q, At(20))["stalls"];
  ASSERT_EQ(stalls.size(), 1u);
  EXPECT_EQ(stalls[0]["stall_id"], 3);
  EXPECT_EQ(stalls[0]["duration_s"], 0.1);
  EXPECT_EQ(stalls[0]["loop"], "main");

  // The text format is unchanged: no exemplar, no # EOF, the same as a fresh serialization.
  const std::string text = r.MetricsText(At(20));
  EXPECT_EQ(text.find(" # {"), std::string::npos);
  EXPECT_EQ(text.find("# EOF"), std::string::npos);
  EXPECT_EQ(text, r.MetricsTextUncachedForTest(At(20)));
  EXPECT_EQ(OmSamples(parsed.samples), TextSamples(text));
}

// Processes come and go, report and stall at random; every OpenMetrics exposition is valid and
// holds exactly the series of the text format, every exemplar is the latest stall of its
// bucket, and the text format stays what prometheus-cpp writes.
TEST(OpenMetrics, SameSeriesAsTheTextFormatWhateverHappens) {
  RegistryOptions o;
  o.expire_after = 3s;
  Registry r(o);
  std::mt19937 rng(16);
  struct Agent {
    Registry::ConnId conn = 0;
    bool connected = false;
    uint64_t next_id = 1;
  };
  std::vector<Agent> agents(5);
  // Names that need escaping in a label value.
  const auto service = [](size_t a) { return a % 2 ? "svc \"q\"" : "svc\\" + std::to_string(a); };
  const std::vector<std::string> loops = {"main", "io\nworker"};
  // (service, pid, loop, le) → latest stall id.
  std::map<std::tuple<std::string, int64_t, std::string, std::string>, uint64_t> latest;
  const std::vector<std::string> les = {"0.05", "0.1", "0.25", "0.5", "1",   "2.5",
                                        "5",    "10",  "30",   "60",  "+Inf"};
  int64_t t = 0;
  size_t checked = 0;
  for (int step = 0; step < 400; ++step) {
    t += 1;
    const size_t a = rng() % agents.size();
    Agent& ag = agents[a];
    const int64_t pid = 2000 + static_cast<int64_t>(a);
    const uint32_t op = rng() % 8;
    if (!ag.connected || op == 0) {
      if (ag.connected) {
        r.Disconnect(ag.conn, At(t));
        ag.connected = false;
        continue;
      }
      ag.conn = r.Connect("test", At(t));
      ASSERT_FALSE(r.Apply(ag.conn, Hello(service(a), pid, loops), At(t)).has_value());
      ag.connected = true;
    } else if (op <= 5) {
      const std::string& loop = loops[rng() % loops.size()];
      const double d = 0.04 * (1 + rng() % 40) + (rng() % 8 == 0 ? 70 : 0);
      ASSERT_FALSE(
          r.Apply(ag.conn, Closed(service(a), pid, loop, ag.next_id, d, At(t - 1).unix_ns), At(t))
              .has_value());
      const auto& bounds = StallBucketsSeconds();
      const size_t b = std::lower_bound(bounds.begin(), bounds.end(), d) - bounds.begin();
      latest[{service(a), pid, loop, les[b]}] = ag.next_id++;
    } else if (op == 6) {
      r.Sweep(At(t));
    } else {
      r.PrepareMetrics(1s);
    }
    if (rng() % 3 != 0) {
      continue;
    }
    const std::string om = r.MetricsText(At(t), kOm);
    const auto parsed = ParseOpenMetrics(om);
    ASSERT_EQ(parsed.error, "") << "step " << step << "\n" << om;
    const std::string text = r.MetricsText(At(t));
    ASSERT_EQ(text, r.MetricsTextUncachedForTest(At(t))) << "step " << step;
    ASSERT_EQ(OmSamples(parsed.samples), TextSamples(text)) << "step " << step;
    for (const auto& s : parsed.samples) {
      if (!s.has_exemplar) {
        continue;
      }
      const int64_t pid_label = std::stoll(s.exemplar.labels.at("pid"));
      const auto it =
          latest.find({s.labels.at("service"), pid_label, s.labels.at("loop"), s.labels.at("le")});
      ASSERT_NE(it, latest.end()) << s.line;
      EXPECT_EQ(s.exemplar.labels.at("stall_id"), std::to_string(it->second)) << s.line;
    }
    ++checked;
  }
  EXPECT_GT(checked, 80u);
}

// --- Over HTTP -----------------------------------------------------------------------------

struct RawResponse {
  std::string head;  // status line and headers
  std::string body;
};

// GET /metrics over a plain socket, with the given extra header lines ("Name: value\r\n"), in
// HTTP/1.0 or 1.1; `read_at_most` > 0: the client closes after that many bytes.
RawResponse GetMetrics(int port, const std::string& headers, const char* version = "HTTP/1.0",
                       size_t read_at_most = 0) {
  RawResponse out;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return out;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return out;
  }
  const std::string req =
      std::string("GET /metrics ") + version + "\r\nHost: 127.0.0.1\r\n" + headers + "\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return out;
  }
  std::string all;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) {
      break;
    }
    all.append(buf, static_cast<size_t>(n));
    if (read_at_most > 0 && all.size() >= read_at_most) {
      break;
    }
  }
  ::close(fd);
  const size_t split = all.find("\r\n\r\n");
  if (split == std::string::npos) {
    return out;
  }
  out.head = all.substr(0, split + 2);
  out.body = all.substr(split + 4);
  return out;
}

TEST(OpenMetrics, ServedOverHttpWhenTheAcceptHeaderAsks) {
  testing::TempDir dir;
  DaemonOptions o = testing::DaemonOptionsIn(dir);
  testing::DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  testing::RawClient c(o.agent_socket);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(Hello("web", 4321, {"main"})));
  ASSERT_TRUE(c.Send(Closed("web", 4321, "main", 9, 0.2, 1'700'000'000'000'000'000)));
  ASSERT_TRUE(testing::WaitFor([&] {
    return testing::MetricValue(d.Metrics(), "stallwatch_stall_duration_seconds_count",
                                {"service=\"web\""}) == 1.0;
  }));

  const RawResponse om =
      GetMetrics(d.http_port(),
                 "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                 "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n");
  EXPECT_NE(om.head.find(" 200 OK\r\n"), std::string::npos) << om.head;
  EXPECT_NE(om.head.find("Content-Type: application/openmetrics-text; version=1.0.0; "
                         "charset=utf-8\r\n"),
            std::string::npos)
      << om.head;
  EXPECT_NE(om.head.find("Vary: Accept\r\n"), std::string::npos) << om.head;
  const auto parsed = ParseOpenMetrics(om.body);
  ASSERT_EQ(parsed.error, "") << om.body;
  const OpenMetricsSample* b = Bucket(parsed.samples, "main", "0.25");
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(b->has_exemplar) << b->line;
  EXPECT_EQ(b->exemplar.labels.at("stall_id"), "9");

  for (const std::string& accept :
       {std::string(), std::string("Accept: text/plain\r\n"), std::string("Accept: */*\r\n")}) {
    const RawResponse text = GetMetrics(d.http_port(), accept);
    EXPECT_NE(text.head.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
              std::string::npos)
        << accept << text.head;
    EXPECT_EQ(text.body.find("# EOF"), std::string::npos) << accept;
    EXPECT_EQ(text.body.find(" # {"), std::string::npos) << accept;
    EXPECT_EQ(TextSamples(text.body), OmSamples(parsed.samples)) << accept;
  }

  // promtool (Debian's prometheus package) accepts the text format.
  const std::string promtool = "/usr/bin/promtool";
  if (::access(promtool.c_str(), X_OK) != 0) {
    GTEST_SKIP() << "promtool not installed: the text format was not checked by it";
  }
  const std::string file = dir.path() + "/metrics.txt";
  {
    std::ofstream f(file);
    f << GetMetrics(d.http_port(), "").body;
  }
  const auto check = stallwatch::testing::RunCommand(promtool + " check metrics < " + file);
  EXPECT_EQ(check.code, 0) << check.out;
}

// The body of a chunked HTTP/1.1 reply, or "" when the chunks are malformed.
std::string Dechunk(const std::string& body) {
  std::string out;
  size_t at = 0;
  for (;;) {
    const size_t eol = body.find("\r\n", at);
    if (eol == std::string::npos) {
      return "";
    }
    const size_t n = std::stoul(body.substr(at, eol - at), nullptr, 16);
    at = eol + 2;
    if (n == 0) {
      return out;
    }
    if (at + n + 2 > body.size() || body.compare(at + n, 2, "\r\n") != 0) {
      return "";
    }
    out.append(body, at, n);
    at += n + 2;
  }
}

// A reply of several MiB goes out whole and identical in HTTP/1.0 and HTTP/1.1, in both formats;
// a client that leaves in the middle harms nothing (and leaks nothing: the ASan stage).
TEST(MetricsOverHttp, ALargeReplyIsSentWhole) {
  // As stallwatchd does (daemon.cc): a write to a client that left must not end the process.
  std::signal(SIGPIPE, SIG_IGN);
  testing::TempDir dir;
  DaemonOptions o = testing::DaemonOptionsIn(dir);
  o.agent_listen = "127.0.0.1:0";  // over TCP each agent is a process of its own (its pid)
  testing::DaemonThread d(o);
  ASSERT_TRUE(d.ok()) << d.error();
  constexpr int kAgents = 150;
  std::vector<std::unique_ptr<testing::RawClient>> agents;
  for (int a = 0; a < kAgents; ++a) {
    agents.push_back(std::make_unique<testing::RawClient>(d.agent_tcp_port()));
    ASSERT_TRUE(agents.back()->connected());
    const std::string service = "svc" + std::to_string(a % 7);
    const int64_t pid = 50000 + a;
    ASSERT_TRUE(agents.back()->Send(Hello(service, pid, {"l0", "l1", "l2", "l3"})));
    for (const char* loop : {"l0", "l1", "l2", "l3"}) {
      DelayFinding w;
      w.service = service;
      w.pid = pid;
      w.loop = loop;
      w.window_s = 1;
      w.count = 2;
      w.sum_s = 0.002;
      w.delay_buckets = {{static_cast<uint32_t>(HistBucketIndex(1'000'000)), 2}};
      ASSERT_TRUE(agents.back()->Send(w));
    }
    ASSERT_TRUE(agents.back()->Send(Closed(service, pid, "l0", 1, 0.3, 1'700'000'000'000'000'000)));
  }
  // Every window applied: a delay count series per loop.
  ASSERT_TRUE(testing::WaitFor([&] {
    size_t counts = 0;
    for (const auto& line : TextSamples(d.Metrics())) {
      counts += line.starts_with("stallwatch_loop_delay_seconds_count{") ? 1 : 0;
    }
    return counts == size_t{4} * kAgents;
  }));

  const RawResponse v10 = GetMetrics(d.http_port(), "");
  ASSERT_GT(v10.body.size(), size_t{1} << 20) << "several batches";
  const RawResponse v11 = GetMetrics(d.http_port(), "Connection: close\r\n", "HTTP/1.1");
  const bool chunked = v11.head.find("Transfer-Encoding: chunked\r\n") != std::string::npos;
  EXPECT_EQ(chunked ? Dechunk(v11.body) : v11.body, v10.body) << v11.head;
  size_t infos = 0;
  for (const auto& line : TextSamples(v10.body)) {
    infos += line.starts_with("stallwatch_process_info{") ? 1 : 0;
  }
  EXPECT_EQ(infos, static_cast<size_t>(kAgents));

  const std::string accept = "Accept: application/openmetrics-text\r\n";
  const RawResponse om10 = GetMetrics(d.http_port(), accept);
  const RawResponse om11 = GetMetrics(d.http_port(), accept + "Connection: close\r\n", "HTTP/1.1");
  EXPECT_EQ(om11.head.find("Transfer-Encoding: chunked\r\n") != std::string::npos
                ? Dechunk(om11.body)
                : om11.body,
            om10.body);
  const auto parsed = ParseOpenMetrics(om10.body);
  ASSERT_EQ(parsed.error, "");
  EXPECT_EQ(OmSamples(parsed.samples), TextSamples(v10.body));

  // Clients that leave after the first 100 KiB: the daemon goes on serving, the same text.
  for (int i = 0; i < 5; ++i) {
    const RawResponse cut = GetMetrics(d.http_port(), "", "HTTP/1.1", size_t{100} * 1024);
    EXPECT_NE(cut.head.find(" 200 OK\r\n"), std::string::npos);
  }
  EXPECT_EQ(testing::HttpGet(d.http_port(), "/healthz").body, "ok\n");
  EXPECT_EQ(GetMetrics(d.http_port(), "").body, v10.body);
}

}  // namespace
}  // namespace stallwatch::daemon
