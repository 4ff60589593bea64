//! `pharos bench`: capacity benchmarks (DESIGN.md §1 "capacity planner", §5).
//!
//! # Modes (one file each)
//! - [`decode`]: file bytes → pixels, images/s and megapixels/s.
//! - [`hash`]: decoded pixels → PDQ + pHash, per backend, batch size, image size and thread count.
//! - [`matching`] (`match`): queries/s against a generated bank of chosen size(s) at a radius.
//! - [`pipeline`]: end to end in-process, file bytes → decode → hash → match against a generated bank.
//! - [`grpc`]: images/s and latency over gRPC HashStream, side by side with the same pipeline in-process.
//! - [`capacity`]: the planner's report: per-stage rates on this machine, the sustained rate for an image-size
//!   mix, the limiting stage, and machines needed for yearly volumes.
//!
//! # The shared harness (reuse it for new modes)
//! [`stats`] measures, [`report`] prints the table and writes the JSON, [`plot`] draws the charts.
//!
//! 1. Flatten [`Common`] into the mode's clap `Args` (`--reps`, `--warmup`, `--seconds`, `--json`, `--plot`).
//! 2. For each configuration, call [`measure`] with a closure that does some work (a batch, a pass over a
//!    corpus, a batch of queries…) and returns how many items it handled. It makes `--warmup` untimed calls,
//!    then `--reps` timed repetitions, each calling the closure until at least `--seconds` have passed (at
//!    least once), and returns [`Stats`]: the per-repetition rates (items/s) with their median, min, max,
//!    p10 and p90.
//! 3. Wrap each result in a [`Measurement`] (the configuration's parameters, in column order, plus any extra
//!    figures) and collect them in a [`Report`]; [`Report::finish`] prints the table on stdout, writes the
//!    JSON (`--json FILE`) and the SVG charts of every swept parameter (`--plot DIR`, see [`plot`]).
//! 4. Add the variant to [`Mode`] and a line to [`run`].
//!
//! JSON (`--json`): `{"tool":"pharos bench","mode":…,"version":…,"date":…,"machine":{os,arch,cpus,cpu_model},
//! "settings":{reps,warmup,min_seconds_per_rep},"spread":…,"results":[{"mode","unit","params":{…},
//! "rate":{"median","min","max","p10","p90","runs":[…],"items","seconds","calls","ms_per_call"},"extra":{…}}]}`
//! (+ `"capacity":{…}` for the capacity mode). Rates are items per second; `unit` names the item.

mod capacity;
mod decode;
mod grpc;
mod hash;
mod input;
mod matching;
mod pipeline;
mod plot;
mod report;
mod stats;

pub(crate) use report::{fmt_rate, results_table, table, Measurement, Param, Report};
pub(crate) use stats::{measure, percentile, Stats};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Capacity benchmarks: per stage (decode, hash, match), end to end (pipeline, grpc) and the capacity report.
#[derive(Args, Debug)]
#[command(
    after_help = "Every mode takes --reps N (timed repetitions, default 5), --warmup N (untimed calls, \
                  default 1), --seconds S (minimum seconds per repetition), --json FILE and --plot DIR. \
                  Figures are the median of the repetitions' rates, with min/max and p10/p90 as spread."
)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Decoding throughput: file bytes (in memory) → pixels, on a corpus or generated JPEG/PNG images.
    ///
    /// Example: pharos bench decode --corpus ../shared/testdata --jobs 1,2 --json decode.json
    Decode(decode::DecodeBench),
    /// Hashing throughput (PDQ + pHash) from decoded pixels, per backend, batch size, image size and threads.
    ///
    /// Example: pharos bench hash --backend cpu --batch 1,16,64 --size 256x256,1280x800 --plot plots
    Hash(hash::HashBench),
    /// Matching throughput: queries/s against generated PDQ (or pHash) banks of chosen sizes at a radius.
    ///
    /// Example: pharos bench match --bank 1000000,10000000 --radius 31 --jobs 1,2
    Match(matching::MatchBench),
    /// End to end in-process: file bytes → decode → hash → match against a generated bank.
    ///
    /// Example: pharos bench pipeline --corpus ../shared/testdata --bank 1000000
    Pipeline(pipeline::PipelineBench),
    /// Capacity report: sustained images/s, /day, /year for an image-size mix, the limiting stage, and
    /// machines needed for yearly volumes.
    ///
    /// Measures decode, hash and match rates (and the end-to-end pipeline as a check) on all --jobs
    /// threads, in interleaved rounds. Model: CPU stages share the cores, so their seconds per image add up
    /// (decode + match, + hash on the cpu backend); a GPU hash stage overlaps with them; sustained rate =
    /// 1 / max(CPU seconds, GPU seconds) per image, per-stage rates being weighted harmonic means over the
    /// mix. Machines for a yearly volume V = ceil(V / (rate × 31,536,000 s × utilisation)).
    ///
    /// Example: pharos bench capacity --corpus ../shared/testdata --yearly 1e9,1e10 --utilisation 0.7
    Capacity(capacity::CapacityBench),
    /// Throughput and per-image latency over gRPC HashStream, side by side with the same pipeline
    /// in-process (a server is started on loopback unless --target names one).
    ///
    /// Example: pharos bench grpc --corpus ../shared/testdata --concurrency 4 --json grpc.json
    Grpc(grpc::GrpcBench),
}

