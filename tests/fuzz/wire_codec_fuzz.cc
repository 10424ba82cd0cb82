// Fuzz target: the agent↔daemon wire codec (common/wire). The input is used twice:
//  - as the byte stream of a connection, fed to a FrameDecoder in two pieces (the incremental
//    path); every decoded message must re-encode into a frame that decodes to the same message;
//  - as one frame body, decoded with and without the SAX fast path for delay windows: both
//    must accept and reject the same bodies, for the same reason, with the same result.
#include <string>

#include "fuzz_check.h"
#include "stallwatch/wire/codec.h"

namespace stallwatch::wire {
namespace {

using ::stallwatch::fuzz::Count;

void CheckReencodes(const Message& m) {
  const std::string body = EncodeBody(m);
  const std::string frame = EncodeFrame(m);
  FrameDecoder d;
  d.Feed(frame.data(), frame.size());
  Message again;
  DecodeError err;
  SW_FUZZ_CHECK(d.Next(&again, &err) == FrameDecoder::Result::kMessage);
  SW_FUZZ_CHECK(d.pending() == 0);
  SW_FUZZ_CHECK(again.index() == m.index());
  SW_FUZZ_CHECK(EncodeBody(again) == body);
}

void CheckError(const DecodeError& err) {
  SW_FUZZ_CHECK(!err.message.empty());
  SW_FUZZ_CHECK(err.message.find('\n') == std::string::npos);  // one line
}

void Stream(const char* data, size_t size) {
  FrameDecoder d;
  const size_t half = size / 2;
  d.Feed(data, half);
  Message m;
  DecodeError err;
  bool fed_all = false;
  for (int steps = 0; steps < 100000; ++steps) {
    const auto r = d.Next(&m, &err);
    if (r == FrameDecoder::Result::kMessage) {
      Count(true);
      CheckReencodes(m);
      continue;
    }
    if (r == FrameDecoder::Result::kError) {
      Count(false);
      CheckError(err);
      if (!err.fatal) continue;
      SW_FUZZ_CHECK(d.failed());
      SW_FUZZ_CHECK(d.pending() == 0);  // a failed stream holds nothing
      // Sticky: the stream stays failed whatever comes next.
      d.Feed(data, size);
      SW_FUZZ_CHECK(d.Next(&m, &err) == FrameDecoder::Result::kError && err.fatal);
      return;
    }
    // kNeedMore: what is held is at most one incomplete frame.
    SW_FUZZ_CHECK(d.pending() <= kHeaderSize + kMaxFrameBody);
    if (fed_all) return;
    d.Feed(data + half, size - half);
    fed_all = true;
  }
  SW_FUZZ_CHECK(!"the decoder made no progress");
}

void Body(std::string_view body) {
  Message fast_m, slow_m;
  DecodeError fast_e, slow_e;
  const bool fast =
      internal::DecodeBodyWith(body, internal::DelayDecoding::kScanner, &fast_m, &fast_e);
  const bool slow =
      internal::DecodeBodyWith(body, internal::DelayDecoding::kJsonOnly, &slow_m, &slow_e);
  SW_FUZZ_CHECK(fast == slow);
  if (fast) {
    SW_FUZZ_CHECK(EncodeBody(fast_m) == EncodeBody(slow_m));
    CheckReencodes(fast_m);
  } else {
    SW_FUZZ_CHECK(fast_e.reason == slow_e.reason);
    SW_FUZZ_CHECK(!fast_e.fatal);
    CheckError(fast_e);
  }
}

}  // namespace
}  // namespace stallwatch::wire

SW_FUZZ_TARGET(SwFuzzWireCodec) {
  const std::string_view text = stallwatch::fuzz::AsText(data, size);
  stallwatch::wire::Stream(text.data(), text.size());
  stallwatch::wire::Body(text);
  return 0;
}
