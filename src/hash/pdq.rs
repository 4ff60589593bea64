//! PDQ, bit for bit as Meta's C++ reference computes it (`PDQ_SPEC.md`, ThreatExchange `pdq/cpp` at baefb4ed).
//!
//! One function per stage, named as the GPU shaders will be (`luma`, `box_rows`, `box_cols`, `decimate`,
//! `quality`, `dct`, `threshold`, `dihedral`), so each shader has a CPU mirror to be tested against.
//!
//! Exactness comes from doing every float32 operation the reference does, in its order, per output value:
//! - luma `(0.299f·R + 0.587f·G) + 0.114f·B` in float32;
//! - the box filter as a *running* float32 sum (add the entering sample, then subtract the leaving one,
//!   then divide by the window count) — a prefix-sum or tree reduction would round differently and flip bits
//!   whose DCT value sits next to the median;
//! - the DCT as float32 sums in index order with the matrix rounded exactly as the C++ builds it.
//!
//! Speed comes from running many *independent* reference sequences side by side, never from reordering one:
//! the vertical pass advances a whole row of column sums at once (contiguous, so the compiler emits SIMD),
//! the horizontal pass advances eight rows' sums in lock-step, the DCT accumulates whole rows. Scratch
//! buffers live in [`PdqHasher`] and are reused, so hashing allocates nothing once they have grown.

use super::simd::{self, Level};
use super::Hash256;
use crate::pixels::{ImageView, Pixels};
use std::sync::OnceLock;

/// Images with a side shorter than this hash to all zeros with quality 0 (the reference's
/// `MIN_HASHABLE_DIM`).
pub const MIN_HASHABLE_DIM: u32 = 5;

/// Two box passes per axis approximate a tent filter (`PDQ_NUM_JAROSZ_XY_PASSES`).
const JAROSZ_PASSES: usize = 2;

/// A PDQ hash with its quality score (0..=100; Meta: do not trust hashes with quality < 50).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PdqHash {
    /// The 256-bit hash.
    pub hash: Hash256,
    /// Gradient-based quality, 0..=100.
    pub quality: u32,
}

/// The seven non-identity dihedral variants, named as in the C++ (`pdqhash.compute_dihedral` order).
///
/// Each is computed from the original image's DCT (sign flips and transposition), so it approximates the
/// hash of the transformed image rather than equalling it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Dihedral {
    /// ≈ the image rotated 90° counter-clockwise.
    pub rot90: Hash256,
    /// ≈ the image rotated 180°.
    pub rot180: Hash256,
    /// ≈ the image rotated 90° clockwise.
    pub rot270: Hash256,
    /// ≈ the image mirrored top to bottom.
    pub flipx: Hash256,
    /// ≈ the image mirrored left to right.
    pub flipy: Hash256,
    /// ≈ the image transposed (main diagonal).
    pub flipplus1: Hash256,
    /// ≈ the image transposed about the anti-diagonal.
    pub flipminus1: Hash256,
}

impl Dihedral {
    /// The seven variants with their JSON/CLI names, in the reference's order.
    pub fn named(&self) -> [(&'static str, Hash256); 7] {
        [
            ("rot90", self.rot90),
            ("rot180", self.rot180),
            ("rot270", self.rot270),
            ("flipx", self.flipx),
            ("flipy", self.flipy),
            ("flipplus1", self.flipplus1),
            ("flipminus1", self.flipminus1),
        ]
    }

    /// All eight hashes: the original first, then the seven variants.
    pub fn all_with(&self, original: Hash256) -> [Hash256; 8] {
        [
            original,
            self.rot90,
            self.rot180,
            self.rot270,
            self.flipx,
            self.flipy,
            self.flipplus1,
            self.flipminus1,
        ]
    }
}

/// Reusable scratch space for PDQ; keep one per thread.
#[derive(Default)]
pub struct PdqHasher {
    scratch: Scratch,
}

/// Buffers reused from image to image (they only grow).
#[derive(Default)]
struct Scratch {
    /// Ring of the last rows of the first horizontal pass (`ring_rows(h)` × w), read by the first
    /// vertical pass.
    ring: Lines,
    /// 8 × w luma block, for blocks the fused luma kernel does not take (grey pixels, a last partial
    /// block, the portable level).
    luma_block: Vec<f32>,
    /// h × (≤ 64): the second horizontal pass at the sampled columns, and its vertical pass.
    narrow: Vec<f32>,
    /// See `narrow`.
    filtered: Vec<f32>,
    /// One running sum per column for the vertical passes.
    col_sums: Lines,
    /// For each input column, its slot among the 64 sampled ones (or none).
    slot_of: Vec<Option<usize>>,
    /// Eight rows transposed (`t[p][lane]`) for the horizontal pass, and its transposed output.
    t: Lines,
    /// See `t`.
    o: Lines,
    /// Eight output rows of the first vertical pass, transposed, waiting for the second horizontal pass
    /// (which runs paired with the next block's first horizontal pass; see `jarosz_decimate_body`).
    t2: Lines,
}

/// Sixteen floats on one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Line([f32; 16]);

/// A float buffer that starts on a cache line. The AVX-512 kernels move sixteen floats (a whole line) at
/// a time, and a 64-byte access that straddles two lines costs about twice as much; a `Vec<f32>` from the
/// allocator is only 16-byte aligned, so every such access would straddle.
#[derive(Default)]
struct Lines(Vec<Line>);

impl Lines {
    /// Grows to hold at least `floats` floats (zeroed when new).
    fn grow(&mut self, floats: usize) {
        let lines = floats.div_ceil(16);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0.0; 16]));
        }
    }

    fn floats(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.0)
    }

    /// The buffer as column vectors of `LANES` floats (two per line).
    fn lanes(&mut self) -> &mut [[f32; LANES]] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

/// Rows filtered side by side by the horizontal pass (one AVX2 register of float32).
const LANES: usize = 8;

/// The 16×16 DCT output (`B` in the spec), row = vertical frequency.
type Dct16 = [f32; 256];

impl PdqHasher {
    /// A hasher with empty scratch buffers (they grow to the largest image seen).
    pub fn new() -> Self {
        Self::default()
    }

    /// PDQ hash and quality of `img`.
    pub fn hash(&mut self, img: ImageView<'_>) -> PdqHash {
        match self.dct(img) {
            Some((dct, quality)) => PdqHash { hash: threshold(&dct), quality },
            None => PdqHash::default(),
        }
    }

    /// PDQ hash, quality and the seven dihedral variants, all from one DCT.
    pub fn hash_with_dihedral(&mut self, img: ImageView<'_>) -> (PdqHash, Dihedral) {
        match self.dct(img) {
            Some((dct, quality)) => (PdqHash { hash: threshold(&dct), quality }, dihedral(&dct)),
            None => (PdqHash::default(), Dihedral::default()),
        }
    }

    /// [`PdqHasher::hash_with_dihedral`] at a given vector level instead of [`simd::level`] (capped at what
    /// the CPU has): for tests and benchmarks that compare the levels, which must give identical results.
    pub fn hash_with_dihedral_at(&mut self, level: Level, img: ImageView<'_>) -> (PdqHash, Dihedral) {
        match self.dct_at(level, img) {
            Some((dct, quality)) => (PdqHash { hash: threshold(&dct), quality }, dihedral(&dct)),
            None => (PdqHash::default(), Dihedral::default()),
        }
    }

    /// Luma → Jarosz filter → 64×64 → quality and 16×16 DCT. `None` below the minimum size.
    fn dct(&mut self, img: ImageView<'_>) -> Option<(Dct16, u32)> {
        self.dct_at(simd::level(), img)
    }

    /// [`PdqHasher::dct`] at a given vector level.
    fn dct_at(&mut self, level: Level, img: ImageView<'_>) -> Option<(Dct16, u32)> {
        if img.width < MIN_HASHABLE_DIM || img.height < MIN_HASHABLE_DIM {
            return None;
        }
        let (h, w) = (img.height as usize, img.width as usize);
        let mut buf64 = [0f32; 64 * 64];
        if h == 64 && w == 64 {
            // The reference skips the filter for exactly 64×64 input (the running sum would otherwise
            // round even with a window of 1).
            luma_at(level.min(simd::detect()), img, &mut buf64);
        } else {
            self.scratch.grow(h, w);
            jarosz_decimate_at(level, img, &mut self.scratch, &mut buf64);
        }
        let q = quality_at(level, &buf64);
        Some((dct(&buf64), q))
    }
}

impl Scratch {
    fn grow(&mut self, h: usize, w: usize) {
        self.ring.grow(ring_rows(h) * ring_stride(w));
        if self.luma_block.len() < LANES * w {
            self.luma_block.resize(LANES * w, 0.0);
        }
        if self.narrow.len() < h * 64 {
            self.narrow.resize(h * 64, 0.0);
            self.filtered.resize(h * 64, 0.0);
        }
        self.col_sums.grow(w.max(64));
        if self.slot_of.len() < w {
            self.slot_of.resize(w, None);
        }
        for buf in [&mut self.t, &mut self.o, &mut self.t2] {
            buf.grow(LANES * w);
        }
    }
}

/// PDQ hash and quality of `img` (allocates scratch space; use a [`PdqHasher`] in loops).
pub fn pdq(img: ImageView<'_>) -> PdqHash {
    PdqHasher::new().hash(img)
}

/// The Jarosz filter (two rounds of horizontal then vertical box passes) and decimation to 64×64, the
/// expensive part of PDQ, at a given vector level. Compiled twice, for baseline x86-64 and for AVX2 (8-wide
/// float vectors, with FMA); both are the same IEEE float32 operations in the same order, and the AVX2
/// build's reciprocal division ([`Reciprocal`]) rounds exactly as the division does, so the results are
/// identical.
fn jarosz_decimate_at(level: Level, img: ImageView<'_>, s: &mut Scratch, out: &mut [f32; 4096]) {
    let level = level.min(simd::detect());
    // Windows beyond what the reciprocal is proven for (sides above 131,072 pixels, past the decoder's
    // limits) take the baseline build, which divides; its vector kernels still run at `level`.
    let widest = window_size(img.width as usize).max(window_size(img.height as usize));
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && widest <= Reciprocal::MAX_COUNT {
        // SAFETY: the CPU supports AVX2 and FMA (`detect` checked), the requirements of
        // `jarosz_decimate_avx2`.
        return unsafe { jarosz_decimate_avx2(level, img, s, out) };
    }
    let _ = widest;
    jarosz_decimate_body::<Divide>(level, img, s, out)
}

/// The filter compiled for AVX2 + FMA. It divides by [`Reciprocal`]: three FMA-unit operations instead of
/// a `vdivps`, whose throughput limits the vertical pass on Intel cores (1.7 ns per 8-lane division on the
/// Intel build machine, 0.9 ns on the AMD one; BENCHMARKS.md). That gives the same bits as the division
/// for every window the proof covers, the only windows [`jarosz_decimate_at`] sends here.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn jarosz_decimate_avx2(level: Level, img: ImageView<'_>, s: &mut Scratch, out: &mut [f32; 4096]) {
    jarosz_decimate_body::<Reciprocal>(level, img, s, out)
}

/// A window count `c` and `y = RN(1/c)`, what a [`Quotient`] needs to turn a running sum into a mean.
#[derive(Clone, Copy, Debug)]
struct Count {
    /// The count, exact in f32.
    c: f32,
    /// `RN(1 / c)`.
    y: f32,
}

impl Count {
    #[inline(always)]
    fn new(count: usize) -> Count {
        let c = count as f32;
        Count { c, y: 1.0 / c }
    }
}

/// How the box filter computes `sum / count`. Both implementations give the IEEE quotient's bits.
trait Quotient {
    /// Whether vector kernels should use the reciprocal form.
    const RECIPROCAL: bool;
    /// `x / n.c`, correctly rounded.
    fn of(x: f32, n: Count) -> f32;
}

