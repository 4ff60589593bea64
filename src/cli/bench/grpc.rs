//! `pharos bench grpc`: images/s and per-image latency over gRPC `HashStream`, side by side with the same
//! pipeline called in-process, so the cost of the transport is a measured ratio (DESIGN.md §5 target:
//! gRPC streaming ≥ 85% of in-process throughput).
//!
//! Without `--target`, a server is started in this process on loopback (port 0) with the chosen backend,
//! and three things are measured on the same images, alternating in each repetition so that machine noise
//! hits all of them alike:
//! - `in-process`: the daemon's own pipeline (the shared [`Pipeline`]) fed directly, with the same number of
//!   images in flight as the gRPC clients keep;
//! - `grpc`: `--concurrency` HashStream streams over loopback, each keeping `--window` requests in flight;
//! - `direct`: what `pharos hash` does (decode + hash on every core, no batcher), for reference.
//!
//! With `--secure`, a second in-process server with TLS (a throwaway CA and certificate made for the run)
//! and bearer-token auth is measured too (`grpc-tls-auth`), in the same alternation: the cost of the trust
//! boundary as a ratio to plaintext `grpc`.
//!
//! With `--target URL`, only `grpc` is measured, against that server (`https://…` with `--ca FILE` for
//! one that speaks TLS; the bearer token of a daemon with `--auth` in `$PHAROS_TOKEN`).
//!
//! This mode has its own loop rather than the shared [`super::measure`] harness: it runs three pipelines
//! against each other, asynchronously, in alternation, and measures per-image latency as well as rates.
//!
//! Latency is per image: from the moment the request is handed to the stream (or submitted to the batcher)
//! to the moment its response arrives; p50 and p99 over every image of the measured interval.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use pharos::engine::HashOptions;
use pharos::pipeline::{Job, Pipeline};
use pharos::server::config::ServeConfig;
use pharos::server::proto::hasher_client::HasherClient;
use pharos::server::proto::{hash_response, HashRequest};
use pharos::server::Server;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

#[derive(Args, Debug)]
pub(crate) struct GrpcBench {
    /// Server to measure (e.g. http://10.0.0.5:50051). Default: start one in this process on loopback and
    /// also measure the in-process pipeline for the ratio.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Folder of images (read into memory first, recursively). Default: a generated photo-like JPEG of
    /// --size.
    #[arg(long, value_name = "DIR")]
    corpus: Option<PathBuf>,
    /// Size of the generated images, WIDTHxHEIGHT (when no --corpus).
    #[arg(long, default_value = "1024x768", value_parser = super::parse_size)]
    size: (u32, u32),
    /// Concurrent HashStream streams (one connection each).
    #[arg(long, short = 'c', default_value_t = 4)]
    concurrency: usize,
    /// Requests each stream keeps in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Seconds each measurement runs (after a warm-up of a quarter of it).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Repetitions of each measurement; the table shows the median and the range.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Backend of the in-process server: auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Also compute the PDQ dihedral variants.
    #[arg(long)]
    dihedral: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also measure a second in-process server with TLS and bearer-token auth (mode grpc-tls-auth).
    #[arg(long, conflicts_with = "target")]
    secure: bool,
    /// With an https:// --target: the CA certificate (PEM) that signed the daemon's certificate.
    #[arg(long, value_name = "FILE", requires = "target")]
    ca: Option<PathBuf>,
    /// With --target: the name the daemon's certificate carries, when the URL's host is not it.
    #[arg(long, value_name = "NAME", requires = "ca")]
    server_name: Option<String>,
}

