// Agent::AttachEpoll on real epoll loops of this process: the interposed wait must be
// transparent (same events, same timeouts, same signal behaviour, no extra host iterations) while
// its probe measures the loop, and stalls of the loop thread must be caught and classified.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "stallwatch/agent.h"

using namespace std::chrono_literals;

namespace {

stallwatch::Options TestOptions() {
  stallwatch::Options o;
  o.endpoint = "off";
  o.stall_threshold = 50ms;
  o.probe_interval = 1ms;
  o.report_interval = 200ms;
  o.watchdog = stallwatch::WatchdogMode::kThread;
  return o;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Describe(int n, const epoll_event* ev) {
  std::string s = std::to_string(n) + ":";
  for (int i = 0; i < n; ++i) {
    s += " " + std::to_string(ev[i].data.u64) + "/" + std::to_string(ev[i].events);
  }
  return s;
}

void Signal(int fd) {
  const uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof(one)), 8);
}

void Drain(int fd) {
  uint64_t v = 0;
  (void)!read(fd, &v, sizeof(v));
}

// A scripted host loop: level-triggered, edge-triggered and one-shot eventfds, every
// maxevents the host may pass, waits that time out and waits that return at once. Returns what
// each wait returned, in order, and how long the timed waits took.
struct ScriptResult {
  std::vector<std::string> returns;
  std::vector<int64_t> timed_wait_ms;
  int waits = 0;
};

ScriptResult RunScript(int epfd, const std::function<void()>& idle_probe_time) {
  ScriptResult r;
  const int lt = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const int et = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const int once = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.u64 = 1;
  epoll_ctl(epfd, EPOLL_CTL_ADD, lt, &e);
  e.events = EPOLLIN | EPOLLET;
  e.data.u64 = 2;
  epoll_ctl(epfd, EPOLL_CTL_ADD, et, &e);
  e.events = EPOLLIN | EPOLLONESHOT;
  e.data.u64 = 3;
  epoll_ctl(epfd, EPOLL_CTL_ADD, once, &e);
  epoll_event ev[8];
  auto wait = [&](int max, int timeout_ms) {
    const int64_t t0 = NowMs();
    const int n = epoll_wait(epfd, ev, max, timeout_ms);
    ++r.waits;
    if (timeout_ms > 0 && n == 0) {
      r.timed_wait_ms.push_back(NowMs() - t0);
    }
    r.returns.push_back(Describe(n, ev));
  };
  wait(8, 0);  // nothing yet
  idle_probe_time();
  Signal(lt);
  Signal(et);
  Signal(once);
  wait(1, 0);  // one at a time
  wait(1, 0);
  wait(1, 0);
  wait(8, 0);  // lt again (not read), et not again (no new edge), once disarmed
  Drain(lt);
  wait(8, 40);  // nothing for 40 ms: the host's timeout, once
  Signal(et);
  wait(8, 1000);  // a new edge, at once
  e.events = EPOLLIN | EPOLLONESHOT;
  e.data.u64 = 3;
  epoll_ctl(epfd, EPOLL_CTL_MOD, once, &e);  // re-armed, still readable
  wait(8, 1000);
  wait(8, 30);
  idle_probe_time();
  std::thread later([lt] {
    std::this_thread::sleep_for(30ms);
    Signal(lt);
  });
  wait(8, -1);  // no timeout: returns when the other thread writes
  later.join();
  Drain(lt);
  close(lt);
  close(et);
  close(once);
  return r;
}

