#pragma once
// The agent→daemon wire protocol, version 1 (docs/protocol.md).
//
// A stream of frames. Each frame is an 8-byte header followed by a JSON object:
//
//   offset 0  2 bytes  magic "SW"
//   offset 2  1 byte   protocol version (kProtocolVersion)
//   offset 3  1 byte   flags, must be 0
//   offset 4  4 bytes  body length, big-endian, 2 ≤ length ≤ kMaxFrameBody
//   offset 8  body     UTF-8 JSON object with a "kind": "hello", "stall", "delay" or "calls"
//
// The first frame of a connection is a hello (the agent's identity); the others are findings in
// the JSON finding format (docs/findings.md), delay findings and the call sites of calls findings
// with their sparse histograms.
//
// Pure code: no I/O. Threading: free functions are thread-safe; a FrameDecoder is used by one
// thread at a time.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "stallwatch/findings.h"

namespace stallwatch::wire {

inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kHeaderSize = 8;
inline constexpr size_t kMaxFrameBody = 1 << 20;  // 1 MiB
// Bounds on identity strings: they become metric label values.
inline constexpr size_t kMaxNameBytes = 128;
inline constexpr size_t kMaxLoopsInHello = 256;
inline constexpr size_t kMaxStacks = 64;
inline constexpr size_t kMaxFrames = 256;
inline constexpr size_t kMaxTokenBytes = 4096;
// Call sites in one calls finding (the agent's ledger holds 128 per loop).
inline constexpr size_t kMaxCallSites = 256;

// The agent's identity, sent first on every connection (and again after each reconnect).
struct Hello {
  std::string service;
  int64_t pid = 0;
  std::string host;
  std::string executable;
  std::string agent_version;
  // When the process started (Unix ns); 0 when unknown (and from agents that predate the field).
  // With the pid, it names one process across pid reuse (stallwatch_process_info's start_time).
  int64_t start_time_ns = 0;
  std::vector<std::string> loops;  // loops attached when the connection was made
  // The shared secret of a daemon that requires one on TCP (--agent-token-file). Sent only over
  // TCP and only when set; omitted from the body when empty. Never stored or shown by the daemon.
  std::string token;
};

using Message = std::variant<Hello, StallFinding, DelayFinding, CallsFinding>;

// Why a frame was rejected. The names are the `reason` label values of
// stallwatch_daemon_frames_rejected_total.
enum class RejectReason {
  kBadMagic,          // header does not start with "SW": not a stallwatch stream
  kBadVersion,        // unsupported protocol version or non-zero flags
  kBadLength,         // body length 0/1 or larger than kMaxFrameBody
  kBadJson,           // body is not valid UTF-8 JSON
  kNotObject,         // body is JSON but not an object
  kUnknownKind,       // "kind" missing or not hello/stall/delay/calls
  kBadField,          // a field is missing, of the wrong type or out of range
  kNoHello,           // a finding before the hello (daemon state)
  kIdentityMismatch,  // a finding's service/pid differs from the hello's (daemon state)
  kTruncated,         // the connection closed in the middle of a frame (daemon state)
  kLimit,             // a daemon limit was hit (too many loops for one agent, …)
  kHandshakeTimeout,  // no hello within the handshake timeout (daemon state; closed)
  kFrameTimeout,      // a started frame was not completed in time: slow-loris (daemon; closed)
  kAuth,              // TCP agent without the daemon's token, or with a wrong one (closed)
};
inline constexpr RejectReason kAllRejectReasons[] = {
    RejectReason::kBadMagic,     RejectReason::kBadVersion, RejectReason::kBadLength,
    RejectReason::kBadJson,      RejectReason::kNotObject,  RejectReason::kUnknownKind,
    RejectReason::kBadField,     RejectReason::kNoHello,    RejectReason::kIdentityMismatch,
    RejectReason::kTruncated,    RejectReason::kLimit,      RejectReason::kHandshakeTimeout,
    RejectReason::kFrameTimeout, RejectReason::kAuth};
const char* RejectReasonName(RejectReason r);  // "bad_magic", "bad_version", …

struct DecodeError {
  RejectReason reason = RejectReason::kBadField;
  std::string message;  // one line: the problem and the accepted form
  // The stream cannot be resynchronised after a header error: the reader must close it.
  bool fatal = false;
};

// Encodes one message as a complete frame (header + body). Strings that are not valid UTF-8
// are replaced, never rejected: the agent's findings always go out.
std::string EncodeFrame(const Message& m);
// The JSON body of a message (what EncodeFrame puts after the header).
std::string EncodeBody(const Message& m);

// Decodes one frame body. On failure returns false and fills *err (never fatal).
bool DecodeBody(std::string_view body, Message* out, DecodeError* err);

namespace internal {
// How delay windows are decoded: by the scanner of their flat shape, falling back to the JSON
// parser for any other body (what DecodeBody does), or by the JSON parser alone.
enum class DelayDecoding { kScanner, kJsonOnly };
// DecodeBody with the given delay decoding. Both accept and reject the same bodies, with the same
// reason and the same result; DecodeBody is DecodeBodyWith(…, kScanner), the tests compare.
bool DecodeBodyWith(std::string_view body, DelayDecoding delay, Message* out, DecodeError* err);
// The scanner alone: true when it took the body itself (false: DecodeBody asks the DOM path).
bool ScanDelayForTest(std::string_view body, DelayFinding* out);
}  // namespace internal

// Incremental decoder of a byte stream: Feed() what the socket gave, then call Next() until it
// returns kNeedMore. Memory is bounded by kHeaderSize + kMaxFrameBody + the last Feed.
class FrameDecoder {
 public:
  enum class Result { kNeedMore, kMessage, kError };

  void Feed(const char* data, size_t n) { buf_.append(data, n); }
  // kMessage: *out holds the next message. kError: *err says why; if err->fatal the decoder
  // stays failed (every later call returns the same error) and the stream must be closed.
  Result Next(Message* out, DecodeError* err);
  // Bytes of an incomplete frame held (non-zero at end of stream means a truncated frame).
  size_t pending() const { return buf_.size() - pos_; }
  bool failed() const { return failed_; }

 private:
  std::string buf_;
  size_t pos_ = 0;
  bool failed_ = false;
  DecodeError fatal_error_;
};

}  // namespace stallwatch::wire
