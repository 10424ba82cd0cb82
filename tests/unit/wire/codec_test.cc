#include "stallwatch/wire/codec.h"

#include <gtest/gtest.h>

#include <string>

#include "stallwatch/common/finding_json.h"
#include "stallwatch/common/histogram.h"

namespace stallwatch::wire {
namespace {

std::string Header(uint32_t len, char v = 1, char flags = 0) {
  std::string h = {'S', 'W', v, flags};
  h.push_back(static_cast<char>(len >> 24));
  h.push_back(static_cast<char>(len >> 16));
  h.push_back(static_cast<char>(len >> 8));
  h.push_back(static_cast<char>(len));
  return h;
}

std::string Frame(const std::string& body) { return Header(body.size()) + body; }

Hello SampleHello() {
  Hello h;
  h.service = "api";
  h.pid = 4242;
  h.host = "web-1";
  h.executable = "/usr/bin/api";
  h.agent_version = "0.1.0";
  h.loops = {"main", "io-1"};
  return h;
}

StallFinding SampleStall() {
  StallFinding f;
  f.service = "api";
  f.pid = 4242;
  f.loop = "main";
  f.stall_id = 3;
  f.start_ns = 1'700'000'000'000'000'000;
  f.duration_s = 0.5;
  f.ongoing = false;
  f.stall_class = StallClass::kBlocked;
  f.syscall = "nanosleep";
  f.cpu_ratio = 0.01;
  f.hint = "offload";
  Stack s;
  s.samples = 2;
  s.method = "proc";
  s.frames.push_back({"usleep", "/lib/libc.so.6", 0x10, "", 0});
  s.frames.push_back({"main", "/usr/bin/api", 0x20, "api.c", 7});
  f.stacks.push_back(s);
  return f;
}

DelayFinding SampleDelay() {
  DelayFinding d;
  d.service = "api";
  d.pid = 4242;
  d.loop = "main";
  d.end_ns = 1'700'000'000'000'000'000;
  d.window_s = 10;
  d.count = 3;
  d.sum_s = 0.002;
  d.max_s = 0.001;
  d.utilization = 0.25;
  d.delay_buckets = {{HistBucketIndex(100'000), 2}, {HistBucketIndex(1'000'000), 1}};
  d.iteration_buckets = {{5, 7}};
  d.stalls_total = 4;
  d.findings_dropped_total = 9;
  return d;
}

// Decodes exactly one message from a complete byte string.
Message DecodeOne(const std::string& bytes) {
  FrameDecoder d;
  d.Feed(bytes.data(), bytes.size());
  Message m;
  DecodeError err;
  EXPECT_EQ(d.Next(&m, &err), FrameDecoder::Result::kMessage) << err.message;
  EXPECT_EQ(d.pending(), 0u);
  return m;
}

DecodeError DecodeFail(const std::string& bytes) {
  FrameDecoder d;
  d.Feed(bytes.data(), bytes.size());
  Message m;
  DecodeError err;
  EXPECT_EQ(d.Next(&m, &err), FrameDecoder::Result::kError);
  EXPECT_FALSE(err.message.empty());
  EXPECT_EQ(err.message.find('\n'), std::string::npos) << "messages are one line";
  return err;
}

TEST(WireCodec, HelloRoundTrip) {
  Message m = DecodeOne(EncodeFrame(SampleHello()));
  const Hello& h = std::get<Hello>(m);
  EXPECT_EQ(h.service, "api");
  EXPECT_EQ(h.pid, 4242);
  EXPECT_EQ(h.host, "web-1");
  EXPECT_EQ(h.executable, "/usr/bin/api");
  EXPECT_EQ(h.agent_version, "0.1.0");
  EXPECT_EQ(h.loops, (std::vector<std::string>{"main", "io-1"}));
}

TEST(WireCodec, HelloTokenIsOptionalAndBounded) {
  Hello h = SampleHello();
  EXPECT_EQ(EncodeBody(h).find("token"), std::string::npos) << "omitted when empty";
  h.token = "s3cret";
  EXPECT_EQ(std::get<Hello>(DecodeOne(EncodeFrame(h))).token, "s3cret");
  EXPECT_EQ(DecodeFail(Frame(R"({"kind":"hello","pid":1,"service":"s","token":7})")).reason,
            RejectReason::kBadField);
  const std::string long_token(kMaxTokenBytes + 1, 't');
  const DecodeError e =
      DecodeFail(Frame(R"({"kind":"hello","pid":1,"service":"s","token":")" + long_token + "\"}"));
  EXPECT_EQ(e.reason, RejectReason::kBadField);
  EXPECT_EQ(e.message.find("ttt"), std::string::npos) << "the error never echoes the token";
}

TEST(WireCodec, HelloStartTimeIsOptional) {
  Hello h = SampleHello();
  EXPECT_EQ(EncodeBody(h).find("start_time_ns"), std::string::npos) << "omitted when unknown";
  EXPECT_EQ(std::get<Hello>(DecodeOne(EncodeFrame(h))).start_time_ns, 0);
  h.start_time_ns = 1'796'655'772'420'000'000;
  EXPECT_EQ(std::get<Hello>(DecodeOne(EncodeFrame(h))).start_time_ns, 1'796'655'772'420'000'000);
  EXPECT_EQ(
      DecodeFail(Frame(R"({"kind":"hello","pid":1,"service":"s","start_time_ns":-5})")).reason,
      RejectReason::kBadField);
  EXPECT_EQ(
      DecodeFail(Frame(R"({"kind":"hello","pid":1,"service":"s","start_time_ns":"x"})")).reason,
      RejectReason::kBadField);
}

TEST(WireCodec, StallRoundTrip) {
  const StallFinding in = SampleStall();
  const StallFinding out = std::get<StallFinding>(DecodeOne(EncodeFrame(in)));
  EXPECT_EQ(out.service, in.service);
  EXPECT_EQ(out.pid, in.pid);
  EXPECT_EQ(out.loop, in.loop);
  EXPECT_EQ(out.stall_id, in.stall_id);
  EXPECT_EQ(out.start_ns, in.start_ns);
  EXPECT_DOUBLE_EQ(out.duration_s, in.duration_s);
  EXPECT_EQ(out.stall_class, StallClass::kBlocked);
  EXPECT_EQ(out.syscall, "nanosleep");
  ASSERT_EQ(out.stacks.size(), 1u);
  ASSERT_EQ(out.stacks[0].frames.size(), 2u);
  EXPECT_EQ(out.stacks[0].frames[1].function, "main");
  EXPECT_EQ(out.stacks[0].frames[1].line, 7);
}

TEST(WireCodec, DelayRoundTripKeepsBuckets) {
  const DelayFinding in = SampleDelay();
  const DelayFinding out = std::get<DelayFinding>(DecodeOne(EncodeFrame(in)));
  EXPECT_EQ(out.delay_buckets, in.delay_buckets);
  EXPECT_EQ(out.iteration_buckets, in.iteration_buckets);
  EXPECT_EQ(out.count, 3u);
  EXPECT_DOUBLE_EQ(out.sum_s, 0.002);
  EXPECT_EQ(out.stalls_total, 4u);
  EXPECT_EQ(out.findings_dropped_total, 9u);
}

TEST(WireCodec, GoldenHelloFrame) {
  Hello h;
  h.service = "s";
  h.pid = 1;
  h.loops = {"l"};
  const std::string body =
      R"({"agent_version":"","executable":"","host":"","kind":"hello","loops":["l"],)"
      R"("pid":1,"service":"s"})";
  EXPECT_EQ(EncodeFrame(h), Header(body.size()) + body);
  // The exact header bytes of a 93-byte body.
  EXPECT_EQ(Header(93), std::string("SW\x01\x00\x00\x00\x00\x5d", 8));
}

TEST(WireCodec, GoldenStallFrameDecodes) {
  // A frame as an agent of protocol version 1 sends it (fields in any order, unknown ignored).
  const std::string body =
      R"({"kind":"stall","schema_version":1,"service":"api","pid":7,"loop":"main",)"
      R"("stall_id":1,"start_ns":1700000000000000000,"duration_s":0.25,"ongoing":true,)"
      R"("class":"cpu","syscall":"","fd_target":"","cpu_ratio":0.98,"hint":"move CPU work",)"
      R"("stacks":[{"samples":3,"method":"signal","frames":[{"function":"spin","module":"/a",)"
      R"("offset":16,"file":"a.c","line":3}]}],"future_field":42})";
  const StallFinding f = std::get<StallFinding>(DecodeOne(Frame(body)));
  EXPECT_EQ(f.stall_class, StallClass::kCpu);
  EXPECT_TRUE(f.ongoing);
  EXPECT_EQ(f.stacks.at(0).samples, 3u);
  EXPECT_EQ(f.stacks.at(0).frames.at(0).function, "spin");
}

TEST(WireCodec, ByteByByteFeedAndSeveralFrames) {
  const std::string bytes =
      EncodeFrame(SampleHello()) + EncodeFrame(SampleStall()) + EncodeFrame(SampleDelay());
  FrameDecoder d;
  std::vector<Message> got;
  for (char c : bytes) {
    d.Feed(&c, 1);
    Message m;
    DecodeError err;
    for (;;) {
      auto r = d.Next(&m, &err);
      ASSERT_NE(r, FrameDecoder::Result::kError) << err.message;
      if (r == FrameDecoder::Result::kNeedMore) {
        break;
      }
      got.push_back(m);
    }
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<Hello>(got[0]));
  EXPECT_TRUE(std::holds_alternative<StallFinding>(got[1]));
  EXPECT_TRUE(std::holds_alternative<DelayFinding>(got[2]));
  EXPECT_EQ(d.pending(), 0u);
}

TEST(WireCodec, InvalidUtf8IsReplacedOnEncode) {
  StallFinding f = SampleStall();
  f.hint = "bad \xff byte";
  const StallFinding out = std::get<StallFinding>(DecodeOne(EncodeFrame(f)));
  EXPECT_NE(out.hint.find("bad"), std::string::npos);
}

// --- Malformed frames: each class is rejected with its reason. ---

TEST(WireReject, BadMagicIsFatalAndSticky) {
  FrameDecoder d;
  const std::string http = "GET /metrics HTTP/1.1\r\n\r\n";
  d.Feed(http.data(), http.size());
  Message m;
  DecodeError err;
  ASSERT_EQ(d.Next(&m, &err), FrameDecoder::Result::kError);
  EXPECT_EQ(err.reason, RejectReason::kBadMagic);
  EXPECT_TRUE(err.fatal);
  EXPECT_NE(err.message.find("SW"), std::string::npos);
  // Later good bytes do not resynchronise a broken stream.
  const std::string good = EncodeFrame(SampleHello());
  d.Feed(good.data(), good.size());
  EXPECT_EQ(d.Next(&m, &err), FrameDecoder::Result::kError);
  EXPECT_TRUE(d.failed());
}

TEST(WireReject, BadMagicSeenFromFirstByte) {
  FrameDecoder d;
  d.Feed("{", 1);
  Message m;
  DecodeError err;
  EXPECT_EQ(d.Next(&m, &err), FrameDecoder::Result::kError);
  EXPECT_EQ(err.reason, RejectReason::kBadMagic);
}

TEST(WireReject, BadVersion) {
  const std::string body = R"({"kind":"hello","pid":1,"service":"s"})";
  auto e = DecodeFail(Header(body.size(), 2) + body);
  EXPECT_EQ(e.reason, RejectReason::kBadVersion);
  EXPECT_TRUE(e.fatal);
  EXPECT_EQ(DecodeFail(Header(body.size(), 1, 1) + body).reason, RejectReason::kBadVersion);
}

TEST(WireReject, BadLength) {
  EXPECT_EQ(DecodeFail(Header(0)).reason, RejectReason::kBadLength);
  auto e = DecodeFail(Header(kMaxFrameBody + 1));
  EXPECT_EQ(e.reason, RejectReason::kBadLength);
  EXPECT_TRUE(e.fatal);
  EXPECT_NE(e.message.find("1048576"), std::string::npos);
}

TEST(WireReject, BodyErrorsAreNotFatal) {
  const std::string bad = Frame("{not json");
  const std::string good = EncodeFrame(SampleHello());
  FrameDecoder d;
  const std::string both = bad + good;
  d.Feed(both.data(), both.size());
  Message m;
  DecodeError err;
  ASSERT_EQ(d.Next(&m, &err), FrameDecoder::Result::kError);
  EXPECT_EQ(err.reason, RejectReason::kBadJson);
  EXPECT_FALSE(err.fatal);
  EXPECT_EQ(d.Next(&m, &err), FrameDecoder::Result::kMessage);
  EXPECT_TRUE(std::holds_alternative<Hello>(m));
}

// The ledger's "calls" findings travel as their JSON (docs/findings.md, docs/protocol.md): sites,
// figures and duration buckets come back as sent.
TEST(WireCodec, ACallsFindingRoundTripsWithItsSitesAndBuckets) {
  CallsFinding c;
  c.service = "s";
  c.pid = 7;
  c.loop = "main";
  c.end_ns = 1765119845000000000;
  c.window_s = 10;
  c.overflow = 2;
  CallSiteStats e;
  e.call = "getaddrinfo";
  e.site.function = "resolve_backend";
  e.site.file = "app.c";
  e.site.line = 20;
  e.count = 3;
  e.total_s = 0.003;
  e.max_s = 0.0015;
  e.p99_s = 0.0015;
  e.buckets = {{21, 2}, {22, 1}};
  c.calls.push_back(e);
  const auto out = std::get<CallsFinding>(DecodeOne(EncodeFrame(c)));
  EXPECT_EQ(out.loop, "main");
  EXPECT_EQ(out.overflow, 2u);
  ASSERT_EQ(out.calls.size(), 1u);
  EXPECT_EQ(out.calls[0].call, "getaddrinfo");
  EXPECT_EQ(out.calls[0].site.function, "resolve_backend");
  EXPECT_EQ(out.calls[0].site.line, 20);
  EXPECT_EQ(out.calls[0].count, 3u);
  EXPECT_DOUBLE_EQ(out.calls[0].total_s, 0.003);
  EXPECT_EQ(out.calls[0].buckets, e.buckets);
}

// A calls finding with a call outside the fixed list (it would become a label value), a bucket
// outside the layout or too many sites is refused alone, as bad_field; the connection goes on.
TEST(WireReject, ACallsFindingWithAnUnknownCallOrBucketIsABadField) {
  CallsFinding c;
  c.service = "s";
  c.pid = 7;
  c.loop = "main";
  c.calls.push_back({.call = "getaddrinfo", .site = {}, .count = 3});
  CallsFinding unknown = c;
  unknown.calls[0].call = "made_up";
  const std::string both = Frame(ToJsonLine(unknown)) + EncodeFrame(SampleHello());
  FrameDecoder d;
  d.Feed(both.data(), both.size());
  Message m;
  DecodeError err;
  ASSERT_EQ(d.Next(&m, &err), FrameDecoder::Result::kError);
  EXPECT_EQ(err.reason, RejectReason::kBadField);
  EXPECT_FALSE(err.fatal);
  EXPECT_NE(err.message.find("unknown call 'made_up'; accepted calls: getaddrinfo"),
            std::string::npos)
      << err.message;
  EXPECT_EQ(d.Next(&m, &err), FrameDecoder::Result::kMessage);
  EXPECT_TRUE(std::holds_alternative<Hello>(m));

  CallsFinding bucket = c;
  bucket.calls[0].buckets = {{58, 1}};
  auto e = DecodeFail(Frame(ToJsonLine(bucket)));
  EXPECT_EQ(e.reason, RejectReason::kBadField);
  EXPECT_NE(e.message.find("accepted: 0..57"), std::string::npos) << e.message;

  CallsFinding many = c;
  many.calls.resize(kMaxCallSites + 1, c.calls[0]);
  EXPECT_EQ(DecodeFail(Frame(ToJsonLine(many))).reason, RejectReason::kBadField);

  CallsFinding no_pid = c;
  no_pid.pid = 0;
  EXPECT_EQ(DecodeFail(Frame(ToJsonLine(no_pid))).reason, RejectReason::kBadField);
}

TEST(WireReject, BadJsonAndInvalidUtf8AndDeepNesting) {
  EXPECT_EQ(DecodeFail(Frame("{\"kind\":")).reason, RejectReason::kBadJson);
  EXPECT_EQ(DecodeFail(Frame("{\"kind\":\"hello\",\"service\":\"\xff\"}")).reason,
            RejectReason::kBadJson);
  std::string deep(10000, '[');
  EXPECT_EQ(DecodeFail(Frame(deep)).reason, RejectReason::kBadJson);
}

TEST(WireReject, NotObject) {
  EXPECT_EQ(DecodeFail(Frame("[1,2]")).reason, RejectReason::kNotObject);
  EXPECT_EQ(DecodeFail(Frame("42")).reason, RejectReason::kNotObject);
}

TEST(WireReject, UnknownKind) {
  EXPECT_EQ(DecodeFail(Frame(R"({"pid":1})")).reason, RejectReason::kUnknownKind);
  auto e = DecodeFail(Frame(R"({"kind":"metrics"})"));
  EXPECT_EQ(e.reason, RejectReason::kUnknownKind);
  EXPECT_NE(e.message.find("hello, stall, delay, calls"), std::string::npos);
}

TEST(WireReject, BadFields) {
  const char* bodies[] = {
      R"({"kind":"hello","service":"s"})",                         // no pid
      R"({"kind":"hello","pid":1})",                               // no service
      R"({"kind":"hello","pid":-3,"service":"s"})",                // negative pid
      R"({"kind":"hello","pid":1,"service":"s","loops":"main"})",  // loops not array
      R"({"kind":"stall","service":"s","pid":"7","loop":"m"})",    // pid wrong type
      R"({"kind":"stall","service":"s","pid":7})",                 // no loop
      R"({"kind":"stall","service":"s","pid":7,"loop":"m","class":"slow"})",
      R"({"kind":"stall","service":"s","pid":7,"loop":"m","duration_s":-1})",
      R"({"kind":"delay","service":"s","pid":7,"loop":"m","delay_buckets":[[99999999,1]]})",
      R"({"kind":"delay","service":"s","pid":7,"loop":"m","delay_buckets":[[1]]})",
      R"({"kind":"delay","service":"s","pid":7,"loop":"m","utilization":7})",
      // Found by fuzzing: integers out of range were converted (a float to int64 is undefined
      // behaviour) or silently wrapped.
      R"({"kind":"stall","service":"s","pid":1e300,"loop":"m"})",
      R"({"kind":"stall","service":"s","pid":7,"loop":"m","stall_id":-1})",
      R"({"kind":"stall","service":"s","pid":7,"loop":"m","stacks":[{"frames":[{"line":1e10}]}]})",
      R"({"kind":"delay","service":"s","pid":7,"loop":"m","count":1.5})",
      R"({"kind":"delay","service":"s","pid":7,"loop":"m","delay_buckets":[[4294967296,1]]})",
  };
  for (const char* b : bodies) {
    auto e = DecodeFail(Frame(b));
    EXPECT_EQ(e.reason, RejectReason::kBadField) << b << " → " << e.message;
    EXPECT_FALSE(e.fatal);
  }
  std::string long_service(kMaxNameBytes + 1, 'x');
  EXPECT_EQ(
      DecodeFail(Frame(R"({"kind":"hello","pid":1,"service":")" + long_service + "\"}")).reason,
      RejectReason::kBadField);
}

TEST(WireReject, ReasonNamesAreDistinctLabelValues) {
  std::set<std::string> names;
  for (RejectReason r : kAllRejectReasons) {
    names.insert(RejectReasonName(r));
  }
  EXPECT_EQ(names.size(), std::size(kAllRejectReasons));
  EXPECT_TRUE(names.count("bad_magic"));
}

}  // namespace
}  // namespace stallwatch::wire
