//! Criterion micro-benchmarks of the CPU hashers, per image size, single thread.
//!
//! `cargo bench --bench hash_cpu` (`-- exact` for the exact file hashes alone). Sizes: 256² (a thumbnail), 1 MP and 12 MP (a phone photo). The images
//! are synthetic but photo-like in the only way that matters here (every stage's cost depends on the size
//! alone: no stage is data-dependent apart from the median selection).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pharos::hash::pdq::PdqHasher;
use pharos::hash::phash::PhashHasher;
use pharos::pixels::ImageView;
use std::hint::black_box;

const SIZES: &[(&str, usize, usize)] = &[("256x256", 256, 256), ("1MP", 1280, 800), ("12MP", 4000, 3000)];

fn bench_hashers(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu");
    group.sample_size(20);
    let mut pdq = PdqHasher::new();
    let mut phash = PhashHasher::new();
    for &(name, w, h) in SIZES {
        let px = pharos::synth::synthetic_rgb(w, h);
        let img = ImageView::rgb(w as u32, h as u32, &px);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("pdq", name), &img, |b, img| {
            b.iter(|| black_box(pdq.hash(black_box(*img))))
        });
        group.bench_with_input(BenchmarkId::new("pdq+dihedral", name), &img, |b, img| {
            b.iter(|| black_box(pdq.hash_with_dihedral(black_box(*img))))
        });
        group.bench_with_input(BenchmarkId::new("phash", name), &img, |b, img| {
            b.iter(|| black_box(phash.hash(black_box(*img))))
        });
    }
    group.finish();
}

/// The exact file hashes (`pharos hash --exact`) per file size: 45 KB is the corpus' mean JPEG, 4 MB a phone
/// photo. Throughput in bytes, so the figure reads as MB/s for the three digests together.
fn bench_exact(c: &mut Criterion) {
    let mut group = c.benchmark_group("exact");
    group.sample_size(20);
    for &(name, len) in &[("45KB", 45 << 10), ("4MB", 4 << 20)] {
        let bytes = pharos::synth::synthetic_rgb(len / 3, 1);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("md5+sha1+sha256", name), &bytes, |b, bytes| {
            b.iter(|| black_box(pharos::hash::exact::ExactHashes::of(black_box(bytes))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_hashers, bench_exact);
criterion_main!(benches);
