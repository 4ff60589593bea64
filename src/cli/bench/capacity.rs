//! `pharos bench capacity`: the capacity planner's report (DESIGN.md §1).
//!
//! # What it measures
//! On this machine, with all `--jobs` threads (default: every CPU), for each image set of the mix (the
//! corpus, or one generated set per `--mix` size): the **decode** rate (bytes → pixels), the **hash** rate
//! (pixels → PDQ + pHash on `--backend`), and the end-to-end **pipeline** rate (bytes → decode → hash →
//! match, the cross-check); once: the **match** rate (one PDQ query per image against a generated bank of
//! `--bank` hashes at `--radius`).
//!
//! The stages are measured in rounds (each round: one `--seconds` repetition of every stage, after
//! `--warmup` calls), `--reps` rounds, so that background load changes hit every stage alike; each stage's
//! figure is the median of its rounds.
//!
//! # The model
//! A stage measured alone on all cores at `R` images/s costs `1/R` machine-seconds per image. For a mix with
//! weights `w_i`, a stage's cost is the weighted mean `t = Σ w_i / R_i / Σ w_i` (so the rate of the mix is a
//! weighted harmonic mean). The stages run concurrently on the same machine:
//! - **CPU stages share the cores**, so their costs add up: `t_cpu = t_decode + t_match (+ t_hash on the cpu
//!   backend)`;
//! - **a GPU stage overlaps** with the CPU stages (the GPU works on one batch while the CPU decodes the
//!   next): `t_gpu = t_hash` on the gpu backend, 0 otherwise;
//! - the sustained rate is `1 / max(t_cpu, t_gpu)`, and the **limiting stage** is the GPU when
//!   `t_gpu > t_cpu`, otherwise the CPU stage with the largest share of `t_cpu` (the one to speed up first).
//!
//! Not modelled: the GPU backend's own CPU work (uploads, the pHash DCT), reading files and the network
//! (gRPC), memory-bandwidth contention between stages. The measured pipeline rate shows how far the model
//! is from the stages really running together; `--plan-on measured` plans on it instead.
//!
//! # Planning
//! `planned rate = rate × --utilisation` (default 0.7: headroom for peaks, other load, failures); per day ×
//! 86,400 s, per year × 31,536,000 s (365 days); machines for a yearly volume
//! `V = ceil(V / (rate × 31,536,000 × utilisation))`.

use super::decode::measure_decode;
use super::hash::measure_hash;
use super::input::{bank, generated, load_corpus, Format, ImageSet};
use super::matching::measure_match;
use super::pipeline::measure_pipeline;
use super::{
    cpus, fmt_rate, parse_backend, parse_count, parse_size, table, Common, Measurement, Report, Stats,
};
use anyhow::bail;
use clap::{Args, ValueEnum};
use pharos::engine::{Backend, Engine};
use pharos::image::Decoded;
use pharos::matcher::Kind;
use pharos::pixels::ImageView;
use serde::Serialize;
use std::path::PathBuf;

/// Seconds in a (365-day) year, the planning year.
pub(crate) const SECONDS_PER_YEAR: f64 = 365.0 * 86_400.0;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// The default image-size mix: an illustrative web/crawler mix, from thumbnails to 12 MP camera photos.
const DEFAULT_MIX: &str = "640x480:3,1280x960:4,1920x1080:2,4000x3000:1";

