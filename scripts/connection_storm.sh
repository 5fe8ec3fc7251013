#!/usr/bin/env bash
# Connection storm: opens N WebSocket connections at once (default 5 000) on a
# release build of the server with a throwaway redis-server, and prints how many
# got their sync answer, the time to serve all, and the server's memory.
#
#   scripts/connection_storm.sh                  # 5 000 connections
#   scripts/connection_storm.sh --connections 20000
set -euo pipefail
cd "$(dirname "$0")/.."

# Two sockets per connection live on this machine (client and server side).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --locked -p websocket --bin websocket --example connection_storm
WEBSOCKET_BIN="$PWD/target/release/websocket" exec target/release/examples/connection_storm "$@"
