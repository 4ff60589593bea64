//! `pharos match`: query lines in (hex, or the JSON lines of `pharos hash`), one JSON object per query out,
//! in input order.
//!
//! The banks are loaded from the store and indexed once; queries are read in blocks and each block is
//! answered in parallel on `--jobs` threads. A line that is not a query gets an in-band
//! `{"line":N,"error":…}` and the others carry on (exit status 2).

use super::bank::{kind_hashes, DataDir};
use anyhow::Context as _;
use clap::Args;
use pharos::matcher::{Method, SearchOptions};
use pharos::store::formats::{parse_query, QueryLine};
use pharos::store::{LoadedBank, Store};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

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
    id: u32,
    hash: String,
    distance: u32,
    label: Option<String>,
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
}

pub(crate) fn run(args: MatchArgs) -> anyhow::Result<ExitCode> {
    let store = args.data_dir.open()?;
    let mut banks = Vec::new();
    for name in &args.bank {
        let t = std::time::Instant::now();
        let bank = store.load(name)?;
        if let Some(r) = args.radius {
            anyhow::ensure!(
                r <= bank.info.kind.bits(),
                "--radius {r} is larger than a {} hash ({} bits)",
                bank.info.kind,
                bank.info.kind.bits()
            );
        }
        log::debug!("loaded bank '{name}' ({} entries) in {:?}", bank.index.len(), t.elapsed());
        banks.push(bank);
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
        failed += answer_block(&pool, &store, &banks, &args, &block, &mut out)?;
    }
    out.flush()?;
    Ok(if failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Answers one block of queries; returns how many lines failed.
fn answer_block(
    pool: &rayon::ThreadPool,
    store: &Store,
    banks: &[LoadedBank],
    args: &MatchArgs,
    block: &[(usize, Result<QueryLine, String>)],
    out: &mut impl Write,
) -> anyhow::Result<usize> {
    // Per bank, the hashes each query offers it (empty: not asked, skipped or unusable).
    let mut skipped: Vec<Option<String>> = vec![None; block.len()];
    let mut errors: Vec<Option<String>> = block.iter().map(|(_, q)| q.as_ref().err().cloned()).collect();
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
        if !banks.iter().any(|b| !kind_hashes(q, b.info.kind, false).is_empty()) {
            let kinds: Vec<_> = banks.iter().map(|b| b.info.kind.name()).collect();
            errors[i] = Some(format!("no hash of the banks' kind ({}) on this line", kinds.join(", ")));
        }
    }
    let mut results: Vec<Vec<(usize, pharos::matcher::Hit)>> = vec![Vec::new(); block.len()];
    for (b, bank) in banks.iter().enumerate() {
        let queries: Vec<Vec<_>> = block
            .iter()
            .enumerate()
            .map(|(i, (_, q))| match q {
                Ok(q) if errors[i].is_none() && skipped[i].is_none() => {
                    kind_hashes(q, bank.info.kind, args.dihedral)
                }
                _ => Vec::new(),
            })
            .collect();
        let opts = SearchOptions {
            radius: args.radius.unwrap_or(bank.info.kind.default_radius()),
            method: Method::Auto,
        };
        for (i, hits) in pool.install(|| bank.index.search_batch(&queries, opts)).into_iter().enumerate() {
            results[i].extend(hits.into_iter().map(|h| (b, h)));
        }
    }
    // Labels stay in the store: one read per bank and block, for the hits only.
    let mut labels: Vec<std::collections::HashMap<u32, String>> = Vec::with_capacity(banks.len());
    for (b, bank) in banks.iter().enumerate() {
        let mut ids: Vec<u64> =
            results.iter().flatten().filter(|(hb, _)| *hb == b).map(|(_, h)| h.row as u64).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = store.labels(&bank.info.name, &ids)?;
        labels.push(ids.iter().zip(found).filter_map(|(&id, l)| Some((id as u32, l?))).collect());
    }
    let mut failed = 0;
    for (i, (line, q)) in block.iter().enumerate() {
        if let Some(e) = &errors[i] {
            failed += 1;
            serde_json::to_writer(&mut *out, &LineErr { line: *line, error: e })?;
            writeln!(out)?;
            continue;
        }
        let q = q.as_ref().expect("no error");
        let mut hits = std::mem::take(&mut results[i]);
        hits.sort_by_key(|(b, h)| (h.distance, *b, h.row));
        let mut matches = Vec::with_capacity(hits.len());
        for (b, h) in hits {
            let bank = &banks[b];
            let label = labels[b].get(&h.row).cloned();
            matches.push(MatchOut {
                bank: &bank.info.name,
                id: h.row,
                hash: bank.index.get(h.row).map(|x| x.to_hex()).unwrap_or_default(),
                distance: h.distance,
                label,
            });
        }
        let query = q.pdq.map(|h| h.to_hex()).or_else(|| q.phash.map(|h| h.to_hex())).unwrap_or_default();
        let rec = QueryOut { query, path: q.path.as_deref(), matches, skipped: skipped[i].take() };
        serde_json::to_writer(&mut *out, &rec)?;
        writeln!(out)?;
    }
    Ok(failed)
}