#[derive(Args, Debug)]
pub(crate) struct CapacityBench {
    /// Measure on every image under DIR (the corpus is its own size mix).
    #[arg(long, value_name = "DIR", conflicts_with = "mix")]
    corpus: Option<PathBuf>,
    /// Image-size mix of generated images, "WxH:weight,..." (weights are relative image counts).
    #[arg(long, default_value = DEFAULT_MIX, value_parser = parse_mix)]
    mix: Mix,
    /// Encoding of generated images (ignored with --corpus).
    #[arg(long, value_enum, default_value = "jpeg")]
    format: Format,
    /// Hashing backend: auto, cpu or gpu.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Images per hashing batch (one GPU submission).
    #[arg(long, value_parser = parse_count, default_value = "16")]
    batch: usize,
    /// Threads for every stage [default: number of CPUs].
    #[arg(long, short = 'j', value_parser = parse_count)]
    jobs: Option<usize>,
    /// PDQ bank size the images are matched against (generated).
    #[arg(long, value_parser = parse_count, default_value = "1000000")]
    bank: usize,
    /// Match radius.
    #[arg(long, default_value_t = 31)]
    radius: u32,
    /// Yearly volumes to size for, images per year; comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_volume, default_value = "1e9,1e10")]
    yearly: Vec<f64>,
    /// Planned utilisation of each machine, in (0, 1]: the headroom factor.
    #[arg(long, visible_alias = "headroom", default_value_t = 0.7, value_parser = parse_utilisation)]
    utilisation: f64,
    /// Which rate to plan on: the model's (from the per-stage rates) or the measured end-to-end pipeline's.
    #[arg(long, value_enum, default_value = "model")]
    plan_on: PlanOn,
    #[command(flatten)]
    common: Common,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum PlanOn {
    /// The model's rate (the per-stage rates combined as described above).
    Model,
    /// The measured end-to-end pipeline rate.
    Measured,
}

/// A parsed `--mix`: sizes with weights.
#[derive(Clone, Debug)]
pub(crate) struct Mix(Vec<((u32, u32), f64)>);

fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (size, weight) = match part.split_once(':') {
            Some((a, b)) => {
                let w: f64 =
                    b.trim().parse().map_err(|_| format!("'{part}': weight '{b}' is not a number"))?;
                (a, w)
            }
            None => (part, 1.0),
        };
        if !weight.is_finite() || weight <= 0.0 {
            return Err(format!("'{part}': the weight must be a positive number"));
        }
        v.push((parse_size(size)?, weight));
    }
    if v.is_empty() {
        return Err("expected WxH:weight,...".into());
    }
    Ok(Mix(v))
}

fn parse_volume(s: &str) -> Result<f64, String> {
    let v: f64 =
        s.trim().replace('_', "").parse().map_err(|_| format!("'{s}': expected a number like 1e9"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("'{s}': the volume must be a positive number"));
    }
    Ok(v)
}

fn parse_utilisation(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}': expected a number in (0, 1]"))?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(format!("'{s}': the utilisation must be in (0, 1]"));
    }
    Ok(v)
}

#[derive(Serialize)]
struct MixEntry {
    size: String,
    weight: f64,
    images: usize,
    /// Corpus files left out because they do not decode.
    skipped_files: usize,
    mean_megapixels: f64,
    decode_images_per_sec: f64,
    hash_images_per_sec: f64,
    pipeline_images_per_sec: f64,
}

#[derive(Serialize)]
struct Stage {
    stage: &'static str,
    device: &'static str,
    /// The stage alone on all `jobs` threads (weighted harmonic mean over the mix).
    images_per_sec: f64,
    /// Machine-seconds per image (`1 / images_per_sec`).
    seconds_per_image: f64,
    /// Share of the CPU time per image (CPU stages), or the GPU time over the CPU time (a GPU stage).
    share_of_cpu_time: f64,
}

#[derive(Serialize)]
struct Volume {
    images_per_year: f64,
    machines: f64,
    /// The utilisation each machine runs at with that many machines.
    utilisation_at_that_count: f64,
}

#[derive(Serialize)]
struct Capacity {
    model: &'static str,
    backend: String,
    jobs: usize,
    bank: usize,
    radius: u32,
    batch: usize,
    mix: Vec<MixEntry>,
    stages: Vec<Stage>,
    limiting_stage: String,
    cpu_seconds_per_image: f64,
    gpu_seconds_per_image: f64,
    model_images_per_sec: f64,
    measured_pipeline_images_per_sec: f64,
    model_over_measured: f64,
    plan_on: PlanOn,
    /// The sustained rate planned on (model or measured), at 100 % utilisation.
    images_per_sec: f64,
    utilisation: f64,
    planned_images_per_sec: f64,
    sustained_images_per_day: f64,
    sustained_images_per_year: f64,
    planned_images_per_day: f64,
    planned_images_per_year: f64,
    seconds_per_day: f64,
    seconds_per_year: f64,
    volumes: Vec<Volume>,
}

