#!/usr/bin/env bash
# Builds a statically linked edge-gateway for an ARM gateway without docker or rustup targets:
# Debian's rustc (rustc-web) with the target's std (libstd-rust-web-dev:ARCH) and gcc cross
# linker. Run as root (or with sudo) on Debian 12.
#
#   scripts/cross-build.sh aarch64-unknown-linux-gnu      # Pi 3/4/5, 64-bit industrial boxes
#   scripts/cross-build.sh armv7-unknown-linux-gnueabihf  # 32-bit Pi OS, older boxes
#
# Output: target/TARGET/release/edge-gateway (stripped, static). Set SKIP_INSTALL=1 to only build.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-aarch64-unknown-linux-gnu}
case "$target" in
  aarch64-unknown-linux-gnu) arch=arm64; gcc=gcc-aarch64-linux-gnu; libc=libc6-dev-arm64-cross; machine="ARM aarch64" ;;
  armv7-unknown-linux-gnueabihf) arch=armhf; gcc=gcc-arm-linux-gnueabihf; libc=libc6-dev-armhf-cross; machine="ARM, EABI5" ;;
  *) echo "cross-build: unsupported target '$target' (aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf)" >&2; exit 2 ;;
esac

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  # Only the architectures we build: a failing index for one drops the whole suite.
  added_arch=0
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    $SUDO dpkg --add-architecture "$arch"
    added_arch=1
  fi
  # A foreign architecture whose index fails makes apt drop the whole suite (bookworm-security,
  # where rustc-web >= 1.94 lives) for every architecture: never leave one behind on failure.
  undo_arch() {
    if [ "$added_arch" = 1 ]; then
      $SUDO dpkg --remove-architecture "$arch" || true
      $SUDO apt-get update -qq || true
    fi
  }
  for attempt in 1 2 3; do
    if $SUDO apt-get update -qq; then break; fi
    echo "cross-build: apt-get update failed (attempt $attempt), retrying" >&2
    sleep $((attempt * 10))
  done
  # Host rustc and target std must be the same version: take the newest std for the target
  # and pin rustc-web to it.
  version=$(apt-cache madison "libstd-rust-web-dev:$arch" | awk '{print $3}' | sort -V | tail -1)
  host_version=$(apt-cache madison rustc-web | awk '{print $3}' | sort -V | tail -1)
  if [ -z "$version" ] || [ "$version" != "$host_version" ]; then
    echo "cross-build: no matching rustc-web ($host_version) and libstd-rust-web-dev:$arch ($version);" \
         "the $arch package index may be mid-sync, retry later" >&2
    undo_arch
    exit 1
  fi
  case "$version" in
    1.9[4-9]*|1.[1-9][0-9][0-9]*) ;;
    *) echo "cross-build: Debian offers rustc $version; socketioxide needs >= 1.94 (is bookworm-security enabled?)" >&2; undo_arch; exit 1 ;;
  esac
  $SUDO apt-get install -y -qq "rustc-web=$version" "libstd-rust-web-dev:$arch=$version" \
    "$gcc" "$libc" qemu-user-static file >/dev/null
fi

echo "cross-build: $(/usr/bin/rustc --version) → $target"
RUSTC=/usr/bin/rustc cargo build --release --locked --target "$target"

bin="target/$target/release/edge-gateway"
desc=$(file -L "$bin")
echo "$desc"
case "$desc" in
  *"$machine"*"statically linked"*|*"$machine"*"static-pie linked"*) ;;
  *) echo "cross-build: $bin is not a static $machine executable" >&2; exit 1 ;;
esac
size=$(stat -c %s "$bin")
echo "cross-build: $bin is static, $((size / 1024)) KiB ($(awk "BEGIN {printf \"%.1f\", $size/1048576}") MiB) stripped"
