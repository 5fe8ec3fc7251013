#!/usr/bin/env bash
# Installs everything the tests need, idempotently: redis-server, PostgreSQL,
# storage emulators, and the JavaScript reference's Node packages.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
  echo "setup: installing redis-server"
  apt_install redis-server
fi
if ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "setup: installing redis-sentinel"
  apt_install redis-sentinel
fi

if [ -f ci/setup-storage.sh ]; then
  bash ci/setup-storage.sh
fi

# Independent WebSocket clients for the permessage-deflate interop tests:
# Python's `websockets` (in the `python3` the tests run, which the storage
# set-up above gave pip), and y-websocket in a headless Chromium.
if ! python3 -c 'import websockets' >/dev/null 2>&1; then
  echo "setup: installing websockets for python3"
  python3 -m pip install --quiet --disable-pip-version-check websockets==15.0.1 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages websockets==15.0.1
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium"
  apt_install chromium
fi

if [ -f js-reference/package-lock.json ]; then
  if ! command -v node >/dev/null 2>&1; then
    echo "setup: installing nodejs"
    apt_install nodejs npm
  fi
  if [ ! -d js-reference/node_modules ] || [ js-reference/package-lock.json -nt js-reference/node_modules/.package-lock.json ]; then
    echo "setup: installing the JavaScript reference's packages"
    (cd js-reference && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
echo "setup: done"
