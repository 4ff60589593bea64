//! `pharos bench` on the real binary: every mode runs with tiny settings and writes the documented JSON, the
//! capacity report's arithmetic agrees with its own figures, and bad arguments exit 1 with a message.
//!
//! Rates are only checked for sanity (finite, > 0): this is a shared machine, so no threshold is asserted.
//! Inputs: the fixture images (tests/fixtures/images) or small generated images; outputs go to temporary
//! directories.

use crate::common;

use common::{pharos, show};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const MODES: [&str; 6] = ["decode", "hash", "match", "pipeline", "capacity", "grpc"];
/// The quickest measurement the harness allows: no warm-up, two repetitions of one call each.
const QUICK: [&str; 6] = ["--warmup", "0", "--reps", "2", "--seconds", "0"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

/// Runs `pharos bench MODE args… QUICK --json FILE`, expects success, returns the JSON and stdout.
fn bench_json(mode: &str, args: &[&str]) -> (Value, String) {
    let dir = TempDir::new().unwrap();
    let json = dir.path().join("out.json");
    let mut all: Vec<OsString> = vec!["bench".into(), mode.into()];
    all.extend(args.iter().map(OsString::from));
    all.extend(QUICK.iter().map(OsString::from));
    all.extend(["--json".into(), json.clone().into_os_string()]);
    let out = pharos(all);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    check_report(&v, mode);
    (v, String::from_utf8(out.stdout).unwrap())
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number '{key}' in {v}"))
}

fn positive(x: f64, what: &str) {
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
}

/// The documented top-level fields, and every result's rate statistics.
fn check_report(v: &Value, mode: &str) {
    assert_eq!(v["tool"], "pharos bench");
    assert_eq!(v["mode"], mode);
    assert!(v["version"].is_string() && v["date"].as_str().is_some_and(|d| d.ends_with('Z')), "{v}");
    positive(num(&v["machine"], "cpus"), "machine.cpus");
    assert!(v["machine"]["os"].is_string() && v["machine"]["cpu_model"].is_string());
    assert_eq!(v["settings"]["reps"], 2);
    assert_eq!(v["settings"]["warmup"], 0);
    assert!(v["spread"].as_str().is_some_and(|s| s.contains("p10")));
    let results = v["results"].as_array().expect("results array");
    assert!(!results.is_empty());
    for r in results {
        assert!(r["mode"].is_string() && r["params"].is_object() && r["extra"].is_object(), "{r}");
        assert!(matches!(r["unit"].as_str(), Some("images" | "queries")), "{r}");
        let rate = &r["rate"];
        for k in ["median", "min", "max", "p10", "p90", "seconds", "ms_per_call"] {
            positive(num(rate, k), k);
        }
        assert!(num(rate, "min") <= num(rate, "median") && num(rate, "median") <= num(rate, "max"), "{rate}");
        assert!(num(rate, "p10") <= num(rate, "p90"), "{rate}");
        let runs = rate["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2, "{rate}");
        assert!(runs.iter().all(|x| x.as_f64().is_some_and(|x| x.is_finite() && x > 0.0)));
        assert!(num(rate, "items") >= 2.0 && num(rate, "calls") >= 2.0, "{rate}");
    }
}

fn results(v: &Value) -> &Vec<Value> {
    v["results"].as_array().unwrap()
}

#[test]
fn help_lists_every_mode() {
    let out = pharos(["bench", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for mode in MODES {
        assert!(text.lines().any(|l| l.trim_start().starts_with(mode)), "'{mode}' missing from:\n{text}");
    }
    for flag in ["--reps", "--warmup", "--seconds", "--json", "--plot"] {
        assert!(text.contains(flag), "'{flag}' missing from:\n{text}");
    }
    for mode in MODES {
        let out = pharos(["bench", mode, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Example: pharos bench"), "{mode} --help has no example:\n{text}");
        assert!(text.contains("--json") && text.contains("--reps"), "{text}");
    }
}

#[test]
fn decode_on_the_fixtures_and_on_generated_sizes_with_plots() {
    let (v, stdout) = bench_json("decode", &["--corpus", fixtures().to_str().unwrap(), "--jobs", "1"]);
    let r = &results(&v)[0];
    assert_eq!(r["params"]["size"], "corpus");
    assert_eq!(r["unit"], "images");
    positive(num(&r["extra"], "megapixels_per_sec"), "megapixels_per_sec");
    assert!(stdout.contains("median/s") && stdout.contains("decode"), "{stdout}");

    let plots = TempDir::new().unwrap();
    let (v, _) = bench_json(
        "decode",
        &[
            "--size",
            "64x48,96x64",
            "--format",
            "png",
            "--jobs",
            "1,2",
            "--plot",
            plots.path().to_str().unwrap(),
        ],
    );
    assert_eq!(results(&v).len(), 4);
    for name in ["decode-vs-size.svg", "decode-vs-jobs.svg"] {
        let svg = std::fs::read_to_string(plots.path().join(name)).expect(name);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(svg.contains("<polyline"), "{name}");
    }
}

#[test]
fn hash_sweeps_batch_and_size_and_runs_on_the_fixtures() {
    let (v, _) =
        bench_json("hash", &["--backend", "cpu", "--size", "64x64", "--size", "80x60", "--batch", "1,4"]);
    let rs = results(&v);
    assert_eq!(rs.len(), 4);
    assert!(rs.iter().all(|r| r["params"]["backend"] == "cpu"));
    let batches: Vec<_> = rs.iter().map(|r| r["params"]["batch"].as_u64().unwrap()).collect();
    assert_eq!(batches, [1, 4, 1, 4]);

    let (v, _) =
        bench_json("hash", &["--backend", "cpu", "--corpus", fixtures().to_str().unwrap(), "--jobs", "1"]);
    assert_eq!(results(&v)[0]["params"]["size"], "corpus");
}

#[test]
fn match_reports_queries_per_second_per_bank_size() {
    let (v, _) =
        bench_json("match", &["--bank", "1000,2e3", "--queries", "50", "--jobs", "1", "--radius", "31"]);
    let rs = results(&v);
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0]["params"]["bank"], 1000);
    assert_eq!(rs[1]["params"]["bank"], 2000);
    for r in rs {
        assert_eq!(r["unit"], "queries");
        assert_eq!(r["params"]["radius"], 31);
        // Half the queries are bank entries within the radius, so at least that many hits.
        assert!(num(&r["extra"], "hits_per_query") >= 0.5, "{r}");
        positive(num(&r["extra"], "heap_bytes_per_hash"), "heap_bytes_per_hash");
    }
    let (v, _) = bench_json("match", &["--kind", "phash", "--bank", "500", "--queries", "20"]);
    assert_eq!(results(&v)[0]["params"]["radius"], 10);
}

#[test]
fn pipeline_runs_end_to_end_on_the_fixtures() {
    let fx = fixtures();
    let (v, _) = bench_json(
        "pipeline",
        &[
            "--corpus",
            fx.to_str().unwrap(),
            "--backend",
            "cpu",
            "--bank",
            "1000",
            "--batch",
            "8",
            "--jobs",
            "2",
        ],
    );
    let r = &results(&v)[0];
    assert_eq!(r["mode"], "pipeline");
    assert_eq!(r["params"]["bank"], 1000);
    assert_eq!(num(&r["extra"], "images"), num(&v["results"][0]["rate"], "items") / num(&r["rate"], "calls"));
}

/// The capacity report's figures follow from its own rates: the model, the limiting stage, per day/year
/// and machines = ceil(volume / (rate × seconds per year × utilisation)).
fn check_capacity(v: &Value, volumes: &[f64], utilisation: f64) {
    let c = &v["capacity"];
    assert!(c.is_object(), "no capacity object in {v}");
    let stages = c["stages"].as_array().unwrap();
    let names: Vec<_> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(names, ["decode", "hash", "match"]);
    let mut cpu = 0.0;
    for s in stages {
        positive(num(s, "images_per_sec"), "stage rate");
        let t = num(s, "seconds_per_image");
        assert!((t * num(s, "images_per_sec") - 1.0).abs() < 1e-9, "{s}");
        if s["device"] == "cpu" {
            cpu += t;
        }
    }
    assert!((num(c, "cpu_seconds_per_image") - cpu).abs() <= 1e-12 * cpu.max(1.0), "{c}");
    let model = 1.0 / num(c, "cpu_seconds_per_image").max(num(c, "gpu_seconds_per_image"));
    assert!((num(c, "model_images_per_sec") / model - 1.0).abs() < 1e-9, "{c}");
    positive(num(c, "measured_pipeline_images_per_sec"), "measured pipeline rate");
    let limiting = c["limiting_stage"].as_str().unwrap();
    let slowest_cpu = stages
        .iter()
        .filter(|s| s["device"] == "cpu")
        .max_by(|a, b| num(a, "seconds_per_image").total_cmp(&num(b, "seconds_per_image")))
        .unwrap();
    assert_eq!(limiting, format!("{} (cpu)", slowest_cpu["stage"].as_str().unwrap()), "{c}");

    let rate = num(c, "images_per_sec");
    assert_eq!(c["plan_on"], "model");
    assert_eq!(rate, num(c, "model_images_per_sec"));
    assert_eq!(num(c, "utilisation"), utilisation);
    let spy = num(c, "seconds_per_year");
    assert_eq!(spy, 365.0 * 86_400.0);
    assert!((num(c, "planned_images_per_day") / (rate * utilisation * 86_400.0) - 1.0).abs() < 1e-12);
    assert!((num(c, "planned_images_per_year") / (rate * utilisation * spy) - 1.0).abs() < 1e-12);
    assert!((num(c, "sustained_images_per_year") / (rate * spy) - 1.0).abs() < 1e-12);
    let vols = c["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), volumes.len());
    for (entry, &volume) in vols.iter().zip(volumes) {
        assert_eq!(num(entry, "images_per_year"), volume);
        let machines = num(entry, "machines");
        assert_eq!(machines, (volume / (rate * spy * utilisation)).ceil(), "{entry}");
        assert!(machines >= 1.0);
        // One machine fewer would not do at the planned utilisation.
        assert!((machines - 1.0) * rate * spy * utilisation < volume, "{entry}");
    }
}

#[test]
fn capacity_on_the_fixtures_checks_its_own_arithmetic() {
    let fx = fixtures();
    let (v, stdout) = bench_json(
        "capacity",
        &[
            "--corpus",
            fx.to_str().unwrap(),
            "--backend",
            "cpu",
            "--bank",
            "1000",
            "--yearly",
            "1e9,1e10,123456789",
            "--utilisation",
            "0.5",
        ],
    );
    check_capacity(&v, &[1e9, 1e10, 123_456_789.0], 0.5);
    assert!(stdout.contains("Limiting stage:") && stdout.contains("machines"), "{stdout}");
    let modes: Vec<_> = results(&v).iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["decode", "hash", "pipeline", "match"]);
}

#[test]
fn capacity_on_a_generated_mix() {
    let (v, _) = bench_json(
        "capacity",
        &[
            "--mix",
            "64x48:3,128x96:1",
            "--backend",
            "cpu",
            "--bank",
            "500",
            "--jobs",
            "1",
            "--headroom",
            "0.8",
        ],
    );
    check_capacity(&v, &[1e9, 1e10], 0.8);
    let mix = v["capacity"]["mix"].as_array().unwrap();
    let sizes: Vec<_> = mix.iter().map(|m| m["size"].as_str().unwrap()).collect();
    assert_eq!(sizes, ["64x48", "128x96"]);
    assert_eq!(num(&mix[0], "weight"), 3.0);
    // The stage rates are the weighted harmonic means of the per-size rates.
    let w: f64 = mix.iter().map(|m| num(m, "weight")).sum();
    let t: f64 = mix.iter().map(|m| num(m, "weight") / num(m, "decode_images_per_sec")).sum::<f64>() / w;
    let decode = &v["capacity"]["stages"][0];
    assert!((num(decode, "seconds_per_image") / t - 1.0).abs() < 1e-9, "{decode}");
}

#[test]
fn bad_arguments_exit_1_with_a_message() {
    let missing = TempDir::new().unwrap().path().join("nope");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["bench".into(), "hash".into(), "--size".into(), "0x5".into()], "sides must be positive"),
        (vec!["bench".into(), "hash".into(), "--batch".into(), "0".into()], "at least 1"),
        (vec!["bench".into(), "match".into(), "--bank".into(), "many".into()], "positive whole number"),
        (
            vec![
                "bench".into(),
                "match".into(),
                "--radius".into(),
                "300".into(),
                "--bank".into(),
                "10".into(),
            ],
            "radius",
        ),
        (vec!["bench".into(), "capacity".into(), "--utilisation".into(), "1.5".into()], "utilisation"),
        (vec!["bench".into(), "capacity".into(), "--mix".into(), "64x48:-1".into()], "weight"),
        (vec!["bench".into(), "capacity".into(), "--yearly".into(), "lots".into()], "1e9"),
        (
            vec!["bench".into(), "decode".into(), "--corpus".into(), missing.display().to_string()],
            "not a directory",
        ),
        (
            vec![
                "bench".into(),
                "capacity".into(),
                "--corpus".into(),
                ".".into(),
                "--mix".into(),
                "64x48".into(),
            ],
            "cannot be used with",
        ),
        (vec!["bench".into(), "decode".into(), "--reps".into(), "0".into()], "reps"),
        (vec!["bench".into(), "frobnicate".into()], "unrecognized subcommand"),
    ];
    for (args, msg) in cases {
        let out = pharos(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}\n{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{args:?}: stderr lacks '{msg}':\n{err}");
    }
}

/// The gpu backend's path through `pipeline` and `capacity` (any adapter, lavapipe included). Ignored where
/// `build.rs` expects no adapter; where it runs, a binary that refuses `--backend gpu` fails the test.
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn capacity_on_the_gpu_backend() {
    let fx = fixtures();
    let dir = TempDir::new().unwrap();
    let json = dir.path().join("gpu.json");
    let mut args: Vec<OsString> = ["bench", "capacity", "--corpus"].map(OsString::from).to_vec();
    args.push(fx.clone().into_os_string());
    args.extend(["--backend", "gpu", "--bank", "1000", "--batch", "8"].map(OsString::from));
    args.extend(QUICK.map(OsString::from));
    args.extend([OsString::from("--json"), json.clone().into_os_string()]);
    let out = pharos(args);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_report(&v, "capacity");
    let c = &v["capacity"];
    assert!(c["backend"].as_str().is_some_and(|b| b.starts_with("gpu")), "{c}");
    assert_eq!(c["stages"][1]["device"], "gpu");
    let (cpu, gpu) = (num(c, "cpu_seconds_per_image"), num(c, "gpu_seconds_per_image"));
    positive(gpu, "gpu_seconds_per_image");
    // The GPU stage overlaps: the CPU time excludes it, the rate is set by the slower of the two.
    let expected_cpu = num(&c["stages"][0], "seconds_per_image") + num(&c["stages"][2], "seconds_per_image");
    assert!((cpu / expected_cpu - 1.0).abs() < 1e-9, "{c}");
    assert!((num(c, "model_images_per_sec") * cpu.max(gpu) - 1.0).abs() < 1e-9, "{c}");
    let limiting = c["limiting_stage"].as_str().unwrap();
    assert_eq!(limiting == "hash (gpu)", gpu > cpu, "{c}");
}
