#!/usr/bin/env bash
# Sets up the Python example client's environment: a venv at target/python-example-venv with
# examples/python/requirements.txt installed. Idempotent: pip runs only when the venv is new or the
# requirements changed (a stamp file holds the hash of the requirements it was built from).
#
# Prints the venv's python on the last line of stdout, e.g. for
#   PHAROS_PYTHON="$(scripts/setup-python-example.sh | tail -n 1)"
# Everything else goes to stderr.
#
# Environment: PYTHON (the interpreter to build the venv from; default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
venv=target/python-example-venv
requirements=examples/python/requirements.txt
stamp="$venv/.pharos-requirements.sha256"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup-python-example: $python not found; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

want="$( ("$python" --version 2>&1; cat "$requirements") | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "setup-python-example: creating $venv" >&2
    rm -rf "$venv"
    mkdir -p target
    if ! err="$("$python" -m venv "$venv" 2>&1)"; then
        rm -rf "$venv"
        echo "$err" >&2
        if echo "$err" | grep -qi -e ensurepip -e 'python3-venv' -e 'No module named venv'; then
            echo "setup-python-example: '$python -m venv' failed: Python's venv/ensurepip module is missing." >&2
            echo "  On Debian/Ubuntu install it with: apt-get install python3-venv" >&2
        else
            echo "setup-python-example: '$python -m venv $venv' failed" >&2
        fi
        exit 1
    fi
fi

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup-python-example: installing $requirements into $venv" >&2
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    # A quick check that the three packages load together before the stamp says so.
    "$venv/bin/python" -c 'import grpc, grpc_tools.protoc, google.protobuf' >&2
    echo "$want" >"$stamp"
else
    echo "setup-python-example: $venv is up to date" >&2
fi

echo "$(pwd)/$venv/bin/python"
