#!/usr/bin/env bash
# Sets up the Python example client's environment: a venv at target/python-example-venv with
# examples/python/requirements.txt installed (scripts/setup-venv.sh does the work; idempotent).
#
# Prints the venv's python on the last line of stdout, e.g. for
#   PHAROS_PYTHON="$(scripts/setup-python-example.sh | tail -n 1)"
# Everything else goes to stderr. Environment: PYTHON (the interpreter to build the venv from).
set -euo pipefail
cd "$(dirname "$0")/.."
# The check: the three packages load together.
exec scripts/setup-venv.sh setup-python-example target/python-example-venv examples/python/requirements.txt \
    'import grpc, grpc_tools.protoc, google.protobuf'