TEST(EpollLoop, TheWaitIsTransparentToTheHost) {
  // The same script without and with the agent: what every wait returns must be the same.
  ScriptResult plain;
  ScriptResult watched;
  uint64_t ticks = 0;
  std::string kind;
  std::thread([&] {
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    plain = RunScript(epfd, [] { std::this_thread::sleep_for(5ms); });
    close(epfd);
  }).join();
  std::thread([&] {
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    auto agent = stallwatch::Agent::AttachEpoll(epfd, TestOptions());
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    // The probe must have something to measure between the script's waits.
    watched = RunScript(epfd, [epfd] {
      epoll_event ev[4];
      const int n = epoll_wait(epfd, ev, 4, 60);  // idle: the probe ticks inside it
      EXPECT_EQ(n, 0) << Describe(n, ev);
    });
    const auto snap = (*agent)->Snapshot();
    ticks = snap.since_attach.count;
    kind = snap.kind;
    EXPECT_EQ(snap.boundary_source, "epoll_wait");
    close(epfd);
  }).join();
  EXPECT_EQ(watched.returns, plain.returns);
  EXPECT_EQ(watched.waits, plain.waits) << "the host saw extra iterations";
  ASSERT_EQ(watched.timed_wait_ms.size(), plain.timed_wait_ms.size());
  // Timeouts are kept: never shorter than asked, not much longer.
  EXPECT_GE(watched.timed_wait_ms[0], 40);
  EXPECT_LT(watched.timed_wait_ms[0], 40 + 200);
  EXPECT_GT(ticks, 20u) << "the probe never ran during the idle waits";
  EXPECT_EQ(kind, "epoll");
}

TEST(EpollLoop, ASignalInterruptsTheWaitWithEintrAsLibcWould) {
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: epoll_wait is never restarted anyway
  struct sigaction old {};
  sigaction(SIGUSR2, &sa, &old);
  std::atomic<pthread_t> loop_thread{};
  std::atomic<bool> waiting{false};
  int result = 0;
  int err = 0;
  int64_t took = 0;
  std::thread t([&] {
    loop_thread = pthread_self();
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    auto agent = stallwatch::Agent::AttachEpoll(epfd, TestOptions());
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    epoll_event ev[4];
    waiting = true;
    const int64_t t0 = NowMs();
    result = epoll_wait(epfd, ev, 4, 5000);
    err = errno;
    took = NowMs() - t0;
    close(epfd);
  });
  while (!waiting) {
    std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_for(100ms);  // several probe ticks inside the wait first
  pthread_kill(loop_thread.load(), SIGUSR2);
  t.join();
  sigaction(SIGUSR2, &old, nullptr);
  EXPECT_EQ(result, -1);
  EXPECT_EQ(err, EINTR);
  EXPECT_LT(took, 2000);
}

TEST(EpollLoop, PwaitKeepsTheHostsSignalMask) {
  // A signal blocked outside the wait and unblocked by epoll_pwait's mask interrupts only the
  // wait (as the host asked), including the agent's inner wait.
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  struct sigaction old {};
  sigaction(SIGUSR1, &sa, &old);
  std::atomic<pthread_t> loop_thread{};
  std::atomic<bool> waiting{false};
  int result = 0;
  int err = 0;
  std::thread t([&] {
    pthread_sigmask(SIG_BLOCK, &block, nullptr);
    loop_thread = pthread_self();
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    auto agent = stallwatch::Agent::AttachEpoll(epfd, TestOptions());
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    sigset_t during;
    sigemptyset(&during);  // everything unblocked during the wait
    epoll_event ev[4];
    waiting = true;
    result = epoll_pwait(epfd, ev, 4, 5000, &during);
    err = errno;
    close(epfd);
  });
  while (!waiting) {
    std::this_thread::sleep_for(1ms);
  }
  std::this_thread::sleep_for(50ms);
  pthread_kill(loop_thread.load(), SIGUSR1);
  t.join();
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_EQ(result, -1);
  EXPECT_EQ(err, EINTR);
}

struct Caught {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<stallwatch::StallFinding> closed;
};

TEST(EpollLoop, AStallOfTheLoopThreadIsCaughtTimedAndClassified) {
  Caught caught;
  std::thread t([&] {
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = efd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &e);
    auto o = TestOptions();
    o.loop_name = "scripted";
    o.on_stall = [&caught](const stallwatch::StallFinding& f) {
      if (f.ongoing) {
        return;
      }
      std::lock_guard<std::mutex> lock(caught.mu);
      caught.closed.push_back(f);
      caught.cv.notify_all();
    };
    auto agent = stallwatch::Agent::AttachEpoll(epfd, o);
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    epoll_event ev[4];
    for (int i = 0; i < 5; ++i) {
      epoll_wait(epfd, ev, 4, 10);
    }
    std::this_thread::sleep_for(150ms);  // the loop is blocked: a stall
    for (int i = 0; i < 5; ++i) {
      epoll_wait(epfd, ev, 4, 10);
    }
    std::unique_lock<std::mutex> lock(caught.mu);
    caught.cv.wait_for(lock, 5s, [&] { return !caught.closed.empty(); });
    lock.unlock();
    agent->reset();
    close(efd);
    close(epfd);
  });
  t.join();
  ASSERT_EQ(caught.closed.size(), 1u);
  const auto& f = caught.closed[0];
  EXPECT_EQ(f.loop, "scripted");
  EXPECT_EQ(f.stall_class, stallwatch::StallClass::kBlocked);
  EXPECT_EQ(f.syscall, "clock_nanosleep");
  // Exact from the wait calls: the sleep, and the short way back into the wait.
  EXPECT_GE(f.duration_s, 0.150);
  EXPECT_LT(f.duration_s, 0.150 + 0.100);
}