const MODEL: &str = "CPU stages share the cores, so their machine-seconds per image add up (decode + match, + hash on \
                     the cpu backend); a GPU hash stage overlaps with them; sustained rate = 1 / max(CPU seconds, GPU \
                     seconds) per image; per-stage rates are weighted harmonic means over the mix";

pub(crate) fn run(a: CapacityBench) -> anyhow::Result<()> {
    let threads = a.jobs.unwrap_or_else(cpus);
    if a.radius > 256 {
        bail!("--radius {} is larger than a PDQ hash (256 bits)", a.radius);
    }
    let engine = Engine::new(a.backend)?;
    let on_gpu = matches!(engine, Engine::Gpu(_));
    let copies = 8.max(2 * threads).max(a.batch);
    let sets: Vec<(ImageSet, f64)> = match &a.corpus {
        Some(dir) => vec![(load_corpus(dir)?, 1.0)],
        None => {
            let mut v = Vec::new();
            for &((w, h), weight) in &a.mix.0 {
                v.push((generated(w, h, a.format, copies)?, weight));
            }
            v
        }
    };
    let mut report = Report::new("capacity", &a.common);
    eprintln!("bench capacity: generating and indexing {} PDQ hashes", a.bank);
    let b = bank(Kind::Pdq, a.bank, 2000, a.radius, 1);

    // Pixels for the hash stage, decoded once: the corpus, or one decoded copy of each generated image.
    let decoded: Vec<Vec<Decoded>> = sets
        .iter()
        .map(|(set, _)| {
            if set.megapixels.is_some() {
                Ok(vec![pharos::image::decode(&set.files[0], &Default::default())?])
            } else {
                set.decode_all()
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let views: Vec<Vec<ImageView<'_>>> = sets
        .iter()
        .zip(&decoded)
        .map(|((set, _), d)| {
            if set.megapixels.is_some() {
                vec![d[0].view(); set.files.len()]
            } else {
                d.iter().map(Decoded::view).collect()
            }
        })
        .collect();

    // The stages are measured in rounds, one repetition of every stage per round, so that a change in the
    // machine's background load weighs on all of them alike (their rates are combined into one model).
    let c = &a.common;
    let one = Common { reps: 1, ..c.clone() };
    let mut rounds: Vec<Vec<Measurement>> = Vec::new();
    for round in 0..c.reps {
        eprintln!("bench capacity: round {} of {}", round + 1, c.reps);
        let mut this = Vec::new();
        for ((set, _), views) in sets.iter().zip(&views) {
            this.push(measure_decode(set, threads, a.format, &one)?);
            this.push(measure_hash(&engine, set, views, a.batch, threads, false, &one)?);
            this.push(measure_pipeline(&engine, set, &b, a.radius, a.batch, threads, a.format, &one)?);
        }
        this.push(measure_match(&b, a.radius, threads, &one)?);
        rounds.push(this);
    }
    let merged: Vec<Measurement> = (0..rounds[0].len())
        .map(|i| {
            let parts: Vec<&Measurement> = rounds.iter().map(|r| &r[i]).collect();
            Measurement { rate: Stats::merge(parts.iter().map(|m| &m.rate)), ..parts[0].clone() }
        })
        .collect();

    let mut mix = Vec::new();
    let (mut t_dec, mut t_hash, mut t_pipe, mut wsum) = (0.0, 0.0, 0.0, 0.0);
    for ((set, weight), m) in sets.iter().zip(merged.chunks(3)) {
        let (dec, hash, pipe) = (&m[0], &m[1], &m[2]);
        t_dec += weight / dec.rate.median;
        t_hash += weight / hash.rate.median;
        t_pipe += weight / pipe.rate.median;
        wsum += weight;
        mix.push(MixEntry {
            size: set.name.clone(),
            weight: *weight,
            images: set.files.len(),
            skipped_files: set.skipped,
            mean_megapixels: set.mean_megapixels(),
            decode_images_per_sec: dec.rate.median,
            hash_images_per_sec: hash.rate.median,
            pipeline_images_per_sec: pipe.rate.median,
        });
    }
    let t_match = merged[merged.len() - 1].rate.seconds_per_item();
    for m in merged {
        report.push(m);
    }
    let (t_dec, t_hash, t_pipe) = (t_dec / wsum, t_hash / wsum, t_pipe / wsum);

    let t_cpu = t_dec + t_match + if on_gpu { 0.0 } else { t_hash };
    let t_gpu = if on_gpu { t_hash } else { 0.0 };
    let model_rate = 1.0 / t_cpu.max(t_gpu);
    let measured = 1.0 / t_pipe;
    let hash_device = if on_gpu { "gpu" } else { "cpu" };
    let stages: Vec<Stage> =
        [("decode", "cpu", t_dec), ("hash", hash_device, t_hash), ("match", "cpu", t_match)]
            .into_iter()
            .map(|(stage, device, t)| Stage {
                stage,
                device,
                images_per_sec: 1.0 / t,
                seconds_per_image: t,
                share_of_cpu_time: t / t_cpu,
            })
            .collect();
    let limiting_stage = if t_gpu > t_cpu {
        "hash (gpu)".to_string()
    } else {
        let cpu_stages = stages.iter().filter(|s| s.device == "cpu");
        let top = cpu_stages.max_by(|x, y| x.seconds_per_image.total_cmp(&y.seconds_per_image));
        top.map_or_else(|| "none".into(), |s| format!("{} (cpu)", s.stage))
    };
    let rate = match a.plan_on {
        PlanOn::Model => model_rate,
        PlanOn::Measured => measured,
    };
    let u = a.utilisation;
    let volumes = a
        .yearly
        .iter()
        .map(|&v| {
            let machines = (v / (rate * SECONDS_PER_YEAR * u)).ceil();
            Volume {
                images_per_year: v,
                machines,
                utilisation_at_that_count: v / (machines * rate * SECONDS_PER_YEAR),
            }
        })
        .collect();
    let cap = Capacity {
        model: MODEL,
        backend: engine.describe(),
        jobs: threads,
        bank: b.index.len(),
        radius: a.radius,
        batch: a.batch,
        mix,
        stages,
        limiting_stage,
        cpu_seconds_per_image: t_cpu,
        gpu_seconds_per_image: t_gpu,
        model_images_per_sec: model_rate,
        measured_pipeline_images_per_sec: measured,
        model_over_measured: model_rate / measured,
        plan_on: a.plan_on,
        images_per_sec: rate,
        utilisation: u,
        planned_images_per_sec: rate * u,
        sustained_images_per_day: rate * SECONDS_PER_DAY,
        sustained_images_per_year: rate * SECONDS_PER_YEAR,
        planned_images_per_day: rate * u * SECONDS_PER_DAY,
        planned_images_per_year: rate * u * SECONDS_PER_YEAR,
        seconds_per_day: SECONDS_PER_DAY,
        seconds_per_year: SECONDS_PER_YEAR,
        volumes,
    };

    print!("{}", super::results_table(&report.results, false));
    println!();
    print!("{}", capacity_text(&cap));
    report.capacity = Some(serde_json::to_value(&cap)?);
    report.write_outputs(c)
}

fn fmt_big(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} billion", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} million", v / 1e6)
    } else {
        fmt_rate(v)
    }
}

