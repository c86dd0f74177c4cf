#!/bin/bash
# Installs what building and testing rOS needs on a fresh Debian 12 machine.
# Usage: scripts/install-deps.sh [BUILD_DIR]
set -euo pipefail
BUILD=${1:-build}
PKGS=(qemu-system-x86 qemu-utils protobuf-compiler squashfs-tools cpio zstd kmod
      binutils busybox-static containerd runc e2fsprogs genisoimage
      openssh-client dpkg-dev
      fdisk dosfstools mtools syslinux)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# apt-get download needs fresh package lists too.
if [ -z "$(ls /var/lib/apt/lists/*_Packages 2>/dev/null | head -1)" ]; then
  apt-get update -qq
fi
# Go, a C toolchain and the libraries for what initramfs/from-source.sh builds (containerd,
# crun, chronyd, libkmod).
"$(dirname "$0")/../initramfs/from-source.sh" deps "$BUILD"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true
