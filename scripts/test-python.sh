#!/usr/bin/env bash
# Runs the Python client's tests (clients/python/tests) against the release server binary
# (target/release/marquee-server: build the workspace first, or set MARQUEE_SERVER_BIN).
# Creates a virtual environment in target/python-venv (reused when it exists), installs
# the client from clients/python with pytest, openai and the grpcio-tools version the
# committed stubs are generated with, then runs pytest with this script's arguments.
#
# Environment: PYTHON (default python3) makes the virtual environment; MARQUEE_SERVER_BIN
# and MARQUEE_TEST_MODEL_DIR are read by the tests (see clients/python/tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=target/python-venv
GRPCIO_TOOLS_VERSION="$(sed -n 's/^GRPCIO_TOOLS_VERSION = "\(.*\)"$/\1/p' clients/python/generate_stubs.py)"
if [[ -z "$GRPCIO_TOOLS_VERSION" ]]; then
    echo "test-python.sh: no GRPCIO_TOOLS_VERSION in clients/python/generate_stubs.py" >&2
    exit 1
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p target
    # Debian's python3 lacks ensurepip unless python3-venv is installed: then make the
    # environment without pip and install pip into it with the system's pip.
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        "$PYTHON" -m venv --without-pip "$VENV"
    fi
fi
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip --python "$VENV/bin/python" install --quiet pip
fi

"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    ./clients/python pytest openai "grpcio-tools==${GRPCIO_TOOLS_VERSION}"
# The server cargo built: under CARGO_TARGET_DIR when it is set.
export MARQUEE_SERVER_BIN="${MARQUEE_SERVER_BIN:-${CARGO_TARGET_DIR:-target}/release/marquee-server}"
exec "$VENV/bin/python" -m pytest clients/python/tests "$@"
