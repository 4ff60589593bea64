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
//! # The shared harness (reuse it for new modes, e.g. a `grpc` mode in `grpc.rs`)
//! 1. Flatten [`Common`] into the mode's clap `Args` (`--reps`, `--warmup`, `--seconds`, `--json`, `--plot`).
//! 2. For each configuration, call [`measure`] with a closure that does some work (a batch, a pass over a
//!    corpus, a batch of queries…) and returns how many items it handled. It makes `--warmup` untimed calls,
//!    then `--reps` timed repetitions, each calling the closure until at least `--seconds` have passed (at
//!    least once), and returns [`Stats`]: the per-repetition rates (items/s) with their median, min, max,
//!    p10 and p90.
//! 3. Wrap each result in a [`Measurement`] (the configuration's parameters, in column order, plus any extra
//!    figures) and collect them in a [`Report`]; [`Report::finish`] prints the table on stdout, writes the
//!    JSON (`--json FILE`) and the SVG charts of every swept parameter (`--plot DIR`, see [`svg`]).
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
mod svg;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde::ser::{SerializeMap as _, Serializer};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

// ---------------------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------------------

/// Rates of one configuration over its timed repetitions, in items per second.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Stats {
    /// Median of the per-repetition rates: the figure reported.
    pub(crate) median: f64,
    /// Slowest repetition.
    pub(crate) min: f64,
    /// Fastest repetition.
    pub(crate) max: f64,
    /// 10th percentile of the repetitions' rates (linear interpolation between sorted rates).
    pub(crate) p10: f64,
    /// 90th percentile.
    pub(crate) p90: f64,
    /// Every repetition's rate, in order.
    pub(crate) runs: Vec<f64>,
    /// Items handled in all timed repetitions.
    pub(crate) items: u64,
    /// Seconds of all timed repetitions.
    pub(crate) seconds: f64,
    /// Calls of the closure in all timed repetitions.
    pub(crate) calls: u64,
    /// Median milliseconds per call (per batch, per pass: whatever one call does).
    pub(crate) ms_per_call: f64,
}

/// Linear-interpolated percentile `p` (0..=1) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Stats {
    fn from_runs(runs: Vec<f64>, call_ms: Vec<f64>, items: u64, seconds: f64, calls: u64) -> Stats {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let mut ms = call_ms;
        ms.sort_by(f64::total_cmp);
        Stats {
            median: percentile(&sorted, 0.5),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            p10: percentile(&sorted, 0.1),
            p90: percentile(&sorted, 0.9),
            runs,
            items,
            seconds,
            calls,
            ms_per_call: percentile(&ms, 0.5),
        }
    }

    /// Combines measurements of one configuration taken at different times (the capacity report measures
    /// its stages in interleaved rounds): all their repetitions, as if measured together.
    pub(crate) fn merge<'a>(parts: impl IntoIterator<Item = &'a Stats>) -> Stats {
        let (mut runs, mut call_ms) = (Vec::new(), Vec::new());
        let (mut items, mut seconds, mut calls) = (0, 0.0, 0);
        for p in parts {
            runs.extend_from_slice(&p.runs);
            // Each part's median call time stands for its repetitions.
            call_ms.extend(std::iter::repeat_n(p.ms_per_call, p.runs.len()));
            items += p.items;
            seconds += p.seconds;
            calls += p.calls;
        }
        Stats::from_runs(runs, call_ms, items, seconds, calls)
    }

    /// Seconds per item at the median rate (what the capacity model adds up).
    pub(crate) fn seconds_per_item(&self) -> f64 {
        1.0 / self.median
    }
}

/// Measures `work`, a closure that does some work and returns how many items it handled: `--warmup` untimed
/// calls, then `--reps` repetitions, each calling it until `--seconds` have passed (at least once).
pub(crate) fn measure(c: &Common, mut work: impl FnMut() -> u64) -> Stats {
    for _ in 0..c.warmup {
        std::hint::black_box(work());
    }
    let (mut runs, mut call_ms) = (Vec::new(), Vec::new());
    let (mut items_all, mut seconds_all, mut calls_all) = (0u64, 0.0, 0u64);
    for _ in 0..c.reps.max(1) {
        let start = Instant::now();
        let (mut items, mut calls) = (0u64, 0u64);
        loop {
            items += std::hint::black_box(work());
            calls += 1;
            if start.elapsed().as_secs_f64() >= c.seconds {
                break;
            }
        }
        let s = start.elapsed().as_secs_f64().max(1e-9);
        runs.push(items as f64 / s);
        call_ms.push(s * 1e3 / calls as f64);
        items_all += items;
        seconds_all += s;
        calls_all += calls;
    }
    Stats::from_runs(runs, call_ms, items_all, seconds_all, calls_all)
}

