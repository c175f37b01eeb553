#!/usr/bin/env bash
# Container command for the compose rabbitmq service: creates the application user
# (idempotently) once the broker is up, then runs the broker in the foreground.
# The password comes from the environment and is passed on stdin, so it never appears
# in a process list or a log line.
set -euo pipefail

: "${COLLECTIONS_AMQP_USER:?set COLLECTIONS_AMQP_USER}"
: "${COLLECTIONS_AMQP_PASSWORD:?set COLLECTIONS_AMQP_PASSWORD}"

(
  # The Erlang node is not reachable for the first seconds; retry, then give up loudly.
  for _ in $(seq 1 60); do
    rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 2
  done
  rabbitmqctl -q await_startup >/dev/null 2>&1 \
    || { echo "collections: broker did not start; application user NOT created" >&2; exit 1; }
  if ! rabbitmqctl -q list_users --no-table-headers | cut -f1 | grep -qx "$COLLECTIONS_AMQP_USER"; then
    printf '%s' "$COLLECTIONS_AMQP_PASSWORD" | rabbitmqctl -q add_user "$COLLECTIONS_AMQP_USER" >/dev/null
  fi
  # Least privilege: the service may only touch collections.* resources in "/".
  rabbitmqctl -q set_permissions -p / "$COLLECTIONS_AMQP_USER" '^collections\.' '^collections\.' '^collections\.'
  rabbitmqctl -q set_user_tags "$COLLECTIONS_AMQP_USER" management
  echo "collections: application user ready"
) &

exec docker-entrypoint.sh rabbitmq-server
