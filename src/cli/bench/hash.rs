//! `pharos bench hash`: decoded pixels → PDQ + quality + pHash (optionally the 7 dihedral variants), per
//! backend, batch size, image size and CPU thread count. No file reading or decoding is timed.
//!
//! Generated images: one call hashes one batch of `--batch` images (synthetic photo-like pixels; every
//! stage's cost depends on the size alone). `--corpus`: the corpus is decoded first, and one call hashes the
//! whole corpus in batches of `--batch`, on every `--jobs` thread at once (on the GPU backend several
//! submissions are then in flight, as the pipeline keeps them).

use super::input::{ImageSet, Source};
use super::{
    check_nonempty, jobs_or_all, measure, parse_backend, parse_count, pool, Common, Measurement, Param,
    Report,
};
use clap::Args;
use pharos::engine::{Backend, Engine};
use pharos::image::Decoded;
use pharos::pixels::ImageView;

#[derive(Args, Debug)]
pub(crate) struct HashBench {
    /// Backend: auto, cpu (on --jobs threads) or gpu (any adapter, software included).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Images per batch (one GPU submission; on the CPU, one parallel map over the batch); comma-separate to
    /// sweep.
    #[arg(long, value_delimiter = ',', value_parser = parse_count, default_value = "16")]
    batch: Vec<usize>,
    #[command(flatten)]
    source: Source,
    /// Also compute the seven PDQ dihedral variants.
    #[arg(long)]
    dihedral: bool,
    /// CPU threads (the cpu backend's workers); comma-separate to sweep [default: number of CPUs].
    #[arg(long, short = 'j', value_delimiter = ',', value_parser = parse_count)]
    jobs: Vec<usize>,
    #[command(flatten)]
    common: Common,
}

pub(crate) fn run(a: HashBench) -> anyhow::Result<()> {
    check_nonempty("--batch", &a.batch)?;
    let jobs = jobs_or_all(&a.jobs);
    let engine = Engine::new(a.backend)?;
    let mut report = Report::new("hash", &a.common);
    if let Some(dir) = &a.source.corpus {
        let set = super::input::load_corpus(dir)?;
        let decoded = set.decode_all()?;
        let views: Vec<ImageView<'_>> = decoded.iter().map(Decoded::view).collect();
        for &batch in &a.batch {
            for &threads in &jobs {
                report.push(measure_hash(&engine, &set, &views, batch, threads, a.dihedral, &a.common)?);
            }
        }
    } else {
        let sizes = if a.source.size.is_empty() { vec![(1280, 800)] } else { a.source.size.clone() };
        for &(w, h) in &sizes {
            let pixels = pharos::synth::synthetic_rgb(w as usize, h as usize);
            for &batch in &a.batch {
                let views = vec![ImageView::rgb(w, h, &pixels); batch];
                for &threads in &jobs {
                    let size = Param::axis("size", format!("{w}x{h}"), f64::from(w) * f64::from(h) / 1e6);
                    report.push(measure_views(&engine, size, &views, batch, threads, a.dihedral, &a.common)?);
                }
            }
        }
    }
    report.finish(&a.common)
}

/// Hash rate over the decoded images of `set` (`views`), in batches of `batch` (also the capacity report's
/// hash stage).
pub(crate) fn measure_hash(
    engine: &Engine,
    set: &ImageSet,
    views: &[ImageView<'_>],
    batch: usize,
    threads: usize,
    dihedral: bool,
    c: &Common,
) -> anyhow::Result<Measurement> {
    let mut m = measure_views(engine, set.param(), views, batch, threads, dihedral, c)?;
    m.extra.push(("mean_megapixels", set.mean_megapixels().into()));
    m.extra.push(("megapixels_per_sec", (m.rate.median * set.mean_megapixels()).into()));
    Ok(m)
}

/// Hash rate over `views`, hashed in batches of `batch` per call of the engine, the batches on all of the
/// pool's threads at once; one measured call hashes all of `views`.
fn measure_views(
    engine: &Engine,
    size: Param,
    views: &[ImageView<'_>],
    batch: usize,
    threads: usize,
    dihedral: bool,
    c: &Common,
) -> anyhow::Result<Measurement> {
    let pool = pool(threads)?;
    let stats = measure(c, || {
        // Batches from every thread at once, as the pipeline's decode workers feed the GPU: on the GPU
        // backend their pixel copies run in parallel and several submissions are in flight; on the CPU
        // backend each batch is spread over the pool as well.
        pool.install(|| {
            use rayon::prelude::*;
            views
                .par_chunks(batch)
                .map(|chunk| std::hint::black_box(engine.hash_batch(chunk, dihedral)).len() as u64)
                .sum::<u64>()
        })
    });
    let fallbacks = match engine {
        Engine::Gpu(g) => g.fallbacks(),
        Engine::Cpu => 0,
    };
    Ok(Measurement::new(
        "hash",
        "images",
        vec![
            Param::new("backend", engine.describe()),
            size,
            Param::axis("batch", batch, batch as f64),
            Param::axis("jobs", threads, threads as f64),
            Param::new("dihedral", dihedral),
        ],
        stats,
    )
    .with("gpu_fallbacks", fallbacks))
}
