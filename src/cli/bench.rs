//! `pharos bench`: capacity benchmarks (DESIGN.md §5). One mode so far:
//!
//! - `hash`: images/s of a hashing backend from decoded pixels (no file reading or decoding), for one batch
//!   size and image size, on synthetic photo-like pixels (every stage's cost depends on the size alone).
//!
//! New modes (decode, match, gRPC, …) are new variants of [`Mode`] with their own arguments; each prints a
//! human-readable line per measurement and can write the same as JSON (`--json FILE`).

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use pharos::hash::{Backend, ImageView};
use pharos::pipeline::Engine;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Hashing throughput (PDQ + pHash) from decoded pixels, per backend, batch size and image size.
    ///
    /// Example: pharos bench hash --backend gpu --batch 64 --size 1280x800 --json gpu.json
    Hash(HashBench),
    /// Throughput and latency over gRPC HashStream, side by side with the same pipeline in-process.
    ///
    /// Example: pharos bench grpc --corpus ../shared/testdata/images --concurrency 4 --json grpc.json
    Grpc(super::bench_grpc::GrpcBench),
}

#[derive(Args, Debug)]
struct HashBench {
    /// Backend: auto, cpu (all --jobs threads) or gpu (any adapter, software included).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Images per batch (one GPU submission; on the CPU, one parallel map over the batch).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Image size, WIDTHxHEIGHT (e.g. 256x256, 1280x800 for 1 MP, 4000x3000 for 12 MP).
    #[arg(long, default_value = "1280x800", value_parser = parse_size)]
    size: (u32, u32),
    /// Also compute the seven PDQ dihedral variants.
    #[arg(long)]
    dihedral: bool,
    /// CPU threads for the cpu backend [default: number of CPUs].
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Measure for at least this many seconds (after one warm-up batch), and at least 3 batches.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also write the result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse().map_err(|e: pharos::Error| e.to_string())
}

pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("'{s}': expected WIDTHxHEIGHT"))?;
    let w: u32 = w.parse().map_err(|e| format!("'{s}': width: {e}"))?;
    let h: u32 = h.parse().map_err(|e| format!("'{s}': height: {e}"))?;
    if w == 0 || h == 0 {
        return Err(format!("'{s}': sides must be positive"));
    }
    Ok((w, h))
}

/// One measurement, as printed and written to JSON.
#[derive(Serialize)]
struct HashReport {
    mode: &'static str,
    backend: String,
    width: u32,
    height: u32,
    batch: usize,
    dihedral: bool,
    cpu_threads: usize,
    batches: usize,
    images: usize,
    seconds: f64,
    images_per_sec: f64,
    ms_per_batch: f64,
    gpu_fallbacks: u64,
    machine: Machine,
}

#[derive(Serialize)]
struct Machine {
    os: &'static str,
    arch: &'static str,
    cpus: usize,
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.mode {
        Mode::Hash(a) => hash(a),
        Mode::Grpc(a) => super::bench_grpc::run(a),
    }
}

fn hash(a: HashBench) -> anyhow::Result<ExitCode> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let engine = Engine::new(a.backend)?;
    let threads = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("CPU thread pool")?;
    let (w, h) = a.size;
    let pixels = pharos::hash::synthetic_rgb(w as usize, h as usize);
    let images = vec![ImageView::rgb(w, h, &pixels); a.batch];
    let run_batch = || pool.install(|| engine.hash_batch(&images, a.dihedral));
    std::hint::black_box(run_batch());
    let min = Duration::from_secs_f64(a.seconds.max(0.0));
    let start = Instant::now();
    let mut batches = 0;
    while batches < 3 || start.elapsed() < min {
        std::hint::black_box(run_batch());
        batches += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = batches * a.batch;
    let report = HashReport {
        mode: "hash",
        backend: engine.describe(),
        width: w,
        height: h,
        batch: a.batch,
        dihedral: a.dihedral,
        cpu_threads: if matches!(engine, Engine::Cpu) { threads } else { 1 },
        batches,
        images: n,
        seconds,
        images_per_sec: n as f64 / seconds,
        ms_per_batch: seconds * 1e3 / batches as f64,
        gpu_fallbacks: match &engine {
            Engine::Gpu(g) => g.fallbacks(),
            Engine::Cpu => 0,
        },
        machine: Machine {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
    };
    println!(
        "hash  {:<48} {:>5}x{:<5} batch {:>4}  {:>10.1} images/s  {:>9.2} ms/batch  ({} images in {:.2} s)",
        report.backend, w, h, a.batch, report.images_per_sec, report.ms_per_batch, n, seconds
    );
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
