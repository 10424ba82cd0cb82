// serve + load on loopback with the agent attached: the routes that block the loop show up as
// stalls naming the blocking function; the asynchronous ones do not stall it.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "experiment.h"
#include "http_get.h"
#include "load.h"
#include "server.h"
#include "stallwatch/common/clock.h"

namespace stallwatch::cli {
namespace {

using std::chrono::milliseconds;

class ServeLoadTest : public ::testing::Test {
 protected:
  void Start(ServerOptions o = {}) {
    o.port = 0;
    o.endpoint = "off";
    o.stall_threshold = milliseconds(50);
    o.loop_name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    o.on_stall = [this](const StallFinding& f) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!f.ongoing) closed_.push_back(f);
    };
    auto s = Server::Create(o);
    ASSERT_TRUE(s.ok()) << s.status().message();
    server_ = std::move(*s);
    thread_ = std::thread([this] { ASSERT_TRUE(server_->Run().ok()); });
    for (int i = 0; i < 2000 && !server_->Snapshot(); ++i) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    ASSERT_TRUE(server_->Snapshot().has_value());
  }
  void TearDown() override {
    if (server_) {
      server_->Stop();
      thread_.join();
      server_.reset();  // detaches the agent: its hooks (which use closed_) run no more
    }
  }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(server_->port()) + path;
  }
  LoadResult Load(const std::string& path, int c, uint64_t n, double rate = 0,
                  std::chrono::nanoseconds duration = {}) {
    LoadOptions o;
    o.url = Url(path);
    o.concurrency = c;
    o.requests = n;
    o.rate = rate;
    o.duration = duration;
    o.timeout = std::chrono::seconds(20);
    o.max_time = std::chrono::seconds(60);
    auto r = RunLoad(o);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : LoadResult{};
  }
  // Closed stalls reported so far, waiting up to `wait` for at least `want`.
  std::vector<StallFinding> Stalls(size_t want, milliseconds wait = milliseconds(3000)) {
    const int64_t until = MonotonicNanos() + wait.count() * 1'000'000;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (closed_.size() >= want || MonotonicNanos() > until) return closed_;
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
  }
  // Stalls the loop's own work caused (blocked or cpu). A busy test machine may add a starved
  // or suspended episode that no route caused; the agent classifies those apart.
  static std::vector<StallFinding> WorkStalls(const std::vector<StallFinding>& stalls) {
    std::vector<StallFinding> out;
    for (const auto& s : stalls) {
      if (s.stall_class == StallClass::kBlocked || s.stall_class == StallClass::kCpu) {
        out.push_back(s);
      }
    }
    return out;
  }
  static bool AnyStackNames(const std::vector<StallFinding>& stalls, const std::string& fn) {
    for (const auto& s : stalls) {
      for (const auto& st : s.stacks) {
        if (TopBlockingFrame(st) == fn) return true;
      }
    }
    return false;
  }

  std::unique_ptr<Server> server_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<StallFinding> closed_;
};

TEST_F(ServeLoadTest, HelloKeepAliveWithoutErrors) {
  Start();
  const LoadResult r = Load("/", 4, 3000);
  EXPECT_EQ(r.completed, 3000u);
  EXPECT_EQ(r.ok, 3000u);
  EXPECT_EQ(r.errors(), 0u);
  EXPECT_GT(r.qps, 1000);
  EXPECT_GT(r.bytes, 3000u * 20);
  EXPECT_TRUE(WorkStalls(Stalls(0, milliseconds(0))).empty());
}

TEST_F(ServeLoadTest, BlockStallsTheLoopAndTheAgentNamesTheFunction) {
  Start();
  const LoadResult r = Load("/block?ms=200", 3, 3);
  EXPECT_EQ(r.completed, 3u);
  EXPECT_EQ(r.errors(), 0u);
  // One at a time: the three answers take about 3 × 200 ms.
  EXPECT_GE(r.max_s(), 0.55);
  const auto stalls = WorkStalls(Stalls(1));
  ASSERT_FALSE(stalls.empty());
  bool blocked = false;
  for (const auto& s : stalls) {
    EXPECT_GE(s.duration_s, 0.15);
    if (s.stall_class == StallClass::kBlocked) {
      blocked = true;
      EXPECT_NE(s.syscall.find("nanosleep"), std::string::npos) << s.syscall;
    }
  }
  EXPECT_TRUE(blocked);
  EXPECT_TRUE(AnyStackNames(stalls, "stallwatch::cli::BlockingSleepOnLoop"));
  const auto snap = server_->Snapshot();
  ASSERT_TRUE(snap.has_value());
  EXPECT_GE(snap->since_attach.max, milliseconds(150));
}