/// The division itself, as the reference writes it: the portable path (the oracle) and windows beyond
/// [`Reciprocal::MAX_COUNT`].
enum Divide {}

impl Quotient for Divide {
    const RECIPROCAL: bool = false;
    #[inline(always)]
    fn of(x: f32, n: Count) -> f32 {
        x / n.c
    }
}

/// Division by a reciprocal with one correction (Markstein): `q = RN(x·y)`, `r = RN(x − q·c)` (exact, one
/// FMA), `RN(q + r·y)` (a second FMA) is the correctly rounded `x / c` (Markstein, IBM J. R&D 34(1), 1990;
/// Muller et al., *Handbook of Floating-Point Arithmetic*, on Newton–Raphson-based division). A plain
/// `x·y` is *not* `x / c` (it differs for about one input in six with c = 3), hence the correction.
///
/// The theorem needs a round-to-nearest `y` and no underflow; rather than lean on its conditions alone, the
/// tests check it directly: scaling `x` by a power of two scales `q`, `r` and the result exactly while they
/// stay normal, so one binade per count covers every sum; `reciprocal_division_is_exact_for_every_significand`
/// (ignored; 8 s in release on 2 cores) checks all 2^23 significands of both signs for every count up to [`Self::MAX_COUNT`],
/// and `reciprocal_division_is_exact` a sample of them on every run. The filter's sums are 0 (the result is
/// then +0, as the division gives) or far above the subnormal range.
///
/// Only used where FMA is compiled in: `f32::mul_add` without it is a libm call.
enum Reciprocal {}

impl Reciprocal {
    /// The largest count the exhaustive check covers: windows of sides up to 131,072 pixels.
    const MAX_COUNT: usize = 1024;
}

impl Quotient for Reciprocal {
    const RECIPROCAL: bool = true;
    #[inline(always)]
    fn of(x: f32, n: Count) -> f32 {
        let q = x * n.y;
        let r = (-q).mul_add(n.c, x);
        r.mul_add(n.y, q)
    }
}

/// Floats from one ring row to the next: `w` rounded up to whole cache lines.
fn ring_stride(w: usize) -> usize {
    w.next_multiple_of(16)
}

/// Rows of the first horizontal pass kept for the first vertical pass: the vertical pass subtracts the row
/// `window` rows back, rows arrive in blocks of `LANES`, and output rows leave in blocks of `LANES` (so up
/// to `window + 2·LANES − 1` rows are live; a multiple of `LANES`, so blocks never wrap).
fn ring_rows(h: usize) -> usize {
    (window_size(h) + 2 * LANES).next_multiple_of(LANES)
}

/// Pixels → luma → filtered and decimated 64×64 in `out`.
///
/// Computes the same values as [`luma`], then [`box_rows`] + [`box_cols`] twice (`JAROSZ_PASSES`), then
/// [`decimate`], but streams over the image in blocks of eight rows so the working set stays in cache
/// instead of sweeping two full-size float buffers six times:
/// 1. luma of eight rows, then the first horizontal pass on them, into a ring of recent rows; the horizontal
///    pass runs on the rows transposed (eight running sums side by side), and with a vector kernel the luma
///    is computed straight into that layout ([`luma_transposed`]);
/// 2. as soon as the ring holds every row that eight output rows of the first vertical pass read, those
///    eight rows are computed ([`vertical_block`]), again straight into the transposed layout, for
/// 3. the second horizontal pass, which still runs every running sum (the rounding sequence is the
///    reference's) but divides and stores only at the 64 sampled columns; it waits for the next block of
///    step 1 and runs in the same loop (`box_rows_paired`), since each pass alone is a latency-bound chain
///    of additions per lane and side by side the core has two chains in flight;
/// 4. the second vertical pass runs over those (h × 64) columns alone, then decimation picks 64 rows.
///
/// Skipping the row-major luma and vertical-pass blocks (written, then read back by a transpose) made this
/// about 1.2× faster at 12 MP (BENCHMARKS.md, "CPU floor").
#[inline(always)]
fn jarosz_decimate_body<Q: Quotient>(
    level: Level,
    img: ImageView<'_>,
    s: &mut Scratch,
    out: &mut [f32; 4096],
) {
    const { assert!(JAROSZ_PASSES == 2, "the streaming filter is written for two rounds") };
    let (h, w) = (img.height as usize, img.width as usize);
    let (win_rows, win_cols) = (window_size(w), window_size(h));
    // The sampled column of each of the 64 outputs; when w < 64 a column is sampled more than once, so
    // each distinct column gets one slot.
    let cols: [usize; 64] = std::array::from_fn(|c| ((c as f64 + 0.5) * w as f64 / 64.0) as usize);
    let rows: [usize; 64] = std::array::from_fn(|r| ((r as f64 + 0.5) * h as f64 / 64.0) as usize);
    let slot_of = &mut s.slot_of[..w];
    slot_of.fill(None);
    let mut distinct = 0;
    for &c in &cols {
        if slot_of[c].is_none() {
            slot_of[c] = Some(distinct);
            distinct += 1;
        }
    }
    let slot_of = &*slot_of;

    let ring_len = ring_rows(h);
    // Ring rows start on cache lines, for the AVX-512 kernels' 64-byte loads and stores.
    let stride = ring_stride(w);
    let ring = &mut s.ring.floats()[..ring_len * stride];
    let narrow = &mut s.narrow[..h * distinct];
    let (t, o, t2) = (s.t.lanes(), s.o.lanes(), s.t2.lanes());
    // (first row, rows) of the block of the first vertical pass waiting in `t2` for the second horizontal
    // pass, which runs paired with the next block's first horizontal pass where it can (box_rows_paired).
    let mut pending: Option<(usize, usize)> = None;
    let sums = &mut s.col_sums.floats()[..w];
    sums.fill(0.0);
    let half = (win_cols + 2) / 2;
    // Input rows accumulated before the first output (the reference's phase 1), and the next output row.
    let (mut accumulated, mut next_out) = (0, 0);
    for r0 in (0..h).step_by(LANES) {
        let n = LANES.min(h - r0);
        let block_pixels = match img.pixels {
            Pixels::Rgb(px) => Pixels::Rgb(&px[r0 * w * 3..(r0 + n) * w * 3]),
            Pixels::Gray(px) => Pixels::Gray(&px[r0 * w..(r0 + n) * w]),
        };
        let slot = r0 % ring_len;
        let ring_block = &mut ring[slot * stride..(slot + n) * stride];
        // A full block of RGB rows goes straight from pixels to the filter's transposed layout where a
        // vector kernel exists (no row-major luma block written and read back); otherwise luma first.
        let fused = match block_pixels {
            Pixels::Rgb(px) if n == LANES => luma_transposed(level, px, w, t),
            _ => false,
        };
        if fused {
            match pending.take() {
                Some((first, m)) => {
                    let dst = &mut narrow[first * distinct..(first + m) * distinct];
                    let rows_out = split_rows(ring_block, w, stride);
                    box_rows_paired::<Q>(level, t, o, rows_out, t2, dst, m, w, win_rows, slot_of);
                }
                None => box_rows_transposed::<Q>(level, t, o, split_rows(ring_block, w, stride), w, win_rows),
            }
        } else {
            let luma_block = &mut s.luma_block[..n * w];
            luma_at(
                level,
                ImageView { width: img.width, height: n as u32, pixels: block_pixels },
                luma_block,
            );
            box_rows_blocked::<Q>(level, luma_block, ring_block, n, w, stride, win_rows, t, o);
        }
        let available = r0 + n;
        let ring = &*ring;
        let row = |i: usize| &ring[(i % ring_len) * stride..][..w];
        while accumulated + 1 < half && accumulated < available {
            for (s, &x) in sums.iter_mut().zip(row(accumulated)) {
                *s += x;
            }
            accumulated += 1;
        }
        // Every block of output rows whose input rows have all arrived: the first vertical pass into `t`
        // (transposed), then the second horizontal pass on it.
        while next_out < h {
            let m = LANES.min(h - next_out);
            if (next_out + m - 1 + half - 1).min(h - 1) >= available {
                break;
            }
            if let Some((first, m)) = pending.take() {
                let dst = &mut narrow[first * distinct..(first + m) * distinct];
                box_rows_sampled::<Q>(t2, dst, m, w, win_rows, slot_of);
            }
            let steps = vertical_steps(next_out, m, h, win_cols, row);
            vertical_block::<Q>(level, &steps, m, w, sums, t2);
            pending = Some((next_out, m));
            next_out += m;
        }
    }
    if let Some((first, m)) = pending {
        let dst = &mut narrow[first * distinct..(first + m) * distinct];
        box_rows_sampled::<Q>(t2, dst, m, w, win_rows, slot_of);
    }
    debug_assert_eq!(next_out, h);
    let filtered = &mut s.filtered[..h * distinct];
    box_cols(narrow, filtered, h, distinct, win_cols, &mut s.col_sums.floats()[..distinct]);
    for (r, &ini) in rows.iter().enumerate() {
        for (c, &inj) in cols.iter().enumerate() {
            out[r * 64 + c] = filtered[ini * distinct + slot_of[inj].expect("sampled column has a slot")];
        }
    }
}

/// One output row of the first vertical pass ([`box_cols`]'s sequence for every column): the input row
/// added, the input row subtracted, and the divisor. `None` rows are skipped (phase 2 only adds, phase 4 only
/// subtracts); lanes past the end of a partial block have neither and divide by 1 (their output is unused).
#[derive(Clone, Copy)]
struct VStep<'r> {
    add: Option<&'r [f32]>,
    sub: Option<&'r [f32]>,
    count: Count,
}

/// The steps of output rows `first..first + m` of a vertical box pass over `h` rows with window `win`, whose
/// first `half − 1` input rows are already in the sums. Output row `oi` adds input row `oi + half − 1` while
/// it exists and subtracts the row `win` before that once there is one; the count is the rows in the window.
#[inline(always)]
fn vertical_steps<'r>(
    first: usize,
    m: usize,
    h: usize,
    win: usize,
    row: impl Fn(usize) -> &'r [f32],
) -> [VStep<'r>; LANES] {
    let half = (win + 2) / 2;
    std::array::from_fn(|l| {
        if l >= m {
            return VStep { add: None, sub: None, count: Count::new(1) };
        }
        let ri = first + l + half - 1;
        let count = if ri < win {
            ri + 1
        } else if ri < h {
            win
        } else {
            win - (ri - h + 1)
        };
        VStep {
            add: (ri < h).then(|| row(ri)),
            sub: (ri >= win).then(|| row(ri - win)),
            count: Count::new(count),
        }
    })
}

/// Applies `steps` to every column's running sum in `sums` and writes the outputs transposed into `t`
/// (`t[x][l]` = output row `l`, column `x`): the first vertical pass handing eight rows to the second
/// horizontal pass in the layout it filters, with no row-major block in between.
#[inline(always)]
fn vertical_block<Q: Quotient>(
    level: Level,
    steps: &[VStep<'_>; LANES],
    m: usize,
    w: usize,
    sums: &mut [f32],
    t: &mut [[f32; LANES]],
) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: AVX2 and FMA are available (levels are capped at `simd::detect()`, whose AVX2 level
        // requires both); every step's rows hold `w` samples, `sums` holds `w` and `t` at least `w` vectors.
        // At the AVX-512 level, AVX-512 F as well.
        done = unsafe {
            match (level >= Level::Avx512, Q::RECIPROCAL) {
                (true, true) => x86::vertical_block_avx512::<true>(steps, w, sums, t),
                (true, false) => x86::vertical_block_avx512::<false>(steps, w, sums, t),
                (false, true) => x86::vertical_block_avx2::<true>(steps, w, sums, t, 0),
                (false, false) => x86::vertical_block_avx2::<false>(steps, w, sums, t, 0),
            }
        };
    }
    let _ = level;
    for x in done..w {
        let mut s = sums[x];
        let mut d = [0f32; LANES];
        for (d, st) in d.iter_mut().zip(steps).take(m) {
            if let Some(a) = st.add {
                s += a[x];
            }
            if let Some(b) = st.sub {
                s -= b[x];
            }
            *d = Q::of(s, st.count);
        }
        sums[x] = s;
        t[x] = d;
    }
}