fn capacity_text(c: &Capacity) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Capacity of this machine ({} threads, backend {}, bank {} PDQ hashes at radius {}):\n\n",
        c.jobs, c.backend, c.bank, c.radius
    ));
    let stages = c.stages.iter().map(|s| {
        vec![
            s.stage.into(),
            s.device.into(),
            fmt_rate(s.images_per_sec),
            format!("{:.3}", s.seconds_per_image * 1e3),
            if s.device == "cpu" {
                format!("{:.0}%", s.share_of_cpu_time * 100.0)
            } else {
                "- (overlaps)".into()
            },
        ]
    });
    let header = ["stage", "device", "images/s alone", "ms per image", "share of CPU time"];
    out.push_str(&table(header, stages));
    out.push_str(&format!("\nModel: {}.\n", c.model));
    let software = ["llvmpipe", "lavapipe", "swiftshader", "software"];
    if c.backend.starts_with("gpu") && software.iter().any(|s| c.backend.to_ascii_lowercase().contains(s)) {
        out.push_str(
            "Note: the GPU adapter is a software rasteriser running on these same CPU cores, so the GPU stage \
             does not really overlap with the CPU stages; these figures say nothing about a real GPU.\n",
        );
    }
    out.push_str(&format!(
        "Model: {} images/s; measured end to end (pipeline): {} images/s (model / measured = {:.2}).\n",
        fmt_rate(c.model_images_per_sec),
        fmt_rate(c.measured_pipeline_images_per_sec),
        c.model_over_measured
    ));
    // Name the runner-up too: two stages within a few per cent of each other swap places with the noise.
    let mut cpu: Vec<&Stage> = c.stages.iter().filter(|s| s.device == "cpu").collect();
    cpu.sort_by(|x, y| y.seconds_per_image.total_cmp(&x.seconds_per_image));
    let next = match (c.gpu_seconds_per_image > c.cpu_seconds_per_image, cpu.as_slice()) {
        (true, [first, ..]) => format!(
            "; the CPU stages need {:.0} % of the GPU's time (most: {})",
            c.cpu_seconds_per_image / c.gpu_seconds_per_image * 100.0,
            first.stage
        ),
        (false, [first, second, ..]) => format!(
            ", {:.0} % of the CPU time; next: {} ({:.0} %)",
            first.share_of_cpu_time * 100.0,
            second.stage,
            second.share_of_cpu_time * 100.0
        ),
        _ => String::new(),
    };
    out.push_str(&format!("Limiting stage: {}{next}.\n", c.limiting_stage));
    out.push_str(&format!(
        "Planned on the {} rate, {} images/s at 100 %; at {:.0} % utilisation: {} images/s, {} per day, {} per year.\n\n",
        match c.plan_on {
            PlanOn::Model => "model",
            PlanOn::Measured => "measured",
        },
        fmt_rate(c.images_per_sec),
        c.utilisation * 100.0,
        fmt_rate(c.planned_images_per_sec),
        fmt_big(c.planned_images_per_day),
        fmt_big(c.planned_images_per_year)
    ));
    let volumes = c.volumes.iter().map(|x| {
        vec![
            fmt_big(x.images_per_year),
            format!("{:.0}", x.machines),
            format!("{:.0}%", x.utilisation_at_that_count * 100.0),
        ]
    });
    out.push_str(&table(["images per year", "machines", "utilisation each"], volumes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses() {
        let m = parse_mix("640x480:3, 1280x800").unwrap();
        assert_eq!(m.0, vec![((640, 480), 3.0), ((1280, 800), 1.0)]);
        assert!(parse_mix("640x480:0").is_err());
        assert!(parse_mix("640x480:x").is_err());
        assert!(parse_mix("").is_err());
        assert!(parse_mix(DEFAULT_MIX).is_ok());
    }

    #[test]
    fn utilisation_and_volume_parse() {
        assert_eq!(parse_utilisation("0.7"), Ok(0.7));
        assert!(parse_utilisation("0").is_err());
        assert!(parse_utilisation("1.5").is_err());
        assert_eq!(parse_volume("1e10"), Ok(1e10));
        assert!(parse_volume("-1").is_err());
    }
}
