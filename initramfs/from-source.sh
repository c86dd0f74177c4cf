#!/bin/bash
# containerd, its runc v2 shim, crun, chronyd, libkmod and the user Docker engine (dockerd,
# the docker CLI, docker-proxy), built from Debian's source
# packages: the same versions as Debian's binary packages, with Debian's patches (security
# fixes included), but without what rOS never uses, and the programs static.
# bench/RESULTS.md has the figures.
#
# - containerd and the shim: against Debian's Go libraries, without the plugins rOS never
#   loads (the CRI for Kubernetes; the btrfs, devmapper, zfs and aufs snapshotters), and
#   without cgo (as upstream builds its shims): Go's own resolver and user lookup, no
#   dynamic loader at each start. 48 MB (Debian's) against 22 MB.
# - crun: static, without systemd (rOS's cgroups are cgroupfs), CRIU, or the libgcrypt
#   that only keys its seccomp cache, and with its own copy of yajl. Debian's crun loads
#   eight libraries at every exec, twice per container start; under TCG that was ~0.8 s
#   of the boot's services phase.
# - chronyd (the ntp image): static, without NTS and the hashes beyond MD5 (gnutls, nettle
#   and five more libraries, 7.6 MB, which chronyd loaded on the console's path), without
#   libcap (it runs as root in its container, with CAP_SYS_TIME) and reference clocks.
# - libkmod (the udev image's udevadm and systemd-udevd load it): without OpenSSL, xz, zstd
#   and zlib, which only show module signatures and read compressed modules (the image's
#   are neither): Debian's brought libcrypto (4.7 MB), libzstd and liblzma into the image.
# - dockerd, the docker CLI and docker-proxy (the user engine): against Debian's Go
#   libraries, as Debian builds them, but without cgo, static, not PIE and stripped, and
#   without the devicemapper, btrfs, aufs and zfs storage drivers (rOS's engine runs
#   overlay2; the first two need cgo, the others kernel modules Debian's kernel lacks).
#   Debian's are PIE executables with dynamic symbol tables, linked against libsystemd and
#   libdevmapper: dockerd 75 MB against 53 MB, 19.4 MB compressed against 14.0.
# The system containerd and the user engine's containerd are the one binary.
#
# Usage: initramfs/from-source.sh deps BUILD_DIR    fetch the sources, install Go and the
#                                                   build dependencies (apt-get, as root)
#        initramfs/from-source.sh build BUILD_DIR   -> BUILD_DIR/source/bin/containerd,
#                                                      containerd-shim-runc-v2, crun, chronyd,
#                                                      libkmod.so.2, dockerd, docker,
#                                                      docker-proxy
set -euo pipefail

MODE=${1:?usage: from-source.sh deps|build BUILD_DIR}
BUILD=$(realpath -m "${2:-build}")
DIR=$BUILD/source
BIN=$DIR/bin
GOPKG=github.com/containerd/containerd
# Build tags that leave plugins out (cmd/containerd/builtins_*.go). The config written by
# PID 1 disables the same plugins for a containerd that has them.
TAGS="no_cri no_btrfs no_devmapper no_zfs no_aufs"
# dockerd's: Debian's (apparmor seccomp), and Go's resolver and user lookup (what a build
# without cgo uses anyway), without the storage drivers that need cgo (devicemapper,
# btrfs) or kernel modules Debian's kernel does not have (aufs, zfs).
DOCKER_TAGS="apparmor seccomp netgo osusergo exclude_graphdriver_devicemapper \
exclude_graphdriver_btrfs exclude_graphdriver_aufs exclude_graphdriver_zfs"
CRUN_CONFIGURE=(--disable-systemd --disable-criu --disable-dl --enable-embedded-yajl
                --disable-shared --enable-static ac_cv_search_gcry_check_version=no)
# What crun's build needs with that configuration (its Build-Depends name more: systemd,
# yajl, and the tools Debian uses to regenerate the tarball's generated sources).
CRUN_DEPS=(gcc make pkgconf gperf python3 libcap-dev libseccomp-dev)
KMOD_CONFIGURE=(--without-openssl --without-xz --without-zstd --without-zlib
                --disable-manpages --disable-test-modules --disable-tools)