/// Box-filter window for a side of `n` pixels: `ceil(n / 128)`, i.e. `(n + 2·64 − 1) / (2·64)`.
pub fn window_size(n: usize) -> usize {
    n.div_ceil(128)
}

/// The reference's luma weights (float32 literals in the C++).
const LUMA_R: f32 = 0.299;
/// Green weight.
const LUMA_G: f32 = 0.587;
/// Blue weight.
const LUMA_B: f32 = 0.114;

/// Per-channel products `c·v` for v in 0..=255, each rounded to float32 exactly as `0.299f * (float)v` is.
pub(crate) fn luma_tables() -> &'static [[f32; 256]; 3] {
    static T: OnceLock<[[f32; 256]; 3]> = OnceLock::new();
    T.get_or_init(|| {
        let coef = [LUMA_R, LUMA_G, LUMA_B];
        let mut t = [[0f32; 256]; 3];
        for (c, table) in t.iter_mut().enumerate() {
            for (v, e) in table.iter_mut().enumerate() {
                *e = coef[c] * v as f32;
            }
        }
        t
    })
}

/// Float32 luma `(0.299·R + 0.587·G) + 0.114·B` into `out` (row-major). A grey sample `g` gives the luma of
/// `(g, g, g)` — what the reference computes after Pillow's `convert("RGB")` — which is not always `g` in
/// float32.
///
/// Written as plain arithmetic over groups of 8 pixels so the compiler vectorises it (u8 → f32 conversion
/// is exact, and each product and sum is the same single float32 rounding as in the C++).
#[inline(always)]
pub fn luma(img: ImageView<'_>, out: &mut [f32]) {
    luma_at(simd::level(), img, out)
}

/// [`luma`] with the kernels of `level` (at most [`simd::detect`]).
#[inline(always)]
fn luma_at(level: Level, img: ImageView<'_>, out: &mut [f32]) {
    debug_assert!(level <= simd::detect());
    let y = |p: &[u8]| -> f32 { LUMA_R * p[0] as f32 + LUMA_G * p[1] as f32 + LUMA_B * p[2] as f32 };
    match img.pixels {
        Pixels::Rgb(px) => {
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            match level {
                // SAFETY: levels passed here are capped at `simd::detect()`, so the CPU has the AVX-512
                // subsets `Level::Avx512` stands for.
                Level::Avx512 => done = unsafe { x86::luma_rgb_avx512(px, out) },
                // SAFETY: AVX2 is available (levels here are capped at `simd::detect()`).
                Level::Avx2 => done = unsafe { x86::luma_rgb_avx2(px, out) },
                Level::Scalar => {}
            }
            let (out, px) = (&mut out[done..], &px[3 * done..]);
            let mut o8 = out.chunks_exact_mut(8);
            let mut p8 = px.chunks_exact(24);
            for (o, p) in (&mut o8).zip(&mut p8) {
                for k in 0..8 {
                    o[k] = y(&p[3 * k..3 * k + 3]);
                }
            }
            for (o, p) in o8.into_remainder().iter_mut().zip(p8.remainder().chunks_exact(3)) {
                *o = y(p);
            }
        }
        Pixels::Gray(px) => {
            let grey = grey_luma_table();
            for (o, &g) in out.iter_mut().zip(px.iter()) {
                *o = grey[g as usize];
            }
        }
    }
}

/// Luma of the grey pixel `(g, g, g)` for each `g`.
fn grey_luma_table() -> &'static [f32; 256] {
    static T: OnceLock<[f32; 256]> = OnceLock::new();
    T.get_or_init(|| {
        let [tr, tg, tb] = luma_tables();
        std::array::from_fn(|v| tr[v] + tg[v] + tb[v])
    })
}

/// The reference's 1-D box filter (`box1DFloat`), run on `L` independent vectors in lock-step.
///
/// `load(p)` returns sample `p` of every lane; for each output `p` that `slot` maps to a slot,
/// `store(slot, sums, count)` is handed the running sums and the window's count, and stores `sum / count`
/// of the lanes it wants (a correctly rounded quotient, see [`Quotient`]; a caller that needs only some
/// lanes at some outputs divides only those). Each lane sees exactly the reference's sequence:
/// accumulate `half − 1` samples; then `win − half + 1` outputs with a growing window; then full-window
/// outputs, each adding the entering sample before subtracting the leaving one; then `half − 1` outputs
/// with a shrinking window.
#[inline(always)]
fn box_1d_lanes<const L: usize>(
    n: usize,
    win: usize,
    load: impl Fn(usize) -> [f32; L],
    slot: impl Fn(usize) -> Option<usize>,
    mut store: impl FnMut(usize, &[f32; L], Count),
) {
    let half = (win + 2) / 2;
    let mut sum = [0f32; L];
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut count = 0usize;
    for _ in 0..half - 1 {
        let x = load(ri);
        for l in 0..L {
            sum[l] += x[l];
        }
        count += 1;
        ri += 1;
    }
    for _ in 0..(win + 1 - half) {
        let x = load(ri);
        count += 1;
        for l in 0..L {
            sum[l] += x[l];
        }
        if let Some(slot) = slot(oi) {
            store(slot, &sum, Count::new(count));
        }
        ri += 1;
        oi += 1;
    }
    let c = Count::new(count);
    for _ in 0..n.saturating_sub(win) {
        let (x, y) = (load(ri), load(li));
        for l in 0..L {
            sum[l] += x[l];
            sum[l] -= y[l];
        }
        if let Some(slot) = slot(oi) {
            store(slot, &sum, c);
        }
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..half - 1 {
        let y = load(li);
        count -= 1;
        for l in 0..L {
            sum[l] -= y[l];
        }
        if let Some(slot) = slot(oi) {
            store(slot, &sum, Count::new(count));
        }
        li += 1;
        oi += 1;
    }
}

/// Horizontal box pass (`boxAlongRowsFloat`): filters each row of `input` (h × w) into `out`.
pub fn box_rows(input: &[f32], out: &mut [f32], h: usize, w: usize, win: usize) {
    let (mut t, mut o) = (vec![[0f32; LANES]; w], vec![[0f32; LANES]; w]);
    box_rows_blocked::<Divide>(simd::level(), input, out, h, w, w, win, &mut t, &mut o)
}

/// The horizontal pass, eight rows side by side so eight independent running sums are in flight (one
/// row's sum is a serial chain of dependent float additions). Each block of eight rows is first transposed
/// into `t` (`t[p]` = sample `p` of the eight rows, one vector), so every filter step is a vector load; the
/// outputs are collected the same way in `o` and transposed back. Rows past the last full block go alone.
/// Output row `r` is `out[r·stride..][..w]`.
#[expect(clippy::too_many_arguments, reason = "an inlined kernel; a struct would only rename the arguments")]
#[inline(always)]
fn box_rows_blocked<Q: Quotient>(
    level: Level,
    input: &[f32],
    out: &mut [f32],
    h: usize,
    w: usize,
    stride: usize,
    win: usize,
    t: &mut [[f32; LANES]],
    o: &mut [[f32; LANES]],
) {
    let (t, o) = (&mut t[..w], &mut o[..w]);
    let mut r = 0;
    while r + LANES <= h {
        let rows: [&[f32]; LANES] = std::array::from_fn(|l| &input[(r + l) * w..(r + l + 1) * w]);
        transpose_in(level, rows, t);
        let rows_out = split_rows(&mut out[r * stride..(r + LANES) * stride], w, stride);
        box_rows_transposed::<Q>(level, t, o, rows_out, w, win);
        r += LANES;
    }
    for r in r..h {
        let row = &input[r * w..(r + 1) * w];
        let o = &mut out[r * stride..r * stride + w];
        box_1d_lanes::<1>(w, win, |p| [row[p]], Some, |p, sum, c| o[p] = Q::of(sum[0], c));
    }
}

/// The horizontal pass on eight rows already transposed into `t` (`t[p]` = sample `p` of each row): the
/// running sums over `t`, collected in `o`, then transposed back into the eight `rows_out`.
#[inline(always)]
fn box_rows_transposed<Q: Quotient>(
    level: Level,
    t: &[[f32; LANES]],
    o: &mut [[f32; LANES]],
    mut rows_out: [&mut [f32]; LANES],
    w: usize,
    win: usize,
) {
    let store = |p: usize, sum: &[f32; LANES], c| o[p] = std::array::from_fn(|l| Q::of(sum[l], c));
    box_1d_lanes::<LANES>(w, win, |p| t[p], Some, store);
    transpose_out(level, &o[..w], &mut rows_out);
}

/// The second horizontal pass on `m` output rows of the first vertical pass (`t2`, transposed): every
/// running sum, divided and stored only at the sampled columns (`slot_of`), into `dst` (`m` rows of
/// `distinct` slots).
#[inline(always)]
fn box_rows_sampled<Q: Quotient>(
    t2: &[[f32; LANES]],
    dst: &mut [f32],
    m: usize,
    w: usize,
    win: usize,
    slot_of: &[Option<usize>],
) {
    let distinct = dst.len() / m;
    box_1d_lanes::<LANES>(
        w,
        win,
        |p| t2[p],
        |p| slot_of[p],
        |c, sum, count| store_sampled::<Q>(dst, distinct, c, &sum[..m], count),
    );
}

/// Output column `c` of the second horizontal pass (`c` is the sampled column's slot): lane `l`'s
/// `sum / count` into row `l` of `dst` (rows of `distinct` slots).
#[inline(always)]
fn store_sampled<Q: Quotient>(dst: &mut [f32], distinct: usize, c: usize, sums: &[f32], count: Count) {
    for (l, &s) in sums.iter().enumerate() {
        dst[l * distinct + c] = Q::of(s, count);
    }
}

/// [`box_rows_transposed`] on a block of the first horizontal pass and [`box_rows_sampled`] on a block of
/// the second, in one loop: both run over `w` samples with the same window, and each is a serial chain of
/// dependent float additions per lane, so side by side (sixteen lanes) the core has two chains in flight
/// and the loop takes little longer than one of them alone. Every lane still sees its own pass's exact
/// sequence.
#[expect(clippy::too_many_arguments, reason = "an inlined kernel; a struct would only rename the arguments")]
#[inline(always)]
fn box_rows_paired<Q: Quotient>(
    level: Level,
    t: &[[f32; LANES]],
    o: &mut [[f32; LANES]],
    mut rows_out: [&mut [f32]; LANES],
    t2: &[[f32; LANES]],
    dst: &mut [f32],
    m: usize,
    w: usize,
    win: usize,
    slot_of: &[Option<usize>],
) {
    let distinct = dst.len() / m;
    box_1d_lanes::<{ 2 * LANES }>(
        w,
        win,
        #[inline(always)]
        |p| {
            let (a, b) = (t[p], t2[p]);
            std::array::from_fn(|l| if l < LANES { a[l] } else { b[l - LANES] })
        },
        Some,
        #[inline(always)]
        |p, sum, count| {
            o[p] = std::array::from_fn(|l| Q::of(sum[l], count));
            if let Some(c) = slot_of[p] {
                store_sampled::<Q>(dst, distinct, c, &sum[LANES..LANES + m], count);
            }
        },
    );
    transpose_out(level, &o[..w], &mut rows_out);
}

/// The luma of eight RGB rows (`px`, each row `w` pixels) straight into the horizontal pass's transposed
/// layout: `t[p][l]` = luma of pixel `p` of row `l`, the same floats [`luma`] followed by [`transpose_in`]
/// give. Computed and transposed in registers eight (or sixteen) columns at a time, which saves writing a
/// row-major luma block and reading it back. `false` (nothing written) where no vector kernel exists.
#[inline(always)]
fn luma_transposed(level: Level, px: &[u8], w: usize, t: &mut [[f32; LANES]]) -> bool {
    debug_assert!(px.len() == 3 * LANES * w && t.len() >= w && level <= simd::detect());
    let Some(done) = luma_transposed_kernel(level, px, w, t) else {
        return false;
    };
    for (p, tp) in t.iter_mut().enumerate().take(w).skip(done) {
        *tp = std::array::from_fn(|l| {
            let q = &px[3 * (l * w + p)..3 * (l * w + p) + 3];
            LUMA_R * q[0] as f32 + LUMA_G * q[1] as f32 + LUMA_B * q[2] as f32
        });
    }
    true
}

/// The vector part of [`luma_transposed`]: how many leading columns the kernel for `level` filled, or
/// `None` where there is no kernel (the portable level, or a CPU without one).
#[inline(always)]
fn luma_transposed_kernel(level: Level, px: &[u8], w: usize, t: &mut [[f32; LANES]]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: levels are capped at `simd::detect()`, so the CPU has the AVX-512 subsets; `px` holds
        // eight rows of `w` pixels and `t` at least `w` vectors (asserted by the kernel).
        Level::Avx512 => return Some(unsafe { x86::luma_transposed_avx512(px, w, t) }),
        // SAFETY: AVX2 and FMA are available (levels are capped at `simd::detect()`); sizes as above.
        Level::Avx2 => return Some(unsafe { x86::luma_transposed_avx2(px, w, t) }),
        Level::Scalar => {}
    }
    let _ = (level, px, w, t);
    None
}

