#!/usr/bin/env bash
# Makes PostgreSQL and RabbitMQ reachable for local development, tests and CI, without
# Docker.
#
#   deploy/local/ensure-services.sh
#
# For each service:
#   1. If DATABASE_URL / AMQP_URL is set and reachable, use it. Otherwise try the
#      default on 127.0.0.1.
#   2. If nothing answers and the target is this machine, install the Debian package
#      (root only), start the server and wait for it.
#   3. If the target is another machine, do not try to fix it: report it and fail.
#
# When both services are already up this takes well under a second and changes nothing.
# It prints only short status lines (never URLs, user names or passwords) and exports
# nothing. Callers fall back to these defaults:
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
#
# Local development only: if the default PostgreSQL URL is refused for authentication,
# the script (as root) adds `host all all 127.0.0.1/32 trust` at the top of the local
# cluster's pg_hba.conf. Never run it against a shared or production server.
set -euo pipefail

if (return 0 2>/dev/null); then
  echo "ensure-services: run this script; do not source it" >&2
  return 1
fi

readonly DEFAULT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
readonly LOG_DIR="${TMPDIR:-/tmp}"
readonly APT_LOG="$LOG_DIR/ensure-services-apt.log"
readonly RABBIT_LOG="$LOG_DIR/ensure-services-rabbitmq.log"

