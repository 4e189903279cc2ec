#!/usr/bin/env bash
# Runs every test of edge-gateway: cargo fmt/clippy, the Rust unit and integration tests (the
# built-in dashboard among them, in Debian's headless Chromium driven by playwright-core), the
# Socket.IO conformance suite (npm socket.io-client v4 and v2) and the python-socketio suite,
# all against the real binary and real clients and servers (redis-server and a tansu Kafka
# broker for the upstream sinks, pymodbus slaves on socat ptys and a mosquitto site broker for
# the field devices); then the field-deployment checks: the systemd
# unit, the Yocto layer, and static aarch64 and armv7 builds booted under qemu (SKIP_CROSS=1
# skips those, e.g. on a laptop without root). Installs what it needs on a Debian machine
# (as root) first; quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v curl >/dev/null || need_apt+=(curl)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v mosquitto >/dev/null || need_apt+=(mosquitto)
command -v socat >/dev/null || need_apt+=(socat)
# The relay tests put Debian's HAProxy (sticky sessions) in front of relay replicas.
command -v haproxy >/dev/null || need_apt+=(haproxy)
# tests/tls.rs makes its certificates with openssl (the CLI only: the gateway links no OpenSSL).
command -v openssl >/dev/null || need_apt+=(openssl)
# Headless Chromium for the dashboard's browser tests (Debian's; playwright downloads none).
command -v chromium >/dev/null || need_apt+=(chromium)
# `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
python3 -m ensurepip --version >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # A mirror mid-sync fails an index now and then: retry, then install from what we have.
  for attempt in 1 2 3; do
    if $SUDO apt-get update -qq; then break; fi
    echo "apt-get update failed (attempt $attempt), retrying" >&2
    sleep $((attempt * 10))
  done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# A Kafka-protocol broker for the Kafka sink tests (in-memory storage). Built once (~10 min on
# 2 cores) and kept in ~/.cargo/bin.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null; then
  say "installing tansu (cargo install; once)"
  cargo install --locked tansu --version 0.6.0 --features dynostore
fi

# The tests' python packages live in a venv of their own (not the system's python): the
# field-device tests run their python peers with $EDGE_GATEWAY_PYTHON, pytest and oelint-adv
# run from it too. The venv ignores itself in git.
say "python test dependencies (venv .venv-tests, pip)"
venv="$PWD/.venv-tests"
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  printf '*\n' >"$venv/.gitignore"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
export EDGE_GATEWAY_PYTHON="$venv/bin/python"

say "node test dependencies (npm ci)"
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/dashboard && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

say "cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

say "cargo build"
cargo build --locked
export EDGE_GATEWAY_BIN="$PWD/target/debug/edge-gateway"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

say "Rust unit and integration tests"
cargo test --locked 2>&1 | tee "$logs/cargo.log"

say "Socket.IO conformance suite (socket.io-client v4 + v2)"
(cd tests/conformance && node --test --test-concurrency=1 --test-force-exit --test-timeout=120000 ./*.test.js) 2>&1 | tee "$logs/node.log"

say "Socket.IO conformance through a relay (gateway → redis-server streams → edge-gateway relay)"
(cd tests/conformance && EDGE_GATEWAY_CONFORMANCE_RELAY=1 node --test --test-concurrency=1 --test-force-exit --test-timeout=120000 events.test.js security.test.js) 2>&1 | tee "$logs/node-relay.log"

say "python-socketio suite"
"$EDGE_GATEWAY_PYTHON" -m pytest -q tests/python 2>&1 | tee "$logs/pytest.log"

say "field deployment: systemd unit (systemd-analyze verify, security score)"
bash scripts/check-systemd.sh target/debug/edge-gateway

say "field deployment: Yocto layer (crate list, oelint-adv)"
"$EDGE_GATEWAY_PYTHON" scripts/yocto-crates.py --check
lint=$(cd yocto/meta-edge-gateway && "$venv/bin/oelint-adv" --quiet recipes-core/edge-gateway/*.bb 2>&1 || true)
printf '%s\n' "$lint"
if printf '%s\n' "$lint" | grep -q ':error:'; then
  echo "oelint-adv reported errors" >&2
  exit 1
fi

if [ "${SKIP_CROSS:-0}" = 1 ]; then
  say "field deployment: static ARM builds and qemu boots SKIPPED (SKIP_CROSS=1)"
else
  # Each is a full release build with its own std (fat LTO): the longest step of CI.
  for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    say "field deployment: static $target build (Debian rustc, build-std, cross gcc), boot under qemu"
    bash scripts/cross-build.sh "$target"
    bash scripts/qemu-boot-test.sh "$target"
  done
fi

# One closing line over all three runners (each already failed the script if anything failed).
passed=$(( $(grep -hoE '^test result: ok\. [0-9]+ passed' "$logs/cargo.log" | awk '{s+=$4} END {print s+0}') \
  + $(grep -hoE '^# pass [0-9]+' "$logs/node.log" | awk '{s+=$3} END {print s+0}') \
  + $(grep -hoE '[0-9]+ passed' "$logs/pytest.log" | tail -1 | awk '{print $1+0}') ))
echo
echo "all suites: ${passed} passed, 0 failed"