TEST_F(ServeLoadTest, CpuStallsTheLoopInTheBurningFunction) {
  Start();
  const LoadResult r = Load("/cpu?ms=200", 1, 2);
  EXPECT_EQ(r.completed, 2u);
  const auto stalls = Stalls(1);
  ASSERT_FALSE(stalls.empty());
  // cpu, or starved when the machine is busy with other work; never blocked in a syscall.
  for (const auto& s : stalls) EXPECT_NE(s.stall_class, StallClass::kBlocked);
  EXPECT_TRUE(AnyStackNames(stalls, "stallwatch::cli::BurnCpuOnLoop"));
}

TEST_F(ServeLoadTest, AsyncDoesNotStall) {
  Start();
  const LoadResult r = Load("/async?ms=200", 20, 60);
  EXPECT_EQ(r.completed, 60u);
  EXPECT_EQ(r.errors(), 0u);
  // 20 at a time, 200 ms each: about 100 req/s (the blocking route would give 5).
  EXPECT_GT(r.qps, 60);
  EXPECT_LT(r.quantile_s(0.5), 0.3);
  EXPECT_TRUE(WorkStalls(Stalls(0, milliseconds(300))).empty());
  const auto snap = server_->Snapshot();
  ASSERT_TRUE(snap.has_value());
  EXPECT_TRUE(WorkStalls(snap->recent_stalls).empty());
  EXPECT_LT(snap->since_attach.p99, milliseconds(100));
}

TEST_F(ServeLoadTest, OffloadDoesNotStallAndIsBoundByThePool) {
  ServerOptions o;
  o.workers = 5;
  Start(o);
  const LoadResult r = Load("/offload?ms=100", 10, 50);
  EXPECT_EQ(r.completed, 50u);
  EXPECT_EQ(r.errors(), 0u);
  // min(c, workers) / work = 50 req/s.
  EXPECT_GT(r.qps, 40);
  EXPECT_LT(r.qps, 60);
  EXPECT_TRUE(WorkStalls(Stalls(0, milliseconds(300))).empty());
  const auto snap = server_->Snapshot();
  ASSERT_TRUE(snap.has_value());
  EXPECT_TRUE(WorkStalls(snap->recent_stalls).empty());
}

TEST_F(ServeLoadTest, UpstreamBlockingStallsUpstreamAsyncDoesNot) {
  ServerOptions o;
  o.upstream_delay = milliseconds(200);
  Start(o);
  const LoadResult a = Load("/upstream-async", 10, 20);
  EXPECT_EQ(a.completed, 20u);
  EXPECT_EQ(a.errors(), 0u);
  EXPECT_LT(a.quantile_s(0.95), 0.35);
  EXPECT_TRUE(WorkStalls(Stalls(0, milliseconds(300))).empty());
  const size_t before = Stalls(0, milliseconds(0)).size();
  const LoadResult b = Load("/upstream-blocking", 2, 2);
  EXPECT_EQ(b.completed, 2u);
  EXPECT_EQ(b.errors(), 0u);
  auto all = Stalls(before + 1);
  const auto stalls = WorkStalls({all.begin() + static_cast<ptrdiff_t>(before), all.end()});
  ASSERT_FALSE(stalls.empty());
  // The loop waited in recv on the upstream's socket (at least one of the stalls says so).
  bool in_recv_on_upstream = false;
  for (const auto& s : stalls) {
    in_recv_on_upstream |=
        s.stall_class == StallClass::kBlocked && s.syscall.find("recv") != std::string::npos &&
        s.fd_target.find("127.0.0.1:" + std::to_string(server_->upstream_port())) !=
            std::string::npos;
  }
  EXPECT_TRUE(in_recv_on_upstream) << stalls[0].syscall << " " << stalls[0].fd_target;
  EXPECT_TRUE(AnyStackNames(stalls, "stallwatch::cli::BlockingUpstreamFetch"));
}

