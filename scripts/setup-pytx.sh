#!/usr/bin/env bash
# Sets up python-threatexchange (the `threatexchange` package, pinned below) in a private venv at
# target/pytx-venv: tests/bank_formats.rs uses it as the reference reader and writer of the formats
# it defines (the ThreatExchange CSV of its CLI and HMA 1.0, and the local-file exchange lines).
# Idempotent: pip runs only when the venv is new or the pin changed (a stamp file holds what it was built
# from).
#
# Prints the venv's python on the last line of stdout, e.g. for
#   PHAROS_PYTX_PYTHON="$(scripts/setup-pytx.sh | tail -n 1)"
# Everything else goes to stderr.
#
# Environment: PYTHON (the interpreter to build the venv from; default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
venv=target/pytx-venv
requirement="threatexchange==1.2.17"
stamp="$venv/.pharos-requirements.sha256"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup-pytx: $python not found; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
    exit 1
fi

want="$( ("$python" --version 2>&1; echo "$requirement") | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "setup-pytx: creating $venv" >&2
    rm -rf "$venv"
    mkdir -p target
    if ! err="$("$python" -m venv "$venv" 2>&1)"; then
        rm -rf "$venv"
        echo "$err" >&2
        if echo "$err" | grep -qi -e ensurepip -e 'python3-venv' -e 'No module named venv'; then
            echo "setup-pytx: '$python -m venv' failed: Python's venv/ensurepip module is missing." >&2
            echo "  On Debian/Ubuntu install it with: apt-get install python3-venv" >&2
        else
            echo "setup-pytx: '$python -m venv $venv' failed" >&2
        fi
        exit 1
    fi
fi

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup-pytx: installing $requirement into $venv" >&2
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement" >&2
    # The modules the tests drive, loaded once before the stamp says the venv is ready.
    "$venv/bin/python" -c 'import threatexchange.cli.dataset.simple_serialization, threatexchange.exchanges.impl.file_api' >&2
    echo "$want" >"$stamp"
else
    echo "setup-pytx: $venv is up to date" >&2
fi

echo "$(pwd)/$venv/bin/python"