/// The first `w` samples of `LANES` rows that start `stride` apart in `block`, as separate mutable slices.
#[inline(always)]
fn split_rows(block: &mut [f32], w: usize, stride: usize) -> [&mut [f32]; LANES] {
    let mut it = block.chunks_mut(stride);
    std::array::from_fn(|_| &mut it.next().expect("block holds LANES rows")[..w])
}

/// `t[p][l] = rows[l][p]`: eight rows into per-column vectors.
#[inline(always)]
fn transpose_in(level: Level, rows: [&[f32]; LANES], t: &mut [[f32; LANES]]) {
    let w = t.len();
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: AVX2 is available (levels are capped at `simd::detect()`); every row holds at least `w`
        // samples and `t` holds `w` vectors.
        done = unsafe { x86::transpose_in_avx2(rows, t) };
    }
    let _ = level; // only the x86-64 kernels depend on it
    for (p, tp) in t.iter_mut().enumerate().skip(done) {
        *tp = std::array::from_fn(|l| rows[l][p]);
    }
    debug_assert!(rows.iter().all(|r| r.len() >= w));
}

/// `rows[l][p] = o[p][l]`, the inverse of [`transpose_in`].
#[inline(always)]
fn transpose_out(level: Level, o: &[[f32; LANES]], rows: &mut [&mut [f32]; LANES]) {
    let w = o.len();
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 {
        // SAFETY: AVX2, and at the AVX-512 level AVX-512 F, are available (levels are capped at
        // `simd::detect()`); every row holds at least `w` samples.
        done = unsafe {
            if level >= Level::Avx512 {
                x86::transpose_out_avx512(o, rows)
            } else {
                x86::transpose_out_avx2(o, rows, 0)
            }
        };
    }
    let _ = level; // only the x86-64 kernels depend on it
    for p in done..w {
        for (l, row) in rows.iter_mut().enumerate() {
            row[p] = o[p][l];
        }
    }
}

