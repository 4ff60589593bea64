//! 64-bit DCT pHash, bit-compatible with imagehash 4.3.2 `phash` (see PDQ_SPEC.md §11).
//!
//! imagehash computes, with `hash_size = 8` and `highfreq_factor = 4`:
//!
//! ```python
//! image = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
//! dct = scipy.fftpack.dct(scipy.fftpack.dct(numpy.asarray(image), axis=0), axis=1)
//! low = dct[:8, :8]
//! return ImageHash(low > numpy.median(low))
//! ```
//!
//! The hash is only as reproducible as the 32×32 grey thumbnail it is taken from, so this module ports the
//! two Pillow steps exactly: the integer ITU-R 601 grey conversion and Pillow's separable, fixed-point
//! LANCZOS resampler (`libImaging/Resample.c`), coefficient rounding included. Everything after the thumbnail
//! is float64 like numpy/scipy; the only place the two can disagree is a DCT coefficient that lies within a
//! few ulps of the median (scipy uses an FFT, we sum directly), which needs an exact tie to begin with.
//!
//! The hasher keeps every buffer and the coefficient tables (keyed by the input size) between calls, so a
//! warm [`PhashHasher`] allocates nothing per image.

use super::{Hash64, ImageView, Pixels};
use std::sync::OnceLock;