/// One measurement.
#[derive(Clone, Copy, Debug, Serialize)]
struct Run {
    images: usize,
    errors: usize,
    seconds: f64,
    images_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The repetitions of one mode, summarised.
#[derive(Serialize)]
struct Summary {
    mode: &'static str,
    median_images_per_sec: f64,
    min_images_per_sec: f64,
    max_images_per_sec: f64,
    median_p50_ms: f64,
    median_p99_ms: f64,
    runs: Vec<Run>,
}

#[derive(Serialize)]
struct Report {
    tool: &'static str,
    mode: &'static str,
    target: String,
    backend: String,
    images_in_set: usize,
    mean_image_bytes: f64,
    concurrency: usize,
    window: usize,
    seconds: f64,
    reps: usize,
    cpus: usize,
    modes: Vec<Summary>,
    /// grpc median / in-process median (absent with --target).
    grpc_vs_in_process: Option<f64>,
    /// grpc median / direct median (absent with --target).
    grpc_vs_direct: Option<f64>,
    /// grpc-tls-auth median / grpc median (with --secure).
    tls_auth_vs_grpc: Option<f64>,
}

pub(crate) fn run(a: GrpcBench) -> anyhow::Result<ExitCode> {
    if a.concurrency == 0 || a.window == 0 || a.reps == 0 {
        bail!("--concurrency, --window and --reps must be at least 1");
    }
    let images = load_images(a.corpus.as_deref(), a.size)?;
    let mean_bytes = images.iter().map(|b| b.len()).sum::<usize>() as f64 / images.len() as f64;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // The in-process servers' (empty) bank stores live in a private temporary directory.
        let dir = std::env::temp_dir().join(format!("pharos-bench-grpc-{}", std::process::id()));
        let mut locals = Vec::new();
        let (target, backend, batcher) = match &a.target {
            Some(t) => (t.clone(), "remote".to_string(), None),
            None => {
                let cfg = ServeConfig { backend: a.backend.clone(), metrics: String::new(), ..ServeConfig::default() };
                let server = Server::new(cfg, dir.join("plain"))?;
                let batcher = server.pipeline().clone();
                let backend = batcher.engine().describe();
                let (addr, local) = start_local(server).await?;
                locals.push(local);
                (format!("http://{addr}"), backend, Some(batcher))
            }
        };
        let mut channels = Vec::with_capacity(a.concurrency);
        let tls = match &a.ca {
            None => None,
            Some(ca) => {
                let pem = std::fs::read(ca).with_context(|| format!("--ca {}", ca.display()))?;
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem));
                if let Some(name) = &a.server_name {
                    tls = tls.domain_name(name.clone());
                }
                Some(tls)
            }
        };
        for _ in 0..a.concurrency {
            let mut endpoint = tonic::transport::Channel::from_shared(target.clone())?;
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone())?;
            }
            let ch = endpoint.connect().await.with_context(|| format!("cannot connect to {target}"))?;
            channels.push(ch);
        }
        // A daemon with --auth: the token comes from the environment, never from the command line.
        let target_token = std::env::var("PHAROS_TOKEN").ok().filter(|t| !t.is_empty() && a.target.is_some());
        let secure = match a.secure {
            false => None,
            true => {
                let (server, tls, token) = secure_server(&a.backend, &dir.join("secure"))?;
                let (addr, local) = start_local(server).await?;
                locals.push(local);
                let mut chs = Vec::with_capacity(a.concurrency);
                for _ in 0..a.concurrency {
                    let endpoint = tonic::transport::Channel::from_shared(format!("https://{addr}"))?;
                    chs.push(endpoint.tls_config(tls.clone())?.connect().await.context("TLS connection")?);
                }
                Some((chs, token))
            }
        };
        let in_flight = a.concurrency * a.window;
        let measure = Duration::from_secs_f64(a.seconds.max(0.1));
        let warm = measure / 4;
        eprintln!(
            "bench grpc: {} images ({:.0} KB mean), {} streams × {} in flight, backend {backend}, {} × {:.1} s",
            images.len(),
            mean_bytes / 1e3,
            a.concurrency,
            a.window,
            a.reps,
            a.seconds
        );
        // Warm-up: every path once.
        grpc_run(&channels, target_token.as_deref(), &images, a.window, a.dihedral, warm).await?;
        if let Some((chs, token)) = &secure {
            grpc_run(chs, Some(token), &images, a.window, a.dihedral, warm).await?;
        }
        if let Some(b) = &batcher {
            in_process_run(b, &images, in_flight, a.dihedral, warm).await;
        }
        let (mut grpc, mut inproc, mut direct, mut tls) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rep in 0..a.reps {
            if let Some(b) = &batcher {
                inproc.push(in_process_run(b, &images, in_flight, a.dihedral, measure).await);
            }
            grpc.push(grpc_run(&channels, target_token.as_deref(), &images, a.window, a.dihedral, measure).await?);
            if let Some((chs, token)) = &secure {
                tls.push(grpc_run(chs, Some(token), &images, a.window, a.dihedral, measure).await?);
            }
            if batcher.is_some() {
                let imgs = images.clone();
                let dihedral = a.dihedral;
                direct.push(tokio::task::spawn_blocking(move || direct_run(&imgs, dihedral, measure)).await?);
            }
            eprintln!("  rep {}/{} done", rep + 1, a.reps);
        }
        drop(secure);
        for (stop, task) in locals {
            drop(stop);
            task.await??;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let mut modes = Vec::new();
        if !inproc.is_empty() {
            modes.push(summarise("in-process", inproc));
        }
        modes.push(summarise("grpc", grpc));
        if !tls.is_empty() {
            modes.push(summarise("grpc-tls-auth", tls));
        }
        if !direct.is_empty() {
            modes.push(summarise("direct", direct));
        }
        let median = |m: &str| modes.iter().find(|s| s.mode == m).map(|s| s.median_images_per_sec);
        let grpc_median = median("grpc").expect("measured");
        let report = Report {
            tool: "pharos bench",
            mode: "grpc",
            target: a.target.clone().unwrap_or_else(|| format!("in-process server on {target}")),
            backend,
            images_in_set: images.len(),
            mean_image_bytes: mean_bytes,
            concurrency: a.concurrency,
            window: a.window,
            seconds: a.seconds,
            reps: a.reps,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            grpc_vs_in_process: median("in-process").map(|m| grpc_median / m),
            grpc_vs_direct: median("direct").map(|m| grpc_median / m),
            tls_auth_vs_grpc: median("grpc-tls-auth").map(|m| m / grpc_median),
            modes,
        };
        print_table(&report);
        if let Some(path) = &a.json {
            std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

type Local = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<pharos::Result<()>>);

/// Serves `server` on a loopback port until the returned sender is dropped.
async fn start_local(server: Server) -> anyhow::Result<(std::net::SocketAddr, Local)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async { drop(stopped.await) }));
    Ok((addr, (stop, task)))
}