/// AVX2 kernels: 8 × 8 float transposes (pure data movement) and the luma of 8 pixels at a time (the
/// same float32 products and sums, in the same order, as the scalar code), so results are unaffected.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{LANES, LUMA_B, LUMA_G, LUMA_R};
    use std::arch::x86_64::*;

    /// The sum of `quality`'s steps, eight neighbour pairs at a time: `(u − v)·100/255` in float32 exactly
    /// as the scalar code computes it, truncated toward zero (`vcvttps2dq`, what `as i32` does in range),
    /// absolute values summed in 32-bit lanes (at most 100 per step, 8,064 steps). `None` if a step falls
    /// outside the range where the truncation equals Rust's saturating cast (only for inputs no filter
    /// produces: NaN or magnitudes near 2^31); the caller then runs the portable code.
    #[target_feature(enable = "avx2")]
    pub(super) fn quality_sum_avx2(buf: &[f32; 64 * 64]) -> Option<i64> {
        let (hundred, scale) = (_mm256_set1_ps(100.0), _mm256_set1_ps(255.0));
        let limit = _mm256_set1_ps(2_147_483_520.0);
        let sign = _mm256_set1_ps(-0.0);
        let mut sum = _mm256_setzero_si256();
        let mut in_range = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        let mut step = |u: __m256, v: __m256| {
            let x = _mm256_div_ps(_mm256_mul_ps(_mm256_sub_ps(u, v), hundred), scale);
            // |x| < 2^31 (false for NaN too).
            in_range = _mm256_and_ps(in_range, _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, x), limit));
            sum = _mm256_add_epi32(sum, _mm256_abs_epi32(_mm256_cvttps_epi32(x)));
        };
        let at = |i: usize| {
            debug_assert!(i + 8 <= buf.len());
            // SAFETY: every caller keeps i + 8 <= 4096.
            unsafe { _mm256_loadu_ps(buf.as_ptr().add(i)) }
        };
        // Vertical neighbours: rows i and i + 1, all 64 columns.
        for i in 0..63 {
            for j in (0..64).step_by(8) {
                step(at(i * 64 + j), at((i + 1) * 64 + j));
            }
        }
        // Horizontal neighbours: columns j and j + 1 for j < 56 here, the last seven below.
        let mut tail: i64 = 0;
        for i in 0..64 {
            for j in (0..56).step_by(8) {
                step(at(i * 64 + j), at(i * 64 + j + 1));
            }
            for j in 56..63 {
                let x = ((buf[i * 64 + j] - buf[i * 64 + j + 1]) * 100.0) / 255.0;
                if x.is_nan() || x.abs() >= 2_147_483_520.0 {
                    return None;
                }
                tail += i64::from((x as i32).unsigned_abs());
            }
        }
        if _mm256_movemask_ps(in_range) != 0xff {
            return None;
        }
        let mut lanes = [0i32; 8];
        // SAFETY: 8 writable i32s.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
        Some(tail + lanes.iter().map(|&l| i64::from(l)).sum::<i64>())
    }

    /// The AVX2 luma kernel's constants: byte shuffles that split 8 interleaved RGB pixels into channels,
    /// and the weights.
    #[derive(Clone, Copy)]
    struct Luma8 {
        r: [__m128i; 2],
        g: [__m128i; 2],
        b: [__m128i; 2],
        weights: [__m256; 3],
    }

    impl Luma8 {
        #[target_feature(enable = "avx2")]
        fn new() -> Self {
            let m = |idx: [i8; 8]| {
                let mut b = [-1i8; 16];
                b[..8].copy_from_slice(&idx);
                // SAFETY: 16 readable bytes.
                unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
            };
            // Pixels 0–2 come from the low half (bytes 0..16), 3–7 from the high half (bytes 8..24).
            Luma8 {
                r: [m([0, 3, 6, -1, -1, -1, -1, -1]), m([-1, -1, -1, 1, 4, 7, 10, 13])],
                g: [m([1, 4, 7, -1, -1, -1, -1, -1]), m([-1, -1, -1, 2, 5, 8, 11, 14])],
                b: [m([2, 5, 8, -1, -1, -1, -1, -1]), m([-1, -1, -1, 3, 6, 9, 12, 15])],
                weights: [_mm256_set1_ps(LUMA_R), _mm256_set1_ps(LUMA_G), _mm256_set1_ps(LUMA_B)],
            }
        }

        /// Luma of the 8 pixels in `group`: loaded as two overlapping 16-byte halves, split into R, G and
        /// B with byte shuffles, each channel widened to float32 exactly, then
        /// `(0.299·R + 0.587·G) + 0.114·B` as the reference evaluates it.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn of(&self, group: &[u8; 24]) -> __m256 {
            // SAFETY: both 16-byte loads lie within the 24-byte group.
            let (lo, hi) = unsafe {
                (_mm_loadu_si128(group.as_ptr().cast()), _mm_loadu_si128(group[8..].as_ptr().cast()))
            };
            let channel = |m: [__m128i; 2]| {
                let v = _mm_or_si128(_mm_shuffle_epi8(lo, m[0]), _mm_shuffle_epi8(hi, m[1]));
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
            };
            let [cr, cg, cb] = self.weights;
            _mm256_add_ps(
                _mm256_add_ps(_mm256_mul_ps(cr, channel(self.r)), _mm256_mul_ps(cg, channel(self.g))),
                _mm256_mul_ps(cb, channel(self.b)),
            )
        }
    }

    /// The constants of the AVX2 kernel for 16 pixels at a time ([`Luma8Pair::of`]): per channel, byte
    /// shuffles that put each pixel's byte `x` in the low byte of a 32-bit lane (the others zeroed) for
    /// pixels that start at byte 0 or byte 4 of a 128-bit lane; the high byte `0x4B` that makes such a lane
    /// the float `2^23 + x`; the weights `c` and `−c·2^23`, as for [`Luma16`].
    #[derive(Clone, Copy)]
    struct Luma8Pair {
        index: [[__m256i; 3]; 2],
        exponent: __m256i,
        weights: [__m256; 3],
        offsets: [__m256; 3],
    }

    impl Luma8Pair {
        #[target_feature(enable = "avx2,fma")]
        fn new() -> Self {
            // Lane i of each 128-bit half: the byte of channel `channel` of pixel i, which starts at
            // byte `at + 3i` of the half; Z zeroes.
            const Z: i8 = -128;
            let index = |at: i8, channel: i8| {
                let mut b = [Z; 16];
                for i in 0..4 {
                    b[4 * i as usize] = at + 3 * i + channel;
                }
                // SAFETY: 16 readable bytes.
                _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(b.as_ptr().cast()) })
            };
            let weights = [LUMA_R, LUMA_G, LUMA_B];
            Luma8Pair {
                index: [0, 4].map(|at| [0, 1, 2].map(|channel| index(at, channel))),
                exponent: _mm256_set1_epi32(0x4B00_0000),
                weights: weights.map(|c| _mm256_set1_ps(c)),
                offsets: weights.map(|c| _mm256_set1_ps(-c * 8_388_608.0)),
            }
        }

        /// Luma of the 16 pixels at `group` (48 bytes), as two vectors: pixels 0–3 and 8–11, then 4–7 and
        /// 12–15. The first joins bytes 0..16 and 24..40, the second 8..24 and 32..48 (pixels starting at
        /// byte 4 of each half), each from two plain loads and a blend: no lane-crossing shuffle, and
        /// nothing read outside the 48 bytes. Per channel a byte shuffle and an OR give `2^23 + x` as a
        /// float, and `fma(c, 2^23 + x, −c·2^23)` is `c·x` rounded once, exactly the reference's
        /// `c · (x as f32)` (`c·2^23` is exact); then `(0.299·R + 0.587·G) + 0.114·B` in its order.
        ///
        /// # Safety
        /// `group` must point to 48 readable bytes.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn of(&self, group: *const u8) -> [__m256; 2] {
            // SAFETY: loads at 0, 8 and 16 of 32 bytes stay within the 48 the caller guarantees.
            let (a, b, c) = unsafe {
                (
                    _mm256_loadu_si256(group.cast()),
                    _mm256_loadu_si256(group.add(8).cast()),
                    _mm256_loadu_si256(group.add(16).cast()),
                )
            };
            let halves = [_mm256_blend_epi32::<0xf0>(a, b), _mm256_blend_epi32::<0xf0>(b, c)];
            let [cr, cg, cb] = self.weights;
            let [or, og, ob] = self.offsets;
            std::array::from_fn(|v| {
                let [ir, ig, ib] = self.index[v];
                let ch = |i: __m256i| {
                    _mm256_castsi256_ps(_mm256_or_si256(_mm256_shuffle_epi8(halves[v], i), self.exponent))
                };
                _mm256_add_ps(
                    _mm256_add_ps(_mm256_fmadd_ps(cr, ch(ir), or), _mm256_fmadd_ps(cg, ch(ig), og)),
                    _mm256_fmadd_ps(cb, ch(ib), ob),
                )
            })
        }
    }

    /// The AVX-512 VBMI luma kernel's constants: per channel, a `vpermb` index that turns each of 16
    /// pixels' bytes `x` into the float `2^23 + x` (the byte in the low byte of its 32-bit lane, the high
    /// byte 0x4B, the two between zeroed); the weights `c`; and `−c·2^23`.
    ///
    /// `fma(c, 2^23 + x, −c·2^23)` rounds `c·x` once, exactly like `c · (x as f32)`: `c·2^23` is exact
    /// (a power-of-two scaling), so the fused sum is exactly `c·x` before its one rounding. That saves the
    /// integer-to-float conversion of every channel.
    #[derive(Clone, Copy)]
    struct Luma16 {
        index: [__m512i; 3],
        weights: [__m512; 3],
        offsets: [__m512; 3],
    }

    /// `2^23`: floats from 2^23 to 2^24 are spaced exactly 1 apart, so `2^23 + x` for a byte `x` has `x`
    /// as its low mantissa bits (bit pattern 0x4B00_0000 + x).
    const TWO_23: f32 = 8_388_608.0;

    impl Luma16 {
        #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vbmi")]
        fn new() -> Self {
            let idx = |c: u8| {
                // Byte 0 of lane i: channel c of pixel i; byte 3: byte 63 of the loaded vector, which
                // holds 0x4B (see `of`); bytes 1 and 2 are zeroed by the mask.
                let bytes: [u8; 64] = std::array::from_fn(|i| match i % 4 {
                    0 => 3 * (i / 4) as u8 + c,
                    3 => 63,
                    _ => 0,
                });
                // SAFETY: 64 readable bytes.
                unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) }
            };
            let weights = [LUMA_R, LUMA_G, LUMA_B];
            Luma16 {
                // Opaque to the optimiser: knowing the indices, LLVM rewrites each zero-masked `vpermb`
                // (one uop) as a two-source `vpermt2b` from a zero vector plus a register copy.
                index: [idx(0), idx(1), idx(2)].map(std::hint::black_box),
                weights: weights.map(|c| _mm512_set1_ps(c)),
                offsets: weights.map(|c| _mm512_set1_ps(-(c * TWO_23))),
            }
        }

        /// Luma of the 16 pixels at `group`: one masked load of the 48 bytes (the rest of the vector
        /// 0x4B), one zero-masked `vpermb` per channel into `2^23 + x`, then the same float32 products (by
        /// FMA, see [`Luma16`]) and sums as [`Luma8::of`].
        ///
        /// # Safety
        /// `group` must point to 48 readable bytes.
        #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vbmi")]
        #[inline]
        unsafe fn of(&self, group: *const u8) -> __m512 {
            const LANE_ENDS: u64 = 0x9999_9999_9999_9999;
            let high = _mm512_set1_epi8(0x4B);
            // SAFETY: the mask reads the group's 48 bytes only (the caller's promise); masked-out bytes are
            // not accessed and keep `high`'s.
            let v = unsafe { _mm512_mask_loadu_epi8(high, (1 << 48) - 1, group.cast()) };
            let ch = |ix: __m512i| _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi8(LANE_ENDS, ix, v));
            let [cr, cg, cb] = self.weights;
            let [or, og, ob] = self.offsets;
            let [ir, ig, ib] = self.index;
            _mm512_add_ps(
                _mm512_add_ps(_mm512_fmadd_ps(cr, ch(ir), or), _mm512_fmadd_ps(cg, ch(ig), og)),
                _mm512_fmadd_ps(cb, ch(ib), ob),
            )
        }
    }

    /// Luma of the first multiple-of-8 pixels of interleaved RGB `px` into `out`; returns how many pixels.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn luma_rgb_avx2(px: &[u8], out: &mut [f32]) -> usize {
        let n = out.len().min(px.len() / 3) / 8 * 8;
        let k = Luma8::new();
        for i in (0..n).step_by(8) {
            let y = k.of(px[3 * i..3 * i + 24].try_into().expect("24 bytes"));
            let dst: &mut [f32; 8] = (&mut out[i..i + 8]).try_into().expect("8 floats");
            // SAFETY: `dst` is 8 writable floats.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), y) };
        }
        n
    }

    /// [`luma_rgb_avx2`] with AVX-512 VBMI, 16 pixels at a time ([`Luma16`]), where the AVX2 kernel needs
    /// three shuffles (and a widening) per channel and 8 pixels.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VBMI.
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vbmi")]
    pub(super) unsafe fn luma_rgb_avx512(px: &[u8], out: &mut [f32]) -> usize {
        let n = out.len().min(px.len() / 3) / 16 * 16;
        let k = Luma16::new();
        for i in (0..n).step_by(16) {
            let group = &px[3 * i..3 * i + 48];
            // SAFETY: `group` is 48 readable bytes.
            let y = unsafe { k.of(group.as_ptr()) };
            let dst: &mut [f32; 16] = (&mut out[i..i + 16]).try_into().expect("16 floats");
            // SAFETY: `dst` is 16 writable floats.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), y) };
        }
        n
    }

    /// `t[p][l]` = luma of pixel `p` of row `l` of eight RGB rows of `w` pixels (`px`), for the columns
    /// from `from` up to the last multiple of 8; returns that multiple. Each 8 × 8 tile is computed as eight
    /// row vectors ([`Luma8`]) and transposed in registers.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn luma_transposed_avx2_from(
        px: &[u8],
        w: usize,
        t: &mut [[f32; LANES]],
        from: usize,
    ) -> usize {
        assert!(px.len() >= 3 * LANES * w && t.len() >= w);
        let full = w - w % 8;
        let k = Luma8::new();
        for p0 in (from..full).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|l| {
                let at = 3 * (l * w + p0);
                k.of(px[at..at + 24].try_into().expect("24 bytes"))
            });
            for (k, v) in transpose8(r).into_iter().enumerate() {
                // SAFETY: `t[p0 + k]` is 8 writable floats.
                unsafe { _mm256_storeu_ps(t[p0 + k].as_mut_ptr(), v) };
            }
        }
        full
    }

    /// [`luma_transposed_avx2_from`] with 16-column tiles first: each row's 16 lumas in two vectors
    /// ([`Luma8Pair`]), each vector's 8 × 8 tile transposed in registers and its columns stored where its
    /// pixels belong; a last 8-column tile as before.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn luma_transposed_avx2(px: &[u8], w: usize, t: &mut [[f32; LANES]]) -> usize {
        assert!(px.len() >= 3 * LANES * w && t.len() >= w);
        let full = w - w % 16;
        let k = Luma8Pair::new();
        // Which of the tile's 16 columns each transposed vector is: the pixel order of `Luma8Pair::of`.
        const COLUMNS: [[usize; 8]; 2] = [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]];
        let src = px.as_ptr();
        for p0 in (0..full).step_by(16) {
            // SAFETY: row l's group is bytes 3(l·w + p0)..3(l·w + p0 + 16) <= 3·8·w, within `px`.
            let y: [[__m256; 2]; 8] = std::array::from_fn(|l| unsafe { k.of(src.add(3 * (l * w + p0))) });
            for (half, columns) in COLUMNS.iter().enumerate() {
                for (&c, v) in columns.iter().zip(transpose8(y.map(|pair| pair[half]))) {
                    // SAFETY: `t[p0 + c]` is 8 writable floats (p0 + 16 <= w <= t.len()).
                    unsafe { _mm256_storeu_ps(t[p0 + c].as_mut_ptr(), v) };
                }
            }
        }
        // SAFETY: AVX2 is enabled here.
        unsafe { luma_transposed_avx2_from(px, w, t, full) }
    }

    /// [`luma_transposed_avx2`] sixteen columns at a time: each row's 16 lumas in one AVX-512 vector
    /// ([`Luma16`]), the 8 × 16 tile transposed in registers ([`transpose_8x16`]) into the sixteen
    /// columns' vectors, which lie side by side in `t`; a last 8-column tile as with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, VL and VBMI.
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vbmi")]
    pub(super) unsafe fn luma_transposed_avx512(px: &[u8], w: usize, t: &mut [[f32; LANES]]) -> usize {
        assert!(px.len() >= 3 * LANES * w && t.len() >= w);
        let full = w - w % 16;
        let k = Luma16::new();
        let (src, dst) = (px.as_ptr(), t.as_mut_ptr().cast::<f32>());
        for p0 in (0..full).step_by(16) {
            // SAFETY: row l's group starts at byte 3(l·w + p0) and ends at 3(l·w + p0 + 16) <= 3·8·w, within
            // `px` (asserted above).
            let y: [__m512; 8] = std::array::from_fn(|l| unsafe { k.of(src.add(3 * (l * w + p0))) });
            for (j, v) in transpose_8x16(y).into_iter().enumerate() {
                // SAFETY: vector j is t[p0 + 2j] and t[p0 + 2j + 1], 16 floats within `t` (p0 + 16 <= w).
                unsafe { _mm512_storeu_ps(dst.add(LANES * (p0 + 2 * j)), v) };
            }
        }
        // SAFETY: AVX2 is implied by the features above.
        unsafe { luma_transposed_avx2_from(px, w, t, full) }
    }

    /// Index vectors of [`transpose_8x16`]'s three rounds of two-source permutes, and of
    /// [`transpose_16x8`]'s (the same rounds undone), for either half `h` of each pair's result. An entry is
    /// `16·source + element`, `vpermt2ps`'s encoding.
    ///
    /// Element (row l, column c) of the 8 × 16 tile is tracked as a register index and a position, both in
    /// bits: it starts in register (l2 l1 l0) at position (c3 c2 c1 c0). Each round pairs the registers that
    /// differ in one bit of l and swaps that bit with the position's top bit: (l2 l1 c3) at (c2 c1 c0 l0),
    /// then (l2 c3 c2) at (c1 c0 l1 l0), then (c3 c2 c1) at (c0 l2 l1 l0), so that register j holds column
    /// 2j's eight rows and then column 2j + 1's.
    const TRANSPOSE_INDEX: [[[u32; 16]; 2]; 6] = {
        let mut idx = [[[0u32; 16]; 2]; 6];
        let mut h = 0;
        while h < 2 {
            let mut p = 0;
            while p < 16 {
                let (hi, q) = (h as u32, p as u32);
                // Forward: where output position q of half hi comes from.
                idx[0][h][p] = ((q & 1) << 4) | (8 * hi + (q >> 1));
                idx[1][h][p] = (((q >> 1) & 1) << 4) | (8 * hi + 2 * (q >> 2) + (q & 1));
                idx[2][h][p] = (((q >> 2) & 1) << 4) | (8 * hi + 4 * (q >> 3) + (q & 3));
                // Backward, the rounds in reverse order.
                idx[3][h][p] = ((q >> 3) << 4) | (8 * ((q >> 2) & 1) + 4 * hi + (q & 3));
                idx[4][h][p] = ((q >> 3) << 4) | (4 * ((q >> 1) & 3) + 2 * hi + (q & 1));
                idx[5][h][p] = ((q >> 3) << 4) | (2 * (q & 7) + hi);
                p += 1;
            }
            h += 1;
        }
        idx
    };

    /// One round: `out[at(i, h)] = permute(v[a(i)], index[h], v[b(i)])` for the four pairs `i` and both halves.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn permute_round(
        v: [__m512; 8],
        round: usize,
        pair: impl Fn(usize) -> (usize, usize),
        at: impl Fn(usize, usize) -> usize,
    ) -> [__m512; 8] {
        // SAFETY: 16 readable u32s each.
        let index: [__m512i; 2] =
            std::array::from_fn(|h| unsafe { _mm512_loadu_si512(TRANSPOSE_INDEX[round][h].as_ptr().cast()) });
        let mut out = v;
        for i in 0..4 {
            let (a, b) = pair(i);
            for (h, &ix) in index.iter().enumerate() {
                out[at(i, h)] = _mm512_permutex2var_ps(v[a], ix, v[b]);
            }
        }
        out
    }

    /// Transposes an 8 × 16 tile in registers (row l in `r[l]`) into its sixteen columns: vector j holds
    /// column 2j's eight rows, then column 2j + 1's, which is how consecutive `[f32; 8]` column vectors lie
    /// in memory. Three rounds of eight two-source permutes (24 shuffles, where two 8 × 8 transposes of the
    /// halves take 48 and 8 extracts). Pure data movement: the floats are unchanged.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn transpose_8x16(r: [__m512; 8]) -> [__m512; 8] {
        // Register bits: (l2 l1 l0) → (l2 l1 c3) → (l2 c3 c2) → (c3 c2 c1); see TRANSPOSE_INDEX.
        let s = permute_round(r, 0, |i| (2 * i, 2 * i + 1), |i, h| 2 * i + h);
        let u = permute_round(
            s,
            1,
            |i| (4 * (i >> 1) + (i & 1), 4 * (i >> 1) + 2 + (i & 1)),
            |i, h| 4 * (i >> 1) + 2 * (i & 1) + h,
        );
        permute_round(u, 2, |i| (i, 4 + i), |i, h| 2 * i + h)
    }

    /// The inverse of [`transpose_8x16`]: sixteen column vectors (two per register) back into eight rows
    /// of sixteen.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn transpose_16x8(o: [__m512; 8]) -> [__m512; 8] {
        // Register bits: (c3 c2 c1) → (l2 c3 c2) → (l2 l1 c3) → (l2 l1 l0).
        let u = permute_round(o, 3, |i| (2 * i, 2 * i + 1), |i, h| 4 * h + i);
        let s = permute_round(
            u,
            4,
            |i| (4 * (i >> 1) + 2 * (i & 1), 4 * (i >> 1) + 2 * (i & 1) + 1),
            |i, h| 4 * (i >> 1) + 2 * h + (i & 1),
        );
        permute_round(s, 5, |i| (2 * i, 2 * i + 1), |i, h| 2 * i + h)
    }

    /// [`super::vertical_block`] over the multiple-of-8 columns from `from`; returns how many columns are
    /// done. Per 8 columns: the running sums in one register, each step's add, subtract and divide in order
    /// (lanes of a partial block have neither and give sum / 1, ignored downstream), then the eight outputs
    /// transposed in registers.
    ///
    /// `RECIPROCAL` divides as [`super::Reciprocal`] does, otherwise with `vdivps`; the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn vertical_block_avx2<const RECIPROCAL: bool>(
        steps: &[super::VStep<'_>; LANES],
        w: usize,
        sums: &mut [f32],
        t: &mut [[f32; LANES]],
        from: usize,
    ) -> usize {
        assert!(sums.len() >= w && t.len() >= w);
        assert!(steps
            .iter()
            .all(|s| s.add.is_none_or(|r| r.len() >= w) && s.sub.is_none_or(|r| r.len() >= w)));
        let full = w - w % 8;
        let counts: [__m256; LANES] = std::array::from_fn(|l| _mm256_set1_ps(steps[l].count.c));
        let inverses: [__m256; LANES] = std::array::from_fn(|l| _mm256_set1_ps(steps[l].count.y));
        for x0 in (from..full).step_by(8) {
            // SAFETY: x0 + 8 <= w, within `sums` and (asserted above) every step's rows.
            unsafe {
                let mut s = _mm256_loadu_ps(sums.as_ptr().add(x0));
                let d: [__m256; LANES] = std::array::from_fn(|l| {
                    if let Some(a) = steps[l].add {
                        s = _mm256_add_ps(s, _mm256_loadu_ps(a.as_ptr().add(x0)));
                    }
                    if let Some(b) = steps[l].sub {
                        s = _mm256_sub_ps(s, _mm256_loadu_ps(b.as_ptr().add(x0)));
                    }
                    if RECIPROCAL {
                        // super::Reciprocal::of, eight lanes at once.
                        let q = _mm256_mul_ps(s, inverses[l]);
                        let r = _mm256_fnmadd_ps(q, counts[l], s);
                        _mm256_fmadd_ps(r, inverses[l], q)
                    } else {
                        _mm256_div_ps(s, counts[l])
                    }
                });
                _mm256_storeu_ps(sums.as_mut_ptr().add(x0), s);
                for (k, v) in transpose8(d).into_iter().enumerate() {
                    _mm256_storeu_ps(t[x0 + k].as_mut_ptr(), v);
                }
            }
        }
        full.max(from)
    }

    /// [`vertical_block_avx2`] sixteen columns at a time: the same operations on AVX-512 vectors, the
    /// eight outputs transposed with [`transpose_8x16`]; then the last 8-column tile with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and AVX-512 F.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub(super) unsafe fn vertical_block_avx512<const RECIPROCAL: bool>(
        steps: &[super::VStep<'_>; LANES],
        w: usize,
        sums: &mut [f32],
        t: &mut [[f32; LANES]],
    ) -> usize {
        assert!(sums.len() >= w && t.len() >= w);
        assert!(steps
            .iter()
            .all(|s| s.add.is_none_or(|r| r.len() >= w) && s.sub.is_none_or(|r| r.len() >= w)));
        let full = w - w % 16;
        let counts: [__m512; LANES] = std::array::from_fn(|l| _mm512_set1_ps(steps[l].count.c));
        let inverses: [__m512; LANES] = std::array::from_fn(|l| _mm512_set1_ps(steps[l].count.y));
        let dst = t.as_mut_ptr().cast::<f32>();
        for x0 in (0..full).step_by(16) {
            // SAFETY: x0 + 16 <= w, within `sums`, (asserted above) every step's rows, and `t`'s vectors
            // x0..x0 + 16 (16 · 8 floats from float 8·x0).
            unsafe {
                let mut s = _mm512_loadu_ps(sums.as_ptr().add(x0));
                let d: [__m512; LANES] = std::array::from_fn(|l| {
                    if let Some(a) = steps[l].add {
                        s = _mm512_add_ps(s, _mm512_loadu_ps(a.as_ptr().add(x0)));
                    }
                    if let Some(b) = steps[l].sub {
                        s = _mm512_sub_ps(s, _mm512_loadu_ps(b.as_ptr().add(x0)));
                    }
                    if RECIPROCAL {
                        let q = _mm512_mul_ps(s, inverses[l]);
                        let r = _mm512_fnmadd_ps(q, counts[l], s);
                        _mm512_fmadd_ps(r, inverses[l], q)
                    } else {
                        _mm512_div_ps(s, counts[l])
                    }
                });
                _mm512_storeu_ps(sums.as_mut_ptr().add(x0), s);
                for (j, v) in transpose_8x16(d).into_iter().enumerate() {
                    _mm512_storeu_ps(dst.add(LANES * (x0 + 2 * j)), v);
                }
            }
        }
        // SAFETY: AVX2 and FMA are among the features above.
        unsafe { vertical_block_avx2::<RECIPROCAL>(steps, w, sums, t, full) }
    }

    /// Transposes eight `__m256` rows in registers.
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// Full 8-column tiles of `t[p][l] = rows[l][p]`; returns how many columns were done.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_in_avx2(rows: [&[f32]; LANES], t: &mut [[f32; LANES]]) -> usize {
        let w = t.len();
        let full = w - w % 8;
        for p0 in (0..full).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|l| {
                let src: &[f32; 8] = rows[l][p0..p0 + 8].try_into().expect("8 samples");
                // SAFETY: `src` is 8 readable floats; unaligned loads are allowed.
                unsafe { _mm256_loadu_ps(src.as_ptr()) }
            });
            for (k, v) in transpose8(r).into_iter().enumerate() {
                // SAFETY: `t[p0 + k]` is 8 writable floats.
                unsafe { _mm256_storeu_ps(t[p0 + k].as_mut_ptr(), v) };
            }
        }
        full
    }

    /// Full 8-column tiles of `rows[l][p] = o[p][l]` from column `from`; returns how many columns are done.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_out_avx2(
        o: &[[f32; LANES]],
        rows: &mut [&mut [f32]; LANES],
        from: usize,
    ) -> usize {
        let w = o.len();
        let full = w - w % 8;
        for p0 in (from..full).step_by(8) {
            // SAFETY: `o[p0 + k]` is 8 readable floats.
            let r: [__m256; 8] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(o[p0 + k].as_ptr()) });
            for (l, v) in transpose8(r).into_iter().enumerate() {
                let dst: &mut [f32; 8] = (&mut rows[l][p0..p0 + 8]).try_into().expect("8 samples");
                // SAFETY: `dst` is 8 writable floats.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
            }
        }
        full.max(from)
    }

    /// [`transpose_out_avx2`] sixteen columns at a time ([`transpose_16x8`]), then the last 8-column tile.
    ///
    /// # Safety
    /// The CPU must support AVX2 and AVX-512 F.
    #[target_feature(enable = "avx2,avx512f")]
    pub(super) unsafe fn transpose_out_avx512(o: &[[f32; LANES]], rows: &mut [&mut [f32]; LANES]) -> usize {
        let w = o.len();
        assert!(rows.iter().all(|r| r.len() >= w));
        let full = w - w % 16;
        let src = o.as_ptr().cast::<f32>();
        for p0 in (0..full).step_by(16) {
            // SAFETY: vector j is o[p0 + 2j] and o[p0 + 2j + 1], 16 readable floats (p0 + 16 <= w).
            let c: [__m512; 8] =
                std::array::from_fn(|j| unsafe { _mm512_loadu_ps(src.add(LANES * (p0 + 2 * j))) });
            for (row, v) in rows.iter_mut().zip(transpose_16x8(c)) {
                // SAFETY: p0 + 16 <= w <= row.len() (asserted above).
                unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(p0), v) };
            }
        }
        // SAFETY: AVX2 is implied by the features above.
        unsafe { transpose_out_avx2(o, rows, full) }
    }
}

