# Writes OUT, a C++ source holding the web UI's files (NAMES, comma-separated, in DIR) as raw
# string literals for daemon/src/web_assets.h. Run at build time: cmake -DDIR= -DNAMES= -DOUT= -P.
string(REPLACE "," ";" names "${NAMES}")
set(entries "")
foreach(name IN LISTS names)
  file(READ "${DIR}/${name}" content)
  string(FIND "${content}" ")sw_web\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "${DIR}/${name} contains the literal's delimiter )sw_web\"")
  endif()
  if(name MATCHES "\\.html$")
    set(type "text/html; charset=utf-8")
  elseif(name MATCHES "\\.js$")
    set(type "text/javascript; charset=utf-8")
  elseif(name MATCHES "\\.css$")
    set(type "text/css; charset=utf-8")
  elseif(name MATCHES "\\.svg$")
    set(type "image/svg+xml")
  else()
    message(FATAL_ERROR "${name}: no content type for this extension (html, js, css, svg)")
  endif()
  string(APPEND entries "      {\"${name}\", \"${type}\", R\"sw_web(${content})sw_web\"},\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from daemon/web/ by daemon/web/embed.cmake: do not edit.
#include \"web_assets.h\"

namespace stallwatch::daemon {

std::span<const WebAsset> WebAssets() {
  static constexpr WebAsset kAssets[] = {
${entries}  };
  return kAssets;
}

}  // namespace stallwatch::daemon
")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
