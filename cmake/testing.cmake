# sw_add_gtest(NAME <name> SOURCES <files...> LIBS <targets...> LABELS <labels...> [TIMEOUT s])
# One GoogleTest binary; its tests are discovered into CTest with the given labels.
include(GoogleTest)
function(sw_add_gtest)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE GTest::gtest_main GTest::gmock ${T_LIBS} sw_warnings)
  gtest_discover_tests(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
                       DISCOVERY_TIMEOUT 60)
endfunction()

# Adds every immediate subdirectory of the current source dir that has a CMakeLists.txt.
macro(sw_add_subdirectories)
  file(GLOB _sw_children LIST_DIRECTORIES true ${CMAKE_CURRENT_SOURCE_DIR}/*)
  list(SORT _sw_children)
  foreach(_sw_child ${_sw_children})
    if(IS_DIRECTORY ${_sw_child} AND EXISTS ${_sw_child}/CMakeLists.txt)
      add_subdirectory(${_sw_child})
    endif()
  endforeach()
endmacro()