TEST(EpollLoop, AfterTheHostClosesItsEpollFdTheThreadIsNoLongerALoop) {
  Caught caught;
  std::thread t([&] {
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    auto o = TestOptions();
    o.on_stall = [&caught](const stallwatch::StallFinding& f) {
      std::lock_guard<std::mutex> lock(caught.mu);
      caught.closed.push_back(f);
    };
    auto agent = stallwatch::Agent::AttachEpoll(epfd, o);
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    epoll_event ev[4];
    for (int i = 0; i < 3; ++i) {
      epoll_wait(epfd, ev, 4, 5);
    }
    close(epfd);                         // the loop ended
    std::this_thread::sleep_for(200ms);  // the thread does other things now: not a stall
    const auto snap = (*agent)->Snapshot();
    EXPECT_FALSE(snap.ongoing.has_value());
  });
  t.join();
  std::lock_guard<std::mutex> lock(caught.mu);
  EXPECT_TRUE(caught.closed.empty()) << caught.closed.size() << " stall(s) after the loop ended";
}

// Whatever libc answers to bad arguments, the interposed wait answers alike on a watched loop.
TEST(EpollLoop, BadArgumentsGetLibcsOwnAnswers) {
  auto answers = [](bool watched) {
    std::vector<std::string> out;
    std::thread([&] {
      const int epfd = epoll_create1(EPOLL_CLOEXEC);
      const int efd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);  // readable
      epoll_event e{};
      e.events = EPOLLIN;
      epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &e);
      std::unique_ptr<stallwatch::Agent> agent;
      if (watched) {
        auto a = stallwatch::Agent::AttachEpoll(epfd, TestOptions());
        ASSERT_TRUE(a.ok()) << a.status().ToString();
        agent = std::move(*a);
      }
      auto record = [&](int r) { out.push_back(std::to_string(r) + "/" + std::to_string(errno)); };
      // Through volatiles: the compiler rejects the bad arguments it can see.
      epoll_event* volatile no_events = nullptr;
      volatile int negative = -1;
      errno = 0;
      record(epoll_wait(epfd, no_events, 4, 0));  // EFAULT
      errno = 0;
      epoll_event ev[1];
      record(epoll_wait(epfd, ev, 0, 0));  // EINVAL
      errno = 0;
      record(epoll_wait(epfd, ev, negative, 10));  // EINVAL
      errno = 0;
      record(epoll_wait(efd, ev, 1, 0));  // EINVAL: not an epoll fd
      errno = 0;
      record(epoll_wait(epfd, ev, 1, 0));  // the event
      agent.reset();
      close(efd);
      close(epfd);
    }).join();
    return out;
  };
  const auto plain = answers(false);
  EXPECT_EQ(answers(true), plain);
  EXPECT_EQ(plain[0], "-1/" + std::to_string(EFAULT));
}

