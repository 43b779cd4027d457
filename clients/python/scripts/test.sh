#!/usr/bin/env bash
# Runs the Python client's test suite against a real `lockstep serve`.
#
#   clients/python/scripts/test.sh [PYTEST ARGS...]
#
# Outside CI it installs the package with its test extras into clients/python/.venv (made on first
# use); with CI=true it installs into the current interpreter. The server binary is $LOCKSTEP_BIN,
# or <repo>/target/debug/lockstep, built with cargo if it is missing. Exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

default_bin="$repo/target/debug/lockstep"
export LOCKSTEP_BIN="${LOCKSTEP_BIN:-$default_bin}"
if [ ! -x "$LOCKSTEP_BIN" ]; then
    if [ "$LOCKSTEP_BIN" = "$default_bin" ] && command -v cargo >/dev/null 2>&1; then
        echo "test.sh: building the lockstep server ($LOCKSTEP_BIN is missing)" >&2
        (cd "$repo" && cargo build --quiet -p lockstep --bin lockstep)
    else
        echo "test.sh: the server binary $LOCKSTEP_BIN is missing; build it (cargo build) or point LOCKSTEP_BIN at one" >&2
        exit 2
    fi
fi

install() {
    # $1: the interpreter to install into. Falls back to --break-system-packages for an
    # externally managed (PEP 668) system Python.
    "$1" -m pip install --quiet --disable-pip-version-check "$here[test]" \
        || "$1" -m pip install --quiet --disable-pip-version-check --break-system-packages "$here[test]"
}

if [ "${CI:-}" = "true" ]; then
    py="$python"
    install "$py"
else
    venv="$here/.venv"
    if [ ! -x "$venv/bin/python" ] && ! "$python" -m venv "$venv"; then
        echo "test.sh: cannot create $venv (on Debian: apt-get install python3-venv); using $python itself" >&2
        rm -rf "$venv"
    fi
    if [ -x "$venv/bin/python" ]; then
        py="$venv/bin/python"
    else
        py="$python"
    fi
    install "$py"
fi

cd "$here"
"$py" -m pytest "$@"
