#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, from the Debian package, beside (never
# touching) the machine's own broker: own node names, ports, data and log directories,
# one cookie shared by the three.
#
#   deploy/cluster/rabbitmq-3.sh up       start the nodes and join them (idempotent)
#   deploy/cluster/rabbitmq-3.sh down     stop them (kill -9 if they do not stop) and delete their data
#   deploy/cluster/rabbitmq-3.sh start N  start node N again (after a kill) and wait until it runs
#   deploy/cluster/rabbitmq-3.sh kill N   kill -9 node N (what the cluster test does)
#   deploy/cluster/rabbitmq-3.sh pid N | ctl N ARGS... | urls | status
#
# Node N (1..3) is rc<N>@localhost, AMQP on 5700+N, Erlang distribution on 25700+N.
# Environment: RABBIT_CLUSTER_DIR (default /tmp/collections-rabbitmq-3), RABBIT_CLUSTER_NODE
# (node name prefix, default rc), RABBIT_CLUSTER_PORT_BASE (default 5700),
# RABBIT_CLUSTER_USER/PASSWORD (default collections/collections). The cluster tests use
# their own prefix, directory and ports, so they never meet a cluster started by hand.
set -euo pipefail

dir=${RABBIT_CLUSTER_DIR:-/tmp/collections-rabbitmq-3}
base=${RABBIT_CLUSTER_PORT_BASE:-5700}
prefix=${RABBIT_CLUSTER_NODE:-rc}
user=${RABBIT_CLUSTER_USER:-collections}
password=${RABBIT_CLUSTER_PASSWORD:-collections}
bin=/usr/lib/rabbitmq/bin

ensure_installed() {
    if [ ! -x "$bin/rabbitmq-server" ]; then
        # policy-rc.d (containers) or not: the package's own service is not ours to run.
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server
    fi
}

node() { echo "$prefix$1@localhost"; }

# Every node and every rabbitmqctl call reads the cookie from $HOME/.erlang.cookie: a HOME
# of the cluster's own keeps it apart from the machine's broker.
env_of() {
    local n=$1
    export HOME="$dir"
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(node "$n")
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$((base + n))
    export RABBITMQ_DIST_PORT=$((base + 20000 + n))
    export RABBITMQ_MNESIA_BASE="$dir/node$n/mnesia"
    export RABBITMQ_LOG_BASE="$dir/node$n/log"
    export RABBITMQ_PID_FILE="$dir/node$n/pid"
    export RABBITMQ_CONFIG_FILE="$dir/node$n/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/node$n/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/node$n/enabled_plugins"
    export RABBITMQ_CONF_ENV_FILE="$dir/node$n/rabbitmq-env.conf"
    # Two shared cores: one scheduler per node, few async threads, no busy waiting.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +A 8 +sbwt none +sbwtdcpu none +sbwtdio none"
    export RABBITMQ_CTL_ERL_ARGS="+S 1:1"
}

ctl() {
    local n=$1; shift
    ( env_of "$n"; "$bin/rabbitmqctl" -n "$(node "$n")" "$@" )
}

start_node() {
    local n=$1
    mkdir -p "$dir/node$n/mnesia" "$dir/node$n/log"
    cat > "$dir/node$n/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$((base + n))
loopback_users = none
# Cluster tests kill nodes: a node that comes back must not wait minutes for its peers.
mnesia_table_loading_retry_timeout = 10000
mnesia_table_loading_retry_limit = 3
# Disk and memory alarms would block publishers on a busy test machine.
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.6
# A dead peer is noticed in seconds, not a minute.
net_ticktime = 10
log.console = false
log.file.level = info
CONF
    echo '[].' > "$dir/node$n/enabled_plugins"
    echo '[].' > "$dir/node$n/advanced.config"
    : > "$dir/node$n/rabbitmq-env.conf"
    if is_running "$n"; then return; fi
    ( env_of "$n"; setsid "$bin/rabbitmq-server" > "$dir/node$n/log/stdout.log" 2>&1 < /dev/null & )
    ( env_of "$n"; "$bin/rabbitmqctl" -n "$(node "$n")" wait --timeout 120 "$dir/node$n/pid" > /dev/null )
}

is_running() {
    local pid
    pid=$(cat "$dir/node$1/pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

up() {
    ensure_installed
    mkdir -p "$dir"
    if [ ! -f "$dir/.erlang.cookie" ]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/.erlang.cookie"
        chmod 400 "$dir/.erlang.cookie"
    fi
    # The three boot side by side (each waits for its own start).
    local pids=()
    for n in 1 2 3; do start_node "$n" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
    for n in 2 3; do
        if ! ctl "$n" cluster_status --formatter json 2>/dev/null | grep -q "$(node 1)"; then
            ctl "$n" stop_app > /dev/null
            # (It logs harmless errors about tables of nodes not yet running.)
            ctl "$n" join_cluster "$(node 1)" > /dev/null 2>&1
            ctl "$n" start_app > /dev/null
        fi
    done
    if ! ctl 1 list_users --quiet 2>/dev/null | grep -q "^$user\b"; then
        ctl 1 add_user "$user" "$password" > /dev/null
        ctl 1 set_user_tags "$user" administrator > /dev/null
        ctl 1 set_permissions -p / "$user" '.*' '.*' '.*' > /dev/null
    fi
    echo "3-node cluster up: $(urls)"
}

urls() {
    local out=""
    for n in 1 2 3; do out="$out${out:+,}amqp://$user:$password@127.0.0.1:$((base + n))/%2f"; done
    echo "$out"
}

kill_node() {
    local pid
    pid=$(cat "$dir/node$1/pid")
    kill -9 "$pid"
}

down() {
    for n in 1 2 3; do
        if is_running "$n"; then
            ctl "$n" stop "$dir/node$n/pid" > /dev/null 2>&1 || kill -9 "$(cat "$dir/node$n/pid")" 2>/dev/null || true
        fi
    done
    # Leftover processes of these nodes (a kill that raced a start), found by their
    # environment: never the machine's own broker.
    for n in 1 2 3; do
        for f in $(grep -lsz "^RABBITMQ_MNESIA_BASE=$dir/node$n/mnesia$" /proc/[0-9]*/environ || true); do
            p=${f#/proc/}; p=${p%/environ}
            # epmd (the Erlang port mapper) may serve other nodes: it stays.
            if [ "$p" != "$$" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" != epmd ]; then
                kill -9 "$p" 2>/dev/null || true
            fi
        done
    done
    rm -rf "$dir"
    echo "3-node cluster down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    start) start_node "$2"; echo "$(node "$2") running" ;;
    kill) kill_node "$2" ;;
    pid) cat "$dir/node$2/pid" ;;
    ctl) n=$2; shift 2; ctl "$n" "$@" ;;
    urls) urls ;;
    status) for n in 1 2 3; do is_running "$n" && echo "$(node "$n") up" || echo "$(node "$n") down"; done ;;
    *) echo "usage: $0 up|down|start N|kill N|pid N|ctl N ARGS|urls|status" >&2; exit 2 ;;
esac