/// Vertical box pass (`boxAlongColsFloat`): filters each column of `input` (h × w) into `out`.
/// All columns advance together: every step is a whole-row vector operation on `sums` (length w).
#[inline(always)]
pub fn box_cols(input: &[f32], out: &mut [f32], h: usize, w: usize, win: usize, sums: &mut [f32]) {
    let half = (win + 2) / 2;
    let row = |i: usize| &input[i * w..(i + 1) * w];
    sums.fill(0.0);
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut count = 0usize;
    for _ in 0..half - 1 {
        for (s, &x) in sums.iter_mut().zip(row(ri)) {
            *s += x;
        }
        count += 1;
        ri += 1;
    }
    for _ in 0..(win + 1 - half) {
        count += 1;
        let c = count as f32;
        let o = &mut out[oi * w..(oi + 1) * w];
        for ((s, &x), o) in sums.iter_mut().zip(row(ri)).zip(o) {
            *s += x;
            *o = *s / c;
        }
        ri += 1;
        oi += 1;
    }
    let c = count as f32;
    for _ in 0..h.saturating_sub(win) {
        let o = &mut out[oi * w..(oi + 1) * w];
        for (((s, &x), &y), o) in sums.iter_mut().zip(row(ri)).zip(row(li)).zip(o) {
            *s += x;
            *s -= y;
            *o = *s / c;
        }
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..half - 1 {
        count -= 1;
        let c = count as f32;
        let o = &mut out[oi * w..(oi + 1) * w];
        for ((s, &y), o) in sums.iter_mut().zip(row(li)).zip(o) {
            *s -= y;
            *o = *s / c;
        }
        li += 1;
        oi += 1;
    }
}

/// Samples the filtered image at the 64×64 "target centres": row `floor((r + 0.5)·h / 64)`, likewise
/// columns, computed in double as the reference does (rows/columns repeat when a side is below 64).
pub fn decimate(input: &[f32], h: usize, w: usize, out: &mut [f32; 64 * 64]) {
    for r in 0..64 {
        let ini = ((r as f64 + 0.5) * h as f64 / 64.0) as usize;
        for c in 0..64 {
            let inj = ((c as f64 + 0.5) * w as f64 / 64.0) as usize;
            out[r * 64 + c] = input[ini * w + inj];
        }
    }
}

/// The reference's quality: sum over adjacent pairs of `|trunc((u − v)·100 / 255)|` (float32 arithmetic,
/// truncation toward zero), divided by 90 and capped at 100.
pub fn quality(buf: &[f32; 64 * 64]) -> u32 {
    quality_at(Level::Scalar, buf)
}

/// [`quality`] with the vector kernel where `level` (capped at what the CPU has) allows: the same float32
/// steps (subtract, ×100, ÷255, truncate) on eight neighbours at once. Written out because the portable
/// loop stays scalar (Rust's saturating float-to-int cast does not vectorise) and, at 256 × 256, cost as
/// much as a fifth of the whole hash.
fn quality_at(level: Level, buf: &[f32; 64 * 64]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if level.min(simd::detect()) >= Level::Avx2 {
        // SAFETY: AVX2 is available (`detect` found it).
        if let Some(sum) = unsafe { x86::quality_sum_avx2(buf) } {
            return (sum / 90).min(100) as u32;
        }
    }
    let _ = level;
    quality_portable(buf)
}

/// The reference's quality metric, written as it is.
fn quality_portable(buf: &[f32; 64 * 64]) -> u32 {
    let step = |u: f32, v: f32| -> i64 { ((((u - v) * 100.0) / 255.0) as i32).unsigned_abs().into() };
    let mut sum: i64 = 0;
    for i in 0..63 {
        for j in 0..64 {
            sum += step(buf[i * 64 + j], buf[(i + 1) * 64 + j]);
        }
    }
    for i in 0..64 {
        for j in 0..63 {
            sum += step(buf[i * 64 + j], buf[i * 64 + j + 1]);
        }
    }
    (sum / 90).min(100) as u32
}

/// The 16×64 DCT matrix of the reference, stored transposed (`[k][i]`, 64 × 16) for the second product.
/// `D[i][j] = s · cos(π/128 · (i+1) · (2j+1))` with `s = sqrt(2/64)` held in float32, the cosine and the
/// product in double, rounded once to float32; frequency 0 (DC) is skipped.
pub fn dct_matrix() -> &'static [[f32; 64]; 16] {
    static D: OnceLock<[[f32; 64]; 16]> = OnceLock::new();
    D.get_or_init(|| {
        let scale = (2.0f64 / 64.0).sqrt() as f32;
        let mut d = [[0f32; 64]; 16];
        for (i, row) in d.iter_mut().enumerate() {
            for (j, e) in row.iter_mut().enumerate() {
                let arg = (std::f64::consts::PI / 2.0 / 64.0) * (i + 1) as f64 * (2 * j + 1) as f64;
                *e = (f64::from(scale) * arg.cos()) as f32;
            }
        }
        d
    })
}

