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

use super::{Hash256, ImageView, Pixels};
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
    /// h × w: output of the vertical passes.
    a: Vec<f32>,
    /// h × w: output of the horizontal passes.
    b: Vec<f32>,
    /// One running sum per column for the vertical passes.
    col_sums: Vec<f32>,
    /// For each input column, its slot among the 64 sampled ones (or none).
    slot_of: Vec<Option<usize>>,
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

    /// Luma → Jarosz filter → 64×64 → quality and 16×16 DCT. `None` below the minimum size.
    fn dct(&mut self, img: ImageView<'_>) -> Option<(Dct16, u32)> {
        if img.width < MIN_HASHABLE_DIM || img.height < MIN_HASHABLE_DIM {
            return None;
        }
        let (h, w) = (img.height as usize, img.width as usize);
        let mut buf64 = [0f32; 64 * 64];
        if h == 64 && w == 64 {
            // The reference skips the filter for exactly 64×64 input (the running sum would otherwise
            // round even with a window of 1).
            luma(img, &mut buf64);
        } else {
            self.scratch.grow(h, w);
            jarosz_decimate(img, &mut self.scratch, &mut buf64);
        }
        let q = quality(&buf64);
        Some((dct(&buf64), q))
    }
}

impl Scratch {
    fn grow(&mut self, h: usize, w: usize) {
        let n = h * w;
        if self.a.len() < n {
            self.a.resize(n, 0.0);
            self.b.resize(n, 0.0);
        }
        if self.col_sums.len() < w.max(64) {
            self.col_sums.resize(w.max(64), 0.0);
        }
        if self.slot_of.len() < w {
            self.slot_of.resize(w, None);
        }
    }
}

/// PDQ hash and quality of `img` (allocates scratch space; use a [`PdqHasher`] in loops).
pub fn pdq(img: ImageView<'_>) -> PdqHash {
    PdqHasher::new().hash(img)
}

