//! Matcher at scale: PDQ banks of millions of hashes, radius 31, on generated random and clustered data.
//!
//! ```text
//! cargo bench --bench match_scale -- [--sizes 1000000,10000000] [--data random,clustered]
//!     [--threads 1,2] [--queries 2000] [--radius 31] [--seed 1] [--reps 3] [--dir target/match-bench]
//!     [--json FILE] [--write-data] [--no-store]
//! ```
//!
//! Per data set and size it reports: index build time, heap bytes per hash (from the index's own
//! capacities, and the resident-set growth from /proc/self/statm), queries/s per thread count (median of `--reps`
//! timed passes after a warm-up), the brute-force scan's queries/s, the import time into the store, and the
//! time from store to ready-to-query (open + read + index). The data is written once to `--dir`
//! (`{data}-{n}-s{seed}.bank` and `.queries`, 32 bytes per hash: the four little-endian limbs), and
//! `benches/compare/match_compare.py` runs faiss on the very same files; `--write-data` only writes them.
//!
//! Clustered data: families of near-duplicates (a base and up to 19 copies with 0-16 bits flipped), and one
//! base in ten skewed (each 16-bit substring, with probability ½, one of 16 common values), so some buckets
//! are far fuller than others. Queries: half are bank rows with 0-31 bits flipped (hits), half fresh bases
//! (mostly misses; the clustered ones are skewed like the bank).

use pharos::matcher::{Hit, MihIndex};
use pharos::store::{NewEntry, Store};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The shared test-data generator, with this benchmark's bank shapes on top.
struct Rng(pharos::synth::SplitMix64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    fn flip(&mut self, h: &mut [u64; 4], bits: u64) {
        for _ in 0..bits {
            let b = self.below(256);
            h[(b / 64) as usize] ^= 1 << (b % 64);
        }
    }
    fn base(&mut self, clustered: bool) -> [u64; 4] {
        let mut h = [self.next(), self.next(), self.next(), self.next()];
        if clustered && self.below(10) == 0 {
            let common: [u64; 16] = std::array::from_fn(|i| (i as u64).wrapping_mul(0x9e37) & 0xffff);
            for l in h.iter_mut() {
                for s in 0..4 {
                    if self.below(2) == 0 {
                        *l = (*l & !(0xffff << (16 * s))) | (common[self.below(16) as usize] << (16 * s));
                    }
                }
            }
        }
        h
    }
}

fn generate(data: &str, n: usize, queries: usize, seed: u64) -> (Vec<[u64; 4]>, Vec<[u64; 4]>) {
    let clustered = data == "clustered";
    let mut rng = Rng(pharos::synth::SplitMix64::new(seed ^ if clustered { 0xc1 } else { 0x5a }));
    let mut rows = Vec::with_capacity(n);
    while rows.len() < n {
        let base = rng.base(clustered);
        if !clustered {
            rows.push(base);
            continue;
        }
        rows.push(base);
        for _ in 0..rng.below(20) {
            if rows.len() == n {
                break;
            }
            let mut m = base;
            let bits = rng.below(17);
            rng.flip(&mut m, bits);
            rows.push(m);
        }
    }
    let qs = (0..queries)
        .map(|i| {
            if i % 2 == 0 && n > 0 {
                let mut h = rows[rng.below(n as u64) as usize];
                let bits = rng.below(32);
                rng.flip(&mut h, bits);
                h
            } else {
                rng.base(clustered)
            }
        })
        .collect();
    (rows, qs)
}