/// Runs the chosen mode.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.mode {
        Mode::Decode(a) => decode::run(a),
        Mode::Hash(a) => hash::run(a),
        Mode::Match(a) => matching::run(a),
        Mode::Pipeline(a) => pipeline::run(a),
        Mode::Capacity(a) => capacity::run(a),
        Mode::Grpc(a) => return grpc::run(a),
    }?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------------------
// Flags every mode takes
// ---------------------------------------------------------------------------------------------------------

/// The measurement flags shared by every mode.
#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// Timed repetitions per configuration; the figure reported is their median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) reps: u32,
    /// Untimed warm-up calls before the timed repetitions of each configuration.
    #[arg(long, default_value_t = 1)]
    pub(crate) warmup: u32,
    /// Minimum seconds per repetition: the work is repeated until it lasts this long (at least once).
    #[arg(long, default_value_t = 0.5, value_parser = parse_seconds)]
    pub(crate) seconds: f64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Write SVG charts of every swept parameter (image size, batch, threads, bank size) into this directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) plot: Option<PathBuf>,
}

pub(crate) fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("'{s}': {e}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("'{s}': expected a number of seconds >= 0"));
    }
    Ok(v)
}

pub(crate) fn parse_backend(s: &str) -> Result<pharos::engine::Backend, String> {
    s.parse().map_err(|e: pharos::Error| e.to_string())
}

/// `WIDTHxHEIGHT`, both positive.
pub(crate) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("'{s}': expected WIDTHxHEIGHT"))?;
    let w: u32 = w.trim().parse().map_err(|e| format!("'{s}': width: {e}"))?;
    let h: u32 = h.trim().parse().map_err(|e| format!("'{s}': height: {e}"))?;
    if w == 0 || h == 0 {
        return Err(format!("'{s}': sides must be positive"));
    }
    Ok((w, h))
}

/// A positive count (batch sizes, thread counts, bank sizes); accepts `1e6`-style and `1_000_000`.
pub(crate) fn parse_count(s: &str) -> Result<usize, String> {
    let t = s.trim().replace('_', "");
    let v = match t.parse::<usize>() {
        Ok(v) => v,
        Err(_) => {
            let f: f64 = t.parse().map_err(|_| format!("'{s}': expected a positive whole number"))?;
            if !f.is_finite() || f.fract() != 0.0 || f < 0.0 || f > usize::MAX as f64 {
                return Err(format!("'{s}': expected a positive whole number"));
            }
            f as usize
        }
    };
    if v == 0 {
        return Err(format!("'{s}': must be at least 1"));
    }
    Ok(v)
}

/// The machine's CPU count (what `--jobs` defaults to).
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The `--jobs` list, or all CPUs when none was given.
pub(crate) fn jobs_or_all(jobs: &[usize]) -> Vec<usize> {
    if jobs.is_empty() {
        vec![cpus()]
    } else {
        jobs.to_vec()
    }
}

/// A rayon pool of `threads` threads.
pub(crate) fn pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("CPU thread pool")
}

/// Refuses an empty or zero-containing list flag.
pub(crate) fn check_nonempty<T>(name: &str, v: &[T]) -> anyhow::Result<()> {
    if v.is_empty() {
        bail!("{name} needs at least one value");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_parse() {
        assert_eq!(parse_size("1280x800"), Ok((1280, 800)));
        assert!(parse_size("0x5").is_err());
        assert!(parse_size("12").is_err());
        assert_eq!(parse_count("1e6"), Ok(1_000_000));
        assert_eq!(parse_count("10_000"), Ok(10_000));
        assert!(parse_count("0").is_err());
        assert!(parse_count("1.5").is_err());
    }
}
