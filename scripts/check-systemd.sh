#!/usr/bin/env bash
# Checks systemd/edge-gateway.service (and verifies systemd/edge-gateway-relay@.service): `systemd-analyze verify` must pass, and the
# `systemd-analyze security` exposure score is printed (aim: <= 2.0).
#   scripts/check-systemd.sh [BINARY]   (BINARY defaults to target/debug/edge-gateway)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/edge-gateway}")
[ -x "$bin" ] || { echo "check-systemd: $bin missing" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "check-systemd: systemd-analyze missing (apt-get install systemd)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# verify checks that ExecStart exists: point it at the built binary.
sed "s|^ExecStart=/usr/bin/edge-gateway|ExecStart=$bin|" systemd/edge-gateway.service > "$work/edge-gateway.service"

out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$work/edge-gateway.service" 2>&1 || true)
# Offline verify in a container cannot see the host's units; only problems with ours count.
problems=$(printf '%s\n' "$out" | grep -F "edge-gateway.service" || true)
if [ -n "$problems" ]; then
  printf '%s\n' "$out"
  echo "check-systemd: systemd-analyze verify found problems" >&2
  exit 1
fi
echo "check-systemd: systemd-analyze verify: ok"

# The relay replicas' template unit, verified as instance 1.
sed "s|^ExecStart=/usr/bin/edge-gateway|ExecStart=$bin|" "systemd/edge-gateway-relay@.service" > "$work/edge-gateway-relay@1.service"
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$work/edge-gateway-relay@1.service" 2>&1 || true)
problems=$(printf '%s\n' "$out" | grep -F "edge-gateway-relay@" || true)
if [ -n "$problems" ]; then
  printf '%s\n' "$out"
  echo "check-systemd: systemd-analyze verify found problems in the relay unit" >&2
  exit 1
fi
echo "check-systemd: systemd-analyze verify (relay unit): ok"

security=$(systemd-analyze security --offline=true --no-pager "$work/edge-gateway.service" 2>&1 || true)
printf '%s\n' "$security" | grep -E "^✗|^→|Overall exposure" | sed 's/^/  /'
score=$(printf '%s\n' "$security" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' | tail -1)
[ -n "$score" ] || { printf '%s\n' "$security"; echo "check-systemd: no exposure score" >&2; exit 1; }
echo "check-systemd: systemd-analyze security exposure score: $score"
