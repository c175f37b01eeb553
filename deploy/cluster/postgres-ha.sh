#!/usr/bin/env bash
# Postgres with automatic failover on this machine, from Debian packages, beside (never
# touching) the machine's own Postgres: Patroni runs a primary and a standby with
# synchronous replication, etcd holds the leader lock, and HAProxy is the one address
# clients use (it sends connections to whichever node Patroni's REST API calls primary).
# Why Patroni and not pg_auto_failover: deploy/README.md, "Postgres failover".
#
#   deploy/cluster/postgres-ha.sh up            etcd, both nodes, HAProxy; waits for a primary and a sync standby
#   deploy/cluster/postgres-ha.sh down          stop everything and delete the data
#   deploy/cluster/postgres-ha.sh url           the client URL (through HAProxy)
#   deploy/cluster/postgres-ha.sh leader        the primary's node name (pg1 or pg2)
#   deploy/cluster/postgres-ha.sh switchover    planned: hand the primary role to the standby
#   deploy/cluster/postgres-ha.sh kill NAME     unplanned: SIGKILL node NAME (Patroni and its Postgres), as a lost machine
#   deploy/cluster/postgres-ha.sh start NAME    start node NAME again (it rejoins as a standby)
#   deploy/cluster/postgres-ha.sh status        patronictl list
#
# Ports: HAProxy on PG_HA_PORT_BASE (default 5440), node N's Postgres on base+N and its
# REST API on base+3000+N, etcd on base+3010 (clients) and base+3011 (peers).
# Directory: PG_HA_DIR (default /tmp/collections-postgres-ha). Trust authentication on
# 127.0.0.1 only: a local test rig, not a production configuration.
set -euo pipefail

dir=${PG_HA_DIR:-/tmp/collections-postgres-ha}
base=${PG_HA_PORT_BASE:-5440}
scope=${PG_HA_SCOPE:-collections-ha-$base}
etcd_client=$((base + 3010))
etcd_peer=$((base + 3011))

ensure_installed() {
    local missing=()
    command -v patroni > /dev/null || missing+=(patroni)
    command -v etcd > /dev/null || missing+=(etcd-server)
    command -v etcdctl > /dev/null || missing+=(etcd-client)
    command -v haproxy > /dev/null || missing+=(haproxy)
    ls /usr/lib/postgresql/*/bin/postgres > /dev/null 2>&1 || missing+=(postgresql)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        # policy-rc.d or not, the packages' own services are not ours to run: stopped below.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }

as_postgres() { runuser -u postgres -- "$@"; }

node_port() { case "$1" in pg1) echo $((base + 1)) ;; pg2) echo $((base + 2)) ;; esac; }
rest_port() { case "$1" in pg1) echo $((base + 3001)) ;; pg2) echo $((base + 3002)) ;; esac; }

write_node_config() {
    local name=$1 port rest
    port=$(node_port "$name")
    rest=$(rest_port "$name")
    mkdir -p "$dir/$name"
    cat > "$dir/$name/patroni.yml" <<YML
scope: $scope
name: $name
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:$rest
  connect_address: 127.0.0.1:$rest
etcd3:
  hosts: 127.0.0.1:$etcd_client
bootstrap:
  dcs:
    # A primary that stops renewing its lock loses it after ttl seconds; the standby then
    # takes over (failover within about ttl + loop_wait).
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    # A commit returns only once the standby has it: a failover loses nothing committed.
    # Not strict: with the standby gone the primary keeps accepting writes (alone).
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 200
        synchronous_commit: "on"
        shared_buffers: 64MB
  initdb:
    - encoding: UTF8
    - data-checksums
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication replicator 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$port
  connect_address: 127.0.0.1:$port
  data_dir: $dir/$name/data
  bin_dir: $(pg_bin)
  pgpass: $dir/$name/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    unix_socket_directories: $dir/$name
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
YML
    chown -R postgres:postgres "$dir/$name"
    chmod 700 "$dir/$name"
}

start_etcd() {
    mkdir -p "$dir/etcd"
    if [ -f "$dir/etcd.pid" ] && kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then return; fi
    setsid etcd --name e1 --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_client" \
        --advertise-client-urls "http://127.0.0.1:$etcd_client" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "e1=http://127.0.0.1:$etcd_peer" \
        > "$dir/etcd.log" 2>&1 < /dev/null &
    echo $! > "$dir/etcd.pid"
    for _ in $(seq 1 100); do
        ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$etcd_client" endpoint health > /dev/null 2>&1 && return
        sleep 0.2
    done
    echo "etcd did not start: $(tail -5 "$dir/etcd.log")" >&2
    exit 1
}

start_node() {
    local name=$1
    if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then return; fi
    write_node_config "$name"
    cd "$dir/$name"
    setsid runuser -u postgres -- patroni "$dir/$name/patroni.yml" \
        > "$dir/$name/patroni.log" 2>&1 < /dev/null &
    echo $! > "$dir/$name.pid"
    cd - > /dev/null
}

start_haproxy() {
    if [ -f "$dir/haproxy.pid" ] && kill -0 "$(cat "$dir/haproxy.pid")" 2>/dev/null; then return; fi
    cat > "$dir/haproxy.cfg" <<CFG
global
    maxconn 400
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen primary
    bind 127.0.0.1:$base
    # Only the node whose Patroni says "primary" (200 on /primary) takes connections; when
    # that changes, the old node's sessions are cut so that clients reconnect here.
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
    server pg1 127.0.0.1:$(node_port pg1) maxconn 200 check port $(rest_port pg1)
    server pg2 127.0.0.1:$(node_port pg2) maxconn 200 check port $(rest_port pg2)
CFG
    haproxy -D -f "$dir/haproxy.cfg" -p "$dir/haproxy.pid" > /dev/null 2>&1 < /dev/null
}

patronictl_() { patronictl -c "$dir/pg1/patroni.yml" "$@"; }

leader() {
    curl -fsS "http://127.0.0.1:$(rest_port pg1)/cluster" 2>/dev/null \
        || curl -fsS "http://127.0.0.1:$(rest_port pg2)/cluster"
}

leader_name() {
    leader | python3 -c 'import json,sys; print(next(m["name"] for m in json.load(sys.stdin)["members"] if m["role"] == "leader"))'
}

# Waits until one node is primary, the other a streaming synchronous standby, and a query
# through HAProxy reaches the primary.
wait_healthy() {
    local timeout=${1:-120}
    for _ in $(seq 1 $((timeout * 2))); do
        if leader 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)["members"]
roles = sorted(x["role"] for x in m)
ok = roles == ["leader", "sync_standby"] and all(x["state"] in ("running", "streaming") for x in m)
sys.exit(0 if ok else 1)' 2>/dev/null \
            && psql -X -qAt "$(url)" -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null | grep -q t; then
            return 0
        fi
        sleep 0.5
    done
    echo "no healthy primary + sync standby within ${timeout}s" >&2
    leader >&2 || true
    tail -20 "$dir"/pg*/patroni.log >&2 || true
    return 1
}