/// A server like the plain one plus TLS (a CA and a `localhost` certificate made for this run, written to
/// `dir`) and an auth file with one identity holding the `hash` role: the server, the client's TLS settings
/// and the bearer token.
fn secure_server(
    backend: &str,
    dir: &Path,
) -> anyhow::Result<(Server, tonic::transport::ClientTlsConfig, String)> {
    use pharos::hash::exact::hex;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use sha2::Digest as _;
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "pharos bench CA");
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&leaf_key, &issuer)?;
    std::fs::write(dir.join("server.pem"), leaf.pem())?;
    std::fs::write(dir.join("server.key"), leaf_key.serialize_pem())?;
    // A token nobody else knows for the length of the run (it is never printed).
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let token = hex(&sha2::Sha256::digest(seed.as_bytes()));
    let digest = hex(&sha2::Sha256::digest(token.as_bytes()));
    let auth = format!("[[identity]]\nname = \"bench\"\ntoken_sha256 = \"{digest}\"\nroles = [\"hash\"]\n");
    std::fs::write(dir.join("auth.toml"), auth)?;
    let cfg = ServeConfig {
        backend: backend.to_string(),
        metrics: String::new(),
        tls_cert: Some(dir.join("server.pem")),
        tls_key: Some(dir.join("server.key")),
        auth: Some(dir.join("auth.toml")),
        ..ServeConfig::default()
    };
    let server = Server::new(cfg, dir.join("data"))?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Ok((server, tls, token))
}

/// The images to send, in memory: every image under `dir`, or 16 copies of a generated JPEG of `size`.
fn load_images(dir: Option<&Path>, (w, h): (u32, u32)) -> anyhow::Result<Vec<Bytes>> {
    let set = match dir {
        Some(dir) => super::input::load_corpus(dir)?,
        None => super::input::generated(w, h, super::input::Format::Jpeg, 16)?,
    };
    Ok(set.files.iter().map(|f| Bytes::copy_from_slice(f)).collect())
}

