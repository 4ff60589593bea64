#!/usr/bin/env bash
# Pharos's HMA-compatible HTTP API side by side with a real, already running HMA ("OpenMediaMatch").
# See "HMA API: Pharos vs HMA (hma.sh)" in README.md here.
#
#   bash benches/compare/hma.sh --hma http://127.0.0.1:5100 --pharos http://127.0.0.1:18080 [options...]
#
# Neither server is installed, started or configured here. Standard-library Python 3 only; wrk for the
# throughput phase (apt-get install wrk), psql for --bulk (apt-get install postgresql-client).
# Results: target/compare/hma.{md,json}, every difference in target/compare/hma-diffs.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"

die() { echo "hma.sh: $*" >&2; exit 1; }
invocation="bash benches/compare/hma.sh${*:+ $(printf '%q ' "$@")}"

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "Python >= 3.9 needed"
phases="load,compare,bench"
bulk=0
prev=""
for a in "$@"; do
    [[ "$prev" == "--phases" ]] && phases="$a"
    [[ "$a" == --phases=* ]] && phases="${a#--phases=}"
    [[ "$a" == "--bulk" ]] && bulk=1
    prev="$a"
done
if [[ "$phases" == *bench* ]]; then
    command -v wrk >/dev/null || die "the bench phase needs wrk (apt-get install wrk), or pass --phases load,compare"
fi
if [[ "$bulk" == 1 ]]; then
    command -v psql >/dev/null || die "--bulk needs psql (apt-get install postgresql-client)"
fi

cd "$ROOT"
export PHAROS_COMPARE_COMMAND="${invocation% }"
exec "$PYTHON" "$HERE/hma_compare.py" "$@"
