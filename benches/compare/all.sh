#!/usr/bin/env bash
# One run, one table: Pharos and the peers people use today on the same inputs (issue 6).
#
#   bash benches/compare/all.sh [CORPUS_DIR] [--reps N] [--match-sizes 1000000,10000000]
#                               [--match-threads T] [--queries N] [--match-reps N]
#
# 1. run.sh: pdqhash (Meta's C++ PDQ), Pillow and imagehash vs `cargo bench --bench corpus`, one pinned
#    core, on CORPUS_DIR (default ../shared/testdata): pixels -> PDQ and bytes -> PDQ + pHash.
# 2. match.sh: faiss-cpu IndexBinaryMultiHash(256, 16, 16) vs `cargo bench --bench match_scale` on the same
#    generated random PDQ banks (default 1 M and 10 M hashes), radius 31, T threads (default: nproc).
# 3. summary.py: one table (peer rate, Pharos rate, ratio per row) from the two results.json files, written
#    to target/compare/all.{json,md}.
# Both scripts install their pinned peers from PyPI into benches/compare/.venv on first use
# (requirements.txt, requirements-match.txt). The 10 M bank needs about 4 GiB of RAM (both sides).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
die() { echo "all.sh: $*" >&2; exit 1; }
invocation="bash benches/compare/all.sh${*:+ $(printf '%q ' "$@")}"

corpus_args=()
if [[ $# -gt 0 && "$1" != -* ]]; then
    [[ -d "$1" ]] || die "corpus directory '$1' not found"
    corpus_args=("$(cd "$1" && pwd)")
    shift
fi
reps=5
match_sizes=1000000,10000000
match_threads="$(nproc)"
queries=1000
match_reps=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --reps) reps="${2:?--reps N}"; shift 2 ;;
        --match-sizes) match_sizes="${2:?--match-sizes N,N}"; shift 2 ;;
        --match-threads) match_threads="${2:?--match-threads T}"; shift 2 ;;
        --queries) queries="${2:?--queries N}"; shift 2 ;;
        --match-reps) match_reps="${2:?--match-reps N}"; shift 2 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "== all.sh: hashing (run.sh), $(date -u +%H:%M:%S) UTC" >&2
bash "$HERE/run.sh" "${corpus_args[@]}" --reps "$reps"
echo "== all.sh: matching (match.sh), $(date -u +%H:%M:%S) UTC" >&2
bash "$HERE/match.sh" --sizes "$match_sizes" --data random --threads "$match_threads" \
    --queries "$queries" --flat-queries 20 --no-flat --reps "$match_reps"
finished="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

cd "$ROOT"
PHAROS_COMPARE_COMMAND="${invocation% }" "$HERE/.venv/bin/python" "$HERE/summary.py" \
    --hash target/compare/results.json --match target/match-bench/results.json \
    --started "$started" --finished "$finished" --out target/compare
