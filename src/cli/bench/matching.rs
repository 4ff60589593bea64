//! `pharos bench match`: exact range queries per second against generated banks.
//!
//! The bank is `--bank N` uniform random hashes (PDQ by default), indexed by the multi-index
//! (`pharos::matcher`, the index `pharos match` uses, choosing index or scan per query). Queries: half are
//! bank entries with 0..=radius bits flipped (hits), half fresh random hashes (misses). One call answers all
//! `--queries` queries in parallel on `--jobs` threads (`Index::search_batch`).

use super::input::{bank, Bank};
use super::{check_nonempty, jobs_or_all, measure, parse_count, pool, Common, Measurement, Param, Report};
use clap::Args;
use pharos::matcher::{Kind, Method, SearchOptions};

#[derive(Args, Debug)]
pub(crate) struct MatchBench {
    /// Bank size in hashes (`1e6` and `1_000_000` work too); comma-separate to sweep.
    #[arg(long, value_delimiter = ',', value_parser = parse_count, default_value = "1000000")]
    bank: Vec<usize>,
    /// Hash kind of the bank.
    #[arg(long, default_value = "pdq", value_parser = parse_kind)]
    kind: Kind,
    /// Largest Hamming distance reported [default: 31 for PDQ, 10 for pHash].
    #[arg(long)]
    radius: Option<u32>,
    /// Queries per call (half hits, half misses).
    #[arg(long, value_parser = parse_count, default_value = "2000")]
    queries: usize,
    /// Query threads; comma-separate to sweep [default: number of CPUs].
    #[arg(long, short = 'j', value_delimiter = ',', value_parser = parse_count)]
    jobs: Vec<usize>,
    /// Seed of the generated bank and queries.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    common: Common,
}

/// `pdq` or `phash`: the kinds matched by distance (a digest bank is a hash-set lookup, nothing to plan).
pub(crate) fn parse_kind(s: &str) -> Result<Kind, String> {
    match s.parse().map_err(|e: pharos::Error| e.to_string())? {
        k @ (Kind::Pdq | Kind::Phash) => Ok(k),
        k => Err(format!("{k} banks match by equality (a hash-set lookup); bench match plans pdq or phash")),
    }
}

pub(crate) fn run(a: MatchBench) -> anyhow::Result<()> {
    check_nonempty("--bank", &a.bank)?;
    let jobs = jobs_or_all(&a.jobs);
    let radius = a.radius.unwrap_or(a.kind.default_radius());
    if radius > a.kind.bits() {
        anyhow::bail!("--radius {radius} is larger than a {} hash ({} bits)", a.kind, a.kind.bits());
    }
    let mut report = Report::new("match", &a.common);
    for &n in &a.bank {
        eprintln!("bench match: generating and indexing {n} {} hashes", a.kind);
        let b = bank(a.kind, n, a.queries, radius, a.seed);
        for &threads in &jobs {
            report.push(measure_match(&b, radius, threads, &a.common)?);
        }
    }
    report.finish(&a.common)
}

/// Query rate against `b` on `threads` threads (also the capacity report's match stage).
pub(crate) fn measure_match(
    b: &Bank,
    radius: u32,
    threads: usize,
    c: &Common,
) -> anyhow::Result<Measurement> {
    let pool = pool(threads)?;
    let opts = SearchOptions { radius, method: Method::Auto };
    let mut hits = 0usize;
    let stats = measure(c, || {
        let res = pool.install(|| b.index.search_batch(&b.queries, opts));
        hits = res.iter().map(Vec::len).sum();
        res.len() as u64
    });
    let n = b.index.len();
    Ok(Measurement::new(
        "match",
        "queries",
        vec![
            Param::new("kind", b.index.kind().name()),
            Param::axis("bank", n, n as f64),
            Param::new("radius", radius),
            Param::axis("jobs", threads, threads as f64),
        ],
        stats,
    )
    .with("queries", b.queries.len())
    .with("hits_per_query", hits as f64 / b.queries.len().max(1) as f64)
    .with("build_seconds", b.build_seconds)
    .with("heap_bytes_per_hash", b.index.heap_bytes() as f64 / n.max(1) as f64))
}