fn write_hashes(path: &Path, hs: &[[u64; 4]]) {
    let mut bytes = Vec::with_capacity(hs.len() * 32);
    for h in hs {
        h.iter().for_each(|l| bytes.extend_from_slice(&l.to_le_bytes()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn read_hashes(path: &Path) -> Option<Vec<[u64; 4]>> {
    let bytes = std::fs::read(path).ok()?;
    Some(
        bytes
            .chunks_exact(32)
            .map(|c| std::array::from_fn(|i| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap())))
            .collect(),
    )
}

/// The bank and queries for one configuration, read from `dir` or generated (and written) once.
fn dataset(dir: &Path, data: &str, n: usize, q: usize, seed: u64) -> (Vec<[u64; 4]>, Vec<[u64; 4]>) {
    let bank = dir.join(format!("{data}-{n}-s{seed}.bank"));
    let queries = dir.join(format!("{data}-{n}-s{seed}-q{q}.queries"));
    if let (Some(b), Some(qs)) = (read_hashes(&bank), read_hashes(&queries)) {
        if b.len() == n && qs.len() == q {
            return (b, qs);
        }
    }
    let (b, qs) = generate(data, n, q, seed);
    std::fs::create_dir_all(dir).unwrap();
    write_hashes(&bank, &b);
    write_hashes(&queries, &qs);
    (b, qs)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Queries/s answering every query (on the current pool), and the total number of hits.
fn run_queries(idx: &MihIndex<4>, qs: &[[u64; 4]], radius: u32, scan: bool, reps: usize) -> (f64, usize) {
    let once = || {
        let t = Instant::now();
        let hits: usize = qs
            .par_iter()
            .map_init(Vec::<Hit>::new, |buf, q| {
                buf.clear();
                if scan {
                    idx.search_scan(q, radius, buf)
                } else {
                    idx.search(q, radius, buf)
                }
                buf.len()
            })
            .sum();
        (qs.len() as f64 / t.elapsed().as_secs_f64(), hits)
    };
    let (_, hits) = once();
    let runs: Vec<f64> = (0..reps.max(1)).map(|_| once().0).collect();
    (median(runs), hits)
}

struct Args {
    sizes: Vec<usize>,
    data: Vec<String>,
    threads: Vec<usize>,
    queries: usize,
    scan_queries: usize,
    radius: u32,
    reps: usize,
    seed: u64,
    dir: PathBuf,
    json: Option<PathBuf>,
    write_data: bool,
    store: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        sizes: vec![1_000_000],
        data: vec!["random".into(), "clustered".into()],
        threads: vec![1, 2],
        queries: 2000,
        scan_queries: 100,
        radius: 31,
        reps: 3,
        seed: 1,
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/match-bench"),
        json: None,
        write_data: false,
        store: true,
    };
    let mut it = std::env::args().skip(1);
    let list = |s: String| s.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>();
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--n" | "--sizes" => a.sizes = list(val()).iter().map(|s| s.parse().expect("size")).collect(),
            "--data" => a.data = list(val()),
            "--threads" => a.threads = list(val()).iter().map(|s| s.parse().expect("threads")).collect(),
            "--queries" => a.queries = val().parse().expect("queries"),
            "--scan-queries" => a.scan_queries = val().parse().expect("scan queries"),
            "--radius" => a.radius = val().parse().expect("radius"),
            "--seed" => a.seed = val().parse().expect("seed"),
            "--reps" => a.reps = val().parse().expect("reps"),
            "--dir" => a.dir = PathBuf::from(val()),
            "--json" => a.json = Some(PathBuf::from(val())),
            "--write-data" => a.write_data = true,
            "--no-store" => a.store = false,
            "--bench" => {} // appended by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    let mut results = Vec::new();
    for &n in &args.sizes {
        for data in &args.data {
            if args.write_data {
                dataset(&args.dir, data, n, args.queries, args.seed);
                eprintln!("wrote {data} n={n}");
                continue;
            }
            let rss0 = rss_bytes();
            let (rows, qs) = dataset(&args.dir, data, n, args.queries, args.seed);
            let rows_copy = if args.store { rows.clone() } else { Vec::new() };
            let rss_rows = rss_bytes();
            let t = Instant::now();
            let idx = MihIndex::build(rows, &[]);
            let build_s = t.elapsed().as_secs_f64();
            let rss_idx = rss_bytes();
            let heap_per_hash = idx.heap_bytes() as f64 / n as f64;
            // Rows + postings as the resident set grew (the query file and the copy for the store excluded).
            let rss_per_hash = (rss_idx.saturating_sub(rss_rows) + (n as u64 * 32)) as f64 / n as f64;
            let _ = rss0;
            let mut per_threads = Vec::new();
            for &t in &args.threads {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                let (qps, hits) = pool.install(|| run_queries(&idx, &qs, args.radius, false, args.reps));
                let nscan = args.scan_queries.min(qs.len());
                let (scan_qps, scan_hits) =
                    pool.install(|| run_queries(&idx, &qs[..nscan], args.radius, true, args.reps));
                eprintln!(
                    "{data:9} n={n:>9} threads={t}: {qps:>9.0} q/s (index), {scan_qps:>6.1} q/s (scan), {hits} hits"
                );
                per_threads.push(serde_json::json!({
                    "threads": t, "qps": qps, "hits": hits, "scan_qps": scan_qps,
                    "scan_queries": nscan, "scan_hits": scan_hits,
                }));
            }
            drop(idx);
            let mut store_json = serde_json::Value::Null;
            if args.store {
                let sdir = args.dir.join(format!("store-{data}-{n}"));
                let _ = std::fs::remove_dir_all(&sdir);
                let t = Instant::now();
                {
                    let store = Store::open(&sdir).unwrap();
                    store.create_bank("bench", pharos::matcher::Kind::Pdq).unwrap();
                    for chunk in rows_copy.chunks(1_000_000) {
                        let entries: Vec<NewEntry> = chunk
                            .iter()
                            .map(|l| {
                                NewEntry::new(pharos::matcher::AnyHash::Pdq(pharos::hash::Hash256 {
                                    limbs: *l,
                                }))
                            })
                            .collect();
                        store.add("bench", &entries).unwrap();
                    }
                }
                let import_s = t.elapsed().as_secs_f64();
                drop(rows_copy);
                let t = Instant::now();
                let store = Store::open(&sdir).unwrap();
                let bank = pharos::banks::load(&store, "bench").unwrap();
                let ready_s = t.elapsed().as_secs_f64();
                assert_eq!(bank.index.len(), n);
                let file_mb = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
                eprintln!("{data:9} n={n:>9}: import {import_s:.1} s, store → ready {ready_s:.2} s, {file_mb:.0} MB");
                store_json =
                    serde_json::json!({"import_s": import_s, "ready_s": ready_s, "file_mb": file_mb});
                drop(bank);
                drop(store);
                let _ = std::fs::remove_dir_all(&sdir);
            }
            eprintln!(
                "{data:9} n={n:>9}: build {build_s:.2} s, {heap_per_hash:.1} B/hash (heap), {rss_per_hash:.1} B/hash (RSS)"
            );
            results.push(serde_json::json!({
                "data": data, "n": n, "radius": args.radius, "queries": qs.len(),
                "build_s": build_s, "heap_bytes_per_hash": heap_per_hash, "rss_bytes_per_hash": rss_per_hash,
                "threads": per_threads, "store": store_json,
            }));
        }
    }
    if args.write_data {
        return;
    }
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let out = serde_json::json!({
        "machine": machine,
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "results": results,
    });
    if let Some(p) = &args.json {
        let mut f = std::fs::File::create(p).unwrap();
        writeln!(f, "{}", serde_json::to_string_pretty(&out).unwrap()).unwrap();
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
    }
}
