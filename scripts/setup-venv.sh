#!/usr/bin/env bash
# Creates or refreshes a private Python venv for the tests (the one mechanism behind
# setup-python-example.sh and setup-pytx.sh):
#   scripts/setup-venv.sh NAME VENV REQUIREMENTS_FILE IMPORT_CHECK
# Idempotent: pip runs only when the venv is new or the requirements (or the interpreter) changed; a stamp
# file holds the hash of what it was built from. IMPORT_CHECK is Python run once after installing, before the
# stamp says the venv is ready. Prints the venv's python on the last line of stdout; the rest goes to stderr.
#
# Environment: PYTHON (the interpreter to build the venv from; default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

name="${1:?usage: setup-venv.sh NAME VENV REQUIREMENTS_FILE IMPORT_CHECK}"
venv="${2:?venv directory}"
requirements="${3:?requirements file}"
check="${4:?import check}"
python="${PYTHON:-python3}"
stamp="$venv/.pharos-requirements.sha256"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "$name: $python not found; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

want="$( ("$python" --version 2>&1; cat "$requirements") | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "$name: creating $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! err="$("$python" -m venv "$venv" 2>&1)"; then
        rm -rf "$venv"
        echo "$err" >&2
        if echo "$err" | grep -qi -e ensurepip -e 'python3-venv' -e 'No module named venv'; then
            echo "$name: '$python -m venv' failed: Python's venv/ensurepip module is missing." >&2
            echo "  On Debian/Ubuntu install it with: apt-get install python3-venv" >&2
        else
            echo "$name: '$python -m venv $venv' failed" >&2
        fi
        exit 1
    fi
fi

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "$name: installing $requirements into $venv" >&2
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    "$venv/bin/python" -c "$check" >&2
    echo "$want" >"$stamp"
else
    echo "$name: $venv is up to date" >&2
fi

echo "$(pwd)/$venv/bin/python"