TEST_F(ServeLoadTest, BadQueriesGet400WithTheAcceptedForm) {
  Start();
  auto r = HttpGet(Url("/block?ms=abc"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("?ms=500"), std::string::npos) << r->body;
  EXPECT_EQ(r->body.find('\n'), r->body.size() - 1);
  r = HttpGet(Url("/control/block?kind=gpu"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("kind=cpu|sleep"), std::string::npos) << r->body;
  r = HttpGet(Url("/nope"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
  r = HttpGet(Url("/"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello world\n");
  // Malformed queries are counted; the server carries on.
  r = HttpGet(Url("/control/stats"));
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->body.find("\"bad_requests\":2,"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"requests\":5,"), std::string::npos) << r->body;
}

TEST_F(ServeLoadTest, ControlBlockAndUnblockAtRunTime) {
  Start();
  auto r = HttpGet(Url("/control/block?duration=120ms&period=300ms&kind=sleep"));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->status, 200) << r->body;
  const auto during = WorkStalls(Stalls(2, milliseconds(3000)));
  EXPECT_GE(during.size(), 2u);
  EXPECT_TRUE(AnyStackNames(during, "stallwatch::cli::BlockingSleepOnLoop"));
  r = HttpGet(Url("/control/unblock"));
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->body.find("\"was_blocking\":true"), std::string::npos) << r->body;
  std::this_thread::sleep_for(milliseconds(400));  // a stall in progress gets reported
  const size_t settled = WorkStalls(Stalls(0, milliseconds(0))).size();
  std::this_thread::sleep_for(milliseconds(900));
  EXPECT_EQ(WorkStalls(Stalls(0, milliseconds(0))).size(), settled);
}

TEST_F(ServeLoadTest, FixedRateMeasuresFromTheScheduledTime) {
  Start();
  // A server that keeps up: the rate is held and latency is the work.
  const LoadResult fine = Load("/async?ms=10", 5, 0, 100, milliseconds(1000));
  EXPECT_GE(fine.completed, 80u);
  EXPECT_LE(fine.completed, 110u);
  EXPECT_LT(fine.quantile_s(0.5), 0.05);
  // The loop serves 10 blocking requests/s; asked for 20/s, queueing shows in the latency
  // (a closed loop would report 100 ms per request and hide it). Runs last: the blocked
  // requests left in flight keep the loop busy after the run.
  const LoadResult r = Load("/block?ms=100", 4, 0, 20, milliseconds(1500));
  EXPECT_GT(r.completed, 8u);
  EXPECT_GT(r.quantile_s(0.99), 0.3);
}

TEST_F(ServeLoadTest, StopAnswersPendingRequests) {
  Start();
  StatusOr<HttpResponse> r = UnavailableError("not run");
  std::thread client([&] { r = HttpGet(Url("/async?ms=5000"), milliseconds(10000)); });
  std::this_thread::sleep_for(milliseconds(200));
  const int64_t t0 = MonotonicNanos();
  server_->Stop();
  thread_.join();
  client.join();
  server_.reset();
  EXPECT_LT(MonotonicNanos() - t0, 2'000'000'000);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->status, 503);
}

TEST(Load, BoundedInTimeAndCountsConnectErrors) {
  // A port nobody listens on.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  close(fd);
  LoadOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(ntohs(sa.sin_port)) + "/";
  o.requests = 5;
  o.concurrency = 1;
  const int64_t t0 = MonotonicNanos();
  auto r = RunLoad(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->completed, 0u);
  EXPECT_EQ(r->err_connect, 5u);
  EXPECT_LT(MonotonicNanos() - t0, 2'000'000'000);
}

TEST_F(ServeLoadTest, DurationEndsARunWithSlowAnswers) {
  Start();
  const int64_t t0 = MonotonicNanos();
  const LoadResult r = Load("/async?ms=3000", 3, 0, 0, milliseconds(400));
  EXPECT_LT(MonotonicNanos() - t0, 1'500'000'000);
  EXPECT_EQ(r.completed, 0u);
  EXPECT_EQ(r.abandoned, 3u);
  EXPECT_TRUE(r.stopped_by_time);
}

}  // namespace
}  // namespace stallwatch::cli
