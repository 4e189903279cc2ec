#!/usr/bin/env bash
# Boots a cross-built edge-gateway under qemu-user: `run --simulate` with a temp data dir and
# HOST=localhost (name resolution in the static binary), waits for /health, sees `sensor:all`
# readings with a real socket.io client, checks they reached a redis-server over TLS (a CA and
# a server certificate made here by openssl; rustls with ring inside the ARM binary), then
# stops it with SIGTERM and expects exit 0.
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
http_port=$(port); mqtt_port=$(port); redis_port=$(port)
data=$(mktemp -d)
log="$data/gateway.log"
cleanup() {
  [ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null || true
  [ -n "${redis_pid:-}" ] && kill -9 "$redis_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

# A TLS-only redis-server with a certificate for 127.0.0.1 from a CA made here.
tls="$data/tls"; mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=qemu-test-ca" \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/san.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 2 -extfile "$tls/san.ext" -out "$tls/server.pem" 2>/dev/null
redis-server --port 0 --tls-port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --tls-cert-file "$tls/server.pem" --tls-key-file "$tls/server.key" \
  --tls-ca-cert-file "$tls/ca.pem" --tls-auth-clients no >"$data/redis.log" 2>&1 &
redis_pid=$!
disown "$redis_pid"
rcli() { redis-cli --tls --cacert "$tls/ca.pem" -h 127.0.0.1 -p "$redis_port" "$@"; }
for _ in $(seq 1 100); do
  rcli PING 2>/dev/null | grep -q PONG && break
  kill -0 "$redis_pid" 2>/dev/null || { cat "$data/redis.log"; echo "qemu-boot-test: redis-server died" >&2; exit 1; }
  sleep 0.1
done

"$qemu" --version | head -1
start=$(date +%s.%N)
HOST=localhost PORT="$http_port" EDGE_GATEWAY_MQTT__LISTEN="127.0.0.1:$mqtt_port" \
  EDGE_GATEWAY_SIMULATOR__INTERVAL_MS=200 LOG_LEVEL=info \
  REDIS_HOST=127.0.0.1 REDIS_PORT="$redis_port" EDGE_GATEWAY_SINKS__REDIS__MODE=stream \
  EDGE_GATEWAY_SINKS__REDIS__TLS=true EDGE_GATEWAY_SINKS__REDIS__CA_FILE="$tls/ca.pem" \
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

streamed=0
for _ in $(seq 1 300); do
  streamed=$(rcli XLEN sensor-readings 2>/dev/null || echo 0)
  [ "${streamed:-0}" -gt 0 ] && break
  sleep 0.1
done
if [ "${streamed:-0}" -le 0 ]; then
  cat "$log"; curl -s "http://localhost:$http_port/health" || true
  echo "qemu-boot-test: no reading reached redis-server over TLS" >&2; exit 1
fi
echo "qemu-boot-test: $streamed readings in the sensor-readings stream of a TLS redis-server"

kill -TERM "$pid"
set +e
wait "$pid"
code=$?
set -e
pid=""
if [ "$code" -ne 0 ]; then cat "$log"; echo "qemu-boot-test: exit code $code after SIGTERM" >&2; exit 1; fi
grep -q "stopped cleanly" "$log" || { cat "$log"; echo "qemu-boot-test: no clean stop logged" >&2; exit 1; }
echo "qemu-boot-test: SIGTERM → clean exit 0"
