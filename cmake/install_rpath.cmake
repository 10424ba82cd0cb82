# sw_relative_runpath(<target> <install-dir>): the installed <target>, put in <install-dir>
# (relative to the prefix, e.g. ${CMAKE_INSTALL_BINDIR}), finds the project's libraries through a
# RUNPATH relative to itself ($ORIGIN/../lib), so an install under any prefix — chosen at
# configure time or with `cmake --install --prefix` — runs without LD_LIBRARY_PATH.
function(sw_relative_runpath target install_dir)
  file(RELATIVE_PATH _rel "/${install_dir}" "/${CMAKE_INSTALL_LIBDIR}")
  if(_rel STREQUAL "")
    set(_rel ".")
  endif()
  set_target_properties(${target} PROPERTIES INSTALL_RPATH "$ORIGIN/${_rel}")
endfunction()
