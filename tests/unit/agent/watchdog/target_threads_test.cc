#include "watchdog/target_threads.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <memory>
#include <thread>

#include "platform/proc.h"
#include "platform/signal_sampler.h"

namespace stallwatch::agent::internal {
namespace {

// A thread that names itself `name` (if not empty) and waits until released.
class NamedThread {
 public:
  explicit NamedThread(const char* name) {
    std::promise<pid_t> tid;
    auto got = tid.get_future();
    thread_ = std::thread([this, name, &tid] {
      if (name[0] != '\0') {
        pthread_setname_np(pthread_self(), name);
      }
      tid.set_value(platform::GetTid());
      while (!stop_.load()) {
        usleep(1000);
      }
    });
    tid_ = got.get();
  }
  ~NamedThread() {
    stop_.store(true);
    thread_.join();
  }
  pid_t tid() const { return tid_; }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
  pid_t tid_ = 0;
};

TEST(TargetThreadsTest, OwnProcessNamesItsThreads) {
  platform::SignalSampler sampler;  // not installed
  auto t = TargetThreads::Own(&sampler);
  EXPECT_FALSE(t->remote());
  EXPECT_EQ(t->pid(), ::getpid());
  EXPECT_EQ(t->ThreadName(::getpid()), "main");
  NamedThread named("sw-tt-worker");
  EXPECT_EQ(t->ThreadName(named.tid()), "sw-tt-worker");
  NamedThread unnamed("");  // inherits the process's comm: no name of its own
  EXPECT_EQ(t->ThreadName(unnamed.tid()), "");
}

TEST(TargetThreadsTest, OwnProcessReadsMemoryClocksAndSyscalls) {
  platform::SignalSampler sampler;
  auto t = TargetThreads::Own(&sampler);
  pollfd fds[2] = {{7, POLLIN, 0}, {9, POLLIN, 0}};
  EXPECT_EQ(t->FirstPollFd(reinterpret_cast<uint64_t>(&fds[0])), 7);
  EXPECT_EQ(t->FirstPollFd(0), -1);  // unreadable
  const pid_t self = platform::GetTid();
  EXPECT_GE(t->RunDelay(self), 0);
  // A thread reading its own syscall file is in read(); whatever it shows, it is readable.
  EXPECT_TRUE(t->Syscall(self).has_value());
  EXPECT_FALSE(t->Stopped(self));

  LoopState s;
  ThreadFiles files;
  EXPECT_EQ(t->LoopCpu(s, &files), -1);  // no CPU clock yet
  EnsureLoopThread(&s);
  EXPECT_GE(t->LoopCpu(s, &files), 0);
}

TEST(TargetThreadsTest, OwnProcessWithoutSamplerCannotSignal) {
  platform::SignalSampler sampler;
  auto t = TargetThreads::Own(&sampler);
  LoopState s;
  EXPECT_FALSE(t->CanSignal(s));
  EXPECT_TRUE(t->SignalGone(s));
  EXPECT_EQ(t->LostSignalNote(s), "");
}

TEST(TargetThreadsTest, RemoteHostSignalsUntilItsHandlerIsLost) {
  // The "host" is this process: its /proc files are readable like a host's.
  auto t = TargetThreads::Remote(::getpid(), 40);
  EXPECT_TRUE(t->remote());
  EXPECT_EQ(platform::TargetPid(), ::getpid());
  LoopState s;
  EXPECT_TRUE(t->CanSignal(s));
  EXPECT_FALSE(t->SignalGone(s));
  EXPECT_EQ(t->LostSignalNote(s), "");
  s.handler_lost.store(true);
  EXPECT_FALSE(t->CanSignal(s));
  EXPECT_TRUE(t->SignalGone(s));
  EXPECT_EQ(t->LostSignalNote(s),
            "running-thread stacks unavailable: the host installed its own handler for signal 40 "
            "after the agent; set STALLWATCH_SIGNAL to a free signal");

  // Another process's CPU clock is its schedstat, kept open per thread.
  ThreadFiles files;
  EXPECT_EQ(t->LoopCpu(s, &files), -1);  // the loop thread is not known yet
  s.tid.store(platform::GetTid());
  EXPECT_GE(t->LoopCpu(s, &files), 0);
  EXPECT_EQ(files.tid, platform::GetTid());
  EXPECT_NE(files.schedstat, nullptr);
  EXPECT_FALSE(t->Stopped(platform::GetTid()));

  auto none = TargetThreads::Remote(::getpid(), 0);  // a host without a sampling signal
  EXPECT_FALSE(none->CanSignal(s));
  EXPECT_EQ(none->LostSignalNote(s), "");
  platform::SetTargetProcess(0);  // back to this process for the other tests
}

}  // namespace
}  // namespace stallwatch::agent::internal
