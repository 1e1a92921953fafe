#!/bin/bash
# The Dockerfile, proven without a Docker daemon.
#   image.sh build TMIDB.deb   buildah (chroot isolation, vfs storage) builds the
#                              Dockerfile over a debootstrap-made bookworm base; the
#                              package stage is this .deb (--build-context: there is no
#                              Rust image here, and the release build is not done twice);
#                              every other stage runs as written (SeaweedFS from PyPI).
#   image.sh run               runs the image's root filesystem with tmidb-supervisor as
#                              PID 1 of new PID, mount and network namespaces, as the
#                              image's user, until the HEALTHCHECK passes; checks the api
#                              listens on 0.0.0.0, `tmidb-cli status`, then SIGTERM and an
#                              orderly exit 0 within the documented grace period.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${BUILD_CACHE:-/var/cache/tmidb-build}
image=localhost/tmidb:test
base_image=localhost/tmidb-bookworm-base
bh() { buildah --storage-driver=vfs "$@"; }
step() { printf '>> %s (%ds)\n' "$*" "$SECONDS"; }

if [ "$(id -u)" != 0 ]; then
    echo "SKIP image test: buildah's chroot isolation and namespaces need root"
    exit 0
fi

build() {
    local deb work
    deb=$(realpath "$1")
    if ! bh inspect --type image "$base_image" >/dev/null 2>&1; then
        local tree ctr
        tree=$(BUILD_CACHE=$cache "$here/base.sh" minimal)
        step "importing the debootstrap tree as $base_image (once)"
        ctr=$(bh from scratch)
        tar -C "$tree" --exclude=./.complete -cf "$cache/bookworm-minimal.tar" .
        bh add "$ctr" "$cache/bookworm-minimal.tar" / >/dev/null
        rm -f "$cache/bookworm-minimal.tar"
        bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$ctr"
        bh commit -q "$ctr" "$base_image" >/dev/null
        bh rm "$ctr" >/dev/null
    fi
    work=$(mktemp -d /var/tmp/tmidb-image.XXXXXX)
    trap 'rm -rf "$work"' RETURN
    mkdir -p "$work/package/deb"
    cp "$deb" "$work/package/deb/"
    # The host's CA bundle: HTTPS from this kind of machine may pass a proxy with its own
    # CA (pip in the seaweedfs stage would refuse PyPI's certificate otherwise).
    step "buildah bud the Dockerfile"
    local t0=$SECONDS
    bh bud --format=docker --isolation=chroot --network=host --layers=false \
        --build-arg BASE_IMAGE=$base_image \
        --build-context package="$work/package" \
        --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        -t "$image" -f "$repo/Dockerfile" "$repo" >"$work/bud.log" 2>&1 \
        || { tail -40 "$work/bud.log"; exit 1; }
    echo "   built in $((SECONDS - t0)) s; $(bh images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep "$image")"
    # Old images of earlier runs only take space.
    bh rmi --prune >/dev/null 2>&1 || true
}

run() {
    local ctr mnt pid user cmd t0 rc=0 health
    ctr=$(bh from "$image")
    mnt=$(bh mount "$ctr")
    user=$(bh inspect --format '{{.OCIv1.Config.User}}' "$image")
    health=$(bh inspect --format '{{range .Docker.Config.Healthcheck.Test}}{{.}} {{end}}' "$image" | sed 's/^CMD-SHELL //')
    cleanup() {
        [ -n "${pid:-}" ] && kill -KILL "$pid" 2>/dev/null
        bh umount "$ctr" >/dev/null 2>&1 || true
        bh rm "$ctr" >/dev/null 2>&1 || true
    }
    trap cleanup RETURN
    # Empty home as in a fresh volume, owned by the image's user.
    step "starting the image's entrypoint as PID 1 (user $user)"
    local entry
    entry=$(bh inspect --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$image")
    local envs
    envs=$(bh inspect --format '{{range .OCIv1.Config.Env}}{{.}} {{end}}' "$image")
    unshare --fork --pid --mount --net --kill-child --mount-proc="$mnt/proc" \
        sh -c "ip link set lo up && mount --rbind /dev '$mnt/dev' && exec chroot --userspec='$user:$user' '$mnt' env -i $envs $entry" \
        >"$mnt/tmp/supervisor.log" 2>&1 &
    local unshare_pid=$!
    for _ in $(seq 1 50); do
        pid=$(pgrep -P "$unshare_pid" || true)
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || { echo "no PID 1 found"; exit 1; }
    inside() { nsenter -t "$pid" -n -m -- chroot --userspec="$user:$user" "$mnt" env -i $envs "$@"; }
    t0=$SECONDS
    until inside sh -c "$health" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || [ $((SECONDS - t0)) -gt 240 ]; then
            echo "the HEALTHCHECK never passed"; tail -40 "$mnt/tmp/supervisor.log"; exit 1
        fi
        sleep 1
    done
    echo "   HEALTHCHECK ($health) passed after $((SECONDS - t0)) s"
    local pid1
    pid1=$(inside sh -c 'cat /proc/1/cmdline | tr "\0" " "')
    case $pid1 in /usr/bin/tmidb-supervisor*) echo "   PID 1 in the container: $pid1" ;;
        *) echo "PID 1 is not the supervisor: $pid1"; exit 1 ;; esac
    nsenter -t "$pid" -n ss -ltnH | awk '{print $4}' | grep -qx '0.0.0.0:28080' \
        || { echo "the api does not listen on 0.0.0.0:28080"; nsenter -t "$pid" -n ss -ltn; exit 1; }
    echo "   api listens on 0.0.0.0:28080, ingest on $(nsenter -t "$pid" -n ss -ltnH | awk '{print $4}' | grep ':28081$')"
    local status
    status=$(inside tmidb-cli status)
    echo "$status" | sed 's/^/   /'
    echo "$status" | awk 'NR>1 && $2 != "ready" && $2 != "exited" {bad=1} END {exit bad}' \
        || { echo "a unit is not ready"; exit 1; }
    step "SIGTERM to PID 1"
    t0=$SECONDS
    kill -TERM "$pid"
    wait "$unshare_pid" || rc=$?
    pid=
    echo "   orderly stop in $((SECONDS - t0)) s, exit status $rc"
    [ "$rc" = 0 ] || { tail -30 "$mnt/tmp/supervisor.log"; exit 1; }
    [ $((SECONDS - t0)) -lt 120 ] || { echo "the stop took longer than the documented --stop-timeout 120"; exit 1; }
    step "image test passed"
}

case ${1:-} in
    build) build "$2" ;;
    run) run ;;
    *) echo "usage: image.sh build TMIDB.deb | run" >&2; exit 2 ;;
esac
