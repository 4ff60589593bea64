//! `pharos hash`: files or directories in, one JSON line per input out, in input order.
//!
//! Inputs are hashed on `--jobs` worker threads (each with its own scratch space) and written in input order
//! as soon as every earlier input is done, so output streams even for millions of files. A failing input is
//! reported in-band (`{"path":…,"error":…}`) and the others carry on.

use super::inputs::{collect_inputs, Input};
use anyhow::Context as _;
use clap::Args;
use pharos::hash::pdq::Dihedral;
use pharos::hash::Backend;
use pharos::image::Decoded;
use pharos::image::{DecodeOptions, Limits};
use pharos::pipeline::{Engine, HashOptions, HashRecord, Hashers};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

#[derive(Args, Debug)]
pub(crate) struct HashArgs {
    /// Hashing backend: auto (a real GPU if present, else CPU), cpu, or gpu (any adapter, software included).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Also output the seven PDQ dihedral variants (rotations and mirrors).
    #[arg(long)]
    dihedral: bool,
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
    };
    let inputs = collect_inputs(&args.paths);
    let jobs = args
        .jobs
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
        .min(inputs.len().max(1));

    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(inputs.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let stdout = std::io::stdout();
    let interactive = stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;

    // Work is handed out through a bounded queue so memory stays flat however many inputs there are;
    // results come back tagged with their index and are written strictly in input order.
    let (task_tx, task_rx) = mpsc::sync_channel::<usize>(jobs * 4);
    let task_rx = std::sync::Mutex::new(task_rx);
    let (result_tx, result_rx) = mpsc::channel::<(usize, Result<HashRecord, String>)>();
    // GPU: the workers only decode; one batcher thread hashes what they decoded, many images per submission.
    let (decoded_tx, decoded_rx) = mpsc::sync_channel::<(usize, Decoded)>(GPU_BATCH * 2);
    let decoded_tx = matches!(engine, Engine::Gpu(_)).then_some(decoded_tx);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        if let Engine::Gpu(gpu) = &engine {
            let (result_tx, dihedral) = (result_tx.clone(), opts.dihedral);
            scope.spawn(move || gpu_batcher(gpu, decoded_rx, result_tx, dihedral));
        } else {
            drop(decoded_rx);
        }
        for _ in 0..jobs {
            let (task_rx, result_tx, inputs, opts) = (&task_rx, result_tx.clone(), &inputs, &opts);
            let decoded_tx = decoded_tx.clone();
            scope.spawn(move || {
                let mut hashers = Hashers::new();
                loop {
                    let next = task_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(i)) = next else { break };
                    let result = match (&inputs[i], &decoded_tx) {
                        (Input::File(path), None) => hash_file(&mut hashers, path, opts),
                        (Input::File(path), Some(tx)) => match decode_file(path, opts) {
                            Ok(img) => {
                                if tx.send((i, img)).is_err() {
                                    break;
                                }
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                        (Input::Unreadable(_, msg), _) => Err(msg.clone()),
                    };
                    if result_tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(result_tx);
        drop(decoded_tx);
        let n = inputs.len();
        scope.spawn(move || {
            for i in 0..n {
                if task_tx.send(i).is_err() {
                    break;
                }
            }
        });

        let mut pending = BTreeMap::new();
        let mut next = 0usize;
        for (i, result) in result_rx {
            pending.insert(i, result);
            while let Some(result) = pending.remove(&next) {
                let path = inputs[next].path().display().to_string();
                match result {
                    Ok(rec) => serde_json::to_writer(&mut out, &hash_line(&path, &rec))?,
                    Err(msg) => {
                        failed += 1;
                        serde_json::to_writer(&mut out, &ErrorLine { path: &path, error: &msg })?
                    }
                }
                out.write_all(b"\n")?;
                if interactive {
                    out.flush()?;
                }
                progress.inc(1);
                next += 1;
            }
        }
        Ok(())
    })
    .context("writing results")?;
    out.flush().context("writing results")?;
    progress.finish_and_clear();
    Ok(if failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Images per GPU submission in `pharos hash` (fewer when the decoders have nothing more ready).
const GPU_BATCH: usize = 32;
/// Decoded pixels (bytes) the GPU batcher gathers at most before submitting.
const GPU_BATCH_BYTES: usize = 256 << 20;

/// Collects decoded images into batches (up to [`GPU_BATCH`], or whatever is ready), hashes each batch on
/// the GPU and passes the results on, tagged with their input index.
fn gpu_batcher(
    gpu: &pharos::gpu::GpuHasher,
    decoded: mpsc::Receiver<(usize, Decoded)>,
    results: mpsc::Sender<(usize, Result<HashRecord, String>)>,
    dihedral: bool,
) {
    while let Ok(first) = decoded.recv() {
        let mut bytes = decoded_bytes(&first.1);
        let mut batch = vec![first];
        while batch.len() < GPU_BATCH && bytes < GPU_BATCH_BYTES {
            match decoded.try_recv() {
                Ok(next) => {
                    bytes += decoded_bytes(&next.1);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let views: Vec<_> = batch.iter().map(|(_, img)| img.view()).collect();
        for ((i, _), rec) in batch.iter().zip(gpu.hash_batch(&views, dihedral)) {
            if results.send((*i, Ok(rec))).is_err() {
                return;
            }
        }
    }
}

/// Size of a decoded image's pixel buffer.
fn decoded_bytes(img: &Decoded) -> usize {
    match img.view().pixels {
        pharos::hash::Pixels::Rgb(p) | pharos::hash::Pixels::Gray(p) => p.len(),
    }
}

fn decode_file(path: &Path, opts: &HashOptions) -> Result<Decoded, String> {
    let bytes = read_limited(path, opts.decode.limits.max_bytes)?;
    pharos::image::decode(&bytes, &opts.decode).map_err(|e| e.to_string())
}

fn hash_file(hashers: &mut Hashers, path: &Path, opts: &HashOptions) -> Result<HashRecord, String> {
    let bytes = read_limited(path, opts.decode.limits.max_bytes)?;
    hashers.hash_bytes(&bytes, opts).map_err(|e| e.to_string())
}

/// Reads a file, refusing (before reading) one larger than the byte limit.
fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    if meta.len() > max_bytes {
        return Err(pharos::Error::TooLarge {
            what: pharos::error::Limit::Bytes,
            value: meta.len(),
            limit: max_bytes,
        }
        .to_string());
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

fn hash_line<'a>(path: &'a str, rec: &HashRecord) -> HashLine<'a> {
    HashLine {
        path,
        width: rec.width,
        height: rec.height,
        pdq: rec.pdq.hash.to_hex(),
        quality: rec.pdq.quality,
        phash: rec.phash.to_hex(),
        dihedral: rec.dihedral.as_ref().map(dihedral_map),
    }
}

fn dihedral_map(d: &Dihedral) -> BTreeMap<&'static str, String> {
    d.named().into_iter().map(|(name, h)| (name, h.to_hex())).collect()
}
