//! Criterion benchmarks of the GPU backend: images/s per batch size (1, 16, 64, 256) and image size (256²,
//! 1 MP, 12 MP), from decoded pixels (upload, every shader, readback and the CPU's share included).
//!
//! `cargo bench --bench hash_gpu`. Runs on any adapter, lavapipe included (the numbers then only prove
//! that it runs). On a software adapter the combinations above 64 MP per batch are skipped unless
//! `PHAROS_BENCH_FULL=1`; without any adapter the bench says so and measures nothing. `pharos bench hash`
//! measures the same thing from the command line, next to the CPU backend.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pharos::gpu::{AdapterPolicy, GpuHasher};
use pharos::pixels::ImageView;
use std::hint::black_box;

const SIZES: &[(&str, usize, usize)] = &[("256x256", 256, 256), ("1MP", 1280, 800), ("12MP", 4000, 3000)];
const BATCHES: &[usize] = &[1, 16, 64, 256];

fn bench_gpu(c: &mut Criterion) {
    let gpu = match GpuHasher::new(AdapterPolicy::AllowSoftware) {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("hash_gpu: SKIPPED, no GPU adapter ({e})");
            return;
        }
    };
    let full = std::env::var("PHAROS_BENCH_FULL").is_ok_and(|v| v == "1") || !gpu.adapter().software;
    eprintln!("hash_gpu: on {}", gpu.adapter());
    let mut group = c.benchmark_group("gpu");
    group.sample_size(10);
    for &(name, w, h) in SIZES {
        let px = pharos::synth::synthetic_rgb(w, h);
        let img = ImageView::rgb(w as u32, h as u32, &px);
        for &batch in BATCHES {
            if !full && batch * w * h > 64 << 20 {
                eprintln!(
                    "hash_gpu: {name} × {batch} skipped on a software adapter (PHAROS_BENCH_FULL=1 runs it)"
                );
                continue;
            }
            let images = vec![img; batch];
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("pdq+phash/{name}"), batch),
                &images,
                |b, images| {
                    b.iter(|| black_box(gpu.try_hash_batch(black_box(images), false).expect("GPU batch")))
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_gpu);
criterion_main!(benches);
