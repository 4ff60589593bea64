//! `pharos match`: query lines in (hex, or the JSON lines of `pharos hash`), one JSON object per query out,
//! in input order.
//!
//! The named banks are loaded from the store and indexed once ([`pharos::banks::BankSet`], the daemon's
//! bank search); queries are read in blocks and each block is answered in parallel on `--jobs` threads.
//! A line that is not a query gets an in-band `{"line":N,"error":…}` and the others carry on (exit
//! status 2). Each query returns at most `--max-matches` matches, nearest first (`"truncated":true` when
//! more were within the radius).
//!
//! Each bank is queried with the line's hash of its kind: PDQ (and the dihedral variants with
//! `--dihedral`), pHash, or the file's MD5/SHA-1/SHA-256 (`pharos hash --exact` lines; hex lines of 32 or 40
//! digits are MD5 or SHA-1). Every negative bank of the store takes part too, whether named or not: a line
//! that matches one has its other matches reported under `"suppressed"` instead of `"matches"`.

use super::bank::{kind_hashes, DataDir};
use anyhow::Context as _;
use clap::Args;
use pharos::banks::formats::{parse_query, QueryLine};
use pharos::banks::{BankHit, BankQuery, BankSet, SearchPolicy, SearchResult};
use pharos::matcher::Kind;
use pharos::metrics::Metrics;
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Queries answered per parallel block.
const BLOCK: usize = 4096;

#[derive(Args, Debug)]
pub(crate) struct MatchArgs {
    #[command(flatten)]
    data_dir: DataDir,
    /// Bank to match against (repeat for several).
    #[arg(long, required = true, value_name = "NAME")]
    bank: Vec<String>,
    /// Largest Hamming distance reported [default: 31 for PDQ banks, 10 for pHash banks].
    #[arg(long, short = 'r')]
    radius: Option<u32>,
    /// Match the 8 dihedral variants of each query (needs `pharos hash --dihedral` lines); each match
    /// reports its best distance.
    #[arg(long)]
    dihedral: bool,
    /// Skip queries whose PDQ quality is below this (Meta: do not trust quality < 50).
    #[arg(long, value_name = "Q")]
    min_quality: Option<u32>,
    /// Most matches reported per query, nearest first (the object then says `"truncated":true`).
    #[arg(long, value_name = "N", default_value_t = SearchPolicy::default().max_matches)]
    max_matches: usize,
    /// Worker threads [default: number of CPUs].
    #[arg(long, short = 'j', env = "PHAROS_JOBS")]
    jobs: Option<NonZeroUsize>,
    /// Query file, or `-` for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
}

#[derive(Serialize)]
struct MatchOut<'a> {
    bank: &'a str,
    id: u64,
    hash: String,
    distance: u32,
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
}

impl<'a> MatchOut<'a> {
    fn of(h: &'a BankHit) -> MatchOut<'a> {
        MatchOut {
            bank: &h.bank,
            id: h.id,
            hash: h.hash.to_hex(),
            distance: h.distance,
            label: h.label.as_deref(),
            external_id: h.external_id.as_deref(),
            tags: &h.tags,
        }
    }
}

#[derive(Serialize)]
struct SuppressedOut<'a> {
    #[serde(flatten)]
    hit: MatchOut<'a>,
    by: MatchOut<'a>,
}

#[derive(Serialize)]
struct LineErr<'a> {
    line: usize,
    error: &'a str,
}

#[derive(Serialize)]
struct QueryOut<'a> {
    query: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    matches: Vec<MatchOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    suppressed: Vec<SuppressedOut<'a>>,
}

