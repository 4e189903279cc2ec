#!/usr/bin/env bash
# Runs every test of edge-gateway: cargo fmt/clippy, the Rust unit and integration tests, the
# Socket.IO conformance suite (npm socket.io-client v4 and v2) and the python-socketio suite,
# all against the real binary and real clients. Installs what it needs on a Debian machine
# (as root) first; quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

say "python test dependencies (pip)"
python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt

say "node test dependencies (npm ci)"
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)

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
(cd tests/conformance && node --test --test-concurrency=1 --test-timeout=120000 ./*.test.js) 2>&1 | tee "$logs/node.log"

say "python-socketio suite"
python3 -m pytest -q tests/python 2>&1 | tee "$logs/pytest.log"

# One closing line over all three runners (each already failed the script if anything failed).
passed=$(( $(grep -hoE '^test result: ok\. [0-9]+ passed' "$logs/cargo.log" | awk '{s+=$4} END {print s+0}') \
  + $(grep -hoE '^# pass [0-9]+' "$logs/node.log" | awk '{s+=$3} END {print s+0}') \
  + $(grep -hoE '[0-9]+ passed' "$logs/pytest.log" | tail -1 | awk '{print $1+0}') ))
echo
echo "all suites: ${passed} passed, 0 failed"
