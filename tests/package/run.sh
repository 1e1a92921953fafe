#!/bin/bash
# The Debian package as an operator meets it: installed with apt into a Debian bookworm
# tree made by debootstrap, then systemd booted there (systemd-nspawn --boot, its own
# network namespace). Inside, check.sh runs after tmidb.service and checks: the service
# is active, /readyz answers, every unit is ready (SeaweedFS skipped: not installed), a
# record pushed through the ingest port is queryable, each line is in the journal once,
# `systemctl stop` leaves nothing running, an upgrade to CURRENT keeps data and edits and
# restarts the service, purge removes what the package made.
#
# Usage (root): BUILD_CACHE=DIR tests/package/run.sh PREVIOUS.deb CURRENT.deb
# The debootstrap tree and apt's downloads are cached in BUILD_CACHE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prev=$(realpath "$1")
cur=$(realpath "$2")
cache=${BUILD_CACHE:-/var/cache/tmidb-build}
step() { printf '>> %s (%ds)\n' "$*" "$SECONDS"; }

if [ "$(id -u)" != 0 ]; then
    echo "SKIP package test: debootstrap, chroot and systemd-nspawn need root"
    exit 0
fi
base=$(BUILD_CACHE=$cache "$here/base.sh" systemd)

work=$(mktemp -d /var/tmp/tmidb-package.XXXXXX)
root=$work/root
cleanup() {
    for m in "$root/var/cache/apt/archives" "$root/proc" "$root/dev"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m"
    done
    rm -rf "$work"
}
trap cleanup EXIT

step "copying the cached bookworm tree"
cp -a "$base" "$root"
mkdir -p "$cache/apt-archives/partial" "$root/debs" "$root/check"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
cp "$prev" "$root/debs/previous.deb"
cp "$cur" "$root/debs/current.deb"

step "apt-get install ./$(basename "$prev") (pulls postgresql-15, nats-server)"
chroot "$root" apt-get update -qq
t0=$SECONDS
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /debs/previous.deb >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; exit 1; }
echo "   installed in $((SECONDS - t0)) s"
umount "$root/var/cache/apt/archives" "$root/proc" "$root/dev"

# Services start at boot from now on (the base tree forbids it during installs).
rm -f "$root/usr/sbin/policy-rc.d"
install -m 755 "$here/check.sh" "$root/usr/local/sbin/tmidb-check"
cat >"$root/etc/systemd/system/tmidb-check.service" <<'UNIT'
[Unit]
Description=tmiDB package checks
After=tmidb.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/tmidb-check
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/tmidb-check.service "$root/etc/systemd/system/multi-user.target.wants/tmidb-check.service"

step "booting systemd in the tree"
t0=$SECONDS
timeout 900 systemd-nspawn -q -D "$root" --boot --register=no --keep-unit --console=pipe \
    --private-network >"$work/boot.log" 2>&1 || true
echo "   boot, checks and poweroff took $((SECONDS - t0)) s"
if [ ! -s "$root/check/results" ]; then
    echo "no results: the checks did not run"; tail -50 "$work/boot.log"; exit 1
fi
cat "$root/check/results"
[ -z "${CHECK_LOG:-}" ] || cp "$root/check/log" "$CHECK_LOG"
if grep -q '^FAIL' "$root/check/results" || ! grep -q '^ok all checks ran' "$root/check/results"; then
    echo "---- check log"; cat "$root/check/log" || true
    exit 1
fi
step "package test passed"
