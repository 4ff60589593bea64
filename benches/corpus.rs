//! Corpus throughput, single thread: the Pharos half of `benches/compare/run.sh`.
//!
//! `cargo bench --bench corpus -- [--corpus DIR] [--reps N] [--json FILE]`
//!
//! Measures images/s over every image listed in the corpus' `expected.tsv` (default: `$PHAROS_CORPUS`, else
//! `../shared/testdata`), each image hashed one at a time on the calling thread, exactly as the Python peers
//! are measured:
//! - `pixels_to_pdq`: PDQ hash + quality from pixels decoded beforehand;
//! - `bytes_to_pdq`: bytes in memory → decode → PDQ;
//! - `bytes_to_pdq_phash`: bytes in memory → decode → PDQ + pHash.
//!
//! One warm-up pass, then `--reps` timed passes per measurement, interleaved; the figure is the median.
//! The hashes are checked against `expected.tsv` first, so a fast wrong answer cannot be reported.

use pharos::engine::{DecodeAndHash, HashOptions};
use pharos::hash::pdq::PdqHasher;
use pharos::hash::Hash256;
use pharos::hash::Hashers;
use pharos::image::{decode, DecodeOptions, Decoded};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    corpus: PathBuf,
    reps: usize,
    json: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut corpus = std::env::var_os("PHAROS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"));
    let (mut reps, mut json) = (5usize, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--corpus" => corpus = it.next().expect("--corpus DIR").into(),
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--json" => json = Some(it.next().expect("--json FILE").into()),
            // cargo bench passes --bench; libtest-style filters are ignored too.
            _ => {}
        }
    }
    Args { corpus, reps: reps.max(1), json }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
        .and_then(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} usable core(s), {}", std::env::consts::OS)
}

fn main() {
    let args = parse_args();
    let tsv = std::fs::read_to_string(args.corpus.join("expected.tsv"))
        .unwrap_or_else(|e| panic!("{}/expected.tsv: {e}", args.corpus.display()));
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (c_path, c_pdq) = (col("path"), col("pdq_hex_cpp"));
    let mut files: Vec<(Vec<u8>, Hash256)> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let bytes = std::fs::read(args.corpus.join(f[c_path])).expect("read image");
        files.push((bytes, Hash256::from_hex(f[c_pdq]).expect("hex")));
    }
    let opts = HashOptions::default();
    let decoded: Vec<Decoded> =
        files.iter().map(|(b, _)| decode(b, &DecodeOptions::default()).expect("decode")).collect();
    let megapixels: f64 = decoded.iter().map(|d| d.width as f64 * d.height as f64).sum::<f64>() / 1e6;

    // Correctness first: every hash must be the reference's (the corpus decodes pixel-identically).
    let mut pdq = PdqHasher::new();
    let exact = decoded.iter().zip(&files).filter(|(d, (_, want))| pdq.hash(d.view()).hash == *want).count();
    assert_eq!(exact, files.len(), "hashes differ from pdq_hex_cpp: refusing to time a wrong answer");

    let mut hashers = Hashers::new();
    let n = files.len() as f64;
    type Pass<'a> = Box<dyn FnMut() + 'a>;
    let mut passes: Vec<(&str, Pass)> = vec![
        (
            "pixels_to_pdq",
            Box::new(|| {
                for d in &decoded {
                    black_box(pdq.hash(black_box(d.view())));
                }
            }),
        ),
        (
            "bytes_to_pdq",
            Box::new(|| {
                let mut p = PdqHasher::new();
                for (b, _) in &files {
                    let img = decode(black_box(b), &opts.decode).expect("decode");
                    black_box(p.hash(img.view()));
                }
            }),
        ),
        (
            "bytes_to_pdq_phash",
            Box::new(|| {
                for (b, _) in &files {
                    black_box(hashers.hash_bytes(black_box(b), &opts).expect("hash"));
                }
            }),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); passes.len()];
    for (_, pass) in passes.iter_mut() {
        pass(); // warm-up: grows scratch buffers, faults pages in
    }
    for _ in 0..args.reps {
        for (i, (_, pass)) in passes.iter_mut().enumerate() {
            let t = Instant::now();
            pass();
            rates[i].push(n / t.elapsed().as_secs_f64());
        }
    }
    println!(
        "corpus: {} ({} images, {megapixels:.1} MP), single thread, {}",
        args.corpus.display(),
        files.len(),
        machine()
    );
    let mut json = serde_json::Map::new();
    json.insert("machine".into(), machine().into());
    json.insert("images".into(), files.len().into());
    json.insert("megapixels".into(), megapixels.into());
    for ((name, _), r) in passes.iter().zip(&rates) {
        let m = median(r);
        let (lo, hi) = r.iter().fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        println!("{name:>20}: {m:8.1} img/s  (min {lo:.1}, max {hi:.1}, {} runs)", r.len());
        json.insert((*name).into(), serde_json::json!({ "img_per_s": m, "runs": r }));
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write json");
    }
}
