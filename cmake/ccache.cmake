# Compiles through ccache when it is installed (scripts/install-deps.sh installs it): rebuilding
# sources that did not change — in this tree, or in another clone of the same commit, since
# scripts/test.sh and .ci/run set CCACHE_BASEDIR to the clone — is a cache hit. CI's four builds
# (plain, ASan, TSan, fuzzers) on a machine that built the same commit before take minutes
# instead of most of the run. -DSW_CCACHE=OFF compiles directly.
option(SW_CCACHE "Compile through ccache when it is installed" ON)
if(SW_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  find_program(SW_CCACHE_PROGRAM ccache)
  if(SW_CCACHE_PROGRAM)
    set(CMAKE_C_COMPILER_LAUNCHER "${SW_CCACHE_PROGRAM}")
    set(CMAKE_CXX_COMPILER_LAUNCHER "${SW_CCACHE_PROGRAM}")
  endif()
endif()
