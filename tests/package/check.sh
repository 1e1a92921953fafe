#!/bin/bash
# Runs inside the booted package tree (tmidb-check.service, after tmidb.service); every
# check writes `ok NAME` or `FAIL NAME: why` to /check/results, read by run.sh.
exec >/check/log 2>&1
set -u
results=/check/results
API=http://127.0.0.1:28080
INGEST=http://127.0.0.1:28081
ok() { echo "ok $1" >>"$results"; }
fail() { echo "FAIL $1: $(echo "$2" | tr '\n' ' ' | cut -c1-600)" >>"$results"; }
# check NAME COMMAND...: ok when the command succeeds.
check() {
    local name=$1 out
    shift
    out=$("$@" 2>&1)
    local rc=$?
    printf '== %s (exit %d)\n%s\n' "$name" "$rc" "$out"
    if [ $rc = 0 ]; then ok "$name"; else fail "$name" "$out"; fi
}
# Processes of the platform still alive (the supervisor, its units, their children).
leftovers() {
    local p c
    for p in /proc/[0-9]*; do
        c=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        case $c in
            *tmidb-supervisor* | */usr/libexec/tmidb/* | *"/var/lib/tmidb/"*) echo "${p#/proc/}: $c" ;;
        esac
    done
}
wait_active() {
    for _ in $(seq 1 150); do
        [ "$(systemctl is-active tmidb)" = active ] && return 0
        sleep 2
    done
    systemctl status tmidb --no-pager | tail -20
    return 1
}
statuses_ready() {
    # Every unit ready or exited (oneshots), SeaweedFS skipped because weed is absent.
    local s
    s=$(tmidb-cli status) || return 1
    echo "$s"
    echo "$s" | awk 'NR>1 && $2 != "ready" && $2 != "exited" && !($1 ~ /^seaweedfs/ && $2 == "skipped") {bad=1} END {exit bad}' || return 1
    echo "$s" | grep -E '^seaweedfs +skipped .*weed' >/dev/null
}
login() {
    curl -fsS -X POST $API/api/v1/auth/login -H 'Content-Type: application/json' \
        -d "{\"username\":\"admin\",\"password\":\"$(cat /var/lib/tmidb/secrets/admin.password)\"}" | jq -er .token
}
push_and_query() {
    local token H write n
    token=$(login) || return 1
    H="Authorization: Bearer $token"
    curl -fsS -X POST $API/api/v1/categories -H "$H" -H 'Content-Type: application/json' \
        -d '{"name":"weather","fields":[{"name":"temp","type":"float","required":true}]}' >/dev/null || return 1
    write=$(curl -fsS -X POST $API/api/v1/tokens -H "$H" -H 'Content-Type: application/json' \
        -d '{"name":"package-check","scopes":["write:weather"]}' | jq -er .token) || return 1
    curl -fsS -X POST $INGEST/ingest/weather -H "Authorization: Bearer $write" \
        -H 'Content-Type: application/json' -d '[{"target":"station-1","temp":20.5}]' || return 1
    for _ in $(seq 1 50); do
        n=$(curl -fsS "$API/api/v1/categories/weather/records?target=station-1" -H "$H" | jq '.records | length')
        [ "$n" = 1 ] && return 0
        sleep 0.2
    done
    echo "the pushed record never became queryable (records: $n)"
    return 1
}
record_kept() {
    local token n
    token=$(login) || return 1
    n=$(curl -fsS "$API/api/v1/categories/weather/records?target=station-1" -H "Authorization: Bearer $token" \
        | jq '[.records[] | select(.temp == 20.5)] | length')
    [ "$n" = 1 ] || { echo "records with temp 20.5: $n"; return 1; }
}
journal_once() {
    # The unified stream is not also on stdout: no JSON record lines from the service's
    # stdout; PostgreSQL's lines are in the journal under their own identifier.
    local dup pg
    dup=$(journalctl -b -u tmidb -o cat | grep -c '^{"ts"')
    pg=$(journalctl -b -t postgresql -o cat | wc -l)
    echo "JSON lines from stdout: $dup, postgresql lines: $pg"
    [ "$dup" = 0 ] && [ "$pg" -gt 0 ]
}
nothing_left() {
    local l
    l=$(leftovers)
    [ -z "$l" ] || { echo "still running: $l"; return 1; }
}

security() {
    # systemd's own assessment of the sandbox: exposure at most 3.0 ("OK").
    local line score
    line=$(systemd-analyze security tmidb.service --no-pager | tail -1)
    echo "$line"
    score=$(echo "$line" | grep -oE '[0-9]+\.[0-9]+' | head -1)
    awk -v s="$score" 'BEGIN {exit !(s != "" && s <= 3.0)}'
}

check "service active" wait_active
verify() {
    local out
    out=$(systemd-analyze verify --man=no /lib/systemd/system/tmidb.service 2>&1)
    [ -z "$out" ] || { echo "$out"; return 1; }
}
check "systemd-analyze verify tmidb.service: no finding" verify
check "systemd-analyze security: $(systemd-analyze security tmidb.service --no-pager | tail -1)" security
check "readyz answers" curl -fsS $API/readyz
check "systemctl reload (validated by tmidb-cli reload)" systemctl reload tmidb
check "tmidb-cli status: every unit ready, seaweedfs skipped" statuses_ready
check "a record pushed through the ingest port is queryable" push_and_query
check "each line in the journal once" journal_once
# Debian's own cluster and nats-server, started by their packages, run beside tmiDB on
# their standard ports: no clash.
debian_services_active() {
    # `is-active A B` is 0 when either is: ask each, for up to a minute.
    for _ in $(seq 1 60); do
        if systemctl is-active --quiet postgresql@15-main && systemctl is-active --quiet nats-server; then
            systemctl is-active postgresql@15-main nats-server
            return 0
        fi
        sleep 1
    done
    systemctl is-active postgresql@15-main nats-server
    return 1
}
check "Debian's postgresql@15-main (5432) and nats-server (4222) run beside it" debian_services_active
check "systemctl stop" systemctl stop tmidb
check "nothing left running after stop" nothing_left
check "starts again on its data" systemctl start tmidb
check "the record survived the restart" record_kept

# Upgrade: an operator's edits to conffiles stay, the service restarts, data stays.
echo "# edited by the operator" >>/etc/tmidb/units/api.unit.toml
echo "# edited by the operator" >>/etc/tmidb/tmidb.toml
before=$(systemctl show -p MainPID --value tmidb)
check "upgrade to the current build" env DEBIAN_FRONTEND=noninteractive apt-get install -y -o Dpkg::Options::=--force-confold /debs/current.deb
check "upgraded version installed" sh -c "dpkg-query -W -f '\${Version}' tmidb | grep -v previous"
after=$(systemctl show -p MainPID --value tmidb)
check "service restarted by the upgrade (MainPID $before -> $after)" test "$before" != "$after" -a "$after" != 0
check "active after the upgrade" wait_active
check "edited unit file kept" grep -q '^# edited by the operator' /etc/tmidb/units/api.unit.toml
check "edited tmidb.toml kept" grep -q '^# edited by the operator' /etc/tmidb/tmidb.toml
check "data kept across the upgrade" record_kept

# A unit that can never start: `systemctl start` fails at once with the reason (not
# after TimeoutStartSec), and nothing is left running.
start_fails_fast() {
    local t0=$SECONDS status
    systemctl stop tmidb
    printf '[service]\ntype = "notify"\ncommand = ["/bin/false"]\n[restart]\npolicy = "no"\n' \
        >/etc/tmidb/units/broken.unit.toml
    if systemctl start tmidb; then echo "start succeeded"; return 1; fi
    status=$(systemctl show -p StatusText --value tmidb)
    echo "failed after $((SECONDS - t0)) s; StatusText: $status"
    rm /etc/tmidb/units/broken.unit.toml
    systemctl stop tmidb
    systemctl reset-failed tmidb
    [ $((SECONDS - t0)) -lt 60 ] && echo "$status" | grep -q 'broken failed before every unit was ready'
}
check "a unit that cannot start fails systemctl start at once" start_fails_fast
check "nothing left running after the failed start" nothing_left

check "purge" env DEBIAN_FRONTEND=noninteractive apt-get purge -y tmidb
check "nothing left running after purge" nothing_left
check "purge removed /var/lib/tmidb" test ! -e /var/lib/tmidb
check "purge removed /etc/tmidb" test ! -e /etc/tmidb
check "purge removed the service" test ! -e /lib/systemd/system/tmidb.service
ok "all checks ran"
