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
# verify_unit FILE AS MATCH: systemd-analyze verify of systemd/FILE installed as AS, with
# ExecStart pointed at the built binary (verify checks that it exists). Offline verify in a
# container cannot see the host's units: only lines naming ours (MATCH) count as problems.
verify_unit() {
  sed "s|^ExecStart=/usr/bin/edge-gateway|ExecStart=$bin|" "systemd/$1" > "$work/$2"
  local out problems
  out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$work/$2" 2>&1 || true)
  problems=$(printf '%s\n' "$out" | grep -F "$3" || true)
  if [ -n "$problems" ]; then
    printf '%s\n' "$out"
    echo "check-systemd: systemd-analyze verify found problems in $1" >&2
    exit 1
  fi
  echo "check-systemd: systemd-analyze verify $1: ok"
}

verify_unit edge-gateway.service edge-gateway.service edge-gateway.service
# The relay replicas' template unit, verified as instance 1.
verify_unit edge-gateway-relay@.service edge-gateway-relay@1.service edge-gateway-relay@

security=$(systemd-analyze security --offline=true --no-pager "$work/edge-gateway.service" 2>&1 || true)
printf '%s\n' "$security" | grep -E "^✗|^→|Overall exposure" | sed 's/^/  /'
score=$(printf '%s\n' "$security" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' | tail -1)
[ -n "$score" ] || { printf '%s\n' "$security"; echo "check-systemd: no exposure score" >&2; exit 1; }
echo "check-systemd: systemd-analyze security exposure score: $score"
