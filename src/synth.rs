//! Generated data for tests and benchmarks: reproducible pseudo-random numbers and photo-like pixels.
//!
//! Not part of the hashing API (hidden from the docs); the CLI's `pharos bench`, the criterion benches and
//! the integration tests share it so that every generated bank, query set and image is the same sequence
//! everywhere.

/// SplitMix64: a tiny, fast, reproducible pseudo-random generator for generated test and benchmark data
/// (random banks, queries, bit flips). Not for anything that needs unpredictability.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (modulo bias is irrelevant for test data).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Deterministic, photo-like synthetic RGB pixels (`3 × w × h` bytes) for benchmarks of a chosen size
/// (`pharos bench hash`, `benches/hash_*.rs`): every hashing stage's cost depends on the size alone, so
/// generated images measure it as well as photos do, without shipping large files.
pub fn synthetic_rgb(w: usize, h: usize) -> Vec<u8> {
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let v = ((x * 13 + y * 7) ^ (x * y / 97)) as u8;
            px.extend_from_slice(&[v, v.wrapping_mul(3), (x / 3 + y) as u8]);
        }
    }
    px
}
