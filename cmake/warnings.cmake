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
