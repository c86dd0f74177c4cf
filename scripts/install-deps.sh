#!/bin/bash
# Installs what building and testing rOS needs on a fresh Debian 12 machine, then checks
# that every command the build and the tests run is there (an install can remove a package
# as well as add one).
# Usage: scripts/install-deps.sh [BUILD_DIR]
set -euo pipefail
BUILD=${1:-build}

# command:package (or /file:package) for everything the Makefile, initramfs/*.sh and the tests
# run or read on the host.
# Go, crun's, chrony's and kmod's build dependencies come from initramfs/from-source.sh deps.
NEEDS=(qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils protoc:protobuf-compiler
       mksquashfs:squashfs-tools unsquashfs:squashfs-tools cpio:cpio zstd:zstd depmod:kmod readelf:binutils
       strip:binutils containerd:containerd runc:runc mke2fs:e2fsprogs
       genisoimage:genisoimage xorriso:xorriso grub-mkimage:grub-common ssh:openssh-client ssh-keygen:openssh-client
       dpkg-source:dpkg-dev dpkg-buildflags:dpkg-dev dpkg-parsechangelog:dpkg-dev
       sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools mmd:mtools syslinux:syslinux
       apt-get:apt gcc:gcc cc:gcc make:make sha256sum:coreutils busybox:busybox-static
       python3:python3 shellcheck:shellcheck
       # Files rather than commands: UEFI firmware (the ISO's UEFI boot test), iPXE's ROM.
       /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf /usr/lib/ipxe/qemu/efi-virtio.rom:ipxe-qemu)

log() { echo "==> $*"; }

missing_packages() {
  local n cmd pkg
  for n in "${NEEDS[@]}"; do
    cmd=${n%%:*} pkg=${n#*:}
    if [[ $cmd == /* ]]; then
      [ -e "$cmd" ] || echo "$pkg"
    else
      command -v "$cmd" >/dev/null || echo "$pkg"
    fi
  done
}

export DEBIAN_FRONTEND=noninteractive
mapfile -t missing < <(missing_packages | sort -u)
if [ ${#missing[@]} -gt 0 ] || [ -z "$(ls /var/lib/apt/lists/*_Packages* 2>/dev/null | head -1)" ]; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  install=("${missing[@]}") extra=()
  # qemu-img must come from the same QEMU as qemu-system-x86_64: a newer qemu-utils (from
  # backports, say) Breaks Debian's qemu-system-common, and apt would remove qemu-utils to
  # install qemu-system-x86. Both are taken at qemu-system-x86's candidate version instead.
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$have" ] && [ "$have" != "$qv" ]; then
      log "qemu-utils $have is replaced by $qv, the version of qemu-system-x86 this machine's apt sources have"
      kept=()
      for p in "${install[@]}"; do [ "$p" = qemu-utils ] || kept+=("$p"); done
      install=("${kept[@]}" "qemu-utils=$qv")
      extra=(--allow-downgrades)
    fi
  fi
  log "apt-get install ${install[*]}"
  apt-get install -y -qq --no-install-recommends "${extra[@]}" "${install[@]}" >/dev/null
fi

# Go, a C toolchain and the libraries for what initramfs/from-source.sh builds (containerd,
# crun, chronyd, libkmod, the docker engine).
"$(dirname "$0")/../initramfs/from-source.sh" deps "$BUILD"

# What is missing now was removed by an install above, or is not in the list.
mapfile -t missing < <(missing_packages | sort -u)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps.sh: still missing after apt-get install: ${missing[*]}" >&2
  echo "  (apt's log, /var/log/apt/history.log, says what removed them)" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "install-deps.sh: cargo not found: install Rust 1.80 or later (rustup)" >&2; exit 1; }
for c in fmt:rustfmt clippy:clippy; do
  cargo "${c%%:*}" --version >/dev/null 2>&1 && continue
  rustup component add "${c#*:}" ||
    { echo "install-deps.sh: cargo ${c%%:*} not found (rustup component add ${c#*:})" >&2; exit 1; }
done
