//! Criterion micro-benchmarks of the matcher at small sizes (the scale runs are `benches/match_scale.rs`).
//!
//! `cargo bench --bench matcher`: one query against 100 k PDQ hashes at radius 31 (index and scan), and
//! against 100 k pHashes at radius 10; a single add and remove on a 100 k index.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pharos::matcher::{Hit, MihIndex};
use std::hint::black_box;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn rows<const L: usize>(n: usize, seed: u64) -> Vec<[u64; L]> {
    let mut s = seed;
    (0..n).map(|_| std::array::from_fn(|_| splitmix(&mut s))).collect()
}

fn bench_queries(c: &mut Criterion) {
    let n = 100_000;
    let mut group = c.benchmark_group("match_100k");
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));

    let pdq = MihIndex::<4>::build(rows::<4>(n, 1), &[]);
    let mut q = *pdq.get(17).unwrap();
    q[0] ^= 0xff; // a hit at distance 8
    let mut out = Vec::<Hit>::new();
    group.bench_with_input(BenchmarkId::new("pdq_r31", "index"), &q, |b, q| {
        b.iter(|| {
            out.clear();
            pdq.search_index(black_box(q), 31, &mut out);
            black_box(out.len())
        })
    });
    group.bench_with_input(BenchmarkId::new("pdq_r31", "scan"), &q, |b, q| {
        b.iter(|| {
            out.clear();
            pdq.search_scan(black_box(q), 31, &mut out);
            black_box(out.len())
        })
    });

    let ph = MihIndex::<1>::build(rows::<1>(n, 2), &[]);
    let qp = [ph.get(5).unwrap()[0] ^ 0b1011];
    group.bench_with_input(BenchmarkId::new("phash_r10", "index"), &qp, |b, q| {
        b.iter(|| {
            out.clear();
            ph.search_index(black_box(q), 10, &mut out);
            black_box(out.len())
        })
    });
    group.bench_with_input(BenchmarkId::new("phash_r10", "scan"), &qp, |b, q| {
        b.iter(|| {
            out.clear();
            ph.search_scan(black_box(q), 10, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn bench_updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("update_100k");
    group.sample_size(30);
    let mut idx = MihIndex::<4>::build(rows::<4>(100_000, 3), &[]);
    let extra = rows::<4>(1, 4)[0];
    group.bench_function("pdq_add_remove", |b| {
        b.iter(|| {
            let row = idx.rows() as u32;
            idx.extend(&[black_box(extra)]);
            black_box(idx.remove(row))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_queries, bench_updates);
criterion_main!(benches);
