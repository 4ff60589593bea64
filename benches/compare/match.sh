#!/usr/bin/env bash
# Side-by-side matcher benchmark: Pharos vs faiss-cpu on the same generated PDQ banks. See README.md here.
#
#   bash benches/compare/match.sh [match_compare.py options...]
#
# e.g. --sizes 1000000,10000000 --data random,clustered --threads 1,2 --queries 2000
# Reuses benches/compare/.venv (created by run.sh or here); installs requirements-match.txt into it once.
# Results: target/match-bench/results.{json,md}.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
REQS="$HERE/requirements-match.txt"
PYTHON="${PYTHON:-python3}"

die() { echo "match.sh: $*" >&2; exit 1; }
invocation="bash benches/compare/match.sh${*:+ $(printf '%q ' "$@")}"
cd "$ROOT"

stamp="$VENV/.match-requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3)"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "the Python venv module is missing (apt-get install python3-venv)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "== creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    echo "== installing faiss-cpu" >&2
    "$VENV/bin/python" -m pip --disable-pip-version-check install --only-binary :all: -r "$REQS"
    "$VENV/bin/python" -c 'import faiss, numpy' || die "faiss does not import after installation"
    echo "$want" > "$stamp"
fi

export PHAROS_COMPARE_COMMAND="${invocation% }"
exec "$VENV/bin/python" "$HERE/match_compare.py" "$@"