TEST(EpollLoop, BadFdsAreRefusedWithTheAcceptedForm) {
  auto none = stallwatch::Agent::AttachEpoll(-1, TestOptions());
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("not open"), std::string::npos)
      << none.status().ToString();
  const int efd = eventfd(0, EFD_CLOEXEC);
  auto wrong = stallwatch::Agent::AttachEpoll(efd, TestOptions());
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("not an epoll fd"), std::string::npos)
      << wrong.status().ToString();
  close(efd);
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  auto first = stallwatch::Agent::AttachEpoll(epfd, TestOptions());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = stallwatch::Agent::AttachEpoll(epfd, TestOptions());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("watched already"), std::string::npos)
      << second.status().ToString();
  first->reset();
  close(epfd);
}

}  // namespace

// How many of the epoll set's registrations carry a probe key (docs/design.md "Foreign loops":
// their data starts with the tag 0x53575).
int ProbesInSet(int epfd) {
  std::ifstream f("/proc/self/fdinfo/" + std::to_string(epfd));
  int n = 0;
  for (std::string line; std::getline(f, line);) {
    if (line.find("data: 53575") != std::string::npos) {
      ++n;
    }
  }
  return n;
}

TEST(EpollLoop, TheProbeJoinsTheHostsOwnSetAndLeavesItWhenAnotherThreadWaitsThere) {
  std::atomic<bool> stop{false};
  std::atomic<int> epfd_seen{-1};
  std::atomic<uint64_t> ticks_before{0};
  int in_set_at_first = -1;
  int in_set_after = -1;
  uint64_t ticks_after = 0;
  std::atomic<bool> other_waited{false};
  std::atomic<bool> other_done{false};
  std::thread loop([&] {
    const int epfd = epoll_create1(EPOLL_CLOEXEC);
    auto agent = stallwatch::Agent::AttachEpoll(epfd, TestOptions());
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    in_set_at_first = ProbesInSet(epfd);
    epoll_event ev[4];
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(epoll_wait(epfd, ev, 4, 10), 0) << Describe(1, ev);
    }
    ticks_before = (*agent)->Snapshot().since_attach.count;
    epfd_seen = epfd;
    while (!other_waited) {
      EXPECT_EQ(epoll_wait(epfd, ev, 4, 10), 0) << Describe(1, ev);
    }
    for (int i = 0; i < 20; ++i) {  // the probe moves out at the next wait, and goes on ticking
      EXPECT_EQ(epoll_wait(epfd, ev, 4, 10), 0) << Describe(1, ev);
    }
    in_set_after = ProbesInSet(epfd);
    ticks_after = (*agent)->Snapshot().since_attach.count;
    stop = true;
    // The set is closed only once the other thread is out of its waits: closing an fd another
    // thread waits on is the program's race, not the agent's.
    while (!other_done) {
      std::this_thread::sleep_for(1ms);
    }
    close(epfd);
  });
  while (epfd_seen < 0) {
    std::this_thread::sleep_for(1ms);
  }
  // Another thread of the process waits on the loop's set: it never sees the probe's events.
  epoll_event ev[4];
  int returned = 0;
  for (int i = 0; i < 10 && !stop; ++i) {
    returned += std::max(0, epoll_wait(epfd_seen, ev, 4, 5));
    other_waited = true;
  }
  other_done = true;
  loop.join();
  EXPECT_EQ(returned, 0) << "a probe event reached another thread's wait";
  EXPECT_EQ(in_set_at_first, 1) << "the probe is not in the host's own set";
  EXPECT_EQ(in_set_after, 0) << "the probe stayed in a set another thread waits on";
  EXPECT_GT(ticks_before, 20u);
  EXPECT_GT(ticks_after, ticks_before + 20) << "the probe stopped ticking once moved out";
}