# kmod's source is a git snapshot without a configure script.
KMOD_DEPS=(autoconf automake libtool)
CHRONY_CONFIGURE=(--disable-nts --without-gnutls --disable-sechash --without-nettle
                  --without-nss --without-tomcrypt --without-libcap --without-seccomp
                  --disable-readline --without-editline --disable-refclock --disable-phc
                  --disable-pps)

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# version PKG: the version of the source package that the candidate version of the binary
# package, which build.sh would download, was built from (not a binNMU's +bN). One
# apt-cache call answers for every package this script builds (apt-cache takes most of a
# second to start).
declare -A SOURCE_VERSION=()
load_versions() {
  local p v
  while read -r p v; do SOURCE_VERSION[$p]=$v; done < <(
    apt_cached "$DIR/.versions" apt-cache show --no-all-versions containerd crun chrony libkmod2 docker.io |
    awk '/^Package:/{p=$2; s=""} /^Source:/ && $3 ~ /^\(/ {gsub(/[()]/, "", $3); s=$3}
         /^Version:/{v=$2} /^$/ && p {print p, (s != "" ? s : v); p=""}
         END {if (p) print p, (s != "" ? s : v)}')
}

version() {
  [ -n "${SOURCE_VERSION[$1]:-}" ] ||
    { echo "from-source.sh: apt-cache knows no $1 package (apt-get update?)" >&2; exit 1; }
  echo "${SOURCE_VERSION[$1]}"
}

# fetch PKG VERSION: the source package unpacked in $DIR/PKG-VERSION, with apt checking the
# archive's signature and the files' hashes. The machine's apt sources name binary packages
# only, so this uses its own source list and package lists under BUILD_DIR and leaves
# /etc/apt alone.
fetch() {
  local pkg=$1 version=$2 src=$DIR/$1-$2
  [ -e "$src/.unpacked" ] && return
  local apt=$DIR/apt codename
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  mkdir -p "$apt/lists/partial" "$DIR/dl"
  cat > "$apt/sources.list" <<EOF
deb-src http://deb.debian.org/debian $codename main
deb-src http://deb.debian.org/debian $codename-updates main
deb-src http://deb.debian.org/debian-security $codename-security main
EOF
  # As root, into a directory apt's sandbox user may not write: download as root.
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "APT::Sandbox::User=root")
  log "apt-get source $pkg=$version"
  [ -e "$apt/.updated" ] || { apt-get "${opts[@]}" -qq update && touch "$apt/.updated"; }
  (cd "$DIR/dl" && apt-get "${opts[@]}" -qq source --download-only "$pkg=$version")
  local dsc=$DIR/dl/${pkg}_${version#*:}.dsc
  [ -f "$dsc" ] || { echo "from-source.sh: apt-get source left no $dsc" >&2; exit 1; }
  rm -rf "$src"
  dpkg-source --no-check -x "$dsc" "$src" >/dev/null
  touch "$src/.unpacked"
}

# go_build_depends SRC: the Go packages a source package builds against (its
# Build-Depends, minus the Debian packaging and man page tools).
go_build_depends() {
  awk '/^Build-Depends:/{p=1; sub(/^Build-Depends:/,"")} p&&/^[A-Z][A-Za-z-]*:/&&!/^Build-Depends:/{p=0} p' \
    "$1/debian/control" | tr ',' '\n' | sed 's/([^)]*)//g; s/\[[^]]*\]//g' | awk 'NF{print $1}' |
    grep -v -x -e 'debhelper-compat' -e 'dh-golang' -e 'go-md2man'
}

deps() {
  local cv
  cv=$(version containerd)
  fetch containerd "$cv"
  fetch crun "$(version crun)"
  fetch chrony "$(version chrony)"
  fetch kmod "$(version libkmod2)"
  local dv
  dv=$(version docker.io)
  fetch docker.io "$dv"
  local want=(golang-go "${CRUN_DEPS[@]}" "${KMOD_DEPS[@]}")
  mapfile -t -O ${#want[@]} want < <(go_build_depends "$DIR/containerd-$cv")
  # docker.io's Go libraries (its other Build-Depends are for cgo, tests and docs).
  mapfile -t -O ${#want[@]} want < <(go_build_depends "$DIR/docker.io-$dv" | grep '^golang-')
  # Some are virtual packages (dpkg-query cannot tell whether they are satisfied): let apt
  # decide, which costs a second when everything is there.
  log "apt-get install Go, a C toolchain and the packages containerd and docker build against (${#want[@]})"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

# pkg_versions PKG...: PKG=VERSION for each installed package (space-separated).
pkg_versions() {
  dpkg-query -W -f='${db:Status-Abbrev}${Package}=${Version}\n' "$@" 2>/dev/null |
    awk '/^ii/{print $2}' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'
}

# toolchain_c DEVPKG...: the C compiler and the -dev packages whose static libraries (or,
# for a shared library, whose crt files) the build links in.
toolchain_c() {
  echo "$(pkg_versions "gcc-$(gcc -dumpversion)" binutils); static: $(pkg_versions "$@")"
}

# toolchain_go [FILTER]: Go, and Debian's Go libraries the source in $src builds against
# (its Build-Depends matching FILTER): compiled into the binary.
toolchain_go() {
  local libs
  mapfile -t libs < <(go_build_depends "$src" | grep -e "${1:-.}" | grep -v -x golang-go)
  echo "$(go version | awk '{print $3}') ($(pkg_versions golang-go "golang-$(go env GOVERSION | sed 's/^go\([0-9]*\.[0-9]*\).*/\1/')-go")); static: $(pkg_versions "${libs[@]}")"
}

# prepare NAME SRCPKG BINPKG OPTIONS TOOLCHAIN OUTPUT...: set version, src, stamp and todo
# (the caller's locals) for source package SRCPKG at binary package BINPKG's version.
# TOOLCHAIN is a command printing the compilers and static libraries the build uses. todo
# is empty when every OUTPUT in $BIN exists and $BIN/.stamp-NAME says it was built from
# this version with these options and this toolchain by this script: a new compiler or a
# new version of a library it links in rebuilds it. Else todo is 1.
# (Called as a plain command, so that `set -e` stops the script on any failure in it.)
prepare() {
  local name=$1 srcpkg=$2 binpkg=$3 options=$4 toolchain=$5 f; shift 5
  version=$(version "$binpkg")
  src=$DIR/$srcpkg-$version
  fetch "$srcpkg" "$version"
  local tc
  # The toolchain's versions change only with what is installed.
  tc=$(apt_cached "$DIR/.toolchain-$name-$version" $toolchain)
  stamp="$version $options $(cat "${BASH_SOURCE[0]}" "$(dirname "${BASH_SOURCE[0]}")/lib.sh" | sha256sum | cut -c1-16) $(echo "$tc" | sha256sum | cut -c1-16)"
  todo=
  for f in "$@"; do [ -x "$BIN/$f" ] || todo=1; done
  [ "$(cat "$BIN/.stamp-$name" 2>/dev/null)" = "$stamp" ] || todo=1
  mkdir -p "$BIN"
  # What build.sh puts in the image's manifest: the source, and for each output its hash,
  # toolchain and static libraries (rewritten once the outputs are built).
  MANIFEST_TOOLCHAIN=$tc MANIFEST_OUTPUTS="$*"
  MANIFEST_SOURCE=$(printf 'source\t%s\t%s\t%s\tbuilt: %s' "$srcpkg" "$version" \
    "$(sha256sum < "$DIR/dl/${srcpkg}_${version#*:}.dsc" | cut -c1-64)" "$*")
  [ -n "$todo" ] || { write_manifest "$name"; return 0; }
  log "building $name $version ($options)"
}

# write_manifest NAME: $BIN/manifest-NAME, from what prepare recorded.
write_manifest() {
  local out
  {
    echo "$MANIFEST_SOURCE"
    for out in $MANIFEST_OUTPUTS; do
      printf 'build\t%s\t-\t%s\t%s\n' "$out" "$(sha256sum < "$BIN/$out" | cut -c1-64)" \
        "$MANIFEST_TOOLCHAIN"
    done
  } > "$BIN/manifest-$1.new"
  mv "$BIN/manifest-$1.new" "$BIN/manifest-$1"
}

# done_building NAME: the stamp and manifest of a build that just finished.
done_building() {
  echo "$stamp" > "$BIN/.stamp-$1"
  write_manifest "$1"
}

# logged NAME: run the shell commands on stdin in $src, their output to $DIR/NAME-build.log,
# which is shown if one fails.
logged() {
  (cd "$src" && bash -e) >"$DIR/$1-build.log" 2>&1 || { cat "$DIR/$1-build.log" >&2; exit 1; }
}

# install_stripped FILE OUTPUT [STRIP_OPTION]: $src/FILE, stripped, as $BIN/OUTPUT (0755).
install_stripped() {
  strip ${3:-} -o "$BIN/$2.new" "$src/$1"
  chmod 0755 "$BIN/$2.new"
  mv "$BIN/$2.new" "$BIN/$2"
}

# go_static GOPATH PKG CMD OUTPUT TAGS LDFLAGS: Go package PKG's ./cmd/CMD, built in GOPATH
# mode (Debian's Go libraries in /usr/share/gocode after GOPATH) without cgo, stripped, as
# $BIN/OUTPUT.
go_static() {
  (cd "$1/src/$2" &&
    CGO_ENABLED=0 GOPATH="$1:/usr/share/gocode" GO111MODULE=off GOFLAGS=-buildvcs=false \
      GOCACHE="$DIR/go-cache" go build -trimpath -tags "$5" -ldflags "-s -w -buildid= $6" \
      -o "$BIN/$4.new" "./cmd/$3")
  mv "$BIN/$4.new" "$BIN/$4"
}

build_containerd() {
  local version src stamp todo
  prepare containerd containerd containerd "tags: $TAGS" toolchain_go containerd containerd-shim-runc-v2
  [ -n "$todo" ] || return 0
  # Debian builds it in GOPATH mode against /usr/share/gocode; so does this.
  local gopath=$DIR/gopath
  mkdir -p "$gopath/src/${GOPKG%/*}"
  ln -sfn "$src" "$gopath/src/$GOPKG"
  local ldflags="-X $GOPKG/version.Version=${version%%-*} -X $GOPKG/version.Revision=$version+ros" cmd
  for cmd in containerd containerd-shim-runc-v2; do
    go_static "$gopath" "$GOPKG" "$cmd" "$cmd" "$TAGS" "$ldflags"
  done
  done_building containerd
}

# build_docker: dockerd, the docker CLI and docker-proxy. Debian's source package holds the
# engine, the CLI, libnetwork and swarmkit side by side; as debian/rules does, they go into
# a GOPATH of their own (with /usr/share/gocode, Debian's Go libraries, after it: not the
# containerd source above, which would shadow Debian's packaged containerd library).
build_docker() {
  local version src stamp todo
  prepare docker docker.io docker.io "tags: $DOCKER_TAGS" "toolchain_go ^golang-" dockerd docker docker-proxy
  [ -n "$todo" ] || return 0
  local gopath=$DIR/gopath-docker upstream=${version%%+*} part
  mkdir -p "$gopath/src/github.com/docker"
  for part in engine:docker cli:cli libnetwork:libnetwork swarmkit:swarmkit; do
    ln -sfn "$src/${part%%:*}" "$gopath/src/github.com/docker/${part#*:}"
  done
  local engine_commit cli_commit built
  engine_commit=$(cd "$src" && bash debian/helpers/gitcommit.sh engine "$upstream")
  cli_commit=$(cd "$src" && bash debian/helpers/gitcommit.sh cli "$upstream")
  built=$(date -u -d "@$(dpkg-parsechangelog -l "$src/debian/changelog" -STimestamp)" +%Y-%m-%dT%H:%M:%SZ)
  local v=github.com/docker/docker/dockerversion c=github.com/docker/cli/cli/version
  local d=github.com/docker
  go_static "$gopath" $d/docker dockerd dockerd "$DOCKER_TAGS" \
    "-X $v.Version=$upstream -X $v.GitCommit=$engine_commit -X $v.BuildTime=$built -X $v.IAmStatic=true"
  go_static "$gopath" $d/cli docker docker "" \
    "-X $c.Version=$upstream -X $c.GitCommit=$cli_commit -X $c.BuildTime=$built"
  go_static "$gopath" $d/libnetwork proxy docker-proxy "" ""
  done_building docker
}

# hardening FLAG: Debian's hardening flags (dpkg-buildflags), but not PIE, which a static
# link does not take. Asked in $src, so that -ffile-prefix-map maps the source directory.
hardening() {
  (cd "$src" && DEB_BUILD_MAINT_OPTIONS="hardening=+all,-pie" dpkg-buildflags --get "$1")
}

build_crun() {
  local version src stamp todo
  prepare crun crun crun "static: ${CRUN_CONFIGURE[*]}" \
    "toolchain_c libc6-dev libgcc-$(gcc -dumpversion)-dev libcap-dev libseccomp-dev" crun
  [ -n "$todo" ] || return 0
  # crun's own sources include <yajl/yajl_tree.h>, but its Makefile puts the embedded
  # yajl's headers on the include path of libocispec only (upstream crun fixed it later):
  # without this, the build finds them only where a libyajl-dev happens to be installed.
  logged crun <<EOF
./configure -q ${CRUN_CONFIGURE[*]} CFLAGS="$(hardening CFLAGS)" \
  CPPFLAGS="$(hardening CPPFLAGS) -I$src/libocispec/yajl/src/headers" \
  LDFLAGS="$(hardening LDFLAGS)"
make -s -j$(nproc) LDFLAGS="-all-static $(hardening LDFLAGS)"
EOF
  install_stripped crun crun
  done_building crun
}

build_chrony() {
  local version src stamp todo
  prepare chrony chrony chrony "static: ${CHRONY_CONFIGURE[*]}" \
    "toolchain_c libc6-dev libgcc-$(gcc -dumpversion)-dev" chronyd
  [ -n "$todo" ] || return 0
  # glibc's static getpwnam and getaddrinfo read /etc/passwd, /etc/hosts and DNS without
  # loading NSS modules when there is no /etc/nsswitch.conf (the ntp image has none).
  logged chrony <<EOF
CFLAGS="$(hardening CFLAGS) $(hardening CPPFLAGS)" LDFLAGS="-static $(hardening LDFLAGS)" \
  ./configure ${CHRONY_CONFIGURE[*]}
make -j$(nproc) chronyd
EOF
  install_stripped chronyd chronyd
  done_building chrony
}

build_kmod() {
  local version src stamp todo
  # A shared library: it links libc dynamically (the static part is libc6-dev's crt files).
  prepare kmod kmod libkmod2 "${KMOD_CONFIGURE[*]}" "toolchain_c libc6-dev" libkmod.so.2
  [ -n "$todo" ] || return 0
  # As kmod's autogen.sh does without gtk-doc: an empty gtk-doc.make.
  logged kmod <<EOF
mkdir -p libkmod/docs && touch libkmod/docs/gtk-doc.make
autoreconf -fi
CFLAGS="$(hardening CFLAGS)" CPPFLAGS="$(hardening CPPFLAGS)" LDFLAGS="$(hardening LDFLAGS)" \
  ./configure -q --prefix=/usr ${KMOD_CONFIGURE[*]}
make -j$(nproc) libkmod/libkmod.la
EOF
  install_stripped libkmod/.libs/libkmod.so.2 libkmod.so.2 --strip-unneeded
  done_building kmod
}

load_versions
case $MODE in
  deps) deps ;;
  build) build_containerd; build_crun; build_chrony; build_kmod; build_docker ;;
  *) echo "usage: from-source.sh deps|build BUILD_DIR" >&2; exit 2 ;;
esac
