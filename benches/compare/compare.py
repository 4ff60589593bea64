#!/usr/bin/env python3
"""Side-by-side, single-core throughput of Pharos and the Python tools people use today.

Peers (pinned in requirements.txt):
  * pdqhash 0.2.8  - Meta's C++ PDQ (ThreatExchange pdq/cpp) behind a Cython binding
  * Pillow 13.0.0  - decoding (bundled libjpeg-turbo / libpng / libwebp)
  * imagehash 4.3.2 - 64-bit pHash

Three measurements, each in images per second over the whole corpus, one image at a time:
  pixels_to_pdq       pdqhash.compute(rgb) on RGB arrays decoded before timing starts
  bytes_to_pdq        file bytes already in memory -> Pillow decode -> RGB numpy array -> PDQ
  bytes_to_pdq_phash  the same, plus imagehash.phash on the decoded RGB image

The Pharos figures come from `cargo bench --bench corpus -- --corpus DIR --json FILE`, run by this
script right after the peers, from the same process (so on the same pinned CPU). If that bench is
missing or fails, the peer figures are still reported and the Pharos columns say why they are empty.

Normally started by run.sh, which creates the virtual environment; `python compare.py --help` lists
the options.
"""

import argparse
import csv
import datetime
import gc
import importlib.metadata
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import deque
from pathlib import Path

# Keep every numeric library to one thread. These must be set before numpy (and scipy, which
# imagehash imports) are loaded, because their thread pools read them once at import time.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

# Third-party imports deliberately come after the environment set-up above.
import imagehash  # noqa: E402
import numpy  # noqa: E402
import pdqhash  # noqa: E402
from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_PACKAGES = ("pdqhash", "Pillow", "imagehash", "numpy", "scipy", "PyWavelets", "Cython")

# The measurements, in report order: (key, what the peer does, what is inside the timed loop).
# (row name, Pharos measurement, peer measurement, peer description, what is timed)
MEASUREMENTS = (
    ("pixels_to_pdq", "pixels_to_pdq", "pixels_to_pdq", "pdqhash",
     "PDQ from RGB pixels decoded beforehand"),
    ("bytes_to_pdq", "bytes_to_pdq", "bytes_to_pdq", "Pillow + pdqhash",
     "file bytes in memory -> decode -> RGB -> PDQ"),
    ("bytes_to_pdq_phash", "bytes_to_pdq_phash", "bytes_to_pdq_phash", "Pillow + pdqhash + imagehash",
     "file bytes in memory -> decode -> RGB -> PDQ + pHash"),
    # DESIGN.md §5's target: Pharos computing PDQ *and* pHash against Pillow + pdqhash computing PDQ only.
    ("design_target", "bytes_to_pdq_phash", "bytes_to_pdq", "Pillow + pdqhash (PDQ only)",
     "Pharos bytes -> PDQ + pHash vs peer bytes -> PDQ"),
)


# --------------------------------------------------------------------------------------------
# Peer pipelines. Each takes one corpus item and returns what a caller would keep.
# --------------------------------------------------------------------------------------------

def decode_rgb(data):
    """Decode encoded bytes the way expected.tsv was made: first frame, no EXIF rotation, RGB."""
    # Image.open positions on the first frame of animated files; convert() loads and drops alpha.
    return Image.open(io.BytesIO(data)).convert("RGB")


def pdq_hex(rgb_array):
    """Meta's PDQ via pdqhash, returned as (64 hex digits, quality)."""
    bits, quality = pdqhash.compute(rgb_array)
    # pdqhash returns 256 0/1 values, most significant bit first: pack them into 32 bytes.
    return numpy.packbits(bits.astype(numpy.uint8)).tobytes().hex(), quality


def peer_pixels_to_pdq(rgb_array):
    return pdq_hex(rgb_array)


def peer_bytes_to_pdq(data):
    return pdq_hex(numpy.asarray(decode_rgb(data)))


def peer_bytes_to_pdq_phash(data):
    img = decode_rgb(data)
    pdq, quality = pdq_hex(numpy.asarray(img))
    return pdq, quality, str(imagehash.phash(img))


# --------------------------------------------------------------------------------------------
# Corpus loading
# --------------------------------------------------------------------------------------------

