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

/// One generated stress image: a name for messages, its size, channels (1 or 3) and pixels.
#[derive(Clone, Debug)]
pub struct StressImage {
    /// What it is, e.g. "near-flat 257×193".
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// `width × height × channels` bytes.
    pub pixels: Vec<u8>,
}

impl StressImage {
    fn new(name: &str, width: u32, height: u32, channels: u32, f: impl Fn(u32, u32, u32) -> u8) -> Self {
        let mut pixels = Vec::with_capacity((width * height * channels) as usize);
        for y in 0..height {
            for x in 0..width {
                for c in 0..channels {
                    pixels.push(f(x, y, c));
                }
            }
        }
        StressImage { name: format!("{name} {width}×{height}×{channels}"), width, height, channels, pixels }
    }
}

/// Images where float arithmetic is most fragile, for the GPU's start-up canary and the exactness tests:
/// flat and near-flat images (DCT coefficients at rounding noise, so every one sits next to the median),
/// black borders (running sums of exact zeros, quotients of 0), smooth gradients (long runs of nearly
/// equal sums), and the shapes with special cases (5 × 5: below PDQ's minimum; 1 × N; 64 × 64: no box
/// filter). `large` adds a 12 MP photo-like image (tests; too slow for a start-up check on lavapipe).
pub fn stress_images(large: bool) -> Vec<StressImage> {
    let noise = |x: u32, y: u32, c: u32, seed: u64| {
        SplitMix64::new(seed ^ (u64::from(x) << 40) ^ (u64::from(y) << 16) ^ u64::from(c)).next_u64()
    };
    let mut out = vec![
        StressImage::new("flat", 200, 150, 3, |_, _, _| 128),
        StressImage::new("flat grey", 97, 131, 1, |_, _, _| 77),
        StressImage::new("near-flat", 257, 193, 3, |x, y, c| 120 + (noise(x, y, c, 1) % 2) as u8),
        StressImage::new("near-flat grey", 320, 240, 1, |x, y, _| 200 + (noise(x, y, 0, 2) % 3) as u8),
        StressImage::new("black", 160, 120, 3, |_, _, _| 0),
        StressImage::new("black-bordered", 300, 200, 3, |x, y, c| {
            if !(40..260).contains(&x) || !(30..170).contains(&y) {
                0
            } else {
                ((x * 3 + y * (c + 1)) % 256) as u8
            }
        }),
        StressImage::new(
            "letterboxed",
            256,
            400,
            1,
            |x, y, _| if (100..300).contains(&y) { (x ^ y) as u8 } else { 0 },
        ),
        StressImage::new("horizontal gradient", 640, 480, 3, |x, _, c| {
            ((x * 255 / 639) as u8).wrapping_add(c as u8)
        }),
        StressImage::new("vertical gradient", 333, 1001, 1, |_, y, _| (y * 255 / 1000) as u8),
        StressImage::new("diagonal gradient", 517, 389, 3, |x, y, c| ((x + y + 7 * c) / 4 % 256) as u8),
        StressImage::new("noise 64×64", 64, 64, 3, |x, y, c| noise(x, y, c, 3) as u8),
        StressImage::new("tiny", 5, 5, 3, |x, y, c| (x * 50 + y * 10 + c) as u8),
        StressImage::new("one column", 1, 300, 1, |_, y, _| y as u8),
        StressImage::new("one row", 300, 1, 3, |x, _, c| (x + c) as u8),
    ];
    if large {
        let px = synthetic_rgb(4000, 3000);
        out.push(StressImage {
            name: "photo-like 4000×3000×3".into(),
            width: 4000,
            height: 3000,
            channels: 3,
            pixels: px,
        });
    }
    out
}
