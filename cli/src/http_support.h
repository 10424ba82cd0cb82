#pragma once
// libevent HTTP plumbing shared by the bundled server, its slow upstream and its worker pool:
// replies, an eventfd waker, the set of requests answered later, binding a listening socket.
//
// Threading: everything here is called on the thread of the loop that owns the objects,
// except Waker::Notify() (any thread, async-signal safe).

#include <event2/event.h>
#include <event2/http.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

namespace stallwatch::cli::internal {

// Keeps a compiler from turning a call into a tail call (the caller's frame would vanish from
// the stacks) or from deleting a busy loop.
inline void KeepFrame() { asm volatile("" ::: "memory"); }

// The query string of the request's URI ("" without one).
std::string QueryOf(evhttp_request* req);
void Reply(evhttp_request* req, int code, const char* reason, const std::string& body,
           const char* content_type = "text/plain; charset=utf-8");
// 400 with `message` and a newline.
void ReplyBadRequest(evhttp_request* req, const std::string& message);

// An eventfd read by the loop: other threads (and signal handlers) wake the loop with Notify().
class Waker {
 public:
  Waker() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Waker() {
    if (ev_ != nullptr) {
      event_free(ev_);
    }
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  bool ok() const { return fd_ >= 0; }
  // Called on the loop thread (setup).
  bool Bind(event_base* base, event_callback_fn cb, void* arg) {
    ev_ = event_new(base, fd_, EV_READ | EV_PERSIST, cb, arg);
    return ev_ != nullptr && event_add(ev_, nullptr) == 0;
  }
  // Called on any thread. Async-signal safe.
  void Notify() const {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof one);
  }
  // Called on the loop thread.
  void Drain() const {
    uint64_t v;
    [[maybe_unused]] ssize_t n = read(fd_, &v, sizeof v);
  }

 private:
  int fd_;
  event* ev_ = nullptr;
};

// Requests answered later (timer, worker, upstream). Their connection may close meanwhile:
// libevent then frees the request, so the close callback forgets it (req = nullptr).
struct Pending {
  evhttp_request* req = nullptr;
  evhttp_connection* evcon = nullptr;
  event* timer = nullptr;
  evhttp_connection* upstream = nullptr;
  int ms = 0;
  class PendingSet* owner = nullptr;
};

class PendingSet {
 public:
  // Called on the loop thread.
  Pending* Add(evhttp_request* req, int ms) {
    auto* p = new Pending{.req = req, .evcon = evhttp_request_get_connection(req), .ms = ms};
    p->owner = this;
    if (p->evcon != nullptr) {
      evhttp_connection_set_closecb(p->evcon, &PendingSet::OnClose, this);
    }
    set_.insert(p);
    return p;
  }
  // Called on the loop thread: replies (when the client is still there) and frees p.
  void Finish(Pending* p, int code, const char* reason, const std::string& body) {
    if (p->req != nullptr) {
      Reply(p->req, code, reason, body);
    }
    Release(p);
  }
  void Release(Pending* p) {
    if (p->timer != nullptr) {
      event_free(p->timer);
    }
    set_.erase(p);
    delete p;
  }
  // Called on the loop thread at shutdown: answers 503 to all and frees them.
  void FailAll() {
    for (Pending* p : std::vector<Pending*>(set_.begin(), set_.end())) {
      if (p->upstream != nullptr) {
        evhttp_connection_free(p->upstream);
      }
      Finish(p, 503, "Service Unavailable", "shutting down\n");
    }
  }
  bool Contains(Pending* p) const { return set_.count(p) != 0; }
  size_t size() const { return set_.size(); }

 private:
  static void OnClose(evhttp_connection* evcon, void* arg) {
    auto* self = static_cast<PendingSet*>(arg);
    for (Pending* p : self->set_) {
      if (p->evcon == evcon) {
        p->req = nullptr;
        p->evcon = nullptr;
      }
    }
  }
  std::unordered_set<Pending*> set_;
};

// "host:port" → the port (1..65535) and *host; -1 when malformed.
int ParseHostPort(const std::string& hp, std::string* host);
// Binds evhttp to bind:port; returns the bound port, or -1 with a one-line *error that names
// what to try instead.
int BindHttp(evhttp* http, const std::string& bind, int port, std::string* error);

}  // namespace stallwatch::cli::internal
