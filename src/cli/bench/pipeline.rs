//! `pharos bench pipeline`: end to end in-process, file bytes (in memory) → decode → PDQ + pHash → match the
//! PDQ hash against a generated PDQ bank, per image set, backend, batch size and thread count.
//!
//! One call runs the whole image set through the shared hashing pipeline ([`pharos::pipeline`], the one
//! `pharos hash` and the daemon use) with `--jobs` decode workers and GPU batches of up to `--batch`
//! images (on the cpu backend each worker hashes what it decoded). Results come back in input order, and
//! every `--batch` of them have their PDQ hashes matched in parallel (`Index::search_batch`) on the same
//! number of threads.

use super::input::{bank, image_sets, Bank, Format, ImageSet, Source};
use super::{
    check_nonempty, jobs_or_all, measure, parse_backend, parse_count, pool, Common, Measurement, Param,
    Report,
};
use clap::Args;
use pharos::engine::{Backend, Engine, HashOptions};
use pharos::hash::HashRecord;
use pharos::matcher::{AnyHash, Kind, Method, Query, SearchOptions};
use pharos::metrics::Metrics;
use pharos::pipeline::{run_ordered, Job, Pipeline, PipelineConfig};
use std::sync::Arc;

#[derive(Args, Debug)]
pub(crate) struct PipelineBench {
    #[command(flatten)]
    source: Source,
    /// Encoding of generated images (ignored with --corpus).
    #[arg(long, value_enum, default_value = "jpeg")]
    format: Format,
    /// Backend: auto, cpu or gpu.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Images per batch; comma-separate to sweep.
    #[arg(long, value_delimiter = ',', value_parser = parse_count, default_value = "16")]
    batch: Vec<usize>,
    /// Worker threads; comma-separate to sweep [default: number of CPUs].
    #[arg(long, short = 'j', value_delimiter = ',', value_parser = parse_count)]
    jobs: Vec<usize>,
    /// PDQ bank size in hashes (generated, uniform random).
    #[arg(long, value_parser = parse_count, default_value = "1000000")]
    bank: usize,
    /// Match radius.
    #[arg(long, default_value_t = 31)]
    radius: u32,
    #[command(flatten)]
    common: Common,
}

pub(crate) fn run(a: PipelineBench) -> anyhow::Result<()> {
    check_nonempty("--batch", &a.batch)?;
    if a.radius > 256 {
        anyhow::bail!("--radius {} is larger than a PDQ hash (256 bits)", a.radius);
    }
    let jobs = jobs_or_all(&a.jobs);
    let engine = Engine::new(a.backend)?;
    let copies =
        8.max(2 * jobs.iter().copied().max().unwrap_or(1)).max(a.batch.iter().copied().max().unwrap_or(1));
    let sets = image_sets(&a.source, a.format, copies)?;
    eprintln!("bench pipeline: generating and indexing {} PDQ hashes", a.bank);
    let b = bank(Kind::Pdq, a.bank, 0, a.radius, 1);
    let mut report = Report::new("pipeline", &a.common);
    for set in &sets {
        for &batch in &a.batch {
            for &threads in &jobs {
                report
                    .push(measure_pipeline(&engine, set, &b, a.radius, batch, threads, a.format, &a.common)?);
            }
        }
    }
    report.finish(&a.common)
}

/// End-to-end rate of `set` (also the capacity report's cross-check of its model).
#[allow(clippy::too_many_arguments, reason = "one flat list of the configuration's parameters")]
pub(crate) fn measure_pipeline(
    engine: &Engine,
    set: &ImageSet,
    b: &Bank,
    radius: u32,
    batch: usize,
    threads: usize,
    format: Format,
    c: &Common,
) -> anyhow::Result<Measurement> {
    let pool = pool(threads)?;
    let cfg = PipelineConfig {
        max_batch: batch,
        decode_threads: threads,
        max_in_flight: (threads * 4).max(2 * batch),
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::new(engine.clone(), cfg, Arc::new(Metrics::new()))?;
    let opts = SearchOptions { radius, method: Method::Auto };
    let hash_opts = HashOptions::default();
    let files: Vec<bytes::Bytes> = set.files.iter().map(|f| bytes::Bytes::from(f.to_vec())).collect();
    let mut matches = 0usize;
    let stats = measure(c, || {
        matches = 0;
        let mut n = 0u64;
        let mut records: Vec<HashRecord> = Vec::with_capacity(batch);
        let mut match_batch = |records: &mut Vec<HashRecord>, matches: &mut usize| {
            let queries: Vec<Query> = records.iter().map(|r| vec![AnyHash::Pdq(r.pdq.hash)]).collect();
            let hits = pool.install(|| b.index.search_batch(&queries, opts));
            *matches += hits.iter().map(Vec::len).sum::<usize>();
            n += std::hint::black_box(std::mem::take(records)).len() as u64;
        };
        let items = files.iter().map(|f| ((), Ok(Job::bytes(f.clone(), hash_opts))));
        let done = run_ordered(&pipeline, items, |(), result| -> Result<(), std::convert::Infallible> {
            if let Ok(rec) = result {
                records.push(rec);
                if records.len() == batch {
                    match_batch(&mut records, &mut matches);
                }
            }
            Ok(())
        });
        let Ok(()) = done;
        match_batch(&mut records, &mut matches);
        n
    });
    // Every job is answered: the batcher thread ends at once, before the engine can be dropped here.
    pipeline.shutdown(std::time::Duration::from_secs(30));
    let mp = set.mean_megapixels();
    let mut params = vec![Param::new("backend", engine.describe()), set.param()];
    if set.megapixels.is_some() {
        params.push(Param::new("format", format.name()));
    }
    params.extend([
        Param::axis("batch", batch, batch as f64),
        Param::axis("jobs", threads, threads as f64),
        Param::new("bank", b.index.len()),
        Param::new("radius", radius),
    ]);
    Ok(Measurement::new("pipeline", "images", params, stats.clone())
        .with("images", set.files.len())
        .with("mean_megapixels", mp)
        .with("megapixels_per_sec", stats.median * mp)
        .with("matches_per_pass", matches))
}
