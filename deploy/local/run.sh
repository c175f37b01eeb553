#!/usr/bin/env bash
# The service's main job on one machine: PostgreSQL and RabbitMQ up (installed from Debian
# packages if missing, or DATABASE_URL / AMQP_URL), a release build, migrations, every
# worker and the task scheduler, then a sample collections scenario printed as it runs.
# The services keep running and printing task events until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/local/ensure-services.sh

export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
if [[ -z "${DATABASE_URL:-}" ]]; then
  # A database of its own on the local server, created once.
  psql -h 127.0.0.1 -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'collections'" | grep -q 1 ||
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE collections"
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/collections"
fi

cargo build --release --locked --bins
# Migrations are a release step: applied once here, before the binaries start (each one
# checks the schema at start and refuses one it cannot run against).
target/release/collectionsctl migrate
bins=(payment-failed-worker promise-made-worker promise-broken-worker payment-received-worker
      contact-attempted-worker hold-placed-worker hold-released-worker
      contact-restricted-worker contact-unrestricted-worker
      arrangement-made-worker arrangement-cancelled-worker payment-reversed-worker)
[[ -x target/release/task-scheduler ]] && bins+=(task-scheduler)
# The read API and the task board (issue 20); API_ADDR picks another address.
export API_ADDR="${API_ADDR:-127.0.0.1:8080}"
[[ -x target/release/collections-api ]] && bins+=(collections-api)

logs=.run/logs
mkdir -p "$logs"
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping: ${bins[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
for b in "${bins[@]}"; do
  # Each binary checks the schema at start and declares its topology.
  target/release/"$b" >"$logs/$b.log" 2>&1 &
  pids+=($!)
done
echo "started ${#bins[@]} binaries; JSON logs in $logs/"
if [[ " ${bins[*]} " == *" collections-api "* ]]; then
  echo "task board: http://$API_ADDR/   (API: http://$API_ADDR/v1/tasks, OpenAPI: http://$API_ADDR/openapi.json)"
fi
sleep 1
target/release/collectionsctl demo --follow
