#!/usr/bin/env bash
# Builds a statically linked edge-gateway for an ARM gateway without docker, rustup or a foreign
# apt architecture: Debian's rustc and cargo (rustc-web, cargo-web) build the target's std from
# Debian's own std sources (rust-web-src, the same version) with `-Z build-std`, and the gcc
# cross toolchain links it (and compiles C/assembly such as ring's). No armhf/arm64 package
# index is needed, so a mirror mid-sync for one architecture cannot stop the build.
# Run as root (or with sudo) on Debian 12 with bookworm-security enabled.
#
#   scripts/cross-build.sh aarch64-unknown-linux-gnu      # Pi 3/4/5, 64-bit industrial boxes
#   scripts/cross-build.sh armv7-unknown-linux-gnueabihf  # 32-bit Pi OS, older boxes
#
# Output: ${CARGO_TARGET_DIR:-target}/TARGET/release/edge-gateway (stripped, static).
# Set SKIP_INSTALL=1 to only build.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-aarch64-unknown-linux-gnu}
case "$target" in
  aarch64-unknown-linux-gnu) gcc=gcc-aarch64-linux-gnu; libc=libc6-dev-arm64-cross; machine="ARM aarch64" ;;
  armv7-unknown-linux-gnueabihf) gcc=gcc-arm-linux-gnueabihf; libc=libc6-dev-armhf-cross; machine="ARM, EABI5" ;;
  *) echo "cross-build: unsupported target '$target' (aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" >&2; exit 2 ;;
esac

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  for attempt in 1 2 3; do
    if $SUDO apt-get update -qq; then break; fi
    echo "cross-build: apt-get update failed (attempt $attempt), retrying" >&2
    sleep $((attempt * 10))
  done
  # The compiler, cargo and the std sources must be one version: take the newest std sources
  # and pin the others to them.
  version=$(apt-cache madison rust-web-src | awk '{print $3}' | sort -V | tail -1)
  host_version=$(apt-cache madison rustc-web | awk '{print $3}' | sort -V | tail -1)
  if [ -z "$version" ] || [ "$version" != "$host_version" ]; then
    echo "cross-build: no matching rustc-web ($host_version) and rust-web-src ($version)" >&2
    exit 1
  fi
  case "$version" in
    1.9[4-9]*|1.[1-9][0-9][0-9]*) ;;
    *) echo "cross-build: Debian offers rustc $version; socketioxide needs >= 1.94 (is bookworm-security enabled?)" >&2; exit 1 ;;
  esac
  $SUDO apt-get install -y -qq "rustc-web=$version" "cargo-web=$version" "rust-web-src=$version" \
    "$gcc" "$libc" qemu-user-static file >/dev/null
fi

echo "cross-build: $(/usr/bin/rustc --version), std from $(/usr/bin/rustc --print sysroot)/lib/rustlib/src → $target"
start=$(date +%s)
# RUSTC_BOOTSTRAP lets the stable toolchain take -Z build-std. std is built with
# panic_unwind: the release profile unwinds (see Cargo.toml). The target's linker and
# +crt-static come from .cargo/config.toml.
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc nice -n 5 /usr/bin/cargo build --release --locked \
  -Z build-std=std,panic_unwind --target "$target"
echo "cross-build: built in $(( $(date +%s) - start )) s"

bin="${CARGO_TARGET_DIR:-target}/$target/release/edge-gateway"
desc=$(file -L "$bin")
echo "$desc"
case "$desc" in
  *"$machine"*"statically linked"*|*"$machine"*"static-pie linked"*) ;;
  *) echo "cross-build: $bin is not a static $machine executable" >&2; exit 1 ;;
esac
size=$(stat -c %s "$bin")
echo "cross-build: $bin is static, $((size / 1024)) KiB ($(awk "BEGIN {printf \"%.1f\", $size/1048576}") MiB) stripped"
