#!/bin/bash
# containerd and its runc v2 shim, built from Debian's source package: the same version as
# Debian's containerd binary package, with Debian's patches (security fixes included),
# against Debian's Go libraries, but without the plugins rOS never loads (the CRI for
# Kubernetes; the btrfs, devmapper, zfs and aufs snapshotters). Debian's binary has them all
# compiled in, and every containerd start pays for their code: 48 MB against 29 MB, and
# 12.7 MB against 8.6 MB compressed (bench/RESULTS.md). The system containerd and the user
# engine's containerd are this one binary.
#
# Usage: initramfs/containerd.sh deps BUILD_DIR    fetch the source, install Go and the build
#                                                  dependencies it names (apt-get, as root)
#        initramfs/containerd.sh build BUILD_DIR   -> BUILD_DIR/containerd/bin/containerd
#                                                     and .../containerd-shim-runc-v2
set -euo pipefail

MODE=${1:?usage: containerd.sh deps|build BUILD_DIR}
BUILD=$(realpath -m "${2:-build}")
DIR=$BUILD/containerd
PKG=github.com/containerd/containerd
# Build tags that leave plugins out (cmd/containerd/builtins_*.go). The config written by
# PID 1 disables the same plugins for a containerd that has them.
TAGS="no_cri no_btrfs no_devmapper no_zfs no_aufs"

log() { echo "==> $*"; }

# The candidate version of the binary package, which initramfs/build.sh would download.
VERSION=$(apt-cache show --no-all-versions containerd 2>/dev/null | awk '/^Version:/{print $2; exit}')
[ -n "$VERSION" ] || { echo "containerd.sh: apt-cache knows no containerd package (apt-get update?)" >&2; exit 1; }
SRC=$DIR/src-$VERSION

# fetch: the source package, with apt checking the archive's signature and the files'
# hashes. The machine's apt sources name binary packages only, so this uses its own
# source list and package lists under BUILD_DIR and leaves /etc/apt alone.
fetch() {
  [ -e "$SRC/.unpacked" ] && return
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
  log "apt-get source containerd=$VERSION"
  apt-get "${opts[@]}" -qq update
  (cd "$DIR/dl" && apt-get "${opts[@]}" -qq source --download-only "containerd=$VERSION")
  local dsc=$DIR/dl/containerd_${VERSION#*:}.dsc
  [ -f "$dsc" ] || { echo "containerd.sh: apt-get source left no $dsc" >&2; exit 1; }
  rm -rf "$SRC"
  dpkg-source --no-check -x "$dsc" "$SRC" >/dev/null
  touch "$SRC/.unpacked"
}

# build_depends: the Go packages the source package builds against (its Build-Depends,
# minus the Debian packaging and man page tools).
build_depends() {
  awk '/^Build-Depends:/{p=1; sub(/^Build-Depends:/,"")} p&&/^[A-Z][A-Za-z-]*:/&&!/^Build-Depends:/{p=0} p' \
    "$SRC/debian/control" | tr ',' '\n' | sed 's/([^)]*)//g; s/\[[^]]*\]//g' | awk 'NF{print $1}' |
    grep -v -x -e 'debhelper-compat' -e 'dh-golang' -e 'go-md2man'
}

deps() {
  fetch
  local want=(golang-go)
  mapfile -t -O 1 want < <(build_depends)
  # Some are virtual packages (dpkg-query cannot tell whether they are satisfied): let apt
  # decide, which costs a second when everything is there.
  log "apt-get install golang-go and the $((${#want[@]} - 1)) packages containerd builds against"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

build() {
  fetch
  local bin=$DIR/bin stamp="$VERSION $TAGS $(sha256sum "$0" | cut -c1-16)"
  if [ -x "$bin/containerd" ] && [ -x "$bin/containerd-shim-runc-v2" ] &&
     [ "$(cat "$bin/.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  log "building containerd $VERSION (tags: $TAGS)"
  # Debian builds it in GOPATH mode against /usr/share/gocode; so does this.
  local gopath=$DIR/gopath
  mkdir -p "$gopath/src/${PKG%/*}" "$bin"
  ln -sfn "$SRC" "$gopath/src/$PKG"
  local ldflags="-s -w -buildid= -X $PKG/version.Version=${VERSION%%-*} -X $PKG/version.Revision=$VERSION+ros"
  (cd "$gopath/src/$PKG" &&
    for cmd in containerd containerd-shim-runc-v2; do
      GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOFLAGS=-buildvcs=false \
        GOCACHE="$DIR/go-cache" go build -trimpath -tags "$TAGS" -ldflags "$ldflags" \
        -o "$bin/$cmd.new" "./cmd/$cmd"
      mv "$bin/$cmd.new" "$bin/$cmd"
    done)
  echo "$stamp" > "$bin/.stamp"
}

case $MODE in
  deps) deps ;;
  build) build ;;
  *) echo "usage: containerd.sh deps|build BUILD_DIR" >&2; exit 2 ;;
esac