say() { printf 'ensure-services: %s\n' "$*"; }
die() {
  printf 'ensure-services: ERROR: %s\n' "$*" >&2
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Prints "host port" for a URL; credentials, path and query are dropped.
url_host_port() {
  local url=$1 default_port=$2 rest host port
  rest=${url#*://}
  rest=${rest%%/*}
  rest=${rest%%\?*}
  rest=${rest##*@}
  if [[ $rest == \[* ]]; then # [IPv6]:port
    host=${rest%%]*}
    host=${host#[}
    port=${rest#*]}
    port=${port#:}
  else
    host=${rest%%:*}
    port=${rest#"$host"}
    port=${port#:}
  fi
  printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$default_port}"
}

is_local_host() {
  case "$1" in
    127.0.0.1 | localhost | ::1 | "") return 0 ;;
    *) return 1 ;;
  esac
}

# TCP reachability with a hard one-second limit (an unroutable host would hang).
# shellcheck disable=SC2016 # $0/$1 expand in the inner bash, not here
tcp_open() {
  local host=$1 port=$2
  if have timeout; then
    timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
  else
    bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
  fi
}

wait_for() { # seconds description command...
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" && return 0
    sleep 0.25
  done
  die "$what did not come up within ${secs}s"
}

# Serialises the slow path so that two callers (parallel test jobs) do not install or
# start the same server at once. The fast path takes no lock.
with_lock() {
  local name=$1
  shift
  if have flock; then
    (
      flock -w 300 9 || die "timed out waiting for the $name lock"
      "$@"
    ) 9>"$LOG_DIR/ensure-services-$name.lock"
  else
    "$@"
  fi
}

apt_install() { # package
  is_root || die "package $1 is not installed; install it (apt-get install $1) or run as root"
  have apt-get || die "package $1 is not installed and apt-get is not available"
  say "installing $1 (log: $APT_LOG)"
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1"
  } >>"$APT_LOG" 2>&1 || die "apt-get install $1 failed; see $APT_LOG"
}

# ---------------------------------------------------------------- PostgreSQL ---------

pg_url_ready() { # url: server accepts connections
  if have pg_isready; then
    pg_isready -q -t 1 -d "$1" >/dev/null 2>&1
  else
    local host port
    read -r host port <<<"$(url_host_port "$1" 5432)"
    tcp_open "$host" "$port"
  fi
}

pg_url_login() { # url: we can actually log in and run a query
  have psql || return 0 # nothing to test with; pg_isready already passed
  PGCONNECT_TIMEOUT=2 psql -X -A -t -q -w -d "$1" -c 'select 1' >/dev/null 2>&1
}

server_versions() { # installed server major versions, oldest first
  local d
  for d in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x $d ]] || continue
    d=${d#/usr/lib/postgresql/}
    echo "${d%%/*}"
  done | sort -V
}

pg_cluster_version() {
  local v
  if [[ -d /etc/postgresql ]]; then
    # shellcheck disable=SC2012 # version directory names are plain numbers
    v=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [[ -n $v && -d /etc/postgresql/$v/main ]] && { echo "$v"; return 0; }
  fi
  return 1
}

pg_start_local() {
  # Re-check under the lock: another caller may have started it meanwhile.
  pg_url_ready "$DEFAULT_DATABASE_URL" && return 0
  # The client alone (psql, pg_isready) is not enough: look for the server binary.
  if ! have pg_ctlcluster || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    apt_install postgresql
  fi
  local ver
  if ! ver=$(pg_cluster_version); then
    ver=$(server_versions | tail -n 1)
    [[ -n $ver ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    is_root || die "no PostgreSQL cluster exists; create one as root (pg_createcluster $ver main)"
    say "postgres: creating cluster $ver/main"
    pg_createcluster "$ver" main >/dev/null
  fi
  say "postgres: starting cluster $ver/main"
  if is_root; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || true
  else
    pg_ctlcluster "$ver" main start >/dev/null 2>&1 || true
  fi
  wait_for 30 "PostgreSQL on 127.0.0.1:5432" pg_url_ready "$DEFAULT_DATABASE_URL"
}

# Local development only: let user postgres in over 127.0.0.1 without a password.
pg_trust_loopback() {
  local ver hba marker="# added by deploy/local/ensure-services.sh (local development only)"
  is_root || return 1
  ver=$(pg_cluster_version) || return 1
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  [[ -f $hba ]] || return 1
  if ! grep -qF "$marker" "$hba"; then
    # pg_hba.conf is first-match: the rule must come before any password rule.
    local tmp
    tmp=$(mktemp)
    { printf '%s\nhost all all 127.0.0.1/32 trust\n' "$marker"; cat "$hba"; } >"$tmp"
    cat "$tmp" >"$hba" # keeps the file's owner and mode
    rm -f "$tmp"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null 2>&1 || return 1
  say "postgres: pg_hba.conf now trusts 127.0.0.1 (local development only)"
}

ensure_postgres() {
  local url=${DATABASE_URL:-} origin host port
  if [[ -n $url ]]; then origin="DATABASE_URL"; else url=$DEFAULT_DATABASE_URL origin="default"; fi
  read -r host port <<<"$(url_host_port "$url" 5432)"

  if ! pg_url_ready "$url"; then
    is_local_host "$host" || die "postgres: $host:$port ($origin) is not reachable"
    with_lock postgres pg_start_local
    pg_url_ready "$url" || die "postgres: a local cluster is running but $host:$port ($origin) is still not reachable"
  fi

  if ! pg_url_login "$url"; then
    if [[ $origin == default ]] && pg_trust_loopback && wait_for 5 "PostgreSQL login" pg_url_login "$url"; then
      :
    else
      die "postgres: $host:$port ($origin) is up but refuses login or queries (check user, password, database)"
    fi
  fi
  say "postgres: ready at $host:$port ($origin)"
}

# ---------------------------------------------------------------- RabbitMQ -----------

# Stronger than tcp_open for hosts behind proxies or load balancers that accept any
# connection: sends the AMQP 0-9-1 protocol header and expects a method frame (0x01,
# Connection.Start) back. Plain amqp:// only; for amqps:// TCP is all bash can check.
# shellcheck disable=SC2016
amqp_answers() {
  local host=$1 port=$2
  timeout 2 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "AMQP\x00\x00\x09\x01" >&3
    IFS= read -r -n 1 -t 2 -u 3 b || exit 1
    [[ $b == $'"'"'\x01'"'"' ]]' "$host" "$port" 2>/dev/null
}

rabbit_start_local() {
  local port=$1
  tcp_open 127.0.0.1 "$port" && return 0
  have rabbitmq-server || apt_install rabbitmq-server
  say "rabbitmq: starting rabbitmq-server (log: $RABBIT_LOG)"
  rabbitmq-server -detached >>"$RABBIT_LOG" 2>&1 || true
  wait_for 60 "RabbitMQ on 127.0.0.1:$port" tcp_open 127.0.0.1 "$port"
}

ensure_rabbitmq() {
  local url=${AMQP_URL:-} origin host port default_port=5672
  if [[ -n $url ]]; then origin="AMQP_URL"; else url="amqp://127.0.0.1:5672/" origin="default"; fi
  [[ $url == amqps://* ]] && default_port=5671
  read -r host port <<<"$(url_host_port "$url" "$default_port")"
  [[ $host == localhost ]] && host=127.0.0.1

  if ! tcp_open "$host" "$port"; then
    is_local_host "$host" || die "rabbitmq: $host:$port ($origin) is not reachable"
    with_lock rabbitmq rabbit_start_local "$port"
  elif ! is_local_host "$host" && [[ $url != amqps://* ]] && ! amqp_answers "$host" "$port"; then
    # Loopback refuses closed ports reliably; only a remote peer needs the protocol probe
    # (which costs a warning line in the broker log, so it is skipped for local brokers).
    die "rabbitmq: $host:$port ($origin) accepts TCP but does not speak AMQP"
  fi
  say "rabbitmq: ready at $host:$port ($origin)"
}

ensure_postgres
ensure_rabbitmq