fn finish(latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Run {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    // No answer, no latency: 0 rather than NaN (which JSON cannot hold).
    let percentile = |q| if ms.is_empty() { 0.0 } else { super::percentile(&ms, q) };
    let images = latencies.len();
    Run {
        images,
        errors,
        seconds: elapsed.as_secs_f64(),
        images_per_sec: images as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
    }
}

/// `channels.len()` HashStream streams, each with `window` requests in flight, for `duration`.
async fn grpc_run(
    channels: &[tonic::transport::Channel],
    token: Option<&str>,
    images: &[Bytes],
    window: usize,
    dihedral: bool,
    duration: Duration,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let stop_at = start + duration;
    let mut tasks = Vec::new();
    for (s, ch) in channels.iter().enumerate() {
        let mut client = HasherClient::new(ch.clone()).max_decoding_message_size(usize::MAX);
        let images = images.to_vec();
        let authorization = token.map(|t| format!("Bearer {t}").parse()).transpose()?;
        tasks.push(tokio::spawn(async move {
            let sent: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
            let permits = Arc::new(Semaphore::new(window));
            let (tx, rx) = mpsc::channel::<HashRequest>(window);
            let producer = {
                let (sent, permits) = (sent.clone(), permits.clone());
                tokio::spawn(async move {
                    let mut i = s * 7;
                    while Instant::now() < stop_at {
                        let Ok(p) = permits.acquire().await else { break };
                        p.forget();
                        let req = HashRequest {
                            id: i.to_string(),
                            image: images[i % images.len()].clone(),
                            dihedral,
                            ..HashRequest::default()
                        };
                        sent.lock().expect("lock").push_back(Instant::now());
                        if tx.send(req).await.is_err() {
                            break;
                        }
                        i += 1;
                    }
                })
            };
            let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            if let Some(v) = authorization {
                request.metadata_mut().insert("authorization", v);
            }
            let mut responses = client.hash_stream(request).await?.into_inner();
            let (mut latencies, mut errors) = (Vec::new(), 0);
            while let Some(r) = responses.message().await? {
                let t0 = sent.lock().expect("lock").pop_front().context("a response nobody asked for")?;
                permits.add_permits(1);
                match r.outcome {
                    Some(hash_response::Outcome::Hashes(_)) => latencies.push(t0.elapsed()),
                    _ => errors += 1,
                }
            }
            producer.await?;
            anyhow::Ok((latencies, errors))
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await??;
        latencies.extend(l);
        errors += e;
    }
    Ok(finish(latencies, errors, start.elapsed()))
}

/// The batcher fed directly with `in_flight` images outstanding, for `duration`.
async fn in_process_run(
    batcher: &Pipeline,
    images: &[Bytes],
    in_flight: usize,
    dihedral: bool,
    duration: Duration,
) -> Run {
    let start = Instant::now();
    let stop_at = start + duration;
    let permits = Arc::new(Semaphore::new(in_flight));
    let results = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let mut i = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < stop_at {
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        let job = Job {
            source: pharos::pipeline::Source::Bytes(images[i % images.len()].clone()),
            opts: HashOptions { dihedral, ..HashOptions::default() },
            deadline: None,
        };
        let (batcher, results) = (batcher.clone(), results.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            let (r, _) = batcher.hash(job).await;
            let mut res = results.lock().expect("lock");
            match r {
                Ok(_) => res.0.push(t0.elapsed()),
                Err(_) => res.1 += 1,
            }
            drop(permit);
        });
        i += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let (latencies, errors) = std::mem::take(&mut *results.lock().expect("lock"));
    finish(latencies, errors, start.elapsed())
}

/// What `pharos hash` does: decode + hash on every core (rayon), no batcher, for `duration`.
fn direct_run(images: &[Bytes], dihedral: bool, duration: Duration) -> Run {
    use rayon::prelude::*;
    let opts = HashOptions { dihedral, ..HashOptions::default() };
    let start = Instant::now();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while start.elapsed() < duration {
        let chunk: Vec<(Duration, bool)> = images
            .par_iter()
            .map(|b| {
                let t0 = Instant::now();
                let ok = pharos::engine::hash_bytes(b, &opts).is_ok();
                (t0.elapsed(), ok)
            })
            .collect();
        for (d, ok) in chunk {
            if ok {
                latencies.push(d);
            } else {
                errors += 1;
            }
        }
    }
    finish(latencies, errors, start.elapsed())
}

fn summarise(mode: &'static str, runs: Vec<Run>) -> Summary {
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        super::percentile(&v, 0.5)
    };
    let rates: Vec<f64> = runs.iter().map(|r| r.images_per_sec).collect();
    Summary {
        mode,
        median_images_per_sec: med(rates.clone()),
        min_images_per_sec: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max_images_per_sec: rates.iter().copied().fold(0.0, f64::max),
        median_p50_ms: med(runs.iter().map(|r| r.p50_ms).collect()),
        median_p99_ms: med(runs.iter().map(|r| r.p99_ms).collect()),
        runs,
    }
}

fn print_table(r: &Report) {
    println!(
        "gRPC benchmark: {} ({}), {} images, {} streams × {} in flight",
        r.target, r.backend, r.images_in_set, r.concurrency, r.window
    );
    let rows = r.modes.iter().map(|m| {
        vec![
            m.mode.to_string(),
            format!("{:.1}", m.median_images_per_sec),
            format!("{:.1}–{:.1}", m.min_images_per_sec, m.max_images_per_sec),
            format!("{:.2}", m.median_p50_ms),
            format!("{:.2}", m.median_p99_ms),
            m.runs.iter().map(|x| x.errors).sum::<usize>().to_string(),
        ]
    });
    let header = ["mode", "images/s (med)", "range (min–max)", "p50 ms", "p99 ms", "errors"];
    print!("{}", super::table(header, rows));
    if let Some(x) = r.grpc_vs_in_process {
        println!("grpc / in-process: {:.1}% (target ≥ 85%)", x * 100.0);
    }
    if let Some(x) = r.grpc_vs_direct {
        println!("grpc / direct:     {:.1}%", x * 100.0);
    }
    if let Some(x) = r.tls_auth_vs_grpc {
        println!("grpc-tls-auth / grpc: {:.1}% (target ≥ 90%)", x * 100.0);
    }
}
