//! `pharos bench pipeline`: end to end in-process, file bytes (in memory) → decode → PDQ + pHash → match the
//! PDQ hash against a generated PDQ bank, per image set, backend, batch size and thread count.
//!
//! One call runs the whole image set in batches of `--batch`. Per batch, on the cpu backend every image is
//! decoded and hashed by one worker (`Hashers::hash_bytes`, as `pharos hash` does), in parallel on `--jobs`
//! threads; on the gpu backend the batch is decoded in parallel, then hashed in one GPU submission. The
//! batch's PDQ hashes are then matched in parallel (`Index::search_batch`). All stages share the same
//! threads, as they would in the daemon.

use super::input::{bank, image_sets, Bank, Format, ImageSet, Source};
use super::{
    check_nonempty, jobs_or_all, measure, parse_backend, parse_count, pool, Common, Measurement, Param,
    Report,
};
use clap::Args;
use pharos::hash::{Backend, ImageView};
use pharos::image::{decode, DecodeOptions, Decoded};
use pharos::matcher::{AnyHash, Kind, Method, Query, SearchOptions};
use pharos::pipeline::{Engine, HashOptions, HashRecord, Hashers};
use rayon::prelude::*;

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
    let opts = SearchOptions { radius, method: Method::Auto };
    let hash_opts = HashOptions::default();
    let mut matches = 0usize;
    let stats = measure(c, || {
        pool.install(|| {
            let mut n = 0;
            matches = 0;
            for chunk in set.files.chunks(batch) {
                let records: Vec<HashRecord> = match engine {
                    Engine::Cpu => chunk
                        .par_iter()
                        .map_init(Hashers::new, |h, bytes| h.hash_bytes(bytes, &hash_opts))
                        .filter_map(Result::ok)
                        .collect(),
                    Engine::Gpu(_) => {
                        let decoded: Vec<Decoded> = chunk
                            .par_iter()
                            .filter_map(|b| decode(b, &DecodeOptions::default()).ok())
                            .collect();
                        let views: Vec<ImageView<'_>> = decoded.iter().map(Decoded::view).collect();
                        engine.hash_batch(&views, false)
                    }
                };
                let queries: Vec<Query> = records.iter().map(|r| vec![AnyHash::Pdq(r.pdq.hash)]).collect();
                let hits = b.index.search_batch(&queries, opts);
                matches += hits.iter().map(Vec::len).sum::<usize>();
                n += std::hint::black_box(records).len() as u64;
            }
            n
        })
    });
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
