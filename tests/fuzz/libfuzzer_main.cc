// libFuzzer's entry point for one target: SW_FUZZ_ENTRY names the target function
// (tests/fuzz/CMakeLists.txt compiles this file once per fuzzer binary).
#include <cstddef>
#include <cstdint>

#ifndef SW_FUZZ_ENTRY
#error "SW_FUZZ_ENTRY must name the fuzz target function"
#endif

extern "C" int SW_FUZZ_ENTRY(const uint8_t* data, size_t size);

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return SW_FUZZ_ENTRY(data, size);
}