/// `B = D · A · Dᵀ` in float32 with sums in index order k = 0..63, as `dct64To16` does; the loops run
/// over whole rows so every output lane accumulates independently in the reference's order.
pub fn dct(a: &[f32; 64 * 64]) -> Dct16 {
    let d = dct_matrix();
    // T = D·A (16 × 64): T[i][j] = Σ_k D[i][k]·A[k][j].
    let mut t = [[0f32; 64]; 16];
    for (ti, di) in t.iter_mut().zip(d.iter()) {
        for (k, &dik) in di.iter().enumerate() {
            let ak = &a[k * 64..k * 64 + 64];
            for (tij, &akj) in ti.iter_mut().zip(ak) {
                *tij += dik * akj;
            }
        }
    }
    // B = T·Dᵀ (16 × 16): B[i][j] = Σ_k T[i][k]·D[j][k]; lanes are j, so use D transposed.
    let mut dt = [[0f32; 16]; 64];
    for (j, dj) in d.iter().enumerate() {
        for (k, &v) in dj.iter().enumerate() {
            dt[k][j] = v;
        }
    }
    let mut b = [0f32; 256];
    for (i, ti) in t.iter().enumerate() {
        let bi = &mut b[i * 16..i * 16 + 16];
        for (k, &tik) in ti.iter().enumerate() {
            for (bij, &dkj) in bi.iter_mut().zip(dt[k].iter()) {
                *bij += tik * dkj;
            }
        }
    }
    b
}

/// The reference's median (Torben's algorithm) returns, for 256 values, the lower median: the 128th smallest.
fn lower_median(values: &Dct16) -> f32 {
    let mut v = *values;
    let (_, m, _) = v.select_nth_unstable_by(127, f32::total_cmp);
    *m
}

/// Bit `16·i + j` is set iff `B[i][j]` is strictly greater than the lower median.
pub fn threshold(b: &Dct16) -> Hash256 {
    let median = lower_median(b);
    let mut h = Hash256::ZERO;
    for (k, &v) in b.iter().enumerate() {
        if v > median {
            h.set_bit(k);
        }
    }
    h
}