def load_corpus(corpus, limit):
    """Read expected.tsv and every listed file into memory; returns (rows, list of bytes)."""
    with open(corpus / "expected.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if limit:
        rows = rows[:limit]
    blobs = [(corpus / row["path"]).read_bytes() for row in rows]
    return rows, blobs


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def timed_pass(work, items):
    """Run `work` on every item, one after the other; returns (seconds, results)."""
    results = [None] * len(items)
    gc.collect()  # start every pass from the same heap state; gc stays enabled as in real use
    start = time.perf_counter()
    for i, item in enumerate(items):
        results[i] = work(item)
    return time.perf_counter() - start, results


def measure_peers(inputs, reps, warmup):
    """Time the three peer pipelines; repetitions are interleaved to spread slow drifts evenly."""
    work = {
        "pixels_to_pdq": (peer_pixels_to_pdq, inputs["pixels"]),
        "bytes_to_pdq": (peer_bytes_to_pdq, inputs["bytes"]),
        "bytes_to_pdq_phash": (peer_bytes_to_pdq_phash, inputs["bytes"]),
    }
    seconds = {key: [] for key in work}
    last_results = {}
    for rep in range(-warmup, reps):
        label = f"warm-up {rep + warmup + 1}/{warmup}" if rep < 0 else f"run {rep + 1}/{reps}"
        for key, (fn, items) in work.items():
            elapsed, last_results[key] = timed_pass(fn, items)
            if rep >= 0:
                seconds[key].append(elapsed)
            log(f"  {label:<14} {key:<20} {elapsed:7.2f} s  {len(items) / elapsed:8.1f} img/s")

    n = len(inputs["bytes"])
    peers = {}
    for key, secs in seconds.items():
        rates = [n / s for s in secs]
        peers[key] = {
            "img_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "runs": rates,
            "seconds": secs,
        }
    return peers, last_results


def check_agreement(rows, results):
    """Compare the peers' hashes with expected.tsv, as a check that they did the real work."""
    checks = {}
    pdq, both = results["pixels_to_pdq"], results["bytes_to_pdq_phash"]
    if rows and "pdq_hex" in rows[0]:
        checks["pdq_hex"] = sum(r[0] == row["pdq_hex"] for r, row in zip(pdq, rows, strict=True))
    if rows and "phash_hex" in rows[0]:
        checks["phash_hex"] = sum(r[2] == row["phash_hex"]
                                  for r, row in zip(both, rows, strict=True))
    return {column: {"matching": count, "of": len(rows)} for column, count in checks.items()}


# --------------------------------------------------------------------------------------------
# Pharos side
# --------------------------------------------------------------------------------------------

def cargo_bench(extra_args, stream=True):
    """Run `cargo bench --bench corpus ...` in the repository; returns (exit code, output tail)."""
    cmd = ["cargo", "bench", "--bench", "corpus", *extra_args]
    log("$ " + shlex.join(cmd))
    tail = deque(maxlen=40)
    try:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        return None, "cargo is not installed (see https://rustup.rs)"
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        if stream:
            log("  | " + line.rstrip("\n"))
    return proc.wait(), "\n".join(tail)


def why_failed(code, tail):
    """One line explaining a failed cargo invocation."""
    if code is None:
        return tail
    if "no bench target named" in tail:
        return "the Pharos bench `corpus` (benches/corpus.rs) does not exist yet"
    last = [line for line in tail.splitlines() if line.strip()]
    return f"`cargo bench --bench corpus` exited with {code}: {last[-1] if last else 'no output'}"


def build_pharos():
    """Compile the Pharos bench before pinning, so the build may use every core."""
    code, tail = cargo_bench(["--no-run"])
    return None if code == 0 else why_failed(code, tail)


def run_pharos(corpus, json_path):
    """Run the Pharos corpus bench; returns (parsed JSON or None, reason when None)."""
    code, tail = cargo_bench(["--", "--corpus", str(corpus), "--json", str(json_path)])
    if code != 0:
        return None, why_failed(code, tail)
    return read_pharos_json(json_path)


def pool_pharos_runs(first, second):
    """Merge two Pharos bench results: every measurement's runs pooled, the figure their median."""
    if first is None or second is None:
        return second if first is None else first
    merged = dict(second)
    for key, entry in second.items():
        other = first.get(key)
        if isinstance(entry, dict) and isinstance(other, dict) and entry.get("runs") and other.get("runs"):
            runs = list(other["runs"]) + list(entry["runs"])
            merged[key] = {"img_per_s": statistics.median(runs), "runs": runs}
    return merged


def read_pharos_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except (OSError, ValueError) as err:
        return None, f"could not read the Pharos JSON {path}: {err}"


def pharos_entry(pharos, key):
    """Normalise one Pharos measurement to {img_per_s, min, max, runs}, or None if absent."""
    entry = (pharos or {}).get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("img_per_s"), (int, float)):
        return None
    out = {"img_per_s": float(entry["img_per_s"]), "min": None, "max": None,
           "runs": entry.get("runs")}
    runs = [r for r in entry.get("runs") or [] if isinstance(r, (int, float))]
    # Show a range only when the runs are images/s too (the headline figure lies within them).
    if runs and min(runs) <= out["img_per_s"] <= max(runs):
        out["min"], out["max"] = float(min(runs)), float(max(runs))
    return out


