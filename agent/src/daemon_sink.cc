// The daemon transport (unix:/tcp: endpoints). Until the wire protocol lands, a daemon endpoint
// accepts nothing: findings stay queued (bounded, drop-oldest, counted).
#include "reporter.h"

namespace stallwatch::agent::internal {
namespace {

class PendingDaemonSink : public Sink {
 public:
  explicit PendingDaemonSink(Endpoint e) : e_(std::move(e)) {}
  bool Send(const Finding&) override { return false; }
  std::chrono::milliseconds RetryDelay() override { return std::chrono::milliseconds(1000); }
  std::string Describe() const override {
    return e_.kind == Endpoint::Kind::kUnix ? "unix:" + e_.path
                                            : "tcp:" + e_.host + ":" + std::to_string(e_.port);
  }

 private:
  Endpoint e_;
};

}  // namespace

std::unique_ptr<Sink> MakeDaemonSink(const Endpoint& e) {
  return std::make_unique<PendingDaemonSink>(e);
}

}  // namespace stallwatch::agent::internal