// ---------------------------------------------------------------------------------------------------------
// Results, table, JSON
// ---------------------------------------------------------------------------------------------------------

/// One named parameter of a configuration. `x` is its numeric position on a chart when it can be swept
/// (megapixels for an image size, the batch size, the thread count, the bank size).
#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub(crate) name: &'static str,
    pub(crate) value: Value,
    pub(crate) x: Option<f64>,
}

impl Param {
    /// A parameter that is not plotted.
    pub(crate) fn new(name: &'static str, value: impl Into<Value>) -> Param {
        Param { name, value: value.into(), x: None }
    }

    /// A parameter that can be swept and plotted at `x`.
    pub(crate) fn axis(name: &'static str, value: impl Into<Value>, x: f64) -> Param {
        Param { name, value: value.into(), x: Some(x) }
    }

    /// The value as table text.
    pub(crate) fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

fn ser_pairs<S: Serializer>(pairs: &[(&'static str, Value)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

fn ser_params<S: Serializer>(params: &[Param], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(params.len()))?;
    for p in params {
        m.serialize_entry(p.name, &p.value)?;
    }
    m.end()
}

/// One configuration's result.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Measurement {
    /// The mode (or, in the capacity report, the stage) measured.
    pub(crate) mode: &'static str,
    /// What an item is: "images" or "queries" (rates are items per second).
    pub(crate) unit: &'static str,
    /// The configuration, in table column order.
    #[serde(serialize_with = "ser_params")]
    pub(crate) params: Vec<Param>,
    /// The measured rates.
    pub(crate) rate: Stats,
    /// Further figures (megapixels/s, build time, bytes per hash…), in table column order.
    #[serde(serialize_with = "ser_pairs")]
    pub(crate) extra: Vec<(&'static str, Value)>,
}

impl Measurement {
    pub(crate) fn new(
        mode: &'static str,
        unit: &'static str,
        params: Vec<Param>,
        rate: Stats,
    ) -> Measurement {
        Measurement { mode, unit, params, rate, extra: Vec::new() }
    }

    pub(crate) fn with(mut self, name: &'static str, value: impl Into<Value>) -> Measurement {
        self.extra.push((name, value.into()));
        self
    }

    /// Prints a one-line progress note on stderr (the table comes at the end, on stdout).
    pub(crate) fn note(&self) {
        let params: Vec<String> = self.params.iter().map(|p| format!("{} {}", p.name, p.text())).collect();
        eprintln!(
            "bench {}: {}: {} {}/s (min {}, max {})",
            self.mode,
            params.join(", "),
            fmt_rate(self.rate.median),
            self.unit,
            fmt_rate(self.rate.min),
            fmt_rate(self.rate.max)
        );
    }
}

/// Where it ran.
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Machine {
    os: &'static str,
    arch: &'static str,
    cpus: usize,
    cpu_model: String,
}

impl Machine {
    pub(crate) fn this() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine { os: std::env::consts::OS, arch: std::env::consts::ARCH, cpus: cpus(), cpu_model }
    }
}

#[derive(Serialize, Clone, Debug)]
struct Settings {
    reps: u32,
    warmup: u32,
    min_seconds_per_rep: f64,
}

/// Everything one `pharos bench` run reports.
#[derive(Serialize, Debug)]
pub(crate) struct Report {
    tool: &'static str,
    mode: &'static str,
    version: &'static str,
    date: String,
    machine: Machine,
    settings: Settings,
    spread: &'static str,
    /// Every measured configuration.
    pub(crate) results: Vec<Measurement>,
    /// The capacity mode's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) capacity: Option<Value>,
}

impl Report {
    pub(crate) fn new(mode: &'static str, c: &Common) -> Report {
        Report {
            tool: "pharos bench",
            mode,
            version: env!("CARGO_PKG_VERSION"),
            date: utc_now(),
            machine: Machine::this(),
            settings: Settings { reps: c.reps, warmup: c.warmup, min_seconds_per_rep: c.seconds },
            spread: "min/max and p10/p90 of the per-repetition rates; the figure is the median",
            results: Vec::new(),
            capacity: None,
        }
    }

    /// Adds a result (and prints its progress line on stderr).
    pub(crate) fn push(&mut self, m: Measurement) {
        m.note();
        self.results.push(m);
    }

    /// Prints the results table on stdout, then writes `--json` and `--plot` when asked.
    pub(crate) fn finish(&self, c: &Common) -> anyhow::Result<()> {
        print!("{}", results_table(&self.results, true).render());
        self.write_outputs(c)
    }

    /// Writes `--json` and `--plot` when asked (no table).
    pub(crate) fn write_outputs(&self, c: &Common) -> anyhow::Result<()> {
        if let Some(path) = &c.json {
            write_json(path, self)?;
        }
        if let Some(dir) = &c.plot {
            for p in svg::plot_sweeps(dir, self.mode, &self.results)? {
                eprintln!("bench: wrote {}", p.display());
            }
        }
        Ok(())
    }
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// A plain-text table: a header row and rows of cells, numbers right-aligned.
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, columns separated by two spaces, one line per row.
    pub(crate) fn render(&self) -> String {
        let cols = self.header.len().max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut width = vec![0; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let numeric = |s: &str| s.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.');
        let mut out = String::new();
        for (n, r) in std::iter::once(&self.header).chain(&self.rows).enumerate() {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let pad = width[i] - c.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if n > 0 && numeric(c) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if n == 0 {
                let total = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        out
    }
}

/// The standard results table: the parameters, the median rate, min–max and p10–p90, ms per call, and the
/// extra figures when `extras`.
pub(crate) fn results_table(results: &[Measurement], extras: bool) -> Table {
    let with_extras = extras;
    let mut names: Vec<&'static str> = Vec::new();
    let mut extras: Vec<&'static str> = Vec::new();
    for m in results {
        for p in &m.params {
            if !names.contains(&p.name) {
                names.push(p.name);
            }
        }
        for (k, _) in m.extra.iter().filter(|_| with_extras) {
            if !extras.contains(k) {
                extras.push(k);
            }
        }
    }
    let mut header: Vec<String> = vec!["mode".into()];
    header.extend(names.iter().map(|s| s.to_string()));
    header.extend(["median/s", "unit", "min-max/s", "p10-p90/s", "ms/call"].map(String::from));
    header.extend(extras.iter().map(|s| s.to_string()));
    let mut t = Table { header, rows: Vec::new() };
    for m in results {
        let mut row = vec![m.mode.to_string()];
        for n in &names {
            row.push(m.params.iter().find(|p| p.name == *n).map_or_else(|| "-".into(), Param::text));
        }
        row.push(fmt_rate(m.rate.median));
        row.push(m.unit.to_string());
        row.push(format!("{}-{}", fmt_rate(m.rate.min), fmt_rate(m.rate.max)));
        row.push(format!("{}-{}", fmt_rate(m.rate.p10), fmt_rate(m.rate.p90)));
        row.push(format!("{:.2}", m.rate.ms_per_call));
        for k in &extras {
            row.push(m.extra.iter().find(|(n, _)| n == k).map_or_else(|| "-".into(), |(_, v)| fmt_value(v)));
        }
        t.row(row);
    }
    t
}

/// A rate with sensible precision: 3 significant digits below 100, whole numbers above.
pub(crate) fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(
            || n.to_string(),
            |f| {
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    format!("{f:.0}")
                } else {
                    fmt_rate(f)
                }
            },
        ),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no date crate needed).
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
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
    fn percentiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert!((percentile(&v, 0.1) - 1.4).abs() < 1e-12);
        assert!((percentile(&v, 0.9) - 4.6).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.9), 7.0);
    }

    #[test]
    fn merged_stats_pool_the_repetitions() {
        let a = Stats::from_runs(vec![10.0], vec![2.0], 10, 1.0, 1);
        let b = Stats::from_runs(vec![30.0, 20.0], vec![4.0, 6.0], 50, 2.0, 2);
        let m = Stats::merge([&a, &b]);
        assert_eq!(m.runs, vec![10.0, 30.0, 20.0]);
        assert_eq!((m.median, m.min, m.max), (20.0, 10.0, 30.0));
        assert_eq!((m.items, m.seconds, m.calls), (60, 3.0, 3));
        assert_eq!(m.ms_per_call, 5.0);
    }

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

    #[test]
    fn date_is_iso() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z'), "{d}");
    }

    #[test]
    fn table_aligns_numbers_right() {
        let mut t = Table::new(&["name", "rate"]);
        t.row(vec!["a".into(), "5".into()]);
        t.row(vec!["bb".into(), "123".into()]);
        let s = t.render();
        assert!(s.contains("a        5\n"), "{s}");
        assert!(s.contains("bb     123\n"), "{s}");
    }
}
