#!/usr/bin/env bash
# The one command to run on a machine with a real GPU (such machines are lent briefly: this takes about 6
# minutes). It checks that the GPU backend is exact there and measures it beside the CPU, into one report:
#
#   1. GPU = CPU on the corpus and the stress images, the device's division, the canary, self-healing
#      (tests/backends.rs), and the worst-case-driver model (tests/exactness.rs);
#   2. `pharos bench hash` and `pharos bench capacity` at 1 MP and 12 MP, GPU and CPU side by side, and
#      `bench hash` on the GPU with the other plane layout of the box filter (PHAROS_GPU_ROW_LAYOUT=columns)
#      and with 512 megapixels per submission (PHAROS_GPU_BATCH_MEGAPIXELS=512).
#
# Usage:
#   scripts/gpu-check.sh            run (builds with cargo when it can; else uses a prepared bundle)
#   scripts/gpu-check.sh prepare    on a build machine: build release binaries, strip and compress them,
#                                   and copy the corpus into .gpu-check/ (about 30 MB), for a GPU machine
#                                   that has no Rust toolchain or no network. Carry .gpu-check (and .gl, the
#                                   Vulkan loader packages, if that machine has none) and run this script.
#
# The report is written to target/gpu-check/report.md with every raw output beside it; when OUT is set (the
# device tool's output folder, which takes few files) also to $OUT/gpu-check.md, the raw outputs to
# $OUT/gpu-check-raw.tar.gz. Record its figures in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu-check

if [ "${1:-}" = prepare ]; then
    mkdir -p "$BUNDLE"
    grep -qxF "/$BUNDLE/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/$BUNDLE/" >> .git/info/exclude; }
    scripts/setup-deps.sh
    cargo build --release --locked --bin pharos
    test_bin="$(cargo test --release --locked --test integration --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "integration":
        print(m["executable"])' | tail -n 1)"
    # The integration tests run the CLI from the path cargo compiled into them (CARGO_BIN_EXE_pharos):
    # remember it, so that the run below can put the binary there on a machine that has no build.
    cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"] + "/release/pharos")' \
        > "$BUNDLE/pharos-path"
    for pair in "target/release/pharos:pharos" "$test_bin:integration"; do
        src="${pair%%:*}" name="${pair##*:}"
        strip -o "$BUNDLE/$name" "$src"
        xz -T0 -6 -f "$BUNDLE/$name"
    done
    corpus="${PHAROS_CORPUS:-../shared/testdata}"
    rm -rf "$BUNDLE/testdata" && cp -r "$corpus" "$BUNDLE/testdata"
    du -sh "$BUNDLE"
    echo "prepared $BUNDLE: carry it and run scripts/gpu-check.sh"
    exit 0
fi

DEST=target/gpu-check
rm -rf "$DEST" && mkdir -p "$DEST"
REPORT="$DEST/report.md"
started=$(date +%s)

# The Vulkan loader: from the machine, or unpacked from carried Debian packages (.gl/*.deb).
if ! ldconfig -p 2>/dev/null | grep -q libvulkan && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

# Binaries: a prepared bundle, or a release build here.
if [ -f "$BUNDLE/pharos.xz" ]; then
    bin="$(mktemp -d)"
    xz -dc "$BUNDLE/pharos.xz" > "$bin/pharos"
    xz -dc "$BUNDLE/integration.xz" > "$bin/integration"
    chmod +x "$bin/pharos" "$bin/integration"
    compiled_in="$(cat "$BUNDLE/pharos-path" 2>/dev/null || true)"
    if [ -n "$compiled_in" ] && [ ! -e "$compiled_in" ]; then
        mkdir -p "$(dirname "$compiled_in")" && cp "$bin/pharos" "$compiled_in"
    fi
    PHAROS="$bin/pharos" TESTS="$bin/integration"
    export PHAROS_CORPUS="${PHAROS_CORPUS:-$(pwd)/$BUNDLE/testdata}"
