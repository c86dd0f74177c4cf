#!/bin/bash
# Builds the boot image from Debian bookworm packages and our own binaries:
#   $OUT/ros.img   the image: a disk that boots by itself (MBR, syslinux)
#                  partition 1: FAT, label ROS_BOOT: /boot/{vmlinuz,initrd,syslinux/}
#                  partition 2: the root, squashfs: containerd, its shim and crun (static,
#                  built from Debian's sources by initramfs/from-source.sh), ros, modules,
#                  configs, services, preloaded images, the user Docker engine's binaries
#   $OUT/vmlinuz   the Debian kernel, and
#   $OUT/initrd    our init + busybox (recovery shell) + the modules needed to reach the
#                  root: the boot partition's two files, also beside the image for QEMU's
#                  -kernel/-initrd (quicker than through the BIOS)
#   $OUT/manifest  every build input (also in the root as /usr/share/ros/manifest, which
#                  `ros os version --manifest` prints)
# Each expensive output (a service image, the initrd, the root squashfs, the disk image) is
# remade only when a hash of its inputs changed: with nothing changed this takes seconds.
# Usage: [ROS_VERSION=V] initramfs/build.sh BUILD_DIR   (run from the repo root, as root)
set -euo pipefail

BUILD=$(realpath -m "${1:-build}")
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
# The release: the workspace's version plus the commit (and .dirty for uncommitted changes).
if [ -z "${ROS_VERSION:-}" ]; then
  ROS_VERSION=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version *=/{print $2; exit}' "$REPO/Cargo.toml")
  if commit=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null); then
    git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || commit=$commit.dirty
    ROS_VERSION=$ROS_VERSION+$commit
  fi
fi
[[ "$ROS_VERSION" =~ ^[A-Za-z0-9][A-Za-z0-9.+~_-]*$ ]] ||
  { echo "build.sh: ROS_VERSION '$ROS_VERSION': letters, digits and . + ~ _ - only" >&2; exit 2; }
# This script's own hash is part of every cache key: a change to how things are built
# rebuilds them.
SELF=$(cat "${BASH_SOURCE[0]}" "$REPO/initramfs/lib.sh" | sha256sum | cut -c1-16)

PACKAGES=(linux-image-amd64 busybox-static libc6
          e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1 extlinux isolinux syslinux-common
          grub-efi-amd64-bin)

. "$REPO/initramfs/lib.sh"

# DEB[package]: its .deb in $DEBS, at apt's candidate version (the one `apt-get install`
# would take), named as apt-get download names it; KPKG: the kernel's package.
declare -A DEB=()
KPKG=

