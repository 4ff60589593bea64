#!/usr/bin/env python3
"""One table from the two side-by-side runs all.sh makes (run.sh's and match.sh's results.json).

Rows: pixels -> PDQ, bytes -> PDQ + pHash (one pinned core, corpus images/s), and one row per matched bank
size (radius 31, queries/s, random PDQ data). Each row: the peer, its rate, Pharos's rate, the ratio
Pharos / peer (> 1: Pharos is faster). Writes OUT/all.json and OUT/all.md.
"""

import argparse
import json
import os
import sys
from pathlib import Path

HASH_ROWS = (
    ("pixels_to_pdq", "pixels -> PDQ (1 core)", "pdqhash (Meta's C++)"),
    ("bytes_to_pdq_phash", "bytes -> PDQ + pHash (1 core)", "Pillow + pdqhash + imagehash"),
)


def size_name(n):
    return f"{n / 1e6:g} M" if n >= 1_000_000 else f"{n:,}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hash", type=Path, required=True)
    ap.add_argument("--match", type=Path, required=True)
    ap.add_argument("--started", default="")
    ap.add_argument("--finished", default="")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    h = json.loads(a.hash.read_text())
    m = json.loads(a.match.read_text())

    rows = []
    for key, what, peer in HASH_ROWS:
        e = h["measurements"][key]
        pharos = e["pharos"]["img_per_s"] if e["pharos"] else None
        rows.append({"measurement": what, "peer": peer, "unit": "img/s", "peer_rate": e["peer"]["img_per_s"],
                     "pharos_rate": pharos, "ratio": e["ratio"], "note": ""})
    for r in m["rows"]:
        rows.append({"measurement": f"match {size_name(r['n'])} bank, radius {m['meta']['radius']}"
                                    f" ({r['threads']} threads)",
                     "peer": "faiss IndexBinaryMultiHash 16x16", "unit": "q/s",
                     "peer_rate": r["faiss_mih_qps"], "pharos_rate": r["pharos_qps"], "ratio": r["ratio_mih"],
                     "note": "same hits" if r["hits_equal"] else "HITS DIFFER"})

    def rate(x):
        return "-" if x is None else f"{x:,.1f}" if x < 100 else f"{x:,.0f}"

    header = ("measurement", "peer", "peer rate", "Pharos rate", "Pharos / peer")
    cells = [header] + [(r["measurement"], r["peer"], f"{rate(r['peer_rate'])} {r['unit']}",
                         f"{rate(r['pharos_rate'])} {r['unit']}",
                         "-" if r["ratio"] is None else f"{r['ratio']:.2f}x") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    print()
    for n, line in enumerate(cells):
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()

    mach = h["machine"]
    target = h["measurements"].get("design_target", {})
    meta = {
        "command": os.environ.get("PHAROS_COMPARE_COMMAND", " ".join(sys.argv)),
        "started": a.started, "finished": a.finished,
        "cpu_model": mach["cpu_model"], "nproc": mach["nproc"], "git_commit": mach.get("git_commit"),
        "corpus": h["corpus"], "hash_command": h["command"], "match_command": m["meta"]["command"],
        "hash_loadavg": [h["settings"]["loadavg_before_peers"], h["settings"]["loadavg_after_peers"]],
        "match_load_after": m["meta"]["load_after"],
        "packages": dict(mach["packages"], **{"faiss-cpu": m["meta"]["faiss"]}),
        "peer_agreement": h["peer_agreement"],
        "design_target_ratio": target.get("ratio"),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "all.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = [
        f"* Command: `{meta['command']}`, {meta['started']} → {meta['finished']}.",
        f"* Machine: {meta['cpu_model']}, {meta['nproc']} CPUs (`nproc`); Pharos commit {meta['git_commit']}.",
        f"* Corpus: `{h['corpus']['dir_given']}`, {h['corpus']['images']} images; hashing rows on one pinned core"
        f" (load average before/after the peers: {meta['hash_loadavg'][0][0]:.2f} / {meta['hash_loadavg'][1][0]:.2f});"
        f" matching rows on generated random PDQ banks (load average after: {' '.join(meta['match_load_after'])}).",
        "* Peers: " + ", ".join(f"{k} {v}" for k, v in meta["packages"].items() if k != "Cython") + ".",
        "",
        "| measurement | peer | peer rate | Pharos rate | Pharos / peer |",
        "|---|---|--:|--:|--:|",
    ]
    for r in rows:
        md.append(f"| {r['measurement']} | {r['peer']} | {rate(r['peer_rate'])} {r['unit']} | "
                  f"{rate(r['pharos_rate'])} {r['unit']} | "
                  f"{'-' if r['ratio'] is None else format(r['ratio'], '.2f') + '×'} |")
    (a.out / "all.md").write_text("\n".join(md) + "\n")
    for col, ag in h["peer_agreement"].items():
        print(f"peer hashes equal to expected.tsv {col}: {ag['matching']}/{ag['of']}")
    print(f"matching: {'same hits on both sides' if all(r['note'] == 'same hits' for r in rows[2:]) else 'HITS DIFFER'}")
    if meta["design_target_ratio"]:
        print(f"DESIGN.md §5 target row (Pharos bytes -> PDQ + pHash vs Pillow + pdqhash PDQ only): "
              f"{meta['design_target_ratio']:.2f}x")
    print(f"wrote {a.out / 'all.json'} and {a.out / 'all.md'}")


if __name__ == "__main__":
    main()
