#!/usr/bin/env bash
# The fleet benchmark (BENCHMARKS.md, "Shared banks: PostgreSQL vs redb"): for N random PDQ entries,
#   1. write throughput: `pharos bank add` of all N in one call, to redb and to PostgreSQL (entries/s
#      acknowledged: the command returns once the transaction committed);
#   2. cold start: `pharos serve` on that store until its "serving" line (every bank read and indexed),
#      seconds and peak RSS (VmHWM), for redb and for PostgreSQL.
# Uses a throwaway PostgreSQL cluster (scripts/setup-postgres.sh) and a temporary data directory.
#
#   scripts/bench-fleet.sh [N]        # N defaults to 10000000; builds the release binary first
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000000}"
cargo build --release --locked --bin pharos >&2
pharos="$PWD/target/release/pharos"

work="$(mktemp -d /tmp/pharos-bench-fleet.XXXXXX)"
pg_out="$(scripts/setup-postgres.sh start)"
pg_dir="$(echo "$pg_out" | sed -n 's/^PHAROS_TEST_PGDIR=//p')"
url="$(echo "$pg_out" | tail -n 1)"
trap 'scripts/setup-postgres.sh stop "$pg_dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "bench-fleet: $n random PDQ hashes" >&2
python3 - "$n" >"$work/hashes.txt" <<'PY'
import os, sys
n = int(sys.argv[1])
out = sys.stdout
chunk = 100_000
for start in range(0, n, chunk):
    k = min(chunk, n - start)
    b = os.urandom(32 * k).hex()
    out.write("".join(b[i * 64:(i + 1) * 64] + "\n" for i in range(k)))
PY

now() { date +%s.%N; }
rate() { python3 -c "import sys; n,a,b=map(float,sys.argv[1:]); print(f'{b-a:.1f} s, {n/(b-a):,.0f} entries/s')" "$@"; }

# 1. Writes.
"$pharos" bank create --data-dir "$work/redb" bench --kind pdq 2>/dev/null
t0="$(now)"; "$pharos" bank add --data-dir "$work/redb" bench --format hex "$work/hashes.txt" >&2; t1="$(now)"
echo "write redb: $n entries in $(rate "$n" "$t0" "$t1")"
"$pharos" bank create --database-url "$url" bench --kind pdq 2>/dev/null
t0="$(now)"; "$pharos" bank add --database-url "$url" bench --format hex "$work/hashes.txt" >&2; t1="$(now)"
echo "write postgres: $n entries in $(rate "$n" "$t0" "$t1")"
rm -f "$work/hashes.txt"

# 2. Cold start: until the serving line, then the peak RSS from /proc, then SIGTERM.
cold() {
    local what="$1"; shift
    local fifo="$work/fifo.$what"
    mkfifo "$fifo"
    local t0 t1 pid line hwm
    t0="$(now)"
    "$pharos" serve --backend cpu --listen 127.0.0.1:0 --metrics "" "$@" >"$fifo" 2>"$work/serve.$what.log" &
    pid=$!
    read -r line <"$fifo"
    t1="$(now)"
    hwm="$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status")"
    kill -TERM "$pid"; wait "$pid" || true
    echo "cold start $what: $(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f} s')" "$t0" "$t1"), peak RSS $hwm ($line)"
}
cold redb --data-dir "$work/redb"
mkdir -p "$work/spool"
cold postgres --data-dir "$work/spool" --database-url "$url"