/// The Jarosz filter (two rounds of horizontal then vertical box passes) and decimation to 64×64, the
/// expensive part of PDQ. Compiled twice, for baseline x86-64 and for AVX2 (8-wide float vectors), and picked
/// at run time; both are the same IEEE float32 operations in the same order, so the results are identical.
fn jarosz_decimate(img: ImageView<'_>, s: &mut Scratch, out: &mut [f32; 4096]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only requirement of `jarosz_decimate_avx2`.
        return unsafe { jarosz_decimate_avx2(img, s, out) };
    }
    jarosz_decimate_body(img, s, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn jarosz_decimate_avx2(img: ImageView<'_>, s: &mut Scratch, out: &mut [f32; 4096]) {
    jarosz_decimate_body(img, s, out)
}

/// Pixels → luma → filtered and decimated 64×64 in `out`.
///
/// The same values as [`luma`], then `JAROSZ_PASSES` rounds of [`box_rows`] + [`box_cols`], then
/// [`decimate`], but the last round computes only what decimation reads: its horizontal pass still runs
/// every running sum (the rounding sequence is the reference's) but divides and stores only at the 64
/// sampled columns, and its vertical pass runs over those columns alone.
#[inline(always)]
fn jarosz_decimate_body(img: ImageView<'_>, s: &mut Scratch, out: &mut [f32; 4096]) {
    let (h, w) = (img.height as usize, img.width as usize);
    let (win_rows, win_cols) = (window_size(w), window_size(h));
    let (a, b) = (&mut s.a[..h * w], &mut s.b[..h * w]);
    luma(img, a);
    for _ in 0..JAROSZ_PASSES - 1 {
        box_rows_blocked(a, b, h, w, win_rows, w, Some);
        box_cols(b, a, h, w, win_cols, &mut s.col_sums[..w]);
    }
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
    let narrow = &mut b[..h * distinct];
    box_rows_blocked(a, narrow, h, w, win_rows, distinct, |p| slot_of[p]);
    let filtered = &mut a[..h * distinct];
    box_cols(narrow, filtered, h, distinct, win_cols, &mut s.col_sums[..distinct]);
    for (r, &ini) in rows.iter().enumerate() {
        for (c, &inj) in cols.iter().enumerate() {
            out[r * 64 + c] = filtered[ini * distinct + slot_of[inj].expect("sampled column has a slot")];
        }
    }
}

/// Box-filter window for a side of `n` pixels: `ceil(n / 128)`, i.e. `(n + 2·64 − 1) / (2·64)`.
pub fn window_size(n: usize) -> usize {
    n.div_ceil(128)
}

/// Per-channel products `c·v` for v in 0..=255, each rounded to float32 exactly as `0.299f * (float)v` is.
pub(crate) fn luma_tables() -> &'static [[f32; 256]; 3] {
    static T: OnceLock<[[f32; 256]; 3]> = OnceLock::new();
    T.get_or_init(|| {
        let coef = [0.299f32, 0.587f32, 0.114f32];
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
pub fn luma(img: ImageView<'_>, out: &mut [f32]) {
    let [tr, tg, tb] = luma_tables();
    match img.pixels {
        Pixels::Rgb(px) => {
            for (o, p) in out.iter_mut().zip(px.chunks_exact(3)) {
                *o = tr[p[0] as usize] + tg[p[1] as usize] + tb[p[2] as usize];
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
/// `load(p)` returns sample `p` of every lane, `store(p, v)` writes output `p`. Each lane sees exactly the
/// reference's sequence: accumulate `half − 1` samples; then `win − half + 1` outputs with a growing window;
/// then full-window outputs, each adding the entering sample before subtracting the leaving one; then
/// `half − 1` outputs with a shrinking window. Division (not multiplication by a reciprocal) as in the C++.
#[inline(always)]
fn box_1d_lanes<const L: usize>(
    n: usize,
    win: usize,
    load: impl Fn(usize) -> [f32; L],
    slot: impl Fn(usize) -> Option<usize>,
    mut store: impl FnMut(usize, [f32; L]),
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
            let c = count as f32;
            store(slot, std::array::from_fn(|l| sum[l] / c));
        }
        ri += 1;
        oi += 1;
    }
    let c = count as f32;
    for _ in 0..n.saturating_sub(win) {
        let (x, y) = (load(ri), load(li));
        for l in 0..L {
            sum[l] += x[l];
            sum[l] -= y[l];
        }
        if let Some(slot) = slot(oi) {
            store(slot, std::array::from_fn(|l| sum[l] / c));
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
            let c = count as f32;
            store(slot, std::array::from_fn(|l| sum[l] / c));
        }
        li += 1;
        oi += 1;
    }
}

/// Horizontal box pass (`boxAlongRowsFloat`): filters each row of `input` (h × w) into `out`.
pub fn box_rows(input: &[f32], out: &mut [f32], h: usize, w: usize, win: usize) {
    box_rows_blocked(input, out, h, w, win, w, Some)
}

/// The horizontal pass, eight rows side by side so eight independent running sums are in flight (one
/// row's sum is a serial chain of dependent float additions). Output column `p` of row `r` goes to
/// `out[r · out_w + slot(p)]`, or nowhere when `slot(p)` is `None`; the sums still visit every sample, so
/// the kept values are bit-identical to the full pass.
#[inline(always)]
fn box_rows_blocked(
    input: &[f32],
    out: &mut [f32],
    h: usize,
    w: usize,
    win: usize,
    out_w: usize,
    slot: impl Fn(usize) -> Option<usize> + Copy,
) {
    let mut r = 0;
    while r + LANES <= h {
        let rows: [&[f32]; LANES] = std::array::from_fn(|l| &input[(r + l) * w..(r + l + 1) * w]);
        let block = &mut out[r * out_w..(r + LANES) * out_w];
        box_1d_lanes::<LANES>(
            w,
            win,
            |p| std::array::from_fn(|l| rows[l][p]),
            slot,
            |p, v| {
                for (l, x) in v.into_iter().enumerate() {
                    block[l * out_w + p] = x;
                }
            },
        );
        r += LANES;
    }
    for r in r..h {
        let row = &input[r * w..(r + 1) * w];
        let o = &mut out[r * out_w..(r + 1) * out_w];
        box_1d_lanes::<1>(w, win, |p| [row[p]], slot, |p, v| o[p] = v[0]);
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
}
