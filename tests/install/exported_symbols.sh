#!/usr/bin/env bash
# exported_symbols.sh agent|preload <library.so>
# The dynamic symbols a library defines are exactly its allow list below: the public API, the
# entry points it interposes, and the symbols the linker adds. Anything else (an internal
# function, a std::, fmt, spdlog or nlohmann instantiation) would bind in every host the library
# is loaded into; the test prints each such symbol, demangled. Every allowed API and interposed
# name must also be there, so a library that exports too little fails as well.
set -euo pipefail
kind="$1"; lib="$2"

# The public API (agent/include/stallwatch/{stallwatch,agent}.h and the functions of
# common/include/stallwatch/{status,findings}.h), as c++filt prints it. Both libraries export it:
# a program that links libstallwatch and runs under the shim attaches through the shim's copy.
api=(
  'stallwatch_attach'
  'stallwatch_detach'
  'stallwatch_snapshot_json'
  'stallwatch::Agent::Attach(event_base*, stallwatch::Options)'
  'stallwatch::Agent::AttachEpoll(int, stallwatch::Options)'
  'stallwatch::Agent::~Agent()'
  'stallwatch::Agent::Snapshot() const'
  'stallwatch::Agent::loop_name[abi:cxx11]() const'
  'stallwatch::Options::FromEnvironment(stallwatch::Options)'
  'stallwatch::Options::FromEnvironment()'
  'stallwatch::Status::ToString[abi:cxx11]() const'
  'stallwatch::StatusCodeName(stallwatch::StatusCode)'
  'stallwatch::StallClassName(stallwatch::StallClass)'
  'stallwatch::ParseStallClass(std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> > const&, stallwatch::StallClass*)'
)
# Interposed by the agent (agent/src/wait_hook.cc): loop boundaries.
agent_hooks=(epoll_wait epoll_pwait epoll_pwait2 epoll_create epoll_create1 close event_base_loop event_base_dispatch)
# Interposed by the shim (agent/preload/preload.cc): base creation and destruction.
preload_hooks=(event_base_new event_base_new_with_config event_init event_base_free
               event_base_free_nofinalize)
# Interposed by the shim (agent/preload/ledger_hooks.cc): the blocking-call ledger.
ledger_hooks=(getaddrinfo gethostbyname gethostbyname_r getnameinfo nanosleep clock_nanosleep
              usleep sleep fsync fdatasync sync_file_range syncfs connect waitpid system
              pthread_join flock open open64 __open_2 __open64_2 openat openat64 __openat_2
              __openat64_2 read __read_chk write pread pread64 __pread_chk __pread64_chk pwrite
              pwrite64 readv writev accept accept4 recv __recv_chk recvfrom __recvfrom_chk recvmsg
              send sendto sendmsg popen pclose fcntl fcntl64 pthread_mutex_lock ioctl dup dup2 dup3
              socket socketpair pipe pipe2)
# Added by the linker; allowed, not required.
linker=(_init _fini _edata _end __bss_start)

case "$kind" in
  agent) required=("${api[@]}" "${agent_hooks[@]}") ;;
  preload) required=("${api[@]}" "${agent_hooks[@]}" "${preload_hooks[@]}" "${ledger_hooks[@]}") ;;
  *) echo "usage: $0 agent|preload <library.so>" >&2; exit 2 ;;
esac
[[ -f "$lib" ]] || { echo "no such library: $lib" >&2; exit 1; }

work=$(mktemp -d /tmp/stallwatch-symbols-XXXXXX)
trap 'rm -rf "$work"' EXIT
# Defined dynamic symbols, demangled; a version suffix (name@@VERSION) is not part of the name.
nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//' | c++filt | LC_ALL=C sort -u \
  > "$work/exported"
printf '%s\n' "${required[@]}" | LC_ALL=C sort -u > "$work/required"
printf '%s\n' "${required[@]}" "${linker[@]}" | LC_ALL=C sort -u > "$work/allowed"

status=0
leaked=$(LC_ALL=C comm -23 "$work/exported" "$work/allowed")
if [[ -n "$leaked" ]]; then
  echo "$(basename "$lib") exports $(wc -l <<<"$leaked") symbols outside its allow list:"
  sed 's/^/  /' <<<"$leaked"
  status=1
fi
missing=$(LC_ALL=C comm -13 "$work/exported" "$work/required")
if [[ -n "$missing" ]]; then
  echo "$(basename "$lib") does not export $(wc -l <<<"$missing") symbols of its API:"
  sed 's/^/  /' <<<"$missing"
  status=1
fi
if [[ $status -eq 0 ]]; then
  echo "$(basename "$lib") exports its $(wc -l <"$work/required") API and interposed symbols" \
       "and nothing else"
fi
exit $status
