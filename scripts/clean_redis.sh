#!/usr/bin/env bash
# Delete every key of one y-redis prefix (default `y`) with SCAN + DEL, leaving
# other data alone. `--flushall` wipes the whole Redis instead, only when asked.
# Running servers and workers recover from either (the worker queue's group is
# recreated on the next append or claim).
#
#   scripts/clean_redis.sh [--url redis://host:port] [--prefix y] [--flushall]
set -euo pipefail

url="${REDIS_URL:-${REDIS:-redis://localhost:6379}}"
prefix="${REDIS_PREFIX:-y}"
flushall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --url) url="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --flushall) flushall=1; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ "$flushall" = 1 ]; then
  redis-cli -u "$url" FLUSHALL
  exit 0
fi

count=0
while IFS= read -r key; do
  [ -n "$key" ] || continue
  redis-cli -u "$url" DEL "$key" >/dev/null
  count=$((count + 1))
done < <(redis-cli -u "$url" --scan --pattern "${prefix}:*")
echo "deleted $count keys with prefix ${prefix}:"
