#!/bin/bash
# Prints the path of a cached Debian bookworm tree made by debootstrap (minbase), making
# it once: `minimal` (the container image's base) or `systemd` (booted by nspawn: systemd,
# dbus, curl, jq). Services never start inside it during installs (policy-rc.d exits 101).
set -euo pipefail
kind=$1
cache=${BUILD_CACHE:-/var/cache/tmidb-build}
tree=$cache/bookworm-$kind
case $kind in
    minimal) include=ca-certificates ;;
    systemd) include=ca-certificates,systemd,systemd-sysv,dbus,curl,jq ;;
    *) echo "usage: base.sh minimal|systemd" >&2; exit 2 ;;
esac
if [ ! -e "$tree/.complete" ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo ">> debootstrap bookworm ($kind) into $tree from $mirror (once, ~1-2 min)" >&2
    rm -rf "$tree.tmp"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include="$include" bookworm "$tree.tmp" "$mirror" >"$cache/debootstrap-$kind.log" 2>&1 \
        || { tail -20 "$cache/debootstrap-$kind.log" >&2; exit 1; }
    printf '#!/bin/sh\nexit 101\n' >"$tree.tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tree.tmp/usr/sbin/policy-rc.d"
    rm -rf "$tree.tmp/var/cache/apt/archives/"*.deb
    touch "$tree.tmp/.complete"
    rm -rf "$tree"
    mv "$tree.tmp" "$tree"
fi
echo "$tree"
