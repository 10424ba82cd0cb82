# Warning flags and sanitizers live on interface targets that every project target links.
add_library(sw_warnings INTERFACE)
target_compile_options(sw_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                             -Wno-missing-field-initializers)
if(SW_WERROR)
  target_compile_options(sw_warnings INTERFACE -Werror)
endif()

if(SW_SANITIZE)
  add_compile_options(-fsanitize=${SW_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${SW_SANITIZE})
endif()

# libFuzzer (tests/fuzz, docs/fuzzing.md): every target gets coverage instrumentation and
# ASan + UBSan, so the libraries the fuzzers link are instrumented the same way; only the
# fuzz_* binaries link libFuzzer's main (-fsanitize=fuzzer).
if(SW_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SW_FUZZ needs clang's libFuzzer: configure with "
                        "-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++")
  endif()
  if(SW_SANITIZE)
    message(FATAL_ERROR "SW_FUZZ brings its own sanitizers (address,undefined): leave SW_SANITIZE empty")
  endif()
  if(NOT SW_BUILD_TESTS)
    message(FATAL_ERROR "SW_FUZZ needs SW_BUILD_TESTS=ON (the fuzz targets live in tests/fuzz)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()
