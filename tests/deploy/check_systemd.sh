#!/usr/bin/env bash
# systemd-analyze verify on the unit rendered from deploy/systemd/stallwatchd.service.in (by CMake,
# with ExecStart pointing at a stub, since verify insists the binary exists), plus the offline
# exposure score of its sandboxing (must stay "OK", <= 2.0) and the sysusers file's syntax.
# Usage: check_systemd.sh RENDERED_UNIT SYSUSERS_CONF. Exit 77 (skipped) without systemd.
set -euo pipefail
unit="$1"
sysusers="$2"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIP: systemd-analyze not found (apt-get install systemd); unit not verified"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$unit" "$work/stallwatchd.service"
cd "$work"
# verify exits 0 on unknown keys and only warns: any output is a failure.
out=$(timeout 60 systemd-analyze verify ./stallwatchd.service 2>&1) || {
  echo "systemd-analyze verify failed:"; echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "systemd-analyze verify complained:"; echo "$out"; exit 1
fi
echo "verify: ok"
score=$(timeout 60 systemd-analyze security --offline=true ./stallwatchd.service 2>&1 | tail -1)
echo "$score"
timeout 60 systemd-analyze security --offline=true --threshold=20 ./stallwatchd.service \
  >/dev/null || { echo "exposure above 2.0"; exit 1; }
for key in User=stallwatch Group=stallwatch RuntimeDirectory=stallwatch RuntimeDirectoryMode=0750 \
           NoNewPrivileges=yes ProtectSystem=strict CapabilityBoundingSet=; do
  grep -qx "$key" stallwatchd.service || { echo "unit lacks $key"; exit 1; }
done
if command -v systemd-sysusers >/dev/null 2>&1; then
  mkdir -p root/etc
  timeout 60 systemd-sysusers --root="$work/root" "$sysusers" >/dev/null 2>&1 || {
    echo "systemd-sysusers rejected $sysusers"; exit 1; }
  grep -q '^stallwatch:' root/etc/passwd && grep -q '^stallwatch:' root/etc/group || {
    echo "sysusers did not create user and group stallwatch"; exit 1; }
  echo "sysusers: ok"
fi