pub(crate) fn run(args: MatchArgs) -> anyhow::Result<ExitCode> {
    let store = args.data_dir.open()?;
    let policy = SearchPolicy { max_matches: args.max_matches };
    // The named banks and every negative bank (negative banks always take part).
    let mut load = args.bank.clone();
    for b in store.list_banks()? {
        if b.policy.negative && !load.contains(&b.name) {
            load.push(b.name);
        }
    }
    let banks = BankSet::open_store(store, Some(&load), None, Arc::new(Metrics::new()), policy)?;
    let mut kinds = Vec::new();
    for name in &args.bank {
        let kind = banks.kind(name)?;
        policy.radius(kind, args.radius).map_err(|e| anyhow::anyhow!("--radius: {e}"))?;
        kinds.push(kind);
    }
    let jobs = args
        .jobs
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;

    let input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input.display()))?,
        ))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    let mut block: Vec<(usize, Result<QueryLine, String>)> = Vec::with_capacity(BLOCK);
    let mut lines = input.lines().enumerate();
    loop {
        block.clear();
        for (i, line) in lines.by_ref() {
            let line = line.with_context(|| format!("reading line {}", i + 1))?;
            match parse_query(&line) {
                Ok(None) => continue,
                Ok(Some(q)) => block.push((i + 1, Ok(q))),
                Err(e) => block.push((i + 1, Err(e))),
            }
            if block.len() == BLOCK {
                break;
            }
        }
        if block.is_empty() {
            break;
        }
        failed += answer_block(&pool, &banks, &kinds, &args, &block, &mut out)?;
    }
    out.flush()?;
    Ok(if failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Answers one block of queries; returns how many lines failed.
fn answer_block(
    pool: &rayon::ThreadPool,
    banks: &BankSet,
    kinds: &[Kind],
    args: &MatchArgs,
    block: &[(usize, Result<QueryLine, String>)],
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    let mut skipped: Vec<Option<String>> = vec![None; block.len()];
    let mut errors: Vec<Option<String>> = block.iter().map(|(_, q)| q.as_ref().err().cloned()).collect();
    // Per query, every hash it offers the banks (each bank uses those of its own kind); empty when the
    // line is skipped or unusable.
    let mut queries: Vec<BankQuery> = vec![BankQuery::default(); block.len()];
    for (i, (_, q)) in block.iter().enumerate() {
        let Ok(q) = q else { continue };
        if let (Some(min), Some(qual)) = (args.min_quality, q.quality) {
            if qual < min {
                skipped[i] = Some(format!("quality {qual} is below --min-quality {min}"));
            }
        }
        if args.dihedral && q.pdq.is_some() && q.pdq_dihedral.is_empty() {
            errors[i] =
                Some("--dihedral needs the dihedral hashes: hash with `pharos hash --dihedral`".into());
        }
        if !kinds.iter().any(|&k| !kind_hashes(q, k, false).is_empty()) {
            let names: Vec<_> = kinds.iter().map(|k| k.name()).collect();
            errors[i] = Some(format!("no hash of the banks' kind ({}) on this line", names.join(", ")));
        }
        if errors[i].is_none() && skipped[i].is_none() {
            // Every kind the line has (negative banks of any of them take part as well).
            for k in Kind::ALL {
                queries[i].hashes.extend(kind_hashes(q, k, args.dihedral));
            }
            queries[i].quality = q.quality;
            queries[i].request_id = Some(match &q.path {
                Some(p) => format!("line {}: {p}", block[i].0),
                None => format!("line {}", block[i].0),
            });
        }
    }
    let results: Vec<SearchResult> = pool.install(|| banks.search_many(&args.bank, &queries, args.radius))?;
    let mut failed = 0;
    for (i, ((line, q), found)) in block.iter().zip(results).enumerate() {
        if let Some(e) = &errors[i] {
            failed += 1;
            serde_json::to_writer(&mut *out, &LineErr { line: *line, error: e })?;
            writeln!(out)?;
            continue;
        }
        let q = q.as_ref().expect("no error");
        let matches = found.hits.iter().map(MatchOut::of).collect();
        let suppressed = found
            .suppressed
            .iter()
            .map(|s| SuppressedOut { hit: MatchOut::of(&s.hit), by: MatchOut::of(&s.by) })
            .collect();
        let query = q
            .pdq
            .map(|h| h.to_hex())
            .or_else(|| q.phash.map(|h| h.to_hex()))
            .or_else(|| q.md5.map(|d| pharos::hash::exact::hex(&d)))
            .or_else(|| q.sha1.map(|d| pharos::hash::exact::hex(&d)))
            .or_else(|| q.sha256.map(|d| pharos::hash::exact::hex(&d)))
            .unwrap_or_default();
        let rec = QueryOut {
            query,
            path: q.path.as_deref(),
            matches,
            skipped: skipped[i].take(),
            truncated: found.truncated,
            suppressed,
        };
        serde_json::to_writer(&mut *out, &rec)?;
        writeln!(out)?;
    }
    Ok(failed)
}
