#!/bin/bash
# `make dev`: the whole stack from debug builds in HOME, with live reload.
#   - watchexec (crates.io, pinned in the Makefile) rebuilds on a change under src/,
#     templates/, sql/ or Cargo.toml;
#   - the supervisor runs with --watch-programs: a rebuilt binary restarts just the
#     running units that run it (api, data-manager, data-consumer), while PostgreSQL, NATS
#     and SeaweedFS keep running;
#   - editing a unit file under units/ reloads it, as always.
# Usage: packaging/dev.sh WATCHEXEC HOME
set -euo pipefail
watchexec=$1
home=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$home"
target/debug/tmidb-supervisor --home "$home" --units "$repo/units" --watch-programs &
sup=$!
trap 'kill -TERM $sup 2>/dev/null; wait $sup' EXIT
trap 'exit 0' INT TERM
echo ">> dev loop: edit the sources; \`target/debug/tmidb-cli --home $home status\` in another shell; Ctrl-C stops"
"$watchexec" --quiet --postpone --debounce 500ms \
    --watch src --watch templates --watch sql --watch Cargo.toml \
    --exts rs,stpl,toml,sql,css,js \
    -- cargo build --bins --quiet
