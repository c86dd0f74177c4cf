#!/bin/bash
# Builds the boot image from Debian bookworm packages and our own binaries:
#   $OUT/vmlinuz   the Debian kernel
#   $OUT/initrd    our init + busybox (recovery shell) + the modules needed to reach the root
#   $OUT/root.img  squashfs: containerd, runc, ros, modules, configs, services, preloaded images
# Usage: initramfs/build.sh BUILD_DIR   (run from the repo root, as root)
set -euo pipefail

BUILD=${1:-build}
REPO=$(pwd)
DEBS=$BUILD/debs
X=$BUILD/x
OUT=$BUILD/out
STAGE=$BUILD/stage
TARGET=x86_64-unknown-linux-gnu
RELEASE=$REPO/target/$TARGET/release
HOSTBIN=$REPO/target/release
# Everything we ship gets this mtime, so builds are reproducible.
export SOURCE_DATE_EPOCH=0

PACKAGES=(linux-image-amd64 containerd runc busybox-static libc6 libseccomp2)

log() { echo "==> $*"; }

fetch_debs() {
  mkdir -p "$DEBS"
  local want=("${PACKAGES[@]}")
  # linux-image-amd64 is a metapackage: fetch the kernel it depends on too.
  local kpkg
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$kpkg" ] && want+=("$kpkg")
  local missing=()
  for p in "${want[@]}"; do
    ls "$DEBS/${p}_"*.deb >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get download ${missing[*]}"
    (cd "$DEBS" && apt-get download "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  fi
}

unpack() {
  local pkg=$1 dir=$X/$1
  local deb
  deb=$(ls "$DEBS/${pkg}_"*.deb | sort | tail -1)
  if [ ! -e "$dir/.unpacked" ] || [ "$deb" -nt "$dir/.unpacked" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir"
    touch "$dir/.unpacked"
  fi
}

kernel() {
  local kdeb
  kdeb=$(ls "$DEBS"/linux-image-[0-9]*.deb | sort | tail -1)
  local kpkg
  kpkg=$(basename "$kdeb" | cut -d_ -f1)
  unpack "$kpkg"
  KDIR=$X/$kpkg
  KVER=$(ls "$KDIR/lib/modules" | head -1)
  if [ ! -e "$KDIR/lib/modules/$KVER/modules.dep" ]; then
    depmod -b "$KDIR" "$KVER"
  fi
  MODDIR=$KDIR/lib/modules/$KVER
  cp "$KDIR/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
}

# module_closure LISTFILE -> relative .ko paths (module and dependencies)
module_closure() {
  grep -v '^\s*#' "$1" | grep -v '^\s*$' | while read -r name; do
    local n=${name//-/_}
    local line
    line=$(awk -v n="$n" -F: '{f=$1; sub(/.*\//,"",f); sub(/\.ko.*/,"",f); gsub(/-/,"_",f); if (f==n) {print; exit}}' "$MODDIR/modules.dep")
    if [ -z "$line" ]; then
      if grep -q "/$n.ko" "$MODDIR/modules.builtin" 2>/dev/null; then continue; fi
      echo "warning: module $name not found" >&2; continue
    fi
    echo "${line%%:*}"
    for dep in ${line#*:}; do echo "$dep"; done
  done | sort -u
}

# install_modules LISTFILE DESTROOT
install_modules() {
  local dest=$2/lib/modules/$KVER
  mkdir -p "$dest"
  module_closure "$1" | while read -r ko; do
    mkdir -p "$dest/$(dirname "$ko")"
    cp "$MODDIR/$ko" "$dest/$ko"
  done
  cp "$MODDIR/modules.builtin" "$MODDIR/modules.builtin.modinfo" "$MODDIR/modules.order" "$dest/" 2>/dev/null || true
  depmod -b "$2" "$KVER"
  # depmod writes files we don't read; keep the image small.
  find "$dest" -maxdepth 1 -name 'modules.*' ! -name modules.dep ! -name modules.builtin ! -name modules.alias -delete
}

# lib_closure DESTROOT BINARY... : copy the shared libraries the binaries need from the
# unpacked Debian packages (not from the build host).
lib_closure() {
  local dest=$1; shift
  local -A seen=()
  local queue=("$@")
  local sysroots=("$X/libc6" "$X/libseccomp2")
  while [ ${#queue[@]} -gt 0 ]; do
    local bin=${queue[0]}; queue=("${queue[@]:1}")
    for lib in $(readelf -d "$bin" 2>/dev/null | awk '/NEEDED/{gsub(/[\[\]]/,"",$5); print $5}'); do
      [ -n "${seen[$lib]:-}" ] && continue
      seen[$lib]=1
      local found=
      for root in "${sysroots[@]}"; do
        for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu; do
          if [ -e "$root/$d/$lib" ]; then
            mkdir -p "$dest/$d"
            cp -L "$root/$d/$lib" "$dest/$d/$lib"
            queue+=("$root/$d/$lib"); found=1; break 2
          fi
        done
      done
      [ -z "$found" ] && { echo "error: $lib (needed by $bin) not in the unpacked packages" >&2; exit 1; }
    done
  done
  # The dynamic loader, where binaries look for it.
  mkdir -p "$dest/lib64" "$dest/lib/x86_64-linux-gnu"
  cp -L "$X/libc6/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$dest/lib/x86_64-linux-gnu/"
  ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$dest/lib64/ld-linux-x86-64.so.2"
}

# busybox_tree DEST [SKIP_APPLETS...]: busybox plus a symlink per applet.
busybox_tree() {
  local dest=$1; shift
  local skip=" $* "
  mkdir -p "$dest/bin" "$dest/sbin" "$dest/usr/bin" "$dest/usr/sbin"
  cp "$X/busybox-static/bin/busybox" "$dest/bin/busybox"
  "$dest/bin/busybox" --list-full | while read -r applet; do
    local name=${applet##*/}
    [[ "$skip" == *" $name "* ]] && continue
    [ -e "$dest/$applet" ] || ln -s /bin/busybox "$dest/$applet"
  done
}

console_image() {
  local s=$STAGE/console
  rm -rf "$s"; mkdir -p "$s"
  # poweroff/reboot/halt in the console are `ros`, which asks PID 1 (see ros-control).
  busybox_tree "$s" poweroff reboot halt
  for cmd in poweroff reboot halt; do ln -s /usr/bin/ros "$s/sbin/$cmd"; done
  cp -r "$REPO/images/console/rootfs/." "$s/"
  chmod 0755 "$s/usr/libexec/ros/console-entry"
  mkdir -p "$s/root" "$s/home/rancher" "$s/tmp" "$s/var/log" "$s/run" "$s/proc" "$s/sys" "$s/dev"
  chmod 1777 "$s/tmp"
  "$HOSTBIN/ros-image" build --name ros/console:0.1.0 --layer "$s" \
    --cmd /usr/libexec/ros/console-entry --env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    --out "$STAGE/root/usr/share/ros/images/console.tar"
}

rootfs() {
  local r=$STAGE/root
  rm -rf "$r"
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib,etc,proc,sys,dev,run,tmp,var,mnt,root,home,opt}
  mkdir -p "$r/usr/share/ros/images" "$r/usr/share/ros/services"
  chmod 1777 "$r/tmp"; chmod 0700 "$r/root"
  unpack containerd; unpack runc; unpack libc6; unpack libseccomp2
  install -m 0755 "$X/containerd/usr/bin/containerd" "$X/containerd/usr/bin/containerd-shim-runc-v2" "$r/usr/bin/"
  install -m 0755 "$X/runc/usr/sbin/runc" "$r/usr/bin/runc"
  install -m 0755 "$RELEASE/ros" "$r/usr/bin/ros"
  install -m 0755 "$RELEASE/init" "$r/sbin/init"
  lib_closure "$r" "$r/usr/bin/containerd" "$r/usr/bin/containerd-shim-runc-v2" "$r/usr/bin/runc"
  cp "$X/busybox-static/bin/busybox" "$r/bin/busybox"
  ln -s busybox "$r/bin/sh"
  install_modules "$REPO/initramfs/modules.root" "$r"
  cp -r "$REPO/initramfs/etc/." "$r/etc/"
  cp "$REPO/services/"*.yml "$r/usr/share/ros/services/"
  [ -f "$REPO/configs/os-config.yml" ] && cp "$REPO/configs/os-config.yml" "$r/usr/share/ros/os-config.yml"
  console_image
  rm -f "$OUT/root.img"
  mksquashfs "$r" "$OUT/root.img" -comp zstd -Xcompression-level 19 -all-root \
    -reproducible -noappend -quiet >/dev/null
}

initrd() {
  local s=$STAGE/initrd
  rm -rf "$s"
  mkdir -p "$s"/{bin,dev,proc,sys,run,tmp,newroot,lib}
  install -m 0755 "$RELEASE/init" "$s/init"
  cp "$X/busybox-static/bin/busybox" "$s/bin/busybox"
  ln -s busybox "$s/bin/sh"
  install_modules "$REPO/initramfs/modules.boot" "$s"
  # The kernel opens /dev/console for init before devtmpfs is mounted.
  mknod -m 600 "$s/dev/console" c 5 1
  (cd "$s" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | xargs -0 touch -h -d @0 &&
   find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0) |
    zstd -q -19 -T0 > "$OUT/initrd"
}

main() {
  mkdir -p "$OUT" "$STAGE"
  fetch_debs
  for p in busybox-static libc6 libseccomp2 containerd runc; do unpack "$p"; done
  kernel
  log "kernel $KVER"
  rootfs
  initrd
  log "artifacts:"
  for f in vmlinuz initrd root.img; do
    printf '    %-9s %6d KiB\n' "$f" $(( $(stat -c %s "$OUT/$f") / 1024 ))
  done
  printf '    %-9s %6d KiB  (console image, uncompressed OCI archive in root.img)\n' console.tar \
    $(( $(stat -c %s "$STAGE/root/usr/share/ros/images/console.tar") / 1024 ))
}

main "$@"
