#!/usr/bin/env bash
# Boots a cross-built edge-gateway under qemu-user: `run --simulate` with a temp data dir and
# HOST=localhost (name resolution in the static binary), waits for /health, sees `sensor:all`
# readings with a real socket.io client, then stops it with SIGTERM and expects exit 0.
#   scripts/qemu-boot-test.sh aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-aarch64-unknown-linux-gnu}
case "$target" in
  aarch64-*) qemu=qemu-aarch64-static ;;
  armv7-*) qemu=qemu-arm-static ;;
  *) echo "qemu-boot-test: unsupported target $target" >&2; exit 2 ;;
esac
bin="${CARGO_TARGET_DIR:-target}/$target/release/edge-gateway"
[ -x "$bin" ] || { echo "qemu-boot-test: $bin missing: run scripts/cross-build.sh $target" >&2; exit 1; }
command -v "$qemu" >/dev/null || { echo "qemu-boot-test: $qemu missing (apt-get install qemu-user-static)" >&2; exit 1; }

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(port); mqtt_port=$(port)
data=$(mktemp -d)
log="$data/gateway.log"
cleanup() { [ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

"$qemu" --version | head -1
start=$(date +%s.%N)
HOST=localhost PORT="$http_port" EDGE_GATEWAY_MQTT__LISTEN="127.0.0.1:$mqtt_port" \
  EDGE_GATEWAY_SIMULATOR__INTERVAL_MS=200 LOG_LEVEL=info \
  "$qemu" "$bin" run --simulate 3 --data-dir "$data/store" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  if curl -fsS "http://localhost:$http_port/health" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "qemu-boot-test: gateway exited before ready" >&2; exit 1; }
  sleep 0.1
done
ready=$(date +%s.%N)
curl -fsS "http://localhost:$http_port/health" >/dev/null || { cat "$log"; echo "qemu-boot-test: not healthy" >&2; exit 1; }
echo "qemu-boot-test: $target ready under qemu in $(awk "BEGIN {printf \"%.2f\", $ready - $start}") s (boot to /health 200)"

node tests/conformance/smoke.js "http://localhost:$http_port"

kill -TERM "$pid"
set +e
wait "$pid"
code=$?
set -e
pid=""
if [ "$code" -ne 0 ]; then cat "$log"; echo "qemu-boot-test: exit code $code after SIGTERM" >&2; exit 1; fi
grep -q "stopped cleanly" "$log" || { cat "$log"; echo "qemu-boot-test: no clean stop logged" >&2; exit 1; }
echo "qemu-boot-test: SIGTERM → clean exit 0"