url() { echo "postgres://postgres:postgres@127.0.0.1:$base/postgres"; }

up() {
    ensure_installed
    mkdir -p "$dir"
    chmod 755 "$dir"
    start_etcd
    start_node pg1
    # The first node bootstraps the cluster; the second clones it once it is primary.
    for _ in $(seq 1 120); do
        curl -fsS "http://127.0.0.1:$(rest_port pg1)/primary" > /dev/null 2>&1 && break
        sleep 0.5
    done
    start_node pg2
    start_haproxy
    wait_healthy 180
    echo "Postgres HA up: $(url) (primary $(leader_name))"
}

kill_node() {
    local name=$1 pid
    pid=$(cat "$dir/$name.pid")
    # Patroni and every Postgres process of the node's data directory, at once.
    local pids
    pids="$pid $(pgrep -f -- "-D $dir/$name/data" || true) $(pgrep -f "postgres: $scope: $name" || true)"
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    for p in $(pgrep -u postgres -f "patroni $dir/$name/patroni.yml" || true); do kill -9 "$p" 2>/dev/null || true; done
    # Postgres processes whose postmaster died, found by their data directory.
    for p in $(pgrep -u postgres postgres || true); do
        if [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$dir/$name/data" ]; then kill -9 "$p" 2>/dev/null || true; fi
    done
}

down() {
    [ -d "$dir" ] || { echo "Postgres HA down"; return; }
    [ -f "$dir/haproxy.pid" ] && kill "$(cat "$dir/haproxy.pid")" 2>/dev/null || true
    for n in pg1 pg2; do
        if [ -f "$dir/$n.pid" ]; then
            kill -TERM "$(cat "$dir/$n.pid")" 2>/dev/null || true
        fi
    done
    sleep 2
    for n in pg1 pg2; do [ -f "$dir/$n.pid" ] && kill_node "$n"; done
    [ -f "$dir/etcd.pid" ] && kill -9 "$(cat "$dir/etcd.pid")" 2>/dev/null || true
    rm -rf "$dir"
    echo "Postgres HA down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    url) url ;;
    leader) leader_name ;;
    switchover)
        from=$(leader_name)
        to=$([ "$from" = pg1 ] && echo pg2 || echo pg1)
        patronictl_ switchover --leader "$from" --candidate "$to" --force > /dev/null
        echo "$to" ;;
    kill) kill_node "$2" ;;
    start) start_node "$2" ;;
    wait) wait_healthy "${2:-120}" ;;
    status) patronictl_ list ;;
    *) echo "usage: $0 up|down|url|leader|switchover|kill NAME|start NAME|wait [SECS]|status" >&2; exit 2 ;;
esac
