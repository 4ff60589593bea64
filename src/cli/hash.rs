//! `pharos hash`: files or directories in, one JSON line per input out, in input order.
//!
//! Inputs go through the shared hashing pipeline ([`pharos::pipeline`], the daemon's) with `--jobs` decode
//! workers, and are written in input order as soon as every earlier input is done, so output streams even
//! for millions of files while memory stays bounded. A failing input is reported in-band
//! (`{"path":…,"error":…}`) and the others carry on.

use super::inputs::{collect_inputs, Input};
use anyhow::Context as _;
use clap::Args;
use pharos::engine::{Backend, Engine, HashOptions};
use pharos::hash::pdq::Dihedral;
use pharos::hash::HashRecord;
use pharos::image::{DecodeOptions, Limits};
use pharos::metrics::Metrics;
use pharos::pipeline::{run_ordered, Job, Pipeline, PipelineConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub(crate) struct HashArgs {
    /// Hashing backend: auto (a real GPU if present, else CPU), cpu, or gpu (any adapter, software included).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Also output the seven PDQ dihedral variants (rotations and mirrors).
    #[arg(long)]
    dihedral: bool,
    /// Also output "md5", "sha1" and "sha256" of each file's bytes (lowercase hex, as md5sum and Python's
    /// hashlib print them), computed from the bytes already read for decoding.
    #[arg(long, env = "PHAROS_EXACT")]
    exact: bool,
    /// Apply the EXIF orientation tag before hashing (the reference does not).
    #[arg(long)]
    exif: bool,
    /// Worker threads [default: number of CPUs].
    #[arg(long, short = 'j', env = "PHAROS_JOBS")]
    jobs: Option<NonZeroUsize>,
    /// Largest accepted file, in bytes.
    #[arg(long, env = "PHAROS_MAX_IMAGE_BYTES", default_value_t = Limits::default().max_bytes)]
    max_bytes: u64,
    /// Largest accepted width or height, in pixels.
    #[arg(long, env = "PHAROS_MAX_IMAGE_SIDE", default_value_t = Limits::default().max_width)]
    max_side: u32,
    /// Largest accepted width × height.
    #[arg(long, env = "PHAROS_MAX_IMAGE_PIXELS", default_value_t = Limits::default().max_pixels)]
    max_pixels: u64,
    /// Image files, or directories to walk recursively.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse().map_err(|e: pharos::Error| e.to_string())
}

#[derive(Serialize)]
struct HashLine<'a> {
    path: &'a str,
    width: u32,
    height: u32,
    pdq: String,
    quality: u32,
    phash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dihedral: Option<BTreeMap<&'static str, String>>,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    path: &'a str,
    error: &'a str,
}

pub(crate) fn run(args: HashArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(args.backend)?;
    let opts = HashOptions {
        decode: DecodeOptions {
            limits: Limits {
                max_bytes: args.max_bytes,
                max_width: args.max_side,
                max_height: args.max_side,
                max_pixels: args.max_pixels,
            },
            exif_orientation: args.exif,
        },
        dihedral: args.dihedral,
        exact: args.exact,
    };
    let inputs = collect_inputs(&args.paths);
    let jobs = args
        .jobs
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
        .min(inputs.len().max(1));

    // Jobs in flight at most: enough to keep every decoder and a GPU batch busy, few enough that memory
    // stays flat however many inputs there are.
    let cfg = PipelineConfig {
        decode_threads: jobs,
        max_in_flight: (jobs * 4).max(2 * GPU_BATCH),
        max_batch: GPU_BATCH,
        max_delay: std::time::Duration::from_millis(2),
        max_decoded_bytes: 512 << 20,
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::new(engine, cfg, Arc::new(Metrics::new()))?;

    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(inputs.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let stdout = std::io::stdout();
    let interactive = stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    let items = inputs.iter().map(|input| {
        let job = match input {
            Input::File(path) => Ok(Job::file(path.clone(), opts)),
            Input::Unreadable(_, msg) => Err(pharos::Error::InvalidInput(msg.clone())),
        };
        (input.path(), job)
    });
    run_ordered(&pipeline, items, |path, result| -> anyhow::Result<()> {
        let path = path.display().to_string();
        match result {
            Ok(rec) => serde_json::to_writer(&mut out, &hash_line(&path, &rec))?,
            Err(e) => {
                failed += 1;
                serde_json::to_writer(&mut out, &ErrorLine { path: &path, error: &e.to_string() })?
            }
        }
        out.write_all(b"\n")?;
        if interactive {
            out.flush()?;
        }
        progress.inc(1);
        Ok(())
    })
    .context("writing results")?;
    out.flush().context("writing results")?;
    progress.finish_and_clear();
    // Every job is answered, so this is at once; it lets go of the GPU before the process exits.
    pipeline.shutdown(std::time::Duration::from_secs(30));
    Ok(if failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Images per GPU submission in `pharos hash` (fewer when the decoders have nothing more ready).
const GPU_BATCH: usize = 32;

fn hash_line<'a>(path: &'a str, rec: &HashRecord) -> HashLine<'a> {
    HashLine {
        path,
        width: rec.width,
        height: rec.height,
        pdq: rec.pdq.hash.to_hex(),
        quality: rec.pdq.quality,
        phash: rec.phash.to_hex(),
        md5: rec.exact.map(|e| e.md5_hex()),
        sha1: rec.exact.map(|e| e.sha1_hex()),
        sha256: rec.exact.map(|e| e.sha256_hex()),
        dihedral: rec.dihedral.as_ref().map(dihedral_map),
    }
}

fn dihedral_map(d: &Dihedral) -> BTreeMap<&'static str, String> {
    d.named().into_iter().map(|(name, h)| (name, h.to_hex())).collect()
}