fetch_debs() {
  mkdir -p "$DEBS"
  local want=("${PACKAGES[@]}")
  mapfile -t -O ${#want[@]} want < <(image_packages)
  # linux-image-amd64 is a metapackage: the kernel is the package its candidate depends on.
  KPKG=$(apt_cached "$DEBS/.kernel" apt-cache depends linux-image-amd64 |
    awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$KPKG" ] || { echo "build.sh: apt knows no linux-image-amd64 (apt-get update?)" >&2; exit 1; }
  want+=("$KPKG")
  mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)
  local p v a f old missing=()
  while read -r p v a; do
    f=$DEBS/${p}_${v//:/%3a}_$a.deb
    DEB[$p]=$f
    [ -f "$f" ] || missing+=("$p=$v")
    # A .deb of another version is stale: apt's candidate moved on.
    for old in "$DEBS/${p}_"*.deb; do
      [ -e "$old" ] && [ "$old" != "$f" ] && rm -f "$old"
    done
  done < <(apt_cached "$DEBS/.candidates" apt-cache show --no-all-versions "${want[@]}" |
             awk '/^Package:/{p=$2} /^Version:/{v=$2} /^Architecture:/{a=$2}
                  /^$/ && p {print p, v, a; p=""} END {if (p) print p, v, a}')
  for p in "${want[@]}"; do
    [ -n "${DEB[$p]:-}" ] || { echo "build.sh: apt has no candidate for package $p" >&2; exit 1; }
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get download ${missing[*]}"
    (cd "$DEBS" && apt-get download "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  fi
  for p in "${want[@]}"; do
    f=${DEB[$p]}
    [ -f "$f" ] || { echo "build.sh: apt-get download left no $f" >&2; exit 1; }
  done
}

unpack() {
  local pkg=$1 dir=$X/$1 deb=${DEB[$1]:?build.sh: package $1 was not fetched}
  if [ "$(cat "$dir/.unpacked" 2>/dev/null)" != "$(basename "$deb")" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir"
    basename "$deb" > "$dir/.unpacked"
  fi
}

kernel() {
  unpack "$KPKG"
  KDIR=$X/$KPKG
  local versions=("$KDIR"/lib/modules/*)
  [ ${#versions[@]} = 1 ] || { echo "build.sh: $KPKG holds ${#versions[@]} module trees" >&2; exit 1; }
  KVER=$(basename "${versions[0]}")
  if [ ! -e "$KDIR/lib/modules/$KVER/modules.dep" ]; then
    depmod -b "$KDIR" "$KVER"
  fi
  MODDIR=$KDIR/lib/modules/$KVER
  cp "$KDIR/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
}

# tree_hash DIR...: a hash of the trees' names, types, modes, link targets and contents
# (owners and mtimes are not kept: the images are made with fixed ones).
tree_hash() {
  local d
  for d in "$@"; do
    (cd "$d" && find . -printf '%P\t%y\t%m\t%l\n' | LC_ALL=C sort &&
      find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
  done | sha256sum | cut -c1-64
}

# fresh OUTPUT KEY: whether OUTPUT exists and was made from inputs with hash KEY
# (OUTPUT.key, written by made once OUTPUT is complete).
fresh() { [ -e "$1" ] && [ "$(cat "$1.key" 2>/dev/null)" = "$2" ]; }
made() { echo "$2" > "$1.key.new" && mv "$1.key.new" "$1.key"; }

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

# install_modules DESTROOT LISTFILE...
install_modules() {
  local root=$1 dest=$1/lib/modules/$KVER
  shift
  mkdir -p "$dest"
  cat "$@" | module_closure /dev/stdin | while read -r ko; do
    mkdir -p "$dest/$(dirname "$ko")"
    cp "$MODDIR/$ko" "$dest/$ko"
  done
  cp "$MODDIR/modules.builtin" "$MODDIR/modules.builtin.modinfo" "$MODDIR/modules.order" "$dest/" 2>/dev/null || true
  depmod -b "$root" "$KVER"
  # depmod writes files we don't read; keep the image small. libkmod (udev's module loading
  # by modalias) reads the .bin indexes, init the text files.
  find "$dest" -maxdepth 1 -name 'modules.*' ! -name modules.dep ! -name modules.builtin \
    ! -name modules.alias ! -name modules.dep.bin ! -name modules.alias.bin \
    ! -name modules.builtin.bin ! -name modules.builtin.alias.bin ! -name modules.softdep \
    ! -name modules.symbols.bin -delete
}

# lib_closure DESTROOT SYSROOTS BINARY... : copy the shared libraries the binaries need from
# the unpacked Debian packages in SYSROOTS (space-separated; never from the build host).
# Libraries already in one of $LOWER_LAYERS (image layers below DESTROOT) are not copied.
lib_closure() {
  local dest=$1 sysroots; read -ra sysroots <<< "$2"; shift 2
  local -A seen=()
  local queue=("$@")
  while [ ${#queue[@]} -gt 0 ]; do
    local bin=${queue[0]}; queue=("${queue[@]:1}")
    local runpath
    runpath=$(readelf -d "$bin" 2>/dev/null | awk '/RUNPATH|RPATH/{gsub(/[\[\]]/,"",$5); gsub(/:/," ",$5); print $5}')
    for lib in $(readelf -d "$bin" 2>/dev/null | awk '/NEEDED/{gsub(/[\[\]]/,"",$5); print $5}'); do
      [ -n "${seen[$lib]:-}" ] && continue
      seen[$lib]=1
      local found='' lower root d
      for lower in ${LOWER_LAYERS:-}; do
        for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu; do
          [ -e "$lower/$d/$lib" ] && { found=1; break 2; }
        done
      done
      [ -n "$found" ] && continue
      # A library the image already holds (one built from source) is used as it is.
      for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu; do
        [ -e "$dest/$d/$lib" ] && { queue+=("$dest/$d/$lib"); found=1; break; }
      done
      [ -n "$found" ] && continue
      for root in "${sysroots[@]}"; do
        for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu $runpath; do
          d=${d#/}
          if [ -e "$root/$d/$lib" ]; then
            mkdir -p "$dest/$d"
            [ -e "$dest/$d/$lib" ] || cp -L "$root/$d/$lib" "$dest/$d/$lib"
            queue+=("$root/$d/$lib"); found=1; break 2
          fi
        done
      done
      if [ -z "$found" ]; then
        echo "error: $lib (needed by $bin) is in none of the unpacked packages: ${sysroots[*]##*/}" >&2
        exit 1
      fi
    done
  done
  [ -n "${LOWER_LAYERS:-}" ] && return
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

# --- System service images ------------------------------------------------------------
# Every directory images/<name>/ but base/ becomes the OCI image ros/<name>:$IMAGE_TAG,
# in the unpacked store /usr/share/ros/image-store (`ros-image store`). Its layers, lowest first:
#   base  busybox (poweroff/reboot/halt are `ros`, which services bind-mount) and
#         images/base/rootfs (passwd, group, os-release): in every image
#   libc  the dynamic loader and libc.so.6: in every image with dynamically linked binaries
#   own   what images/<name>/packages keeps from Debian packages, the binaries
#         images/<name>/from-source names (initramfs/from-source.sh), the shared-library
#         closure of its binaries (minus what base and libc hold), and the images/<name>/rootfs
#         overlay; /usr/libexec/ros/<name>-entry, if there, is the image's command
# Identical layers are one directory of the store, so the shared layers are stored once.
IMAGE_TAG=0.1.0
IMAGES_DIR=$REPO/images

# image_packages: every Debian package an images/*/packages file names (first word of a line).
image_packages() {
  cat "$IMAGES_DIR"/*/packages 2>/dev/null | grep -v '^\s*#' | awk 'NF{print $1}' | sort -u
}

base_layers() {
  local b=$STAGE/layers/base l=$STAGE/layers/libc
  rm -rf "$b" "$l"; mkdir -p "$b" "$l"
  busybox_tree "$b" poweroff reboot halt
  for cmd in poweroff reboot halt; do ln -s /usr/bin/ros "$b/sbin/$cmd"; done
  cp -r "$IMAGES_DIR/base/rootfs/." "$b/"
  mkdir -p "$b/root" "$b/home" "$b/tmp" "$b/var/log" "$b/var/lib" "$b/run" "$b/proc" \
    "$b/sys" "$b/dev" "$b/etc" "$b/usr/libexec/ros"
  ln -s /run "$b/var/run"
  chmod 1777 "$b/tmp"; chmod 0700 "$b/root"; chmod 0600 "$b/etc/shadow"
  mkdir -p "$l/lib/x86_64-linux-gnu" "$l/lib64"
  cp -L "$X/libc6/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
    "$X/libc6/lib/x86_64-linux-gnu/libc.so.6" "$l/lib/x86_64-linux-gnu/"
  ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$l/lib64/ld-linux-x86-64.so.2"
}

# image_key NAME: the hash of everything images/NAME's image is made from: its directory
# and images/base, the .debs it and the base layers take files from, the from-source
# binaries it names, ros-image, and this script.
image_key() {
  local src=$IMAGES_DIR/$1 pkg rest p
  {
    echo "$SELF $IMAGE_TAG"
    tree_hash "$src" "$IMAGES_DIR/base"
    echo "${DEB[libc6]##*/} ${DEB[busybox-static]##*/}"
    if [ -f "$src/packages" ]; then
      while read -r pkg rest; do
        [[ -z "$pkg" || "$pkg" == \#* ]] || echo "${DEB[$pkg]##*/}"
      done < "$src/packages"
    fi
    if [ -f "$src/from-source" ]; then
      while read -r p rest; do
        [[ -z "$p" || "$p" == \#* ]] || sha256sum < "$SOURCE_BIN/$p"
      done < "$src/from-source"
    fi
    sha256sum < "$HOSTBIN/ros-image"
  } | sha256sum | cut -c1-64
}

# service_image NAME: images/NAME -> the image ros/NAME:$IMAGE_TAG in
# $STAGE/root/usr/share/ros/image-store, built into $STAGE/cache/NAME unless the one there
# was built from the same inputs.
service_image() {
  local name=$1 cache=$STAGE/cache/$1 key
  key=$(image_key "$name")
  if ! fresh "$cache/image.tar" "$key"; then
    build_service_image "$name" "$cache"
    made "$cache/image.tar" "$key"
  fi
  # Large binaries (images/NAME/engine) live in the root image's /usr/lib/ros/engine.
  if [ -d "$cache/engine" ]; then
    mkdir -p "$STAGE/root/usr/lib/ros/engine"
    cp -a "$cache/engine/." "$STAGE/root/usr/lib/ros/engine/"
  fi
  # Shipped as an unpacked store: layer directories the system runtime stacks as overlay
  # roots (no import at boot, page cache instead of a RAM copy); a layer shared by several
  # images (base, libc) is one directory.
  "$HOSTBIN/ros-image" store --dir "$STAGE/root/usr/share/ros/image-store" "$cache/image.tar" >/dev/null
  IMAGE_SIZES+=("$(cat "$cache/sizes")")
}

# build_service_image NAME CACHE: the OCI archive CACHE/image.tar, CACHE/engine/ (its
# large binaries) and CACHE/sizes (a line for the build's summary).
build_service_image() {
  local name=$1 src=$IMAGES_DIR/$1 cache=$2
  log "image ros/$name:$IMAGE_TAG"
  local s=$STAGE/layers/$name
  rm -rf "$s" "$cache"; mkdir -p "$s" "$cache"
  local sysroots=("$X/libc6") pkg paths p m matched
  if [ -f "$src/packages" ]; then
    while read -r pkg paths; do
      [[ -z "$pkg" || "$pkg" == \#* ]] && continue
      unpack "$pkg"
      sysroots+=("$X/$pkg")
      for p in $paths; do
        # Globs are relative to the package root; one that keeps nothing is a typo.
        matched=
        for m in $(cd "$X/$pkg" && compgen -G "$p" || true); do
          (cd "$X/$pkg" && cp -a --parents "$m" "$s/"); matched=1
        done
        [ -n "$matched" ] || { echo "error: image $name: package $pkg has no $p" >&2; exit 1; }
      done
    done < "$src/packages"
  fi
  # Binaries built from Debian's sources (initramfs/from-source.sh): the binary, then its
  # directory in the image.
  if [ -f "$src/from-source" ]; then
    while read -r p m; do
      [[ -z "$p" || "$p" == \#* ]] && continue
      install -D -m 0755 "$SOURCE_BIN/$p" "$s/$m/$p"
    done < "$src/from-source"
  fi
  [ -d "$src/rootfs" ] && cp -r "$src/rootfs/." "$s/"
  # Modes git does not keep: sudo refuses a sudoers file others can read.
  [ -f "$s/etc/sudoers" ] && chmod 0440 "$s/etc/sudoers"
  # Our scripts are executable whatever the checkout's file modes say.
  [ -d "$s/usr/libexec/ros" ] && find "$s/usr/libexec/ros" -type f -exec chmod 0755 {} +
  local elves=() f
  while IFS= read -r -d '' f; do
    readelf -d "$f" 2>/dev/null | grep -q NEEDED && elves+=("$f")
  done < <(find "$s" -type f -perm -u+x -print0; find "$s" -type f -name '*.so*' -print0)
  local layers=(--layer "$STAGE/layers/base")
  if [ ${#elves[@]} -gt 0 ]; then
    LOWER_LAYERS="$STAGE/layers/base $STAGE/layers/libc" \
      lib_closure "$s" "${sysroots[*]}" "${elves[@]}"
    layers+=(--layer "$STAGE/layers/libc")
  fi
  # Large binaries listed in images/NAME/engine leave the image for the root image's
  # /usr/lib/ros/engine (the service binds it): no import, and page cache instead of a
  # tmpfs copy at run time. Their libraries stay in the image.
  if [ -f "$src/engine" ]; then
    mkdir -p "$cache/engine"
    grep -v '^\s*#' "$src/engine" | while read -r p; do
      [ -n "$p" ] || continue
      [ -f "$s/$p" ] || { echo "error: image $name: engine path $p is not in the image" >&2; exit 1; }
      mv "$s/$p" "$cache/engine/"
    done
  fi
  layers+=(--layer "$s")
  local cmd=()
  [ -x "$s/usr/libexec/ros/$name-entry" ] && cmd=(--cmd "/usr/libexec/ros/$name-entry")
  "$HOSTBIN/ros-image" build --name "ros/$name:$IMAGE_TAG" "${layers[@]}" "${cmd[@]}" \
    --env PATH=/usr/sbin:/usr/bin:/sbin:/bin --out "$cache/image.tar" >/dev/null
  printf '%-8s %6d KiB archive; own layer %6d KiB uncompressed; layers %s\n' \
    "$name" $(( $(stat -c %s "$cache/image.tar") / 1024 )) "$(du -sk --apparent-size "$s" | cut -f1)" \
    "$([ ${#elves[@]} -gt 0 ] && echo base+libc+own || echo base+own)" > "$cache/sizes"
}

service_images() {
  IMAGE_SIZES=()
  base_layers
  local d
  for d in "$IMAGES_DIR"/*/; do
    d=$(basename "$d")
    [ "$d" = base ] || service_image "$d"
  done
}

rootfs() {
  local r=$STAGE/root
  rm -rf "$r"
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib,etc,proc,sys,dev,run,tmp,var,mnt,root,home,opt}
  mkdir -p "$r/usr/share/ros/images" "$r/usr/share/ros/services" "$r/mnt/state"
  chmod 1777 "$r/tmp"; chmod 0700 "$r/root"
  unpack libc6
  # Static binaries: containerd and its shim, and crun, which runs the system services
  # (the shim's runtime; runc is the user Docker's only).
  install -m 0755 "$SOURCE_BIN/containerd" "$SOURCE_BIN/containerd-shim-runc-v2" \
    "$SOURCE_BIN/crun" "$r/usr/bin/"
  install -m 0755 "$RELEASE/ros" "$r/usr/bin/ros"
  # No /sbin/init here: PID 1 is the initrd's /init, which switches into this root and
  # goes on running (the kernel cannot mount it without the initrd's modules anyway).
  # mke2fs formats a blank state disk (rancher.state.autoformat).
  for p in e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1; do unpack "$p"; done
  install -m 0755 "$X/e2fsprogs/sbin/mke2fs" "$r/sbin/mke2fs"
  lib_closure "$r" "$X/libc6 $X/libext2fs2 $X/libcom-err2 $X/libblkid1 $X/libuuid1" "$r/sbin/mke2fs"
  # `ros install`: extlinux and its MBR code. The kernel and initrd it copies are read from
  # the image's boot partition, not kept here a second time.
  unpack extlinux
  install -m 0755 "$X/extlinux/usr/bin/extlinux" "$r/usr/bin/extlinux"
  install -D -m 0644 "$X/extlinux/usr/lib/EXTLINUX/mbr.bin" "$r/usr/lib/EXTLINUX/mbr.bin"
  # ... and the EFI system partition it writes, for UEFI.
  esp_image "$r/usr/lib/ros/esp.img"
  # busybox with its applets, for bootcmd (run before any container) and a runcmd that
  # runs without the console; poweroff, reboot and halt are `ros`, as in the images.
  busybox_tree "$r" poweroff reboot halt
  for cmd in poweroff reboot halt; do ln -s /usr/bin/ros "$r/sbin/$cmd"; done
  # The network service's lease script, for PID 1's DHCP before a URL datasource
  # (init/src/netboot.rs).
  install -D -m 0755 "$REPO/images/network/rootfs/usr/libexec/ros/udhcpc-event" \
    "$r/usr/libexec/ros/udhcpc-event"
  install_modules "$r" "$REPO/initramfs/modules.root" "$REPO/initramfs/modules.storage"
  cp -r "$REPO/initramfs/etc/." "$r/etc/"
  cp "$REPO/services/"*.yml "$r/usr/share/ros/services/"
  [ -f "$REPO/configs/os-config.yml" ] && cp "$REPO/configs/os-config.yml" "$r/usr/share/ros/os-config.yml"
  service_images
  # The user engine runs the same containerd, shim and crun (squashfs stores them once);
  # crun is its runc too (a runc-compatible command line; dockerd and the shim run `runc`),
  # behind `ros` as `runc`, which hides the kernel line's secrets from the containers whose
  # /proc Docker confines (ros-cli/src/engine_runc.rs; the service binds /usr/bin/ros).
  install -m 0755 "$SOURCE_BIN/containerd" "$SOURCE_BIN/containerd-shim-runc-v2" \
    "$SOURCE_BIN/crun" "$r/usr/lib/ros/engine/"
  ln -s /usr/bin/ros "$r/usr/lib/ros/engine/runc"
  # The keys `ros os upgrade` trusts: the build's own (see signing_key), and any the
  # user adds in ROS_TRUSTED_KEYS (a directory of *.pub).
  mkdir -p "$r/usr/share/ros/trusted-keys"
  cp "$SIGNING_PUB" "$r/usr/share/ros/trusted-keys/build.pub"
  if [ -n "${ROS_TRUSTED_KEYS:-}" ]; then
    cp "$ROS_TRUSTED_KEYS"/*.pub "$r/usr/share/ros/trusted-keys/"
  fi
  # What this build is made of, and its version (`ros os version` reads both).
  manifest "$r/usr/share/ros/manifest"
  sed -i "s/^VERSION_ID=.*/VERSION_ID=${ROS_VERSION%%[+~]*}\nVERSION=$ROS_VERSION/" "$r/etc/os-release"
  local key
  key=$(echo "$SELF $(mksquashfs -version | head -1) $(tree_hash "$r")" | sha256sum | cut -c1-64)
  if fresh "$STAGE/root.img" "$key"; then
    log "root unchanged"
    return
  fi
  log "mksquashfs (zstd -19)"
  rm -f "$STAGE/root.img"
  mksquashfs "$r" "$STAGE/root.img" -comp zstd -Xcompression-level 19 -b 1M -all-root \
    -reproducible -noappend -quiet >/dev/null
  made "$STAGE/root.img" "$key"
}

# manifest FILE: every input of this build, one per line, tab-separated: kind, name,
# version, sha256, detail. Debian's binary packages with the hash of the .deb used (what
# apt verified, and what `sha256sum build/debs/X.deb` says); the source packages built
# here with their toolchains and the static libraries linked in (initramfs/from-source.sh);
# the Rust toolchain and Cargo.lock.
manifest() {
  local file=$1 p deb f
  {
    printf '# rOS build manifest (initramfs/build.sh): kind, name, version, sha256, detail\n'
    printf 'release\tros\t%s\t-\tcommit %s\n' "$ROS_VERSION" \
      "$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    printf 'toolchain\trustc\t%s\t-\t%s\n' "$(rustc -V | awk '{print $2}')" "$(rustc -vV | tr '\n' ';' | sed 's/;$//')"
    printf 'lockfile\tCargo.lock\t-\t%s\t-\n' "$(sha256sum < "$REPO/Cargo.lock" | cut -c1-64)"
    for p in $(printf '%s\n' "${!DEB[@]}" | LC_ALL=C sort); do
      deb=${DEB[$p]}
      # Version and Architecture as the .deb itself says (dpkg-deb -f), Source when it
      # differs from the package's name.
      read -r -a f < <(dpkg-deb -f "$deb" | awk -v p="$p" '/^Version:/{v=$2} /^Architecture:/{a=$2}
        /^Source:/{s=$2} END {print v, a, (s ? s : p)}')
      printf 'deb\t%s\t%s\t%s\tarch=%s source=%s file=%s\n' "$p" "${f[0]}" \
        "$(sha256sum < "$deb" | cut -c1-64)" "${f[1]}" "${f[2]}" "${deb##*/}"
    done
    cat "$SOURCE_BIN"/manifest-*
  } > "$file"
  chmod 0644 "$file"
  cp "$file" "$OUT/manifest"
}

initrd() {
  local s=$STAGE/initrd
  rm -rf "$s"
  mkdir -p "$s"/{bin,dev,proc,sys,run,tmp,newroot,lib}
  install -m 0755 "$RELEASE/init" "$s/init"
  cp "$X/busybox-static/bin/busybox" "$s/bin/busybox"
  ln -s busybox "$s/bin/sh"
  install_modules "$s" "$REPO/initramfs/modules.boot" "$REPO/initramfs/modules.storage" \
    "$REPO/initramfs/modules.ata" "$REPO/initramfs/modules.cdrom"
  # Which of them PID 1 loads only when the root is not on a virtio disk, and which drive
  # the controllers CD-ROMs sit on (init/src/boot.rs).
  cat "$REPO/initramfs/modules.ata" "$REPO/initramfs/modules.storage" | grep -v '^\s*#' |
    grep -v '^\s*$' > "$s/lib/modules/$KVER/modules.fallback"
  grep -v -e '^\s*#' -e '^\s*$' "$REPO/initramfs/modules.ata" > "$s/lib/modules/$KVER/modules.ata"
  # The kernel opens /dev/console for init before devtmpfs is mounted.
  mknod -m 600 "$s/dev/console" c 5 1
  local key
  key=$(echo "$SELF $(tree_hash "$s")" | sha256sum | cut -c1-64)
  fresh "$OUT/initrd" "$key" && return
  (cd "$s" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | xargs -0 touch -h -d @0 &&
   find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0) |
    zstd -q -19 -T0 > "$OUT/initrd.new"
  mv "$OUT/initrd.new" "$OUT/initrd"
  made "$OUT/initrd" "$key"
}

# The kernel line of a live medium's entries (the image's and the ISO's): like RancherOS's
# ISO, it logs in on the serial console by itself (`ros install` writes an entry that does
# not).
LIVE_ARGS="console=tty0 console=ttyS0 quiet rancher.autologin=ttyS0"

# syslinux_cfg WHAT INITRDS ARGS: the syslinux (or isolinux) config of a live medium's one
# entry, on the serial console too.
syslinux_cfg() {
  "$HOSTBIN/ros-bundle" syslinux-cfg --comment "$1" --initrd "$2" --append "$3"
}

# The image's MBR disk signature: its root partition is root=PARTUUID=$DISK_ID-02, whatever
# the disk is called (vda, sda, nvme0n1).
DISK_ID=524f5330
BOOT_LABEL=ROS_BOOT

# disk_image: $OUT/ros.img from the kernel, the initrd and the root squashfs. Each partition
# is sized to fit and starts on a MiB; nothing is mounted (mtools and syslinux write the FAT).
disk_image() {
  local fat=$STAGE/boot.fat sq=$STAGE/root.img img=$OUT/ros.img mib=$((1 << 20))
  local kib=$(( ($(stat -c %s "$OUT/vmlinuz") + $(stat -c %s "$OUT/initrd")) / 1024 ))
  # FAT16, with room for its tables, syslinux (~150 KiB) and a little growth.
  local boot_mib=$(( kib / 1024 + 3 ))
  local root_mib=$(( ($(stat -c %s "$sq") + mib - 1) / mib ))
  local key
  key=$(cat "$OUT/vmlinuz" "$OUT/initrd" "$sq" | sha256sum | cut -c1-64)
  key=$(echo "$SELF $key" | sha256sum | cut -c1-64)
  fresh "$img" "$key" && return
  # (An image of an earlier layout: the root alone.)
  rm -f "$fat" "$img" "$img.key" "$OUT/root.img"
  mkfs.vfat -C -F 16 -n "$BOOT_LABEL" -i "$DISK_ID" "$fat" $(( boot_mib * 1024 )) >/dev/null
  mmd -i "$fat" ::/boot ::/boot/syslinux
  mcopy -i "$fat" "$OUT/vmlinuz" "$OUT/initrd" ::/boot/
  syslinux_cfg "The rOS image's boot entry" /boot/initrd \
    "$LIVE_ARGS root=PARTUUID=$DISK_ID-02" | mcopy -i "$fat" - ::/boot/syslinux/syslinux.cfg
  syslinux --install --directory /boot/syslinux "$fat"
  truncate -s $(( (1 + boot_mib + root_mib) * mib )) "$img"
  printf '%s\n' "label: dos" "label-id: 0x$DISK_ID" \
    "start=2048, size=$(( boot_mib * 2048 )), type=e, bootable" \
    "start=$(( (1 + boot_mib) * 2048 )), size=$(( root_mib * 2048 )), type=83" |
    sfdisk --quiet --no-reread --no-tell-kernel "$img"
  dd if="$X/extlinux/usr/lib/EXTLINUX/mbr.bin" of="$img" bs=440 count=1 conv=notrunc status=none
  dd if="$fat" of="$img" bs=1M seek=1 conv=notrunc status=none
  dd if="$sq" of="$img" bs=1M seek=$(( 1 + boot_mib )) conv=notrunc status=none
  rm -f "$fat"
  made "$img" "$key"
}

# live: a boot from RAM (the ISO and PXE) with the artifacts the disk boots from, plus
# $OUT/root.cpio: the root image as ros/root.squashfs in a second cpio, uncompressed (the
# squashfs is compressed already), which the kernel unpacks after the initrd when the
# bootloader loads both (PID 1 then loop-mounts it: init/src/boot.rs). $OUT/pxe/ is a TFTP
# directory: boot.ipxe and the three files it loads.
live() {
  local s=$STAGE/live key
  key=$(echo "$SELF $(sha256sum < "$STAGE/root.img")" | sha256sum | cut -c1-64)
  if ! fresh "$OUT/root.cpio" "$key"; then
    rm -rf "$s"
    mkdir -p "$s/ros"
    cp "$STAGE/root.img" "$s/ros/root.squashfs"
    (cd "$s" && touch -h -d @0 ros ros/root.squashfs &&
     printf '%s\n' ros ros/root.squashfs | cpio --quiet -o -H newc --reproducible -R 0:0) \
      > "$OUT/root.cpio.new"
    mv "$OUT/root.cpio.new" "$OUT/root.cpio"
    rm -rf "$s"
    made "$OUT/root.cpio" "$key"
  fi
  mkdir -p "$OUT/pxe"
  for f in vmlinuz initrd root.cpio; do ln -f "$OUT/$f" "$OUT/pxe/$f"; done
  # Like the ISO's, its entry (LIVE_ARGS) logs in on the serial console (installed disks
  # do not).
  printf '%s\n' '#!ipxe' \
    '# rOS without a disk (initramfs/build.sh): the kernel, the initrd and the root image' \
    '# (root.cpio) come from where this script came from, and everything runs from RAM.' \
    "# The node's config: add cloud-config-url=http://HOST/PATH to the kernel line." \
    "kernel vmlinuz $LIVE_ARGS" \
    'initrd initrd' 'initrd root.cpio' 'boot' > "$OUT/pxe/boot.ipxe"
}

# efi_image FILE KIB EARLY_CFG MODULES...: a FAT image of KIB KiB (0: just large enough)
# holding /EFI/BOOT/BOOTX64.EFI, GRUB made by grub-mkimage from Debian's grub-efi-amd64-bin
# with MODULES and the early config EARLY_CFG (lines), which finds its grub.cfg. The same
# inputs give the same bytes (fixed volume id and times), so the root image that holds one
# is not rebuilt for nothing.
efi_image() {
  local fat=$1 kib=$2 early=$3 dir=$STAGE/efi
  shift 3
  unpack grub-efi-amd64-bin
  rm -rf "$dir"
  mkdir -p "$dir"
  printf '%s\n' "$early" > "$dir/early.cfg"
  grub-mkimage -O x86_64-efi -d "$X/grub-efi-amd64-bin/usr/lib/grub/x86_64-efi" \
    -c "$dir/early.cfg" -p /boot/grub -o "$dir/BOOTX64.EFI" "$@"
  [ "$kib" -gt 0 ] || kib=$(( $(stat -c %s "$dir/BOOTX64.EFI") / 1024 + 256 ))
  rm -f "$fat"
  touch -d @1 "$dir/BOOTX64.EFI"
  SOURCE_DATE_EPOCH=1 mkfs.vfat --invariant -C -n ROS_EFI "$fat" "$kib" >/dev/null
  SOURCE_DATE_EPOCH=1 mmd -i "$fat" ::/EFI ::/EFI/BOOT
  SOURCE_DATE_EPOCH=1 mcopy -m -i "$fat" "$dir/BOOTX64.EFI" ::/EFI/BOOT/
  rm -rf "$dir"
}

# The modules of both GRUBs.
GRUB_MODULES="part_msdos part_gpt fat search search_label configfile normal linux echo
  serial terminal efi_gop all_video test"

# esp_image FILE: the EFI system partition `ros install` writes (16 MiB, FAT16): GRUB,
# which reads /boot/grub/grub.cfg on partition 1 of the disk it was loaded from (the
# RANCHER_STATE partition; the entries and the boot-once grubenv that ros-os/src/grub.rs
# writes there), or failing that on the partition labelled RANCHER_STATE.
esp_image() {
  local early
  early=$(cat <<'EOF'
if regexp --set=1:disk '^\((hd[0-9]+),' "$cmdpath"; then
  set root=($disk,msdos1)
else
  search --no-floppy --set=root --label RANCHER_STATE
fi
set prefix=($root)/boot/grub
configfile $prefix/grub.cfg
EOF
)
  mkdir -p "$(dirname "$1")"
  # shellcheck disable=SC2086 # a list of words
  efi_image "$1" 16384 "$early" $GRUB_MODULES ext2 regexp loadenv
}

# iso: $OUT/ros.iso, hybrid (El Torito for a CD-ROM, an MBR for a USB stick), booting under
# BIOS through isolinux and under UEFI through GRUB (efi_image), each loading the kernel,
# the initrd and root.cpio: the whole system runs from RAM.
iso() {
  local s=$STAGE/iso key
  key=$(cat "$OUT/vmlinuz" "$OUT/initrd" "$OUT/root.cpio" | sha256sum | cut -c1-64)
  key=$(echo "$SELF $key" | sha256sum | cut -c1-64)
  fresh "$OUT/ros.iso" "$key" && return
  unpack isolinux
  unpack syslinux-common
  rm -rf "$s"
  mkdir -p "$s/boot/isolinux"
  install -m 0644 "$X/isolinux/usr/lib/ISOLINUX/isolinux.bin" \
    "$X/syslinux-common/usr/lib/syslinux/modules/bios/ldlinux.c32" "$s/boot/isolinux/"
  ln "$OUT/vmlinuz" "$OUT/initrd" "$OUT/root.cpio" "$s/boot/"
  syslinux_cfg "The rOS ISO's boot entry" /boot/initrd,/boot/root.cpio "$LIVE_ARGS" \
    > "$s/boot/isolinux/isolinux.cfg"
  mkdir -p "$s/boot/grub"
  printf '%s\n' "# The rOS ISO's UEFI boot entry (initramfs/build.sh)." \
    'serial --unit=0 --speed=115200' 'terminal_input serial console' \
    'terminal_output serial console' 'set timeout=1' 'menuentry "rOS" {' \
    "  linux /boot/vmlinuz $LIVE_ARGS" '  initrd /boot/initrd /boot/root.cpio' '}' \
    > "$s/boot/grub/grub.cfg"
  # shellcheck disable=SC2086 # a list of words
  efi_image "$s/boot/efiboot.img" 0 "$(printf '%s\n' \
    'search --no-floppy --set=root --label ROS_LIVE' \
    'set prefix=($root)/boot/grub' 'configfile $prefix/grub.cfg')" $GRUB_MODULES iso9660
  SOURCE_DATE_EPOCH=1 xorriso -as mkisofs -quiet -o "$OUT/ros.iso.new" -V ROS_LIVE -J -R \
    -b boot/isolinux/isolinux.bin -c boot/isolinux/boot.cat -no-emul-boot \
    -boot-load-size 4 -boot-info-table \
    -eltorito-alt-boot -e boot/efiboot.img -no-emul-boot -isohybrid-gpt-basdat \
    -isohybrid-mbr "$X/isolinux/usr/lib/ISOLINUX/isohdpfx.bin" "$s" 2>/dev/null
  mv "$OUT/ros.iso.new" "$OUT/ros.iso"
  rm -rf "$s"
  made "$OUT/ros.iso" "$key"
}

# signing_key: SIGNING_KEY (PKCS#8) and SIGNING_PUB: ROS_SIGNING_KEY if given, else the
# build tree's own key, made once ($BUILD/keys, out of git).
signing_key() {
  SIGNING_KEY=${ROS_SIGNING_KEY:-$BUILD/keys/ros-signing.key}
  if [ -z "${ROS_SIGNING_KEY:-}" ]; then
    "$HOSTBIN/ros-bundle" keygen --key "$SIGNING_KEY"
  fi
  [ -f "$SIGNING_KEY" ] || { echo "build.sh: no signing key $SIGNING_KEY" >&2; exit 1; }
  SIGNING_PUB=$STAGE/signing.pub
  "$HOSTBIN/ros-bundle" public --key "$SIGNING_KEY" --out "$SIGNING_PUB"
}

# bundle: $OUT/ros-$ROS_VERSION.upgrade, what `ros os upgrade` takes: this build's kernel,
# initrd, root image and manifest, signed.
bundle() {
  local out=$OUT/ros-$ROS_VERSION.upgrade key
  key=$(cat "$OUT/vmlinuz" "$OUT/initrd" "$STAGE/root.img" "$OUT/manifest" "$SIGNING_PUB" |
    sha256sum | cut -c1-64)
  fresh "$out" "$key" && return
  rm -f "$OUT"/ros-*.upgrade "$OUT"/ros-*.upgrade.key
  "$HOSTBIN/ros-bundle" pack --key "$SIGNING_KEY" --version "$ROS_VERSION" \
    --kernel "$OUT/vmlinuz" --initrd "$OUT/initrd" --root "$STAGE/root.img" \
    --manifest "$OUT/manifest" --out "$out" >/dev/null
  made "$out" "$key"
}

main() {
  mkdir -p "$OUT" "$STAGE"
  signing_key
  fetch_debs
  for p in busybox-static libc6; do unpack "$p"; done
  "$REPO/initramfs/from-source.sh" build "$BUILD"
  SOURCE_BIN=$BUILD/source/bin
  kernel
  log "kernel $KVER"
  initrd
  rootfs
  disk_image
  live
  iso
  bundle
  log "artifacts:"
  for f in ros.img vmlinuz initrd root.cpio ros.iso; do
    printf '    %-9s %6d KiB\n' "$f" $(( $(stat -c %s "$OUT/$f") / 1024 ))
  done
  printf '    %-9s %6d KiB (squashfs, partition 2 of ros.img)\n' root \
    $(( $(stat -c %s "$STAGE/root.img") / 1024 ))
  printf '    %-9s %6d KiB (ros-%s.upgrade, for ros os upgrade; signed with %s)\n' bundle \
    $(( $(stat -c %s "$OUT/ros-$ROS_VERSION.upgrade") / 1024 )) "$ROS_VERSION" "$SIGNING_KEY"
  log "service images (in the root, /usr/share/ros/image-store):"
  printf '    %s\n' "${IMAGE_SIZES[@]}"
  printf '    %-8s %6d KiB uncompressed (busybox, shared by every image)\n' base \
    "$(du -sk --apparent-size "$STAGE/layers/base" | cut -f1)"
  printf '    %-8s %6d KiB uncompressed (loader + libc.so.6, shared by dynamic images)\n' libc \
    "$(du -sk --apparent-size "$STAGE/layers/libc" | cut -f1)"
}

main "$@"
