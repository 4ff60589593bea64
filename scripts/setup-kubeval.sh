#!/usr/bin/env bash
# Sets up kubernetes-validate (pinned in scripts/kubeval-requirements.txt; it ships the Kubernetes JSON
# schemas, so validation needs no cluster and no network) in a private venv at target/kubeval-venv:
# tests/deploy.rs validates deploy/kubernetes with it (through tests/kubeval.py). scripts/setup-venv.sh does
# the work (idempotent).
#
# Prints the venv's python on the last line of stdout, e.g. for
#   PHAROS_KUBEVAL_PYTHON="$(scripts/setup-kubeval.sh | tail -n 1)"
# Everything else goes to stderr. Environment: PYTHON (the interpreter to build the venv from).
set -euo pipefail
cd "$(dirname "$0")/.."
# The check: the validator and the schemas of the versions tests/deploy.rs pins load.
exec scripts/setup-venv.sh setup-kubeval target/kubeval-venv scripts/kubeval-requirements.txt \
    'import kubernetes_validate as k; k.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, "1.30", strict=True); k.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, "1.37", strict=True)'
