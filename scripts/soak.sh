#!/usr/bin/env bash
# Soak: a fleet (two server instances and a worker on one redis-server,
# documents in PostgreSQL) under steady editing load, with a random fault from
# docs/reliability.md every 1 to 3 minutes; at the end every client's document
# must equal the stored one and hold every edit made. Prints the duration, the
# faults injected by kind, edits made and lost, and the longest reconnect; exits
# non-zero on any loss or mismatch.
#
#   SOAK_MINUTES=30 scripts/soak.sh          # the default length
#   SOAK_MINUTES=3 SOAK_FAULT_EVERY=10-30 scripts/soak.sh
#
# Settings: SOAK_MINUTES (30), SOAK_FAULT_EVERY (60-180 seconds), SOAK_ROOMS
# (4), SOAK_CLIENTS (3 per room), SOAK_DIR (logs and Redis data; default a new
# temporary directory, kept). Needs redis-server and PostgreSQL (ci/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# A connection burst opens 500 connections at once.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --locked -p websocket --bin websocket --example soak
WEBSOCKET_BIN="$PWD/target/release/websocket" exec target/release/examples/soak