/// Side of the thumbnail the DCT is taken of: imagehash's `hash_size * highfreq_factor`.
const SIZE: usize = 32;
/// Side of the kept low-frequency block: imagehash's `hash_size`.
const HASH_SIZE: usize = 8;
/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS` in `Resample.c`).
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Pillow's LANCZOS filter support (`static struct filter LANCZOS = {lanczos_filter, 3.0}`).
const LANCZOS_SUPPORT: f64 = 3.0;
/// The horizontal kernel consumes taps in blocks of this many; each output's tap run is padded with zero
/// coefficients to a multiple of it so the inner loop has no scalar tail.
const LANES: usize = 16;
/// Low bits of a horizontal coefficient kept in [`Axis::lo`]; see [`Axis::hi`].
const SPLIT_BITS: u32 = 11;

/// Reusable scratch space for [`PhashHasher::hash`]; one per thread.
#[derive(Default)]
pub struct PhashHasher {
    /// Resampling coefficients for the width (horizontal pass).
    horiz: Axis,
    /// Resampling coefficients for the height (vertical pass).
    vert: Axis,
    /// One grey row widened to `i16` and zero-padded by [`LANES`]: the horizontal pass's input.
    line: Vec<i16>,
    /// One grey row of an RGB image, for the vertical-first order.
    grey: Vec<u8>,
    /// Horizontal-first: the horizontal pass's output, 32 bytes per input row the vertical pass reads
    /// (Pillow's intermediate image).
    temp: Vec<u8>,
    /// Vertical-first: the 32 vertical accumulators for every column, row-major.
    acc: Vec<i32>,
}

impl PhashHasher {
    /// A hasher with empty scratch buffers (they grow on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// The pHash of `img`.
    ///
    /// A zero-sized image (which callers never pass; Pillow cannot resize one) hashes to 0 rather than
    /// panicking.
    pub fn hash(&mut self, img: ImageView<'_>) -> Hash64 {
        if img.width == 0 || img.height == 0 {
            return Hash64(0);
        }
        let thumb = self.thumbnail(img);
        hash_thumbnail(&thumb)
    }

    /// `image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)`, byte for byte.
    ///
    /// Mirrors Pillow 13's `ImagingResampleInner`. Both passes round to bytes, so their order changes the
    /// result, and Pillow picks it from the shape: the vertical pass goes first when the height shrinks
    /// by more than twice as many pixels as the width does (`h - 32 > 0 && h - 32 > 2·(w - 32)`),
    /// otherwise the horizontal pass does. A pass whose dimension is already 32 is skipped (it would be the
    /// identity anyway).
    fn thumbnail(&mut self, img: ImageView<'_>) -> [u8; SIZE * SIZE] {
        let width = img.width as usize;
        let height = img.height as usize;
        self.horiz.prepare(width);
        self.vert.prepare(height);
        let shrink_w = width as i64 - SIZE as i64;
        let shrink_h = height as i64 - SIZE as i64;
        if shrink_h > 0 && shrink_h > 2 * shrink_w {
            self.vertical_first(img)
        } else {
            self.horizontal_first(img)
        }
    }

    /// Pillow's usual order: the horizontal pass over just the rows the vertical pass will read
    /// (`ybox_first..ybox_last`), into an intermediate image 32 pixels wide, then the vertical pass.
    fn horizontal_first(&mut self, img: ImageView<'_>) -> [u8; SIZE * SIZE] {
        let width = img.width as usize;
        let need_horizontal = width != SIZE;
        let need_vertical = img.height as usize != SIZE;
        let first_row = self.vert.bounds[0].0;
        let (last_min, last_len) = self.vert.bounds[SIZE - 1];
        let last_row = last_min + last_len;

        self.temp.resize((last_row - first_row) * SIZE, 0);
        if need_horizontal {
            // The kernel reads up to LANES - 1 zero-weighted samples past the image edge.
            self.line.resize(width + LANES, 0);
        }
        for (out, y) in self.temp.chunks_exact_mut(SIZE).zip(first_row..last_row) {
            let out: &mut [u8; SIZE] = out.try_into().expect("chunks of SIZE");
            match img.pixels {
                Pixels::Gray(p) => {
                    let src = &p[y * width..(y + 1) * width];
                    if need_horizontal {
                        for (d, &s) in self.line.iter_mut().zip(src) {
                            *d = i16::from(s);
                        }
                        horizontal_row(&self.line, &self.horiz, out);
                    } else {
                        out.copy_from_slice(src);
                    }
                }
                Pixels::Rgb(p) => {
                    let src = &p[3 * y * width..3 * (y + 1) * width];
                    if need_horizontal {
                        for (d, px) in self.line.iter_mut().zip(src.chunks_exact(3)) {
                            *d = i16::from(luma(px[0], px[1], px[2]));
                        }
                        horizontal_row(&self.line, &self.horiz, out);
                    } else {
                        for (d, px) in out.iter_mut().zip(src.chunks_exact(3)) {
                            *d = luma(px[0], px[1], px[2]);
                        }
                    }
                }
            }
        }

        let mut thumb = [0u8; SIZE * SIZE];
        if need_vertical {
            vertical(&self.temp, &self.vert, &mut thumb);
        } else {
            // Height 32: the vertical bounds span exactly rows 0..32.
            thumb.copy_from_slice(&self.temp[..SIZE * SIZE]);
        }
        thumb
    }

    /// Pillow's order for tall images: the vertical pass over the full width into a `w`×32 intermediate
    /// image, then the horizontal pass on its 32 rows.
    ///
    /// Each input row is read once and added into the accumulators of every output row whose window
    /// contains it; integer sums do not depend on the order of their terms, so this equals Pillow's
    /// output-row-at-a-time loop without converting an RGB row to grey six times.
    fn vertical_first(&mut self, img: ImageView<'_>) -> [u8; SIZE * SIZE] {
        let width = img.width as usize;
        let first_row = self.vert.bounds[0].0;
        let (last_min, last_len) = self.vert.bounds[SIZE - 1];
        let last_row = last_min + last_len;

        self.acc.clear();
        self.acc.resize(SIZE * width, 1 << (PRECISION_BITS - 1));
        for y in first_row..last_row {
            let row: &[u8] = match img.pixels {
                Pixels::Gray(p) => &p[y * width..(y + 1) * width],
                Pixels::Rgb(p) => {
                    let src = &p[3 * y * width..3 * (y + 1) * width];
                    self.grey.resize(width, 0);
                    for (d, px) in self.grey.iter_mut().zip(src.chunks_exact(3)) {
                        *d = luma(px[0], px[1], px[2]);
                    }
                    &self.grey
                }
            };
            for (yy, acc) in self.acc.chunks_exact_mut(width).enumerate() {
                let (ymin, count) = self.vert.bounds[yy];
                if y < ymin || y >= ymin + count {
                    continue;
                }
                let k = self.vert.fixed[yy * self.vert.stride + (y - ymin)];
                for (a, &s) in acc.iter_mut().zip(row) {
                    *a = a.wrapping_add(i32::from(s) * k);
                }
            }
        }

        let mut thumb = [0u8; SIZE * SIZE];
        if width == SIZE {
            for (o, &a) in thumb.iter_mut().zip(self.acc.iter()) {
                *o = clip8(a);
            }
        } else {
            self.line.resize(width + LANES, 0);
            for (out, acc) in thumb
                .chunks_exact_mut(SIZE)
                .zip(self.acc.chunks_exact(width))
            {
                for (d, &a) in self.line.iter_mut().zip(acc) {
                    *d = i16::from(clip8(a));
                }
                horizontal_row(
                    &self.line,
                    &self.horiz,
                    out.try_into().expect("chunks of SIZE"),
                );
            }
        }
        thumb
    }
}

/// The pHash of `img` (allocates scratch space; use a [`PhashHasher`] in loops).
pub fn phash(img: ImageView<'_>) -> Hash64 {
    PhashHasher::new().hash(img)
}

/// Pillow's `convert("L")` from RGB (`rgb2l` in `Convert.c`): ITU-R 601-2 luma in 16-bit fixed point,
/// rounded. For a grey pixel (g, g, g) the weights sum to 65536, so it returns g.
#[inline(always)]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// Pillow's `clip8`: drop the fixed-point fraction and saturate to a byte.
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// LANCZOS resampling coefficients for one axis (input length → 32), as `precompute_coeffs` followed by
/// `normalize_coeffs_8bpc` builds them.
#[derive(Default)]
struct Axis {
    /// The input length these tables are for; 0 before the first [`Axis::prepare`].
    in_size: usize,
    /// Per output sample: the first input sample it reads and how many it reads (Pillow's `bounds`, with
    /// `xmax` already turned into a count).
    bounds: [(usize, usize); SIZE],
    /// Distance between consecutive outputs' runs in `fixed`, `hi` and `lo`: Pillow's `ksize` rounded up
    /// to a multiple of [`LANES`]. Entries past an output's count are zero.
    stride: usize,
    /// Fixed-point coefficients, exactly Pillow's (`(int)(k * (1 << 22) ± 0.5)`); used by the vertical pass.
    fixed: Vec<i32>,
    /// `fixed >> SPLIT_BITS` and `fixed & (2^SPLIT_BITS - 1)`, for the horizontal pass. Pillow's
    /// coefficients need 23 bits, too many for a 16-bit multiply, but both halves fit in `i16`, and
    /// Σ s·k = 2^11·Σ s·hi + Σ s·lo in wrapping `i32` arithmetic gives exactly Pillow's sum (the true sum fits
    /// `i32`). Two 16-bit dot products are what SIMD multiply-add instructions (`pmaddwd`) do best.
    hi: Vec<i16>,
    /// See [`Axis::hi`].
    lo: Vec<i16>,
    /// Scratch for the unnormalised f64 weights of one output.
    weights: Vec<f64>,
}

impl Axis {
    /// Builds the tables for an input of `in_size` samples, unless they are already built for that size.
    ///
    /// Follows `precompute_coeffs` in Pillow's `Resample.c` operation for operation (same f64 expressions
    /// in the same order, glibc's `sin` through `f64::sin`), because a coefficient that lands on the other
    /// side of a rounding boundary changes thumbnail bytes.
    fn prepare(&mut self, in_size: usize) {
        if self.in_size == in_size {
            return;
        }
        // box = (0, 0, width, height): scale = (in1 - in0) / outSize; upsampling keeps the filter at its
        // natural width (filterscale 1).
        let scale = in_size as f64 / SIZE as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = LANCZOS_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let stride = ksize.div_ceil(LANES) * LANES;
        let ss = 1.0 / filterscale;

        self.stride = stride;
        self.fixed.clear();
        self.fixed.resize(SIZE * stride, 0);
        self.weights.resize(ksize, 0.0);
        for (xx, (bounds, fixed)) in self
            .bounds
            .iter_mut()
            .zip(self.fixed.chunks_exact_mut(stride))
            .enumerate()
        {
            let center = (xx as f64 + 0.5) * scale;
            // `(int)` truncates toward zero, as `as` does; negatives are clamped to 0 either way.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax - xmin;
            let weights = &mut self.weights[..count];
            let mut ww = 0.0;
            for (x, w) in weights.iter_mut().enumerate() {
                *w = lanczos(((x + xmin) as f64 - center + 0.5) * ss);
                ww += *w;
            }
            for (w, f) in weights.iter_mut().zip(fixed.iter_mut()) {
                if ww != 0.0 {
                    *w /= ww;
                }
                *f = if *w < 0.0 {
                    (-0.5 + *w * f64::from(1u32 << PRECISION_BITS)) as i32
                } else {
                    (0.5 + *w * f64::from(1u32 << PRECISION_BITS)) as i32
                };
            }
            *bounds = (xmin, count);
        }
        self.hi.clear();
        self.hi
            .extend(self.fixed.iter().map(|&k| (k >> SPLIT_BITS) as i16));
        self.lo.clear();
        self.lo.extend(
            self.fixed
                .iter()
                .map(|&k| (k & ((1 << SPLIT_BITS) - 1)) as i16),
        );
        self.in_size = in_size;
    }
}

/// Pillow's `sinc_filter`.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Pillow's `lanczos_filter`: sinc windowed by sinc(x/3) on [-3, 3).
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// One row of `ImagingResampleHorizontal_8bpc`: 32 outputs, each `clip8(2^21 + Σ sample·coeff)`.
///
/// `line` holds the grey samples widened to `i16`, followed by at least [`LANES`] - 1 padding samples (their
/// coefficients are zero). This is the hot loop, about six multiply-adds per input pixel on large images:
/// fixed-length blocks of 16-bit products summed into `i32` lanes let LLVM use packed multiply-add.
#[inline]
fn horizontal_row(line: &[i16], axis: &Axis, out: &mut [u8; SIZE]) {
    let stride = axis.stride;
    for (xx, o) in out.iter_mut().enumerate() {
        let (xmin, count) = axis.bounds[xx];
        let taps = count.div_ceil(LANES) * LANES;
        let base = xx * stride;
        let samples = &line[xmin..xmin + taps];
        let hi = &axis.hi[base..base + taps];
        let lo = &axis.lo[base..base + taps];
        let mut acc_hi = [0i32; LANES];
        let mut acc_lo = [0i32; LANES];
        for ((s, h), l) in samples
            .chunks_exact(LANES)
            .zip(hi.chunks_exact(LANES))
            .zip(lo.chunks_exact(LANES))
        {
            for i in 0..LANES {
                acc_hi[i] = acc_hi[i].wrapping_add(i32::from(s[i]) * i32::from(h[i]));
                acc_lo[i] = acc_lo[i].wrapping_add(i32::from(s[i]) * i32::from(l[i]));
            }
        }
        let sum_hi = acc_hi.iter().fold(0i32, |a, &b| a.wrapping_add(b));
        let sum_lo = acc_lo.iter().fold(0i32, |a, &b| a.wrapping_add(b));
        let acc = (1i32 << (PRECISION_BITS - 1))
            .wrapping_add(sum_hi.wrapping_shl(SPLIT_BITS))
            .wrapping_add(sum_lo);
        *o = clip8(acc);
    }
}

/// `ImagingResampleVertical_8bpc` on the horizontal pass's output (`temp`, 32 bytes per row, row 0 =
/// Pillow's `ybox_first`, which is how Pillow shifts the vertical bounds too).
fn vertical(temp: &[u8], axis: &Axis, thumb: &mut [u8; SIZE * SIZE]) {
    let first_row = axis.bounds[0].0;
    for (yy, out) in thumb.chunks_exact_mut(SIZE).enumerate() {
        let (ymin, count) = axis.bounds[yy];
        let ks = &axis.fixed[yy * axis.stride..yy * axis.stride + count];
        let rows =
            temp[(ymin - first_row) * SIZE..(ymin - first_row + count) * SIZE].chunks_exact(SIZE);
        let mut acc = [1i32 << (PRECISION_BITS - 1); SIZE];
        for (row, &k) in rows.zip(ks) {
            for (a, &s) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(i32::from(s) * k);
            }
        }
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
    }
}

/// `2·cos(π·k·(2n+1)/64)` for k in 0..8, n in 0..16: scipy's unnormalised DCT-II basis (the factor 2
/// included: a power of two, so folding it in changes no rounding). [`dct_low8`] only needs the first half
/// of each row.
fn cos_table() -> &'static [[f64; SIZE / 2]; HASH_SIZE] {
    static TABLE: OnceLock<[[f64; SIZE / 2]; HASH_SIZE]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0.0; SIZE / 2]; HASH_SIZE];
        for (k, row) in t.iter_mut().enumerate() {
            for (n, c) in row.iter_mut().enumerate() {
                let angle = std::f64::consts::PI * (k * (2 * n + 1)) as f64 / (2 * SIZE) as f64;
                *c = 2.0 * angle.cos();
            }
        }
        t
    })
}

/// Frequencies 0..8 of scipy's unnormalised DCT-II of 32 samples: `y[k] = 2·Σ x[n]·cos(π·k·(2n+1)/64)`.
///
/// Summed directly, not by FFT like scipy, but after the even/odd butterflies a fast DCT starts with
/// (`x[n] ± x[31-n]`, then again on the even half, and once more for k = 4). Besides halving the work,
/// this makes every coefficient that symmetry forces to zero come out as exactly 0.0, as it does from
/// scipy's pocketfft: a constant column gives exact zeros for k ≥ 1, a column with `x[n] + x[31-n]`
/// constant exact zeros for even k ≥ 2. Degenerate thumbnails (1-pixel-wide images, two-row images
/// stretched to 32) consist of such columns and rows, and a plain sum would leave ±1e-14 noise there that
/// decides `coefficient > median` at random.
fn dct_low8(x: &[f64; SIZE]) -> [f64; HASH_SIZE] {
    let c = cos_table();
    let mut s1 = [0.0; 16];
    let mut d1 = [0.0; 16];
    for n in 0..16 {
        s1[n] = x[n] + x[31 - n];
        d1[n] = x[n] - x[31 - n];
    }
    let mut s2 = [0.0; 8];
    let mut d2 = [0.0; 8];
    for n in 0..8 {
        s2[n] = s1[n] + s1[15 - n];
        d2[n] = s1[n] - s1[15 - n];
    }
    let mut s3 = [0.0; 4];
    let mut d3 = [0.0; 4];
    for n in 0..4 {
        s3[n] = s2[n] + s2[7 - n];
        d3[n] = s2[n] - s2[7 - n];
    }
    let dot = |a: &[f64], k: usize| a.iter().zip(&c[k]).map(|(v, c)| v * c).sum::<f64>();
    let mut y = [0.0; HASH_SIZE];
    // cos(0) = 1: the DC term is twice the plain sum.
    y[0] = 2.0 * s3.iter().sum::<f64>();
    y[1] = dot(&d1, 1);
    y[2] = dot(&d2, 2);
    y[3] = dot(&d1, 3);
    y[4] = dot(&d3, 4);
    y[5] = dot(&d1, 5);
    y[6] = dot(&d2, 6);
    y[7] = dot(&d1, 7);
    y
}

/// The DCT and median steps of imagehash on the 32×32 thumbnail.
///
/// `dct(dct(pixels, axis=0), axis=1)[:8, :8]` only needs the first 8 frequencies of each pass: 32 column
/// transforms, then 8 row transforms. Bits: `coefficient > numpy.median(block)` (strict), row-major, first
/// bit most significant.
fn hash_thumbnail(thumb: &[u8; SIZE * SIZE]) -> Hash64 {
    // dct(axis=0): every column, frequencies k < 8 (down the rows).
    let mut low = [[0.0f64; SIZE]; HASH_SIZE];
    for m in 0..SIZE {
        let mut column = [0.0; SIZE];
        for (n, v) in column.iter_mut().enumerate() {
            *v = f64::from(thumb[n * SIZE + m]);
        }
        for (k, y) in dct_low8(&column).into_iter().enumerate() {
            low[k][m] = y;
        }
    }
    // dct(axis=1) of those 8 rows, frequencies l < 8.
    let mut coeffs = [0.0f64; HASH_SIZE * HASH_SIZE];
    for (out, row) in coeffs.chunks_exact_mut(HASH_SIZE).zip(low.iter()) {
        out.copy_from_slice(&dct_low8(row));
    }
    // numpy.median of an even count: the mean of the two middle values.
    let mut sorted = coeffs;
    sorted.sort_unstable_by(f64::total_cmp);
    let half = HASH_SIZE * HASH_SIZE / 2;
    let median = (sorted[half - 1] + sorted[half]) / 2.0;
    let bits = coeffs
        .iter()
        .fold(0u64, |acc, &c| (acc << 1) | u64::from(c > median));
    Hash64(bits)
}
