#include "classifier.h"

#include <algorithm>

namespace stallwatch::agent::internal {

std::string HintFor(StallClass c, const std::string& syscall, const std::string& fd_target) {
  switch (c) {
    case StallClass::kCpu:
      return "The loop thread was computing: move CPU-heavy work (parsing, hashing, compression, "
             "big loops) to a worker thread or process, or split it into chunks that yield to "
             "the loop.";
    case StallClass::kBlocked: {
      std::string what = syscall.empty() ? "a blocking call" : syscall + "()";
      if (!fd_target.empty()) what += " on " + fd_target;
      if (syscall == "futex") {
        return "The loop thread waited for a lock (futex): do not take locks held by slow "
               "threads on the loop; hand the work to a thread pool and post the result back.";
      }
      if (syscall.find("sleep") != std::string::npos) {
        return "The loop thread slept in " + what +
               ": replace the sleep with a loop timer (evtimer_add) so other events keep being "
               "served.";
      }
      return "The loop thread waited in " + what +
             ": use an asynchronous client for this call, or run it on a thread pool and "
             "answer from the loop.";
    }
    case StallClass::kStarved:
      return "The loop thread was ready to run but got no CPU (contention): reduce other load on "
             "this host, give the service more CPU, or run fewer busy threads than cores.";
    case StallClass::kSuspended:
      return "The whole process was paused (SIGSTOP, debugger, VM or container freeze): not the "
             "loop's own work; check the host, hypervisor or orchestrator.";
    case StallClass::kUnknown:
      break;
  }
  return "The loop made no progress; stacks and the syscall (if any) show where it was.";
}

Classification Classify(const ClassifierInput& in) {
  Classification c;
  const double wall = static_cast<double>(std::max<int64_t>(in.wall_ns, 1));
  c.cpu_ratio = in.cpu_ns >= 0 ? std::clamp(static_cast<double>(in.cpu_ns) / wall, 0.0, 1.0) : 0;
  c.wait_ratio =
      in.run_delay_ns >= 0 ? std::clamp(static_cast<double>(in.run_delay_ns) / wall, 0.0, 1.0) : 0;
  const double suspended = std::clamp(static_cast<double>(in.suspended_ns) / wall, 0.0, 1.0);
  if (suspended >= 0.5) {
    c.stall_class = StallClass::kSuspended;
  } else if (in.cpu_ns >= 0 && c.cpu_ratio >= 0.5) {
    c.stall_class = StallClass::kCpu;
  } else if (!in.syscall.empty() && in.samples > 0 && 2 * in.syscall_samples >= in.samples) {
    // Seen waiting in the same syscall most of the time: that is the cause, even if the thread
    // then queued for a CPU after the call returned.
    c.stall_class = StallClass::kBlocked;
  } else if (in.run_delay_ns >= 0 && c.wait_ratio >= 0.3 && c.wait_ratio >= c.cpu_ratio) {
    c.stall_class = StallClass::kStarved;
  } else if (!in.syscall.empty()) {
    c.stall_class = StallClass::kBlocked;
  } else if (in.cpu_ns >= 0 && c.cpu_ratio >= 0.2) {
    c.stall_class = StallClass::kCpu;
  } else if (in.seen_running) {
    c.stall_class = StallClass::kStarved;
  }
  c.hint = HintFor(c.stall_class, in.syscall, in.fd_target);
  return c;
}

}  // namespace stallwatch::agent::internal
