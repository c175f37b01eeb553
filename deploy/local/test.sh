#!/usr/bin/env bash
# The full test suite: unit, property, contract and end-to-end tests (the real binaries
# against real RabbitMQ and Postgres; each test makes its own database and vhost).
# Starts PostgreSQL/RabbitMQ from Debian packages when they are not running
# (or uses DATABASE_URL / AMQP_URL).
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/local/ensure-services.sh
exec cargo test --workspace --all-targets --locked "$@"
