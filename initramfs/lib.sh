# shellcheck shell=bash
# Shell functions initramfs/build.sh and initramfs/from-source.sh share (sourced).

log() { echo "==> $*"; }

# apt_cached FILE COMMAND...: COMMAND's output, kept in FILE while apt's and dpkg's state
# (package lists, sources, preferences, what is installed) is what it was when it ran:
# answers from apt-cache and dpkg-query cannot change without one of them changing.
apt_cached() {
  local file=$1 key; shift
  # (stat fails for the paths a machine does not have, and says nothing of them.)
  key=$( (echo "$*"; stat -c '%n %Y %s' /var/lib/apt/lists/*_Packages* /var/lib/dpkg/status \
    /etc/apt/sources.list /etc/apt/sources.list.d/* /etc/apt/preferences* 2>/dev/null || true) |
    sha256sum | cut -c1-64)
  if [ "$(head -1 "$file" 2>/dev/null)" != "$key" ]; then
    mkdir -p "$(dirname "$file")"
    { echo "$key"; "$@"; } > "$file.new" || { rm -f "$file.new"; return 1; }
    mv "$file.new" "$file"
  fi
  tail -n +2 "$file"
}