# --------------------------------------------------------------------------------------------
# Machine description and reporting
# --------------------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, IndexError):
        return None


def machine_info(cpu):
    versions = {}
    for name in PEER_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    commit = first_line(["git", "rev-parse", "--short", "HEAD"])
    if commit and first_line(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += "-dirty"
    return {
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "pinned_cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cxx": first_line(["g++", "--version"]),
        # The flags pdqhash's C++ was compiled with (setuptools takes Python's own CFLAGS).
        "extension_cflags": sysconfig.get_config_var("CFLAGS"),
        "rustc": first_line(["rustc", "--version"]),
        "packages": versions,
        "git_commit": commit,
    }


def fmt_rate(entry):
    return "-" if entry is None else f"{entry['img_per_s']:.1f}"


def fmt_range(entry):
    if entry is None or entry.get("min") is None:
        return ""
    return f"{entry['min']:.1f}-{entry['max']:.1f}"


def fmt_ratio(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x"


def print_table(report):
    header = ("measurement", "peer", "peer img/s", "(min-max)", "Pharos img/s", "(min-max)",
              "Pharos/peer")
    lines = [header]
    for key, _, _, peer_name, _ in MEASUREMENTS:
        m = report["measurements"][key]
        lines.append((key, peer_name, fmt_rate(m["peer"]), fmt_range(m["peer"]),
                      fmt_rate(m["pharos"]), fmt_range(m["pharos"]), fmt_ratio(m["ratio"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print()
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()


def markdown(report):
    m = report["machine"]
    c = report["corpus"]
    p = m["packages"]
    out = [
        f"### Pharos vs. Python peers, single core ({report['date'][:10]})",
        "",
        f"* Machine: {m['cpu_model']}, {m['nproc']} CPUs, one used"
        f" (pinned to CPU {m['pinned_cpu']}); Linux {m['kernel']}, Python {m['python']},"
        f" {m['cxx'] or 'g++ ?'}"
        f"{', ' + m['rustc'] if m['rustc'] else ''}; Pharos commit {m['git_commit'] or '?'}.",
        f"* Corpus: `{c['dir_given']}`, {c['images']} images, {c['megapixels']:.1f} megapixels,"
        f" {c['bytes'] / 1e6:.1f} MB encoded.",
        f"* Peers: pdqhash {p['pdqhash']} (Meta's C++ PDQ), Pillow {p['Pillow']},"
        f" imagehash {p['imagehash']}, numpy {p['numpy']}, scipy {p['scipy']}.",
        f"* Command: `{report['command']}`"
        f" (peers: median of {report['settings']['reps']} runs after"
        f" {report['settings']['warmup']} warm-up; min-max in brackets).",
        "",
        "| Measurement | What is timed | Peer | Peer img/s | Pharos img/s | Pharos / peer |",
        "|---|---|---|--:|--:|--:|",
    ]
    for key, _, _, peer_name, what in MEASUREMENTS:
        e = report["measurements"][key]
        cells = []
        for entry in (e["peer"], e["pharos"]):
            rng = fmt_range(entry)
            cells.append(fmt_rate(entry) + (f" ({rng})" if rng else ""))
        out.append(f"| `{key}` | {what} | {peer_name} | {cells[0]} | {cells[1]} |"
                   f" {fmt_ratio(e['ratio'])} |")
    out.append("")
    if report["pharos"]["status"] != "ok":
        out += [f"Pharos figures missing: {report['pharos']['status']}.", ""]
    if report["settings"]["limit"]:
        out += [f"Smoke test on the first {c['images']} images only (--limit):"
                " not for publication.", ""]
    agreement = ", ".join(f"`{column}` {a['matching']}/{a['of']}"
                          for column, a in report["peer_agreement"].items())
    if agreement:
        out.append(f"Peer hashes equal to expected.tsv: {agreement}.")
    return "\n".join(out) + "\n"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO_ROOT.parent / "shared" / "testdata",
                    help="corpus directory holding expected.tsv (default: ../shared/testdata)")
    ap.add_argument("--cpu", type=int, default=None,
                    help="CPU to pin to (default: the highest-numbered CPU this process may use)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per measurement (>= 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up passes (default 1)")
    ap.add_argument("--limit", type=int, default=0,
                    help="use only the first N images (smoke tests; not for published figures)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "target" / "compare",
                    help="where results.json and results.md go (default: target/compare)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--pharos-json", type=Path,
                       help="use this Pharos JSON instead of running cargo bench")
    group.add_argument("--no-pharos", action="store_true", help="measure the peers only")
    args = ap.parse_args()
    if args.reps < 3:
        ap.error("--reps must be at least 3")
    if not (args.corpus / "expected.tsv").is_file():
        ap.error(f"{args.corpus}/expected.tsv not found")
    return args


def main():
    args = parse_args()
    corpus = args.corpus.resolve()

    # 1. Build the Pharos bench first, while all cores may be used.
    pharos_problem = None
    if args.no_pharos:
        pharos_problem = "not requested (--no-pharos)"
    elif args.pharos_json is None:
        log("== building the Pharos bench")
        pharos_problem = build_pharos()
        if pharos_problem:
            log(f"!! Pharos figures will be missing: {pharos_problem}")

    # 2. Pin this process (and so every child it starts) to a single CPU.
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if args.cpu is None else args.cpu
    if cpu not in allowed:
        sys.exit(f"CPU {cpu} is not available to this process (allowed: {allowed})")
    os.sched_setaffinity(0, {cpu})
    log(f"== pinned to CPU {cpu} of {os.cpu_count()} ({cpu_model()})")

    # 3. Load the corpus: bytes for the byte pipelines, decoded RGB arrays for pixels_to_pdq.
    rows, blobs = load_corpus(corpus, args.limit)
    pixels = [numpy.asarray(decode_rgb(b)) for b in blobs]
    megapixels = sum(a.shape[0] * a.shape[1] for a in pixels) / 1e6
    log(f"== corpus {corpus}: {len(rows)} images, {megapixels:.1f} MP,"
        f" {sum(map(len, blobs)) / 1e6:.1f} MB encoded")

    # Other busy processes share the core's caches and memory bandwidth and may be scheduled on
    # the pinned CPU: record the load so a noisy run can be recognised afterwards.
    load_before = os.getloadavg()
    if load_before[0] > 1.0:
        log(f"!! load average is {load_before[0]:.2f}: other processes are busy,"
            " figures may be low")

    # 4. Time Pharos once before the peers and once after (step 5), pooling the runs, so that a change
    #    in background load during the run affects both sides alike.
    pharos_before = None
    if args.pharos_json is None and pharos_problem is None:
        log("== Pharos (before the peers)")
        with tempfile.TemporaryDirectory() as tmp:
            pharos_before, pharos_problem = run_pharos(corpus, Path(tmp) / "pharos.json")

    # 4b. Time the peers.
    log(f"== peers: {args.warmup} warm-up + {args.reps} timed passes per measurement")
    peers, results = measure_peers({"pixels": pixels, "bytes": blobs}, args.reps, args.warmup)
    load_after = os.getloadavg()
    agreement = check_agreement(rows, results)
    del pixels, results

    # 5. Time Pharos in the same invocation, on the same CPU.
    pharos = None
    if args.pharos_json is not None:
        pharos, pharos_problem = read_pharos_json(args.pharos_json)
    elif pharos_problem is None:
        log("== Pharos")
        with tempfile.TemporaryDirectory() as tmp:
            pharos, pharos_problem = run_pharos(corpus, Path(tmp) / "pharos.json")
        pharos = pool_pharos_runs(pharos_before, pharos)
    if pharos is not None and pharos.get("images") not in (None, len(rows)):
        log(f"!! Pharos hashed {pharos.get('images')} images, the peers {len(rows)}")

    # 6. Combine, print and save.
    measurements = {}
    for key, mine_key, peer_key, _, _ in MEASUREMENTS:
        mine = pharos_entry(pharos, mine_key)
        measurements[key] = {
            "peer": peers[peer_key],
            "pharos": mine,
            "ratio": mine["img_per_s"] / peers[peer_key]["img_per_s"] if mine else None,
        }
    if pharos is not None and all(m["pharos"] is None for m in measurements.values()):
        pharos_problem = "the Pharos JSON has none of the expected measurements"
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": os.environ.get("PHAROS_COMPARE_COMMAND") or shlex.join(sys.argv),
        "machine": machine_info(cpu),
        "corpus": {"dir": str(corpus), "dir_given": str(args.corpus), "images": len(rows),
                   "megapixels": megapixels, "bytes": sum(map(len, blobs))},
        "settings": {"reps": args.reps, "warmup": args.warmup, "limit": args.limit or None,
                     "single_thread": True,
                     "loadavg_before_peers": load_before, "loadavg_after_peers": load_after},
        "peer_agreement": agreement,
        "pharos": {"status": "ok" if pharos_problem is None else pharos_problem,
                   "raw": pharos},
        "measurements": measurements,
    }

    print_table(report)
    if pharos_problem:
        print(f"Pharos figures missing: {pharos_problem}")
    for column, a in agreement.items():
        print(f"peer hashes equal to expected.tsv {column}: {a['matching']}/{a['of']}")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(markdown(report), encoding="utf-8")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
