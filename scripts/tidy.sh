#!/usr/bin/env bash
# clang-tidy (the repo's .clang-tidy) on the C++ files changed since BASE, with the compile
# database of BUILD. Fails on any finding. Usage: scripts/tidy.sh [build-dir] [base-commit]
# BASE defaults to the commit in .ci/tidy-base (the last commit CI passed before this work),
# so CI checks every file a change touched and no more.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
BASE="${2:-$(cat .ci/tidy-base)}"
if [ ! -f "$BUILD/compile_commands.json" ]; then
  echo "tidy: $BUILD/compile_commands.json missing: configure with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON"
  exit 2
fi
if ! git cat-file -e "$BASE^{commit}" 2>/dev/null; then
  # A shallow clone: the files of the last commit are what this clone can tell apart.
  if git cat-file -e "HEAD~1^{commit}" 2>/dev/null; then
    echo "tidy: base commit '${BASE:0:12}' is not in this clone (shallow?): checking HEAD's files"
    BASE=HEAD~1
  else
    echo "tidy: base commit '${BASE:0:12}' is not in this clone and HEAD has no parent here: skipped"
    exit 0
  fi
fi
# Translation units only (headers are checked through them: HeaderFilterRegex), and only those
# in the compile database (a file of a target this build does not make is skipped).
mapfile -t changed < <(git diff --name-only --diff-filter=AMR "$BASE" HEAD -- '*.cc' | sort)
files=()
for f in "${changed[@]}"; do
  grep -q "\"file\": \".*/$f\"" "$BUILD/compile_commands.json" && files+=("$f")
done
echo "tidy: ${#files[@]} changed translation units since ${BASE:0:12}"
[ ${#files[@]} -eq 0 ] && exit 0
log=$(mktemp)
# Two at a time (two cores); --quiet keeps only findings.
if ! printf '%s\n' "${files[@]}" |
    xargs -P2 -n4 clang-tidy -p "$BUILD" --quiet --warnings-as-errors='*' >"$log" 2>&1; then
  grep -E "warning:|error:" "$log" | sort -u
  echo "tidy: findings above (clang-tidy -p $BUILD FILE to see them in context)"
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "tidy: clean"
