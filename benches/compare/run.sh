#!/usr/bin/env bash
# Single-core comparison of Pharos with pdqhash / Pillow / imagehash. See README.md here.
#
#   bash benches/compare/run.sh [CORPUS_DIR] [compare.py options...]
#
# CORPUS_DIR defaults to ../shared/testdata relative to the repository root. Any further
# options go to compare.py (e.g. --reps 7, --cpu 0, --no-pharos, --pharos-json FILE).
# Needs python3 (>= 3.11) with venv, g++ and the Python headers (pdqhash compiles from source),
# and cargo for the Pharos side. Results: target/compare/results.{json,md}.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv"
REQS="$HERE/requirements.txt"
PYTHON="${PYTHON:-python3}"

die() { echo "run.sh: $*" >&2; exit 1; }

# The command as typed, for the report.
invocation="bash benches/compare/run.sh${*:+ $(printf '%q ' "$@")}"

# The corpus: a path given here is taken relative to the caller's directory; the default is
# relative to the repository root (compare.py runs from there).
CORPUS="../shared/testdata"
if [[ $# -gt 0 && "$1" != -* ]]; then
    [[ -d "$1" ]] || die "corpus directory '$1' not found"
    CORPUS="$(cd "$1" && pwd)"
    shift
fi
cd "$ROOT"
[[ -f "$CORPUS/expected.tsv" ]] || die "no expected.tsv in corpus directory '$CORPUS'"

# ---- 1. private virtual environment with the pinned peers (created once, then reused) ----
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "Python >= 3.11 is needed (numpy 2.4 / scipy 1.17 wheels); set PYTHON=..."
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "the Python venv module is missing (apt-get install python3-venv)"
    command -v g++ >/dev/null || die "g++ not found; pdqhash compiles Meta's C++ (apt-get install g++)"
    "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || die "Python.h not found; pdqhash builds a C++ extension (apt-get install python3-dev)"

    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "== creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check install)
    # Wheels only for the compiled dependencies: building numpy or scipy from source is never wanted.
    binary=(--only-binary numpy,scipy,Pillow,PyWavelets,Cython)
    echo "== installing pdqhash's build dependencies" >&2
    # shellcheck disable=SC2046  # word splitting of the pinned requirement list is intended
    "${pip[@]}" "${binary[@]}" $(grep -E '#[[:space:]]*build[[:space:]]*$' "$REQS" | sed 's/#.*//')
    echo "== installing the peers (pdqhash compiles with $(command -v g++))" >&2
    "${pip[@]}" "${binary[@]}" --no-build-isolation -r "$REQS"
    "$VENV/bin/python" -c 'import pdqhash, imagehash, PIL, numpy, scipy' \
        || die "the peers do not import after installation"
    echo "$want" > "$stamp"
fi

# ---- 2. peers and Pharos, measured in the same invocation ----
# One thread for every numeric library; compare.py sets these again before importing numpy.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMEXPR_NUM_THREADS=1
export PHAROS_COMPARE_COMMAND="${invocation% }"
exec "$VENV/bin/python" "$HERE/compare.py" --corpus "$CORPUS" "$@"
