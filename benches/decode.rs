//! JPEG decoder choice, measured: libjpeg-turbo (what Pharos uses) against zune-jpeg (the pure-Rust decoder
//! of the `image` crate), on the corpus' JPEGs (`$PHAROS_CORPUS`, else the fixtures).
//!
//! `cargo bench --bench decode`. Before timing, it prints how many JPEGs each decoder turns into exactly the
//! pixels Pillow (libjpeg-turbo) produced (`decoded_rgb_sha256`): that, not speed, decides hash
//! compatibility.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pharos::image::{decode, DecodeOptions};
use sha2::Digest;
use std::hint::black_box;
use std::path::PathBuf;

fn corpus() -> PathBuf {
    std::env::var_os("PHAROS_CORPUS")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// (bytes, Pillow's RGB SHA-256) for every JPEG in the corpus.
fn jpegs() -> Vec<(Vec<u8>, String)> {
    let dir = corpus();
    let tsv = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).expect(n);
    let (p, f, s) = (col("path"), col("format"), col("decoded_rgb_sha256"));
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|r| r.len() > s && r[f] == "JPEG")
        .map(|r| (std::fs::read(dir.join(r[p])).expect("read"), r[s].to_string()))
        .collect()
}

fn sha(rgb: &[u8]) -> String {
    sha2::Sha256::digest(rgb).iter().map(|b| format!("{b:02x}")).collect()
}

fn zune_rgb(bytes: &[u8]) -> Option<Vec<u8>> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).ok()?;
    Some(img.to_rgb8().into_raw())
}

fn bench_decoders(c: &mut Criterion) {
    let files = jpegs();
    let opts = DecodeOptions::default();
    let turbo_exact = files
        .iter()
        .filter(|(b, want)| decode(b, &opts).map(|d| sha(&d.to_rgb()) == *want).unwrap_or(false))
        .count();
    let zune_exact =
        files.iter().filter(|(b, want)| zune_rgb(b).map(|p| sha(&p) == *want).unwrap_or(false)).count();
    println!(
        "pixels identical to Pillow's on {} JPEGs: libjpeg-turbo {turbo_exact}, zune-jpeg {zune_exact}",
        files.len()
    );

    let mut group = c.benchmark_group("jpeg-decode");
    group.sample_size(10);
    group.throughput(Throughput::Elements(files.len() as u64));
    group.bench_function("libjpeg-turbo", |b| {
        b.iter(|| {
            for (bytes, _) in &files {
                black_box(decode(black_box(bytes), &opts).expect("decode"));
            }
        })
    });
    group.bench_function("zune-jpeg", |b| {
        b.iter(|| {
            for (bytes, _) in &files {
                black_box(zune_rgb(black_box(bytes)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decoders);
criterion_main!(benches);