elif command -v cargo >/dev/null; then
    cargo build --release --locked --bin pharos
    cargo test --release --locked --test integration --no-run
    PHAROS=target/release/pharos
    TESTS="$(ls -t target/release/deps/integration-* | grep -v '\.d$' | head -n 1)"
    export PHAROS_CORPUS="${PHAROS_CORPUS:-$(cd ../shared/testdata 2>/dev/null && pwd)}"
else
    echo "gpu-check: no cargo and no $BUNDLE bundle (run 'scripts/gpu-check.sh prepare' on a build machine)" >&2
    exit 2
fi

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) threads"
    command -v nvidia-smi >/dev/null && echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
    echo "- corpus: ${PHAROS_CORPUS:-none}"
} > "$REPORT"

# 1. Exactness and resilience on this device. A test failure is reported, not fatal: the benches still run.
export PHAROS_REQUIRE_GPU=1
status=0
# Which tests (PHAROS_GPU_CHECK_TESTS overrides, e.g. a short filter for a dry run on a software adapter).
read -r -a filters <<< "${PHAROS_GPU_CHECK_TESTS:-backends:: exactness::}"
"$TESTS" --test-threads 4 --show-output "${filters[@]}" > "$DEST/tests.txt" 2>&1 || status=$?
{
    echo
    echo "## Tests (${filters[*]}): $([ $status = 0 ] && echo passed || echo "FAILED (exit $status)")"
    echo
    echo '```'
    grep -E "^test |test result|GPU tests run on|quotients exact|^(before|now|shaders) |images \(" "$DEST/tests.txt" || true
    echo '```'
} >> "$REPORT"

# 2. Throughput, GPU and CPU side by side.
bench() {
    local name="$1"; shift
    "$PHAROS" bench "$@" --json "$DEST/$name.json" > "$DEST/$name.txt" 2>&1 || echo "(failed: see $name.txt)" >> "$DEST/$name.txt"
    { echo; echo "### $name: pharos bench $*"; echo; echo '```'; tail -n 25 "$DEST/$name.txt"; echo '```'; } >> "$REPORT"
}
echo -e "\n## Benchmarks" >> "$REPORT"
# Image sizes (PHAROS_GPU_CHECK_SIZES overrides, e.g. for a dry run on a software adapter).
SIZES="${PHAROS_GPU_CHECK_SIZES:-1280x800 4000x3000}"
for size in $SIZES; do
    for backend in gpu cpu; do
        bench "hash-$backend-$size" hash --backend "$backend" --batch 64 --size "$size" --reps 3 --seconds 1
    done
    # The other plane layout of the horizontal box passes (src/gpu/layout.rs, RowLayout): which is faster
    # depends on the GPU, so the default is to be chosen from these two lines.
    PHAROS_GPU_ROW_LAYOUT=columns bench "hash-gpu-columns-layout-$size" hash --backend gpu --batch 64 --size "$size" \
        --reps 3 --seconds 1
    # 512 MP per submission (the default, ~33.5 MP, holds two 12 MP images; this holds 42 of them, or all
    # 64 at 1 MP; ~1.5 GB per upload buffer): whether more images in flight fill a big GPU better, to
    # choose PHAROS_GPU_BATCH_MEGAPIXELS's default.
    PHAROS_GPU_BATCH_MEGAPIXELS=512 bench "hash-gpu-budget-512MP-$size" hash --backend gpu --batch 64 \
        --size "$size" --reps 3 --seconds 1
done
for size in $SIZES; do
    for backend in gpu cpu; do
        bench "capacity-$backend-$size" capacity --backend "$backend" --mix "$size:1" --reps 3
    done
done
echo -e "\nTook $(( $(date +%s) - started )) s." >> "$REPORT"
if [ -n "${OUT:-}" ]; then
    cp "$REPORT" "$OUT/gpu-check.md"
    tar czf "$OUT/gpu-check-raw.tar.gz" -C "$DEST" .
fi
cat "$REPORT"
exit $status
