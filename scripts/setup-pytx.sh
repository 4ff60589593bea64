#!/usr/bin/env bash
# Sets up python-threatexchange (the `threatexchange` package, pinned in scripts/pytx-requirements.txt) in a
# private venv at target/pytx-venv: tests/bank_formats.rs uses it as the reference reader and writer of the
# formats it defines (the ThreatExchange CSV of its CLI and HMA 1.0, and the local-file exchange lines).
# scripts/setup-venv.sh does the work (idempotent).
#
# Prints the venv's python on the last line of stdout, e.g. for
#   PHAROS_PYTX_PYTHON="$(scripts/setup-pytx.sh | tail -n 1)"
# Everything else goes to stderr. Environment: PYTHON (the interpreter to build the venv from).
set -euo pipefail
cd "$(dirname "$0")/.."
# The check: the modules the tests drive load.
exec scripts/setup-venv.sh setup-pytx target/pytx-venv scripts/pytx-requirements.txt \
    'import threatexchange.cli.dataset.simple_serialization, threatexchange.exchanges.impl.file_api'