/// The seven dihedral variants from one DCT. Reversing an axis multiplies frequency `u = index + 1` by
/// `(−1)^u`, so it negates the coefficients with an even index on that axis; a transposition swaps the
/// indices. Each variant gets its own median.
pub fn dihedral(b: &Dct16) -> Dihedral {
    let variant = |transpose: bool, negate: &dyn Fn(usize, usize) -> bool| -> Hash256 {
        let mut out = [0f32; 256];
        for i in 0..16 {
            for j in 0..16 {
                let v = if negate(i, j) { -b[i * 16 + j] } else { b[i * 16 + j] };
                let (r, c) = if transpose { (j, i) } else { (i, j) };
                out[r * 16 + c] = v;
            }
        }
        threshold(&out)
    };
    let even = |x: usize| x.is_multiple_of(2);
    Dihedral {
        rot90: variant(true, &|_, j| even(j)),
        rot180: variant(false, &|i, j| !even(i + j)),
        rot270: variant(true, &|i, _| even(i)),
        flipx: variant(false, &|i, _| even(i)),
        flipy: variant(false, &|_, j| even(j)),
        flipplus1: variant(true, &|_, _| false),
        flipminus1: variant(true, &|i, j| !even(i + j)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's box filter, written as plainly as the C++ for one vector, to check the lock-step
    /// versions against.
    fn box_1d_reference(v: &[f32], win: usize) -> Vec<f32> {
        let n = v.len();
        let half = (win + 2) / 2;
        let mut out = vec![0f32; n];
        let (mut sum, mut cnt, mut li, mut ri, mut oi) = (0f32, 0usize, 0, 0, 0);
        for _ in 0..half - 1 {
            sum += v[ri];
            cnt += 1;
            ri += 1;
        }
        for _ in 0..win - half + 1 {
            sum += v[ri];
            cnt += 1;
            out[oi] = sum / cnt as f32;
            ri += 1;
            oi += 1;
        }
        for _ in 0..n - win {
            sum += v[ri];
            sum -= v[li];
            out[oi] = sum / cnt as f32;
            li += 1;
            ri += 1;
            oi += 1;
        }
        for _ in 0..half - 1 {
            sum -= v[li];
            cnt -= 1;
            out[oi] = sum / cnt as f32;
            li += 1;
            oi += 1;
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 25600) as f32 / 100.0
            })
            .collect()
    }

    #[test]
    fn lock_step_box_filters_equal_the_plain_reference() {
        for &(h, w) in &[(5, 5), (9, 17), (130, 7), (300, 257), (64, 129)] {
            let img = pseudo_random(h * w, (h * 31 + w) as u32);
            for win in [1, 2, 3, 4, 5] {
                let mut out = vec![0f32; h * w];
                box_rows(&img, &mut out, h, w, win);
                for r in 0..h {
                    let expect = box_1d_reference(&img[r * w..(r + 1) * w], win);
                    assert_eq!(&out[r * w..(r + 1) * w], &expect[..], "rows h={h} w={w} win={win}");
                }
                let mut sums = vec![0f32; w];
                box_cols(&img, &mut out, h, w, win, &mut sums);
                for c in 0..w {
                    let col: Vec<f32> = (0..h).map(|r| img[r * w + c]).collect();
                    let expect = box_1d_reference(&col, win);
                    let got: Vec<f32> = (0..h).map(|r| out[r * w + c]).collect();
                    assert_eq!(got, expect, "cols h={h} w={w} win={win} c={c}");
                }
            }
        }
    }

    #[test]
    fn luma_equals_the_reference_formula_pixel_by_pixel() {
        // Odd sizes exercise the vector groups of 8 and the scalar tail.
        for (w, h) in [(13usize, 7usize), (64, 3), (5, 5), (101, 9)] {
            let px: Vec<u8> = (0..w * h * 3).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
            let mut out = vec![0f32; w * h];
            luma(ImageView::rgb(w as u32, h as u32, &px), &mut out);
            for (i, p) in px.chunks_exact(3).enumerate() {
                let want = 0.299f32 * p[0] as f32 + 0.587f32 * p[1] as f32 + 0.114f32 * p[2] as f32;
                assert_eq!(out[i].to_bits(), want.to_bits(), "pixel {i} of {w}x{h}");
            }
        }
    }

    /// Each x86 luma kernel this CPU can run, called directly, against the formula on every byte value in
    /// every channel (`luma` alone only reaches the best level).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_luma_kernel_equals_the_formula() {
        // Pseudo-random pixels, then every pair of values in every pair of channels (the third channel a
        // mix of both), so each channel's product is checked for all 256 bytes.
        let mut px: Vec<u8> = (0..3000usize).map(|i| (i.wrapping_mul(2654435761) >> 5) as u8).collect();
        for (a, b) in (0..=255u8).flat_map(|a| (0..=255u8).map(move |b| (a, b))) {
            let c = a.wrapping_mul(7).wrapping_add(b.wrapping_mul(13));
            px.extend_from_slice(&[a, b, c, c, a, b, b, c, a]);
        }
        let px = &px[..px.len() / 3 * 3];
        let want: Vec<u32> = px
            .chunks_exact(3)
            .map(|p| (0.299f32 * p[0] as f32 + 0.587f32 * p[1] as f32 + 0.114f32 * p[2] as f32).to_bits())
            .collect();
        for level in simd::available() {
            let mut out = vec![0f32; want.len()];
            // SAFETY: `available` lists only levels this CPU supports.
            let done = unsafe {
                match level {
                    Level::Avx512 => x86::luma_rgb_avx512(px, &mut out),
                    Level::Avx2 => x86::luma_rgb_avx2(px, &mut out),
                    Level::Scalar => continue,
                }
            };
            assert!(done + 16 > want.len(), "{level:?} did {done}");
            let got: Vec<u32> = out[..done].iter().map(|y| y.to_bits()).collect();
            assert_eq!(got, want[..done], "{level:?}");
        }
    }

    /// Each transposed luma kernel this CPU can run (the 16- and 8-column tiles and the scalar tail)
    /// against the formula, on widths around the tile sizes and on every byte value in every channel.
    #[test]
    fn every_transposed_luma_kernel_equals_the_formula() {
        let widths = [1usize, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48, 100, 257, 1100];
        let pseudo_random = widths
            .map(|w| (w, (0..3 * LANES * w).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect()));
        // 256 pixels with every byte value in every channel: eight rows of 32, through the 16-column tiles.
        let every_byte = (0..=255u8).flat_map(|v| [v, v.wrapping_mul(7), v.wrapping_mul(13)]).collect();
        for (w, px) in pseudo_random.into_iter().chain([(256 / LANES, every_byte)]) {
            let px: Vec<u8> = px;
            let want: Vec<[u32; LANES]> = (0..w)
                .map(|p| {
                    std::array::from_fn(|l| {
                        let q = &px[3 * (l * w + p)..][..3];
                        (0.299f32 * q[0] as f32 + 0.587f32 * q[1] as f32 + 0.114f32 * q[2] as f32).to_bits()
                    })
                })
                .collect();
            for level in simd::available().into_iter().filter(|&l| l != Level::Scalar) {
                let mut t = vec![[f32::NAN; LANES]; w];
                assert!(luma_transposed(level, &px, w, &mut t), "{level:?}");
                let got: Vec<[u32; LANES]> = t.iter().map(|c| c.map(f32::to_bits)).collect();
                assert_eq!(got, want, "{level:?}, width {w}");
            }
        }
    }

    /// The streaming filter against the plain composition of the stage functions, on sizes that hit
    /// every edge: fewer than 8 rows, rows not a multiple of 8, fewer than 64 columns (repeated samples),
    /// windows of 1 to 9, and exactly 64 × 64 is not special here (the caller skips the filter for it).
    #[test]
    fn streaming_filter_equals_the_stage_functions() {
        for &(h, w) in
            // (3001, 40): a 24-row window, so the ring holds 40 rows and output blocks straddle input blocks.
            &[
                (5usize, 5usize),
                (7, 300),
                (9, 17),
                (63, 65),
                (130, 7),
                (300, 257),
                (1100, 90),
                (64, 1030),
                (3001, 40),
            ]
        {
            let px: Vec<u8> = (0..h * w * 3).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
            let img = ImageView::rgb(w as u32, h as u32, &px);
            let (mut a, mut b) = (vec![0f32; h * w], vec![0f32; h * w]);
            let mut sums = vec![0f32; w];
            luma(img, &mut a);
            for _ in 0..JAROSZ_PASSES {
                box_rows(&a, &mut b, h, w, window_size(w));
                box_cols(&b, &mut a, h, w, window_size(h), &mut sums);
            }
            let mut want = [0f32; 4096];
            decimate(&a, h, w, &mut want);
            let mut s = Scratch::default();
            s.grow(h, w);
            let mut got = [0f32; 4096];
            jarosz_decimate_at(simd::level(), img, &mut s, &mut got);
            assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{h}x{w}");
        }
    }

    #[test]
    fn window_sizes_match_the_reference() {
        assert_eq!(window_size(64), 1);
        assert_eq!(window_size(128), 1);
        assert_eq!(window_size(129), 2);
        assert_eq!(window_size(1024), 8);
        assert_eq!(window_size(1025), 9);
    }

    #[test]
    fn tiny_images_hash_to_zero_with_quality_zero() {
        let px = vec![200u8; 4 * 100 * 3];
        let h = pdq(ImageView::rgb(4, 100, &px));
        assert_eq!(h, PdqHash { hash: Hash256::ZERO, quality: 0 });
        let (h, d) = PdqHasher::new().hash_with_dihedral(ImageView::rgb(100, 4, &px));
        assert_eq!(h.hash, Hash256::ZERO);
        assert_eq!(d, Dihedral::default());
    }

    #[test]
    fn a_flat_image_has_quality_zero_and_a_structured_one_half_its_bits_set() {
        let flat = vec![128u8; 80 * 80];
        assert_eq!(pdq(ImageView::gray(80, 80, &flat)).quality, 0);
        let grad: Vec<u8> = (0..200 * 150).map(|i| ((i % 200) ^ (i / 200 * 3)) as u8).collect();
        let h = pdq(ImageView::gray(200, 150, &grad));
        assert!(h.quality > 0);
        assert_eq!(h.hash.count_ones(), 128);
    }

    #[test]
    fn grey_input_hashes_like_its_rgb_expansion() {
        let grey: Vec<u8> = (0..97 * 61).map(|i| (i * 7 % 251) as u8).collect();
        let rgb: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
        let mut hasher = PdqHasher::new();
        assert_eq!(
            hasher.hash_with_dihedral(ImageView::gray(97, 61, &grey)),
            hasher.hash_with_dihedral(ImageView::rgb(97, 61, &rgb))
        );
    }

    #[test]
    fn dihedral_of_a_transposed_dct_swaps_rot90_and_rot270_roles() {
        // flipplus1 is the transpose: applying it to the transposed DCT gives the original hash back.
        let b: Dct16 = std::array::from_fn(|k| ((k * 37 % 101) as f32) - 50.0);
        let mut bt = [0f32; 256];
        for i in 0..16 {
            for j in 0..16 {
                bt[j * 16 + i] = b[i * 16 + j];
            }
        }
        assert_eq!(dihedral(&bt).flipplus1, threshold(&b));
        assert_eq!(dihedral(&b).flipplus1, threshold(&bt));
    }

    /// The filter at every vector level this CPU has, against the portable one, bit for bit.
    fn levels_agree(img: ImageView<'_>) {
        let mut s = Scratch::default();
        s.grow(img.height as usize, img.width as usize);
        let mut want = [0f32; 4096];
        jarosz_decimate_at(Level::Scalar, img, &mut s, &mut want);
        for level in simd::available() {
            let mut got = [0f32; 4096];
            jarosz_decimate_at(level, img, &mut s, &mut got);
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "{level:?} differs from scalar on {}x{}", img.width, img.height);
        }
    }

    /// `count` against every `step`-th significand of [1, 2), both signs, and 0: [`Reciprocal`] against
    /// [`Divide`], bit for bit; returns the first mismatch.
    #[inline(always)]
    fn reciprocal_mismatch(count: usize, step: usize) -> Option<f32> {
        let n = Count::new(count);
        let differs = |x: f32| Reciprocal::of(x, n).to_bits() != Divide::of(x, n).to_bits();
        if differs(0.0) {
            return Some(0.0);
        }
        (0..1u32 << 23)
            .step_by(step)
            .map(|m| f32::from_bits(0x3f80_0000 | m))
            .find(|&x| differs(x) || differs(-x))
    }

    /// [`reciprocal_mismatch`] with FMA compiled in where the CPU has it (otherwise `mul_add` is glibc's
    /// `fmaf`: correctly rounded too, only slower), over `counts` in parallel.
    fn check_reciprocal(counts: std::ops::RangeInclusive<usize>, step: usize) {
        use rayon::prelude::*;
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "fma")]
        fn with_fma(count: usize, step: usize) -> Option<f32> {
            reciprocal_mismatch(count, step)
        }
        let one = |count: usize| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has FMA.
                return unsafe { with_fma(count, step) };
            }
            reciprocal_mismatch(count, step)
        };
        let bad: Vec<(usize, f32)> =
            counts.into_par_iter().filter_map(|count| one(count).map(|x| (count, x))).collect();
        assert!(bad.is_empty(), "x / count differs from the reciprocal form at (count, x) = {bad:?}");
    }

    #[test]
    fn reciprocal_division_is_exact() {
        check_reciprocal(1..=64, 61);
        check_reciprocal(65..=Reciprocal::MAX_COUNT, 4099);
        // The magnitudes the filter sees, to check the scaling argument itself.
        for count in [3usize, 7, 31, 94, 256] {
            let n = Count::new(count);
            for x in pseudo_random(10_000, count as u32) {
                for scale in [1e-3f32, 1.0, 255.0, 4096.0, 1e6] {
                    let x = x * scale;
                    assert_eq!(Reciprocal::of(x, n).to_bits(), Divide::of(x, n).to_bits(), "{x:e} / {count}");
                }
            }
        }
    }

    /// Every significand for every count up to [`Reciprocal::MAX_COUNT`], both signs (17 G quotients; 8 s in
    /// release on 2 cores, far longer unoptimised):
    /// `cargo test --release --lib reciprocal_division_is_exact_for_every_significand -- --ignored`.
    #[test]
    #[ignore = "exhaustive: scripts/test.sh runs it in release"]
    fn reciprocal_division_is_exact_for_every_significand() {
        check_reciprocal(1..=Reciprocal::MAX_COUNT, 1);
    }

    #[test]
    fn windows_beyond_the_reciprocal_proof_divide() {
        // 131,200 pixels wide: a horizontal window of 1025, one past what the reciprocal is proven for.
        let (w, h) = (131_200usize, 6usize);
        assert!(window_size(w) > Reciprocal::MAX_COUNT);
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        levels_agree(ImageView { width: w as u32, height: h as u32, pixels: Pixels::Rgb(&px) });
    }

    /// The AVX-512 transposes against their definition: an 8 × 16 tile of distinct floats to column
    /// vectors (two per register) and back.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_transposes_move_every_element_to_its_place() {
        if simd::detect() < Level::Avx512 {
            return;
        }
        use std::arch::x86_64::*;
        let tile: [[f32; 16]; 8] = std::array::from_fn(|l| std::array::from_fn(|c| (16 * l + c) as f32));
        // SAFETY: AVX-512 F is available (checked above); every load and store covers 16 floats.
        let (columns, rows) = unsafe {
            let r: [__m512; 8] = std::array::from_fn(|l| _mm512_loadu_ps(tile[l].as_ptr()));
            let c = x86::transpose_8x16(r);
            let back = x86::transpose_16x8(c);
            let mut columns = [[0f32; 16]; 8];
            let mut rows = [[0f32; 16]; 8];
            for j in 0..8 {
                _mm512_storeu_ps(columns[j].as_mut_ptr(), c[j]);
                _mm512_storeu_ps(rows[j].as_mut_ptr(), back[j]);
            }
            (columns, rows)
        };
        for (j, v) in columns.iter().enumerate() {
            for (q, &x) in v.iter().enumerate() {
                let (c, l) = (2 * j + q / 8, q % 8);
                assert_eq!(x, tile[l][c], "column vector {j}, position {q}");
            }
        }
        assert_eq!(rows, tile);
    }

    #[test]
    fn every_level_filters_like_the_portable_code() {
        for &(h, w) in &[(5usize, 5usize), (7, 300), (9, 17), (63, 65), (130, 7), (300, 257), (1100, 90)] {
            let px: Vec<u8> = (0..h * w * 3).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
            levels_agree(ImageView::rgb(w as u32, h as u32, &px));
            levels_agree(ImageView::gray(w as u32, h as u32, &px[..h * w]));
        }
    }

    #[test]
    fn every_level_computes_quality_like_the_portable_code() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut qualities = std::collections::BTreeSet::new();
        for case in 0..400 {
            // Smooth ramps with noise of growing amplitude: qualities from low to saturated, with steps whose
            // fractions fall on both sides of one half (truncation, not rounding, must be reproduced).
            let amplitude = [0.7f32, 2.0, 6.0, 40.0][case % 4];
            let mut buf: [f32; 4096] = std::array::from_fn(|i| {
                let noise = (next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                60.0 + 0.3 * (i % 64) as f32 + 0.2 * (i / 64) as f32 + amplitude * noise
            });
            if case % 8 == 7 {
                // Whole luma levels: many steps land exactly on integers.
                buf.iter_mut().for_each(|v| *v = v.round());
            }
            if case % 50 == 49 {
                // Inputs no filter produces, where the vector kernel must defer to the portable code.
                buf[(next() % 4096) as usize] = if case % 100 == 49 { f32::NAN } else { 3.0e12 };
            }
            let want = quality_portable(&buf);
            qualities.insert(want);
            for level in simd::available() {
                assert_eq!(quality_at(level, &buf), want, "{level:?}, case {case}");
            }
        }
        assert!(qualities.len() >= 4 && qualities.iter().any(|&q| q < 100), "qualities seen: {qualities:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn every_level_filters_random_images_like_the_portable_code(
            w in 5u32..400, h in 5u32..400, seed in proptest::prelude::any::<u64>(), grey in proptest::prelude::any::<bool>()
        ) {
            let n = (w * h) as usize * if grey { 1 } else { 3 };
            let mut x = seed | 1;
            let px: Vec<u8> = (0..n).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 24) as u8 }).collect();
            let img = if grey { ImageView::gray(w, h, &px) } else { ImageView::rgb(w, h, &px) };
            levels_agree(img);
        }
    }
}
