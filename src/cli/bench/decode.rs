//! `pharos bench decode`: file bytes (already in memory) → pixels, per image set and thread count.
//!
//! One call decodes every image of the set in parallel on a pool of `--jobs` threads (rayon), so the rate is
//! what the decode stage sustains with that many cores; nothing is hashed.

use super::input::{image_sets, Format, ImageSet, Source};
use super::{check_nonempty, jobs_or_all, measure, parse_count, pool, Common, Measurement, Param, Report};
use clap::Args;
use pharos::image::{decode, DecodeOptions};
use rayon::prelude::*;

#[derive(Args, Debug)]
pub(crate) struct DecodeBench {
    #[command(flatten)]
    source: Source,
    /// Encoding of generated images (ignored with --corpus).
    #[arg(long, value_enum, default_value = "jpeg")]
    format: Format,
    /// Decoding threads; comma-separate to sweep [default: number of CPUs].
    #[arg(long, short = 'j', value_delimiter = ',', value_parser = parse_count)]
    jobs: Vec<usize>,
    #[command(flatten)]
    common: Common,
}

pub(crate) fn run(a: DecodeBench) -> anyhow::Result<()> {
    let jobs = jobs_or_all(&a.jobs);
    check_nonempty("--jobs", &jobs)?;
    let copies = 8.max(2 * jobs.iter().copied().max().unwrap_or(1));
    let sets = image_sets(&a.source, a.format, copies)?;
    let mut report = Report::new("decode", &a.common);
    for set in &sets {
        for &threads in &jobs {
            report.push(measure_decode(set, threads, a.format, &a.common)?);
        }
    }
    report.finish(&a.common)
}

/// Decode rate of `set` on `threads` threads (also the capacity report's decode stage).
pub(crate) fn measure_decode(
    set: &ImageSet,
    threads: usize,
    format: Format,
    c: &Common,
) -> anyhow::Result<Measurement> {
    let pool = pool(threads)?;
    let opts = DecodeOptions::default();
    let stats = measure(c, || {
        pool.install(|| {
            set.files.par_iter().map(|b| u64::from(decode(b, &opts).map(std::hint::black_box).is_ok())).sum()
        })
    });
    let mp = set.mean_megapixels();
    let mut params = vec![set.param()];
    if set.megapixels.is_some() {
        params.push(Param::new("format", format.name()));
    }
    params.push(Param::axis("jobs", threads, threads as f64));
    Ok(Measurement::new("decode", "images", params, stats.clone())
        .with("images", set.files.len())
        .with("mean_megapixels", mp)
        .with("megapixels_per_sec", stats.median * mp))
}
