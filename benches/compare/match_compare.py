#!/usr/bin/env python3
"""Pharos matcher vs faiss-cpu, side by side on the same generated PDQ banks (see README.md here).

Run through match.sh (which installs faiss-cpu into benches/compare/.venv). Steps:
  1. builds the Pharos bench (cargo bench --bench match_scale --no-run);
  2. has it write the data sets once into target/match-bench (same seed, same files for both sides);
  3. for each data set and size: runs the Pharos bench in a fresh process (so its resident-set figures
     are its own), then faiss IndexBinaryMultiHash(256, 16, 16) with nflip=1 and IndexBinaryFlat on the
     same files, at each thread count;
  4. prints one table with ratios and writes target/match-bench/results.{json,md}.
Range search at radius R means distance <= R on both sides (faiss's range_search is strict, so it is
given R + 1); the hit counts are compared to show both sides found the same matches.
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def timed_median(fn, reps=3):
    fn()  # warm-up
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    runs.sort()
    return runs[len(runs) // 2], out


def faiss_worker(args, data, n):
    """Measures faiss on one data set; prints one JSON line."""
    import numpy as np
    import faiss

    xb = np.fromfile(os.path.join(args.out, f"{data}-{n}-s{args.seed}.bank"), dtype=np.uint8).reshape(-1, 32)
    xq = np.fromfile(os.path.join(args.out, f"{data}-{n}-s{args.seed}-q{args.queries}.queries"),
                     dtype=np.uint8).reshape(-1, 32)
    assert xb.shape[0] == n
    r0 = rss()
    mih = faiss.IndexBinaryMultiHash(256, 16, 16)
    mih.nflip = 1
    t = time.perf_counter()
    mih.add(xb)
    mih_build = time.perf_counter() - t
    out = {"mih_build_s": mih_build, "mih_rss_bytes_per_hash": (rss() - r0) / n, "threads": []}
    flat = None
    if not args.no_flat:
        flat = faiss.IndexBinaryFlat(256)
        flat.add(xb)
    xf = xq[: args.flat_queries]
    for th in [int(t) for t in args.threads.split(",")]:
        faiss.omp_set_num_threads(th)
        s, (lims, _, _) = timed_median(lambda: mih.range_search(xq, args.radius + 1), args.reps)
        entry = {"threads": th, "mih_qps": len(xq) / s, "mih_hits": int(lims[-1])}
        if flat is not None:
            s, (lims_f, _, _) = timed_median(lambda: flat.range_search(xf, args.radius + 1), args.reps)
            entry["flat_qps"] = len(xf) / s
            entry["flat_hits"] = int(lims_f[-1])
        out["threads"].append(entry)
        print(f"faiss {data} n={n} threads={th}: {entry}", file=sys.stderr)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--data", default="random,clustered")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--flat-queries", type=int, default=100, help="queries for the brute-force peers")
    ap.add_argument("--radius", type=int, default=31)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3, help="timed passes after one warm-up (median)")
    ap.add_argument("--no-flat", action="store_true", help="skip faiss IndexBinaryFlat")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "match-bench"))
    ap.add_argument("--worker", nargs=2, metavar=("DATA", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return faiss_worker(args, args.worker[0], int(args.worker[1]))

    import numpy as np
    import faiss

    sizes = [int(s) for s in args.sizes.split(",")]
    datas = args.data.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    os.makedirs(args.out, exist_ok=True)

    common = ["--queries", str(args.queries), "--radius", str(args.radius), "--seed", str(args.seed),
              "--dir", args.out, "--scan-queries", str(args.flat_queries), "--reps", str(args.reps)]
    print("== building the Pharos bench", file=sys.stderr)
    subprocess.run(["cargo", "bench", "--bench", "match_scale", "--no-run"], cwd=ROOT, check=True)
    print("== writing the data sets", file=sys.stderr)
    subprocess.run(["cargo", "bench", "--bench", "match_scale", "--", "--write-data", "--sizes", args.sizes,
                    "--data", args.data] + common, cwd=ROOT, check=True)

    rows, configs = [], []
    for n in sizes:
        for data in datas:
            # ---- Pharos, in its own process ----
            pj = os.path.join(args.out, f"pharos-{data}-{n}.json")
            subprocess.run(["cargo", "bench", "--bench", "match_scale", "--", "--sizes", str(n), "--data", data,
                            "--threads", args.threads, "--json", pj] + common, cwd=ROOT, check=True)
            with open(pj) as f:
                ph = json.load(f)["results"][0]

            # ---- faiss on the same files, in its own process (so its resident-set growth is its own) ----
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", data, str(n)] + sys.argv[1:],
                                 check=True, stdout=subprocess.PIPE, text=True).stdout
            fz = json.loads(out.strip().splitlines()[-1])
            configs.append({"data": data, "n": n, "pharos": ph, "faiss": fz})
            for entry in fz["threads"]:
                th = entry["threads"]
                p = next(x for x in ph["threads"] if x["threads"] == th)
                row = {
                    "data": data, "n": n, "threads": th,
                    "pharos_qps": p["qps"], "faiss_mih_qps": entry["mih_qps"],
                    "ratio_mih": p["qps"] / entry["mih_qps"],
                    "pharos_scan_qps": p["scan_qps"], "faiss_flat_qps": entry.get("flat_qps"),
                    "hits_equal": p["hits"] == entry["mih_hits"]
                    and ("flat_hits" not in entry or p["scan_hits"] == entry["flat_hits"]),
                    "hits": p["hits"],
                    "pharos_build_s": ph["build_s"], "faiss_mih_build_s": fz["mih_build_s"],
                    "pharos_bytes_per_hash": ph["heap_bytes_per_hash"],
                    "pharos_rss_bytes_per_hash": ph["rss_bytes_per_hash"],
                    "faiss_mih_bytes_per_hash": fz["mih_rss_bytes_per_hash"],
                    "pharos_ready_s": (ph.get("store") or {}).get("ready_s"),
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)

    def f(x, fmt):
        return "—" if x is None else format(x, fmt)

    head = ("| data | n | threads | Pharos q/s | faiss MIH q/s | ratio | Pharos scan q/s | faiss Flat q/s "
            "| same hits | build s (Pharos / faiss MIH) | bytes/hash (Pharos heap / RSS / faiss MIH RSS) "
            "| store → ready s |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['threads']} | {r['pharos_qps']:,.0f} | {r['faiss_mih_qps']:,.0f} "
            f"| **{r['ratio_mih']:.1f}×** | {r['pharos_scan_qps']:,.1f} | {f(r['faiss_flat_qps'], ',.1f')} "
            f"| {'yes' if r['hits_equal'] else 'NO'} ({r['hits']}) "
            f"| {r['pharos_build_s']:.2f} / {r['faiss_mih_build_s']:.2f} "
            f"| {r['pharos_bytes_per_hash']:.1f} / {r['pharos_rss_bytes_per_hash']:.1f} / {r['faiss_mih_bytes_per_hash']:.1f} "
            f"| {f(r['pharos_ready_s'], '.2f')} |")
    table = "\n".join(lines)
    print(table)
    with open("/proc/loadavg") as fl:
        load = fl.read().split()[:3]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(), "cpus": os.cpu_count(), "load_after": load,
        "faiss": faiss.__version__, "numpy": np.__version__,
        "command": os.environ.get("PHAROS_COMPARE_COMMAND", " ".join(sys.argv)),
        "queries": args.queries, "reps": args.reps, "flat_queries": args.flat_queries, "radius": args.radius, "seed": args.seed,
    }
    with open(os.path.join(args.out, "results.json"), "w") as fj:
        json.dump({"meta": meta, "rows": rows, "configs": configs}, fj, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as fm:
        fm.write(f"{meta['date']}, {meta['cpu']} ({meta['cpus']} CPUs), faiss-cpu {meta['faiss']}, "
                 f"load average after: {' '.join(load)}\n\n`{meta['command']}`\n\n{table}\n")


if __name__ == "__main__":
    main()
