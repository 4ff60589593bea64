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
//! two Pillow (13.0) steps exactly: the integer ITU-R 601 grey conversion and Pillow's separable, fixed-point
//! LANCZOS resampler (`libImaging/Resample.c`), coefficient rounding and pass order included. Everything
//! after the thumbnail is float64 like numpy/scipy. scipy transforms by FFT and this module sums directly,
//! so the two agree to a few ulps, which decides a bit only when a coefficient ties with the median; see
//! `dct_low8` for how the ties that symmetry produces are reproduced.
//!
//! A warm [`PhashHasher`] allocates nothing per image: the scratch buffers only grow, and the coefficient
//! tables for the last few input sizes are kept.

use super::simd::{self, Level};
use super::Hash64;
use crate::pixels::{ImageView, Pixels};
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Side of the thumbnail the DCT is taken of: imagehash's `hash_size * highfreq_factor`.
const SIZE: usize = 32;
/// Side of the kept low-frequency block: imagehash's `hash_size`.
const HASH_SIZE: usize = 8;
/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS` in `Resample.c`).
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Pillow's LANCZOS filter support (`static struct filter LANCZOS = {lanczos_filter, 3.0}`).
const LANCZOS_SUPPORT: f64 = 3.0;
/// Each output's run of horizontal coefficients is padded with zeros to a multiple of this many taps, so
/// the dot product's length is a multiple of the vector width (16 lanes of `i16` with AVX2).
const LANES: usize = 16;
/// Weight of [`Axis::hi`] against [`Axis::lo`]: a coefficient is `2^SPLIT_BITS·hi + lo`.
const SPLIT_BITS: u32 = 15;
/// How many input sizes' coefficient tables a hasher keeps. Building one for a length n takes up to 12·n
/// `sin` calls (two per tap; fewer when n has a large power-of-two factor, see [`Axis::prepare`]), which
/// for a new size is comparable to a sizeable fraction of the resampling itself.
const TABLE_CACHE: usize = 8;

/// Reusable scratch space for [`PhashHasher::hash`]; one per thread.
#[derive(Default)]
pub struct PhashHasher {
    /// Coefficient tables for recently seen input lengths (at most [`TABLE_CACHE`]). They depend only on
    /// the length, so one table serves the width and the height of a square image.
    tables: Vec<Axis>,
    /// Counter behind [`Axis::last_used`].
    clock: u64,
    /// Intermediate buffers.
    scratch: Scratch,
}

/// The resampler's intermediate buffers, grown to the largest image seen and then reused.
#[derive(Default)]
struct Scratch {
    /// One grey row widened to `i16` and followed by [`LANES`] padding samples: the horizontal pass's input.
    line: Vec<i16>,
    /// A block of grey rows as bytes: the AVX-512 horizontal pass's input.
    bytes: Vec<u8>,
    /// One grey row of an RGB image (vertical-first order).
    grey: Vec<u8>,
    /// Horizontal-first order: the horizontal pass's output, 32 bytes per input row the vertical pass
    /// reads (Pillow's intermediate image).
    temp: Vec<u8>,
    /// Vertical-first order: the 32 vertical accumulators of every column, row-major.
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

    /// [`PhashHasher::hash`] at a given vector level instead of [`simd::level`] (capped at what the CPU
    /// has): for tests and benchmarks that compare the levels, which must give identical hashes.
    pub fn hash_at(&mut self, level: Level, img: ImageView<'_>) -> Hash64 {
        if img.width == 0 || img.height == 0 {
            return Hash64(0);
        }
        let h = self.table(img.width as usize);
        let v = self.table(img.height as usize);
        hash_thumbnail(&resize_at(level, img, &self.tables[h], &self.tables[v], &mut self.scratch))
    }

    /// `image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)`, byte for byte (row-major 32 × 32):
    /// the input of [`hash_thumbnail`], and what the GPU's `phash_resize.wgsl` is checked against.
    pub fn thumbnail(&mut self, img: ImageView<'_>) -> [u8; SIZE * SIZE] {
        let h = self.table(img.width as usize);
        let v = self.table(img.height as usize);
        resize(img, &self.tables[h], &self.tables[v], &mut self.scratch)
    }

    /// The index in `tables` of the coefficients for `in_size`, built (in place of the least recently
    /// used table, reusing its memory) if they are not there.
    fn table(&mut self, in_size: usize) -> usize {
        self.clock += 1;
        let index = match self.tables.iter().position(|t| t.in_size == in_size) {
            Some(i) => i,
            None if self.tables.len() < TABLE_CACHE => {
                self.tables.push(Axis::default());
                self.tables.len() - 1
            }
            None => {
                let (i, _) =
                    self.tables.iter().enumerate().min_by_key(|(_, t)| t.last_used).expect("TABLE_CACHE > 0");
                i
            }
        };
        let table = &mut self.tables[index];
        if table.in_size != in_size {
            table.prepare(in_size);
        }
        table.last_used = self.clock;
        index
    }
}

/// Pillow's LANCZOS coefficients for resampling `in_size` samples to 32, laid out for the GPU: per output
/// `(first input, count)`, and the fixed-point coefficients of output `xx` at `fixed[xx * stride..]`.
pub(crate) struct LanczosTable {
    /// `(first input sample, number of samples)` of each of the 32 outputs.
    pub(crate) bounds: [(usize, usize); SIZE],
    /// Distance between consecutive outputs' runs in `fixed`.
    pub(crate) stride: usize,
    /// Pillow's fixed-point coefficients (zero-padded runs).
    pub(crate) fixed: Vec<i32>,
}

impl LanczosTable {
    /// The table for an input of `in_size` (≥ 1) samples, built exactly as the CPU resampler builds it.
    pub(crate) fn new(in_size: usize) -> Self {
        let mut axis = Axis::default();
        axis.prepare(in_size);
        LanczosTable { bounds: axis.bounds, stride: axis.stride, fixed: axis.fixed }
    }

    /// The input rows the 32 outputs read (Pillow's `ybox_first..ybox_last`).
    pub(crate) fn span(&self) -> std::ops::Range<usize> {
        let (last_min, last_count) = self.bounds[SIZE - 1];
        self.bounds[0].0..last_min + last_count
    }
}

/// Whether Pillow 13 resizes an image of this shape vertically first (see [`resize_inline`]).
pub(crate) fn vertical_first_order(width: u32, height: u32) -> bool {
    let shrink_w = i64::from(width) - SIZE as i64;
    let shrink_h = i64::from(height) - SIZE as i64;
    shrink_h > 0 && shrink_h > 2 * shrink_w
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

/// LANCZOS resampling coefficients for one axis (input length → 32), as Pillow's `precompute_coeffs`
/// followed by `normalize_coeffs_8bpc` builds them.
#[derive(Default)]
struct Axis {
    /// The input length these tables are for; 0 before the first [`Axis::prepare`].
    in_size: usize,
    /// [`PhashHasher::clock`] when this table was last used, for evicting the least recently used one.
    last_used: u64,
    /// Per output sample: the first input sample it reads and how many it reads (Pillow's `bounds`, with
    /// `xmax` already a count).
    bounds: [(usize, usize); SIZE],
    /// Distance between consecutive outputs' runs in `fixed` and the `pieces`: Pillow's `ksize` rounded up
    /// to a multiple of [`LANES`]. Entries past an output's count are zero.
    stride: usize,
    /// Fixed-point coefficients, exactly Pillow's (`(int)(k·2^22 ± 0.5)`); used by the vertical pass.
    fixed: Vec<i32>,
    /// With [`Axis::lo`], the coefficients for the 16-bit horizontal passes: `fixed = 2^15·hi + lo`, both
    /// `i16`. Pillow's coefficients need up to 23 bits, too many for one 16-bit multiply, but only the few
    /// around the kernel's peak leave the `i16` range (the peak is about 2^22 divided by the reduction
    /// factor): every other coefficient is its own `lo`, with `hi` zero, and the outliers are split with
    /// `lo` the balanced remainder in -2^14..2^14. So `Σ s·k = 2^15·Σ s·hi + Σ s·lo`, in wrapping `i32`
    /// arithmetic exactly Pillow's sum (the true sum fits in `i32`, so wrapping partial sums cannot change
    /// it), where the `hi` sum needs only the short window [`Axis::hi_window`]. 16-bit products summed into
    /// 32 bits are what SIMD multiply-add (`pmaddwd`) does, eight or sixteen at a time; LLVM finds it in
    /// [`dot`]. (Two products of at most 2^15·255 never overflow a `pmaddwd` lane.)
    ///
    /// Output `xx`'s run starts at `xx·word_stride` and at input sample `words[xx].0`, its first sample
    /// rounded down to a multiple of [`LANES`] (zeros stand for the samples before it), so a pass whose
    /// rows start on 32-byte boundaries loads its samples aligned: on AMD Zen 3 the unaligned loads, half
    /// of them split across cache lines, were what limited the AVX2 pass.
    hi: Vec<i16>,
    /// See [`Axis::hi`].
    lo: Vec<i16>,
    /// Distance between consecutive outputs' runs in `hi` and `lo` ([`Axis::stride`] plus one vector).
    word_stride: usize,
    /// Per output, the first input sample of its `hi`/`lo` run and the run's length, both multiples of
    /// [`LANES`]; the run covers the output's window, so its end is less than [`LANES`] past the window's.
    words: [(usize, usize); SIZE],
    /// Per output, `(start, len)` of the part of its `hi`/`lo` run (relative to the run's start) outside
    /// which `hi` is zero, both multiples of [`LANES`]. `(0, 0)` when every coefficient fits in `i16`
    /// (reductions by 128 or more).
    hi_window: [(usize, usize); SIZE],
    /// `fixed` as three signed bytes, `k = 2^16·pieces[0] + 2^8·pieces[1] + pieces[2]` (each piece in
    /// -128..=127: Pillow's coefficients lie within ±2^22), for the AVX-512 horizontal pass: `vpdpbusd`
    /// multiplies unsigned bytes (the grey samples, unwidened) by signed bytes, 64 products per
    /// instruction, so three of them do the work of four `vpdpwssd` on the `hi`/`lo` words. As with
    /// `hi`/`lo`, the recombined wrapping `i32` sum is exactly Pillow's.
    pieces: [Vec<i8>; 3],
    /// Per output, the 64-tap chunks of its run (`first..end`, relative to the run's start) outside which
    /// `pieces[0]` is zero. Only coefficients of magnitude about 2^15 or more have a top piece, and those
    /// are the few around the kernel's peak once the image shrinks by 40 or more, so the AVX-512 pass skips
    /// a third of its multiply-adds in the other chunks.
    top_chunks: [(usize, usize); SIZE],
    /// Scratch for the unnormalised f64 weights of one output.
    weights: Vec<f64>,
}

impl Axis {
    /// Builds the tables for an input of `in_size` samples.
    ///
    /// Follows `precompute_coeffs` in Pillow's `Resample.c` operation for operation (the same f64
    /// expressions in the same order, glibc's `sin` through `f64::sin`): a weight that lands on the other
    /// side of a fixed-point rounding boundary changes thumbnail bytes.
    fn prepare(&mut self, in_size: usize) {
        // box = (0, 0, w, h): scale = (in1 - in0) / outSize; upsampling keeps the filter at its natural
        // width (filterscale 1).
        let scale = in_size as f64 / SIZE as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = LANCZOS_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let stride = ksize.div_ceil(LANES) * LANES;
        let inv_filterscale = 1.0 / filterscale;

        self.stride = stride;
        self.fixed.clear();
        self.fixed.resize(SIZE * stride, 0);
        self.weights.resize(ksize, 0.0);
        // (xmin - center, count) of the outputs computed so far, to reuse their coefficients.
        let mut seen = [(0u64, 0usize); SIZE];
        for xx in 0..SIZE {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, as `as` does; a negative xmin is clamped to 0 either way.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax - xmin;
            self.bounds[xx] = (xmin, count);
            // center = (2·xx + 1)·in_size / 64 is exact in f64, so is every `(x + xmin) - center + 0.5`
            // below, and the filter's arguments depend only on x + (xmin - center). Two outputs with the
            // same offset and count get bit-identical weights: copy them instead of calling `sin` again
            // (for sizes with a large power of two in them, most outputs repeat).
            let key = ((xmin as f64 - center).to_bits(), count);
            seen[xx] = key;
            if let Some(p) = seen[..xx].iter().position(|&k| k == key) {
                self.fixed.copy_within(p * stride..p * stride + count, xx * stride);
                continue;
            }
            let weights = &mut self.weights[..count];
            let mut ww = 0.0;
            for (x, w) in weights.iter_mut().enumerate() {
                *w = lanczos(((x + xmin) as f64 - center + 0.5) * inv_filterscale);
                ww += *w;
            }
            let fixed = &mut self.fixed[xx * stride..xx * stride + count];
            for (w, f) in weights.iter_mut().zip(fixed.iter_mut()) {
                if ww != 0.0 {
                    *w /= ww;
                }
                let scaled = *w * f64::from(1u32 << PRECISION_BITS);
                *f = if *w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
            }
        }
        // The 16-bit tables, each run shifted to start at its first sample rounded down to LANES.
        let word_stride = stride + LANES;
        self.word_stride = word_stride;
        self.hi.clear();
        self.hi.resize(SIZE * word_stride, 0);
        self.lo.clear();
        self.lo.resize(SIZE * word_stride, 0);
        for xx in 0..SIZE {
            let (xmin, count) = self.bounds[xx];
            let lead = xmin % LANES;
            let taps = (lead + count).div_ceil(LANES) * LANES;
            self.words[xx] = (xmin - lead, taps);
            let base = xx * word_stride + lead;
            let (mut first, mut end) = (usize::MAX, 0);
            for (i, &k) in self.fixed[xx * stride..xx * stride + count].iter().enumerate() {
                let [hi, lo] = word_pieces(k);
                (self.hi[base + i], self.lo[base + i]) = (hi, lo);
                if hi != 0 {
                    first = first.min(lead + i);
                    end = lead + i + 1;
                }
            }
            self.hi_window[xx] = if end == 0 {
                (0, 0)
            } else {
                let start = first / LANES * LANES;
                (start, end.div_ceil(LANES) * LANES - start)
            };
        }
        for piece in &mut self.pieces {
            piece.clear();
        }
        for &k in &self.fixed {
            let [top, middle, low] = byte_pieces(k);
            self.pieces[0].push(top);
            self.pieces[1].push(middle);
            self.pieces[2].push(low);
        }
        for (xx, chunks) in self.top_chunks.iter_mut().enumerate() {
            let run = &self.pieces[0][xx * stride..(xx + 1) * stride];
            *chunks = match (run.iter().position(|&t| t != 0), run.iter().rposition(|&t| t != 0)) {
                (Some(first), Some(last)) => (first / 64, last / 64 + 1),
                _ => (0, 0),
            };
        }
        self.in_size = in_size;
    }

    /// The input rows (or columns) the 32 outputs read: Pillow's `ybox_first..ybox_last`.
    fn span(&self) -> std::ops::Range<usize> {
        let (last_min, last_count) = self.bounds[SIZE - 1];
        self.bounds[0].0..last_min + last_count
    }
}

/// `k` as `[hi, lo]` with `k = 2^15·hi + lo` (see [`Axis::hi`]): `(0, k)` when `k` fits in `i16`, else
/// `lo` is the balanced remainder in -2^14..2^14.
fn word_pieces(k: i32) -> [i16; 2] {
    if let Ok(lo) = i16::try_from(k) {
        return [0, lo];
    }
    let hi = (k + (1 << 14)) >> SPLIT_BITS;
    let lo = k - (hi << SPLIT_BITS);
    [
        i16::try_from(hi).expect("LANCZOS coefficients lie within ±2^22"),
        i16::try_from(lo).expect("a balanced remainder lies within ±2^14"),
    ]
}

/// `k` as signed base-256 digits `[top, middle, low]` with `k = 2^16·top + 2^8·middle + low`: the low two
/// are the balanced remainders in -128..=127, and `top` is what is left, in range for every `|k| < 2^23`
/// (Pillow's coefficients are at most 2^22 in magnitude, a weight of 1.0).
fn byte_pieces(k: i32) -> [i8; 3] {
    let low = (k as u8) as i8;
    let rest = (k - i32::from(low)) >> 8;
    let middle = (rest as u8) as i8;
    let top = (rest - i32::from(middle)) >> 8;
    [i8::try_from(top).expect("LANCZOS coefficients lie within ±2^22"), middle, low]
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

/// The grey 32×32 thumbnail of `img`, given the coefficient tables for its width and height.
///
/// [`resize_inline`] is the portable definition; on x86-64 with AVX2 (see [`simd::level`]) hand-written
/// kernels compute the same bytes several times faster. Integer arithmetic gives the same bytes either way,
/// and the tests compare the two on random images.
fn resize(img: ImageView<'_>, horiz: &Axis, vert: &Axis, scratch: &mut Scratch) -> [u8; SIZE * SIZE] {
    resize_at(simd::level(), img, horiz, vert, scratch)
}

/// [`resize`] at a given vector level (for tests and benchmarks that compare levels).
fn resize_at(
    level: Level,
    img: ImageView<'_>,
    horiz: &Axis,
    vert: &Axis,
    scratch: &mut Scratch,
) -> [u8; SIZE * SIZE] {
    #[cfg(target_arch = "x86_64")]
    {
        let level = level.min(simd::detect());
        if level == Level::Avx512 {
            // SAFETY: `detect` found AVX2 and AVX-512 F/BW/VL/VNNI/VBMI, what `resize_avx512` needs.
            return unsafe { x86::resize_avx512(img, horiz, vert, scratch) };
        }
        if level == Level::Avx2 {
            // SAFETY: `detect` found AVX2, the requirement of `resize_avx2`.
            return unsafe { x86::resize_avx2(img, horiz, vert, scratch) };
        }
    }
    let _ = level;
    resize_inline(img, horiz, vert, scratch)
}

/// Mirrors Pillow 13's `ImagingResampleInner`. Both passes round to bytes, so their order matters, and
/// Pillow picks it from the shape: the vertical pass goes first when the height shrinks by more than
/// twice as many pixels as the width (`h - 32 > 0 && h - 32 > 2·(w - 32)`), otherwise the horizontal pass
/// does. A pass whose dimension is already 32 is skipped (it would be the identity anyway).
#[inline(always)]
fn resize_inline(img: ImageView<'_>, horiz: &Axis, vert: &Axis, scratch: &mut Scratch) -> [u8; SIZE * SIZE] {
    if vertical_first_order(img.width, img.height) {
        vertical_first(img, horiz, vert, scratch)
    } else {
        horizontal_first(img, horiz, vert, scratch)
    }
}

/// Pillow's usual order: the horizontal pass over just the rows the vertical pass will read, into an
/// intermediate image 32 pixels wide, then the vertical pass.
#[inline(always)]
fn horizontal_first(
    img: ImageView<'_>,
    horiz: &Axis,
    vert: &Axis,
    scratch: &mut Scratch,
) -> [u8; SIZE * SIZE] {
    let width = img.width as usize;
    let need_horizontal = width != SIZE;
    let rows = vert.span();
    let Scratch { line, temp, .. } = scratch;
    temp.resize(rows.len() * SIZE, 0);
    if need_horizontal {
        // `dot` reads up to LANES - 1 zero-weighted samples past the end of the row.
        line.resize(width + LANES, 0);
    }
    for (out, y) in temp.chunks_exact_mut(SIZE).zip(rows) {
        let out: &mut [u8; SIZE] = out.try_into().expect("chunks of SIZE");
        match img.pixels {
            Pixels::Gray(p) => {
                let src = &p[y * width..(y + 1) * width];
                if need_horizontal {
                    for (d, &s) in line.iter_mut().zip(src) {
                        *d = i16::from(s);
                    }
                    horizontal_row(line, horiz, out);
                } else {
                    out.copy_from_slice(src);
                }
            }
            Pixels::Rgb(p) => {
                let src = &p[3 * y * width..3 * (y + 1) * width];
                if need_horizontal {
                    for (d, px) in line.iter_mut().zip(src.chunks_exact(3)) {
                        *d = i16::from(luma(px[0], px[1], px[2]));
                    }
                    horizontal_row(line, horiz, out);
                } else {
                    for (d, px) in out.iter_mut().zip(src.chunks_exact(3)) {
                        *d = luma(px[0], px[1], px[2]);
                    }
                }
            }
        }
    }

    let mut thumb = [0u8; SIZE * SIZE];
    if img.height as usize != SIZE {
        vertical(temp, vert, &mut thumb);
    } else {
        // Height 32: the span is exactly rows 0..32.
        thumb.copy_from_slice(&temp[..SIZE * SIZE]);
    }
    thumb
}

/// Pillow's order for tall images: the vertical pass over the full width into a w×32 intermediate image,
/// then the horizontal pass on its 32 rows.
///
/// Each input row is read (and converted to grey) once and added into the accumulators of every output
/// row whose window contains it; integer sums do not depend on the order of their terms, so this equals
/// Pillow's output-row-at-a-time loop.
#[inline(always)]
fn vertical_first(img: ImageView<'_>, horiz: &Axis, vert: &Axis, scratch: &mut Scratch) -> [u8; SIZE * SIZE] {
    let width = img.width as usize;
    let Scratch { line, grey, acc, .. } = scratch;
    acc.clear();
    acc.resize(SIZE * width, 1 << (PRECISION_BITS - 1));
    for y in vert.span() {
        let row: &[u8] = match img.pixels {
            Pixels::Gray(p) => &p[y * width..(y + 1) * width],
            Pixels::Rgb(p) => {
                let src = &p[3 * y * width..3 * (y + 1) * width];
                grey.resize(width, 0);
                for (d, px) in grey.iter_mut().zip(src.chunks_exact(3)) {
                    *d = luma(px[0], px[1], px[2]);
                }
                grey
            }
        };
        for (yy, acc) in acc.chunks_exact_mut(width).enumerate() {
            let (ymin, count) = vert.bounds[yy];
            if (ymin..ymin + count).contains(&y) {
                let k = vert.fixed[yy * vert.stride + (y - ymin)];
                for (a, &s) in acc.iter_mut().zip(row) {
                    *a = a.wrapping_add(i32::from(s) * k);
                }
            }
        }
    }

    let mut thumb = [0u8; SIZE * SIZE];
    if width == SIZE {
        for (o, &a) in thumb.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
    } else {
        line.resize(width + LANES, 0);
        for (out, acc) in thumb.chunks_exact_mut(SIZE).zip(acc.chunks_exact(width)) {
            for (d, &a) in line.iter_mut().zip(acc) {
                *d = i16::from(clip8(a));
            }
            horizontal_row(line, horiz, out.try_into().expect("chunks of SIZE"));
        }
    }
    thumb
}

/// One row of Pillow's `ImagingResampleHorizontal_8bpc`: 32 outputs, each `clip8(2^21 + Σ sample·coeff)`.
///
/// `line` holds the row's grey samples widened to `i16`, followed by at least [`LANES`] - 1 more (their
/// coefficients are zero). This is the hot loop, about six multiply-adds per input pixel on large images.
#[inline(always)]
fn horizontal_row(line: &[i16], axis: &Axis, out: &mut [u8; SIZE]) {
    for (xx, o) in out.iter_mut().enumerate() {
        let (first, taps) = axis.words[xx];
        let base = xx * axis.word_stride;
        let samples = &line[first..first + taps];
        let (start, len) = axis.hi_window[xx];
        let sum_hi = dot(&samples[start..start + len], &axis.hi[base + start..base + start + len]);
        let sum_lo = dot(samples, &axis.lo[base..base + taps]);
        let acc =
            (1i32 << (PRECISION_BITS - 1)).wrapping_add(sum_hi.wrapping_shl(SPLIT_BITS)).wrapping_add(sum_lo);
        *o = clip8(acc);
    }
}

/// Σ a·b of 16-bit values into a wrapping 32-bit sum. Written as one plain reduction, the shape LLVM turns
/// into `pmaddwd`/`vpmaddwd` (two accumulations fused into one loop get plain 32-bit multiplies instead).
#[inline(always)]
fn dot(a: &[i16], b: &[i16]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| i32::from(a) * i32::from(b)).fold(0, i32::wrapping_add)
}

/// Pillow's `ImagingResampleVertical_8bpc` on the horizontal pass's output (`temp`: 32 bytes per row,
/// starting at the first row of [`Axis::span`], which is how Pillow shifts the vertical bounds too).
#[inline(always)]
fn vertical(temp: &[u8], axis: &Axis, thumb: &mut [u8; SIZE * SIZE]) {
    let first_row = axis.bounds[0].0;
    for (yy, out) in thumb.chunks_exact_mut(SIZE).enumerate() {
        let (ymin, count) = axis.bounds[yy];
        let ks = &axis.fixed[yy * axis.stride..yy * axis.stride + count];
        let rows = temp[(ymin - first_row) * SIZE..].chunks_exact(SIZE);
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

/// The DCT and median steps of imagehash on the 32×32 thumbnail (from [`PhashHasher::thumbnail`] or the
/// GPU backend's `phash_resize.wgsl`).
///
/// `dct(dct(pixels, axis=0), axis=1)[:8, :8]` only needs the first 8 frequencies of each pass: 32 column
/// transforms, then 8 row transforms. Bits: `coefficient > numpy.median(block)` (strict), row-major, first
/// bit most significant.
pub fn hash_thumbnail(thumb: &[u8; SIZE * SIZE]) -> Hash64 {
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
    let bits = coeffs.iter().fold(0u64, |acc, &c| (acc << 1) | u64::from(c > median));
    Hash64(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values below come from Pillow 13.0.0 + imagehash 4.3.2 (numpy 2.4, scipy 1.17) on the
    // images `pattern` builds, generated with:
    //
    //   def pattern(w, h, chans):  # numpy uint64 arrays, x/y/c broadcast over (h, w, chans)
    //       hsh = ((x * 73856093) ^ (y * 19349663) ^ (c * 83492791)) & 0xFFFFFFFF
    //       noise = ((hsh * 2654435761) & 0xFFFFFFFF) >> 24
    //       return ((noise + 2 * x + 3 * y + 50 * c) & 255).astype(numpy.uint8)
    //   rgb = Image.fromarray(pattern(w, h, 3), "RGB")
    //   grey = Image.fromarray(pattern(w, h, 1)[:, :, 0], "L").convert("RGB")
    //   str(imagehash.phash(im))
    //   im.convert("L").resize((32, 32), Image.Resampling.LANCZOS).tobytes()

    /// The synthetic test image: noise plus ramps, so no DCT coefficient ties with the median by accident.
    fn pattern(w: u32, h: u32, channels: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity((w * h * channels) as usize);
        for y in 0..h {
            for x in 0..w {
                for c in 0..channels {
                    let mixed =
                        x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ c.wrapping_mul(83492791);
                    let noise = mixed.wrapping_mul(2654435761) >> 24;
                    out.push((noise + 2 * x + 3 * y + 50 * c) as u8);
                }
            }
        }
        out
    }

    fn unhex(rows: &[&str]) -> Vec<u8> {
        rows.iter()
            .flat_map(|row| {
                (0..row.len()).step_by(2).map(move |i| u8::from_str_radix(&row[i..i + 2], 16).unwrap())
            })
            .collect()
    }

    #[test]
    fn hashes_match_imagehash() {
        // (width, height, RGB hash, grey hash)
        const CASES: &[(u32, u32, &str, &str)] = &[
            (1, 1, "8000000000000000", "0000000000000000"),
            (1, 40, "8000000080808000", "8000000000000000"),
            (40, 1, "b300000000000000", "8200000000000000"),
            (1, 1000, "8000800080800000", "8080008080808000"),
            (2, 2, "80ff00c500fc00fd", "b8b8f0b0f1b1e307"),
            (5, 5, "8df336b8cb4d3442", "97973787f2780858"),
            (10, 7, "da708e3e8ef3420d", "a6812e310cfc5a7f"),
            (31, 33, "8e6888367a6d05fe", "93c20f3670e525be"),
            (33, 31, "9f65853a692c46b9", "93c92e3af02037dd"),
            (32, 32, "9e69853a7a6d04ba", "93ca0f3e726126b5"),
            (32, 100, "ad56586f25f48915", "9993abea44ea251d"),
            (100, 32, "882b50c51f5734f7", "e0b96605bb9524cf"),
            (45, 13, "8b3a3758eda198d2", "807eb9e365a50bd2"),
            (13, 45, "f461851c265dcbba", "999a85722c69d39b"),
            (64, 65, "95932c5e22d61e1f", "83c2e4522b56de2f"),
            (160, 95, "c1b5979a0b3296cd", "917487de5d351515"),
            (17, 300, "b94a233d7a84cf23", "adac2e981dcc155e"),
            (300, 17, "ccac84a65599bde4", "dd0ed1b273890eb4"),
            (4000, 3, "d3fce74318f124a8", "aed5432ebcb06748"),
            (3, 4000, "c9c96e26b06e38ec", "c96748b3b33264b3"),
        ];
        let mut hasher = PhashHasher::new();
        for &(w, h, rgb_hex, grey_hex) in CASES {
            let rgb = pattern(w, h, 3);
            let grey = pattern(w, h, 1);
            let got = hasher.hash(ImageView::rgb(w, h, &rgb));
            assert_eq!(got.to_hex(), rgb_hex, "RGB {w}x{h}");
            let got = hasher.hash(ImageView::gray(w, h, &grey));
            assert_eq!(got.to_hex(), grey_hex, "grey {w}x{h}");
            assert_eq!(phash(ImageView::gray(w, h, &grey)).to_hex(), grey_hex, "fresh hasher, grey {w}x{h}");
        }
    }

    #[test]
    fn thumbnails_match_pillow_bytes() {
        // 45×13: horizontal pass first (downsampling), then vertical (upsampling).
        const HORIZONTAL_FIRST: [&str; 32] = [
            "906a788fac566e93a2bf3340651f77a8763f7d718aaa8855b35a6677c896b872",
            "88706f869b596e808aaf4a4c6e427398766284727a8b745cb86873759f87b589",
            "7a7b617881606e62639271617d7c6e7d789b8f7661595469bd8088725a6fafb0",
            "719655656a64664441719e7583b5605c71c495874f37377db99a996f2057a7cb",
            "7dc05955725d4e3d4a62af736db746405ca489a7595a3991a19f93733457a2ad",
            "91dc6854925238587469a0654c883844495173c67fa65a99829377777f6a9e75",
            "94d37265af5b38878e7691683f6a54754d1a63d2a7c97e886a905b65a6779b6a",
            "83a56f82ba7651ba89808d7f517294c2691b62c6c4ad9566609c4b448e76979b",
            "64756594a9856ed77c7c869a6b80bae886416faccd819d5976a34e3b686e8dcd",
            "43635c8e7d7079ce7c6675a875799dba8e6d8493c3779a7ead99605f606878cf",
            "396f5776514d75ad864f64a179695b6984909881ac838ab2db837f9c736769b0",
            "6682526048466b8e94545c7a90642f55799a9f7f947c71b9c970a8c4846a7a9a",
            "b58f5458685f66849f766345b56d348d758b96868862598a7a64cbc78c72a39b",
            "dc8a63658e766991929b7732b97c5ec27e7786838356465c415fc6b29681bda1",
            "ac6c7e84986e75ac66ad9157888897b89470796781673b59595f9299a399b19f",
            "524f9da1925b88c43baba9964d92c389ab7c724685893f7295595383a8a48798",
            "2852b5a29a6397c8449bc0b845a3c36eb1936f3c93a352839e3d3d779b895b95",
            "3d76be86ad829eb07989c8ac77b79872a5ac704da5a96b816d195a767e593e93",
            "589aaf6ea78b97839b7fb38cb2bc6f8797af7068ae9e82795014856e664c3e93",
            "52a48c6f7d6a844f85848171cfad699d92936b7ea78b8e70713ea0545f7d5995",
            "3b9b687c504376305b914e5fcd9a74a5937767899b738d6fa680a43c65c57a8d",
            "2e94577e4545813851953a53bc9a6c93958066859d5a887eb4ae934274e57e72",
            "31905f715f6d9e646e8e4b4fa2ab536c90ac6b7aa54d829697be7a5f7fd1684d",
            "43837b618598ad90988b705687ae455379cd8080a55e689479b9797873a55c44",
            "5e6b9e55a0aea0a0b793946277974d5751c7a4a195893d6d70ad9f7d4b7c6f65",
            "795aaf55a3a286a4bf95af69707f5f6837afb8bc73ae2b5175a3c96f2c628e87",
            "84629a688d7775b6ae82bf606985676946a8a0ac45a755707ba4cc59395b9f7b",
            "837a6b85654175cf8a64c44f62a1665b74ab6d7d1b7ea4b87bacaf476c6ba04e",
            "87865292452e81c66b5cc05964af6f5695975b631e69cad46d9c9e4b9589954b",
            "967c62883c4b909f6372bd7e6da08361926d7c73487eadaa5376ac6598a28980",
            "a56b7c7841719c79688bbca1748c936d8149a68d739c7f743e54c27f8baf81b8",
            "ac628d6e4689a3636b9abab579809c757636be9e8eae62533241ce8e83b77bd9",
        ];
        // 13×45: Pillow 13 runs the vertical pass first (the height shrinks far more than the width).
        const VERTICAL_FIRST: [&str; 32] = [
            "52698da9976545486282978e6e5e7aa3a2774f4a5c6c727474706a656a768187",
            "5a739bc9ddc9a3785a556064595d80a29e734e4d5c5a463a3f5164717063564d",
            "50545b6b879a88593f609baa84657aa4b29b76594d536a889eafcadec2814928",
            "9f998d82858b7a523a4c717b634a4c5f6d706552454f6e8a96948c8586909aa0",
            "787570675c5a6b8ca8afa392868897a8ab9a7f64596482abced6b9845c5a6871",
            "373b445c86abb39f8786928d74697c969270575d768a908a7c6c605e6a7c8992",
            "3e3c3d4c749caa997247324a84a78e573a496a889ba39c846450536a7d7d7570",
            "8f83705c596980959c937f685b627e9da99d887a777c8999a3adbfd1caaf9585",
            "858e9ba19171523f4c7daeae784033444e4c4540486998b3ad968f9689694d3e",
            "a5a09792a0af9b65486eabaa6734488cc2d4c8aa86727376706c778a9797908c",
            "a0947f69636f7c83847b7685a5af90676489b1c0ae865535334552555c676f73",
            "af98724a405975868e918a78635b677d847a788ea18e615785b5a76636394f5d",
            "878c969f9990a1c7deca97674b4243527191a19b7f583c3d5f8fb2bba6866c5c",
            "516587a18d635f8ab1a884788d9a88654e4c586672746c5c4944587b8a7b6557",
            "b3ab9e8e8688929a98876b574e4f52575a5e6574879aa7aaa38f73574542464b",
            "6b6f757b7d7560453a4e71837b74838e69260b3e8692644d74a49b64404c6676",
            "243d6794a58d66432c2a3f5d7a8f9a9685736f839ca4977d60536184a2aaa6a3",
            "3f54769eb1a179472c3e66735b4e6c96987655536d95babe9c6f5e6c828c8e8f",
            "dbb87d4344727b543e65aad4cea6744e455d7f9198a9b7a6724035527c96a0a6",
            "566885a2a2897d85856947486a8376564651719ab8b99f8379776b5a5e748a97",
            "7c838f9ba19a866b5f6c858f806c62605b54586a818f94918c90a6c2bc91674e",
            "7d7d7c7d868b7b5a454b6d9dc7d1af817797b6b6a29187807b75695e6886a0af",
            "55555657585858575962695f4945668f906a557498803e2760acbd9262545759",
            "949ba7ac9e86787c8688899bb7bea37a656d83969e988262413244697d6d5648",
            "9aa0aaac967a7fa5b3823d336dafc7b28c64463d495e707d817a706763666b6e",
            "665943354465787660402f4072a5bab6b0ab987457597698acac9e8772696969",
            "95928c81756d6a6b73838d7d5a485b809a9a7b47202a5e91a191785e4a45494c",
            "a8a39a8c7f78757474736f63555568859ba09c988c6a464b83b9af724e658aa1",
            "b4996d4b5e98c4cbb0865d4a546e869189746f89a9ab917f88999b8d82808385",
            "88857e797d848275696973787987a9c4ba8c552e29467babc1c5d2e0ca996e55",
            "9a8c74626e8b8f725c6c8e9a88736d7170675d555357606e7e7e5d302c5a8caa",
            "5e5c5c5c5c657ea2bbb8a086756c68675f545a779baaa5a6bccdc19c735e5754",
        ];
        let mut hasher = PhashHasher::new();
        for (w, h, expected) in [(45, 13, HORIZONTAL_FIRST), (13, 45, VERTICAL_FIRST)] {
            let rgb = pattern(w, h, 3);
            let img = ImageView::rgb(w, h, &rgb);
            let thumb = hasher.thumbnail(img);
            let expected = unhex(&expected);
            for (y, (got, want)) in thumb.chunks(SIZE).zip(expected.chunks(SIZE)).enumerate() {
                assert_eq!(got, want, "{w}x{h}, thumbnail row {y}");
            }
        }
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` written out plainly, without the reuse of
    /// repeated weight runs that [`Axis::prepare`] does.
    fn reference_coeffs(in_size: usize) -> Vec<(usize, Vec<i32>)> {
        let scale = in_size as f64 / 32.0;
        let filterscale = scale.max(1.0);
        let support = 3.0 * filterscale;
        (0..32)
            .map(|xx| {
                let center = (xx as f64 + 0.5) * scale;
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
                let w: Vec<f64> =
                    (xmin..xmax).map(|x| lanczos((x as f64 - center + 0.5) * (1.0 / filterscale))).collect();
                let ww: f64 = w.iter().fold(0.0, |a, b| a + b);
                let k = w
                    .iter()
                    .map(|&w| {
                        let w = if ww != 0.0 { w / ww } else { w };
                        if w < 0.0 {
                            (-0.5 + w * 4194304.0) as i32
                        } else {
                            (0.5 + w * 4194304.0) as i32
                        }
                    })
                    .collect();
                (xmin, k)
            })
            .collect()
    }

    #[test]
    fn coefficient_tables_match_reference() {
        let sizes =
            (1..=200).chain([255, 256, 257, 640, 800, 1000, 1023, 1024, 1080, 1280, 1920, 3000, 4000, 4032]);
        let mut axis = Axis::default();
        for in_size in sizes {
            axis.prepare(in_size);
            for (xx, (xmin, k)) in reference_coeffs(in_size).into_iter().enumerate() {
                let (got_min, count) = axis.bounds[xx];
                assert_eq!((got_min, count), (xmin, k.len()), "size {in_size}, output {xx}: bounds");
                let run = &axis.fixed[xx * axis.stride..(xx + 1) * axis.stride];
                assert_eq!(&run[..count], &k[..], "size {in_size}, output {xx}: coefficients");
                assert!(run[count..].iter().all(|&c| c == 0), "size {in_size}, output {xx}: padding");
                let base = xx * axis.stride;
                // The 16-bit run: the window's coefficients split in two, at their samples' places.
                let (first, taps) = axis.words[xx];
                assert!(first % LANES == 0 && taps % LANES == 0, "size {in_size}, output {xx}: alignment");
                assert!(first <= xmin && xmin + count <= first + taps, "size {in_size}, output {xx}: run");
                assert!(first + taps < xmin + count + LANES, "size {in_size}, output {xx}: run end");
                let (start, len) = axis.hi_window[xx];
                assert!(start % LANES == 0 && len % LANES == 0 && start + len <= taps, "size {in_size}");
                let words = xx * axis.word_stride;
                for i in 0..taps {
                    let (h, l) = (i32::from(axis.hi[words + i]), i32::from(axis.lo[words + i]));
                    let want = (first + i).checked_sub(xmin).and_then(|j| k.get(j)).copied().unwrap_or(0);
                    assert_eq!(
                        (h << SPLIT_BITS) + l,
                        want,
                        "size {in_size}, output {xx}, tap {i}: hi/lo split"
                    );
                    assert!(
                        h == 0 || (start..start + len).contains(&i),
                        "size {in_size}, output {xx}: hi window"
                    );
                }
                let (first, end) = axis.top_chunks[xx];
                for (i, &k) in run.iter().enumerate() {
                    let [top, middle, low] = axis.pieces.each_ref().map(|p| i32::from(p[base + i]));
                    assert!(
                        top == 0 || (first..end).contains(&(i / 64)),
                        "size {in_size}, output {xx}: top chunks"
                    );
                    assert_eq!(
                        (top << 16) + (middle << 8) + low,
                        k,
                        "size {in_size}, output {xx}: byte pieces"
                    );
                }
            }
        }
    }

    #[test]
    fn word_pieces_recombine_over_the_whole_coefficient_range() {
        let edges =
            [-(1 << 22), -32769, -32768, -32767, -16385, -16384, 0, 16383, 16384, 32767, 32768, 1 << 22];
        for k in (-(1 << 22)..=(1 << 22)).step_by(7).chain(edges) {
            let [hi, lo] = word_pieces(k).map(i32::from);
            assert_eq!((hi << SPLIT_BITS) + lo, k, "{k}");
            assert!(hi == 0 || lo.abs() <= 1 << 14, "{k}: lo {lo}");
            assert_eq!(hi == 0, i16::try_from(k).is_ok(), "{k}: hi {hi}");
        }
    }

    #[test]
    fn byte_pieces_recombine_over_the_whole_coefficient_range() {
        for k in
            (-(1 << 22)..=(1 << 22)).step_by(7).chain([-(1 << 22), -1, 0, 1, 127, 128, -128, -129, 1 << 22])
        {
            let [top, middle, low] = byte_pieces(k).map(i32::from);
            assert_eq!((top << 16) + (middle << 8) + low, k, "{k}");
        }
    }

    #[test]
    fn portable_and_dispatched_resizers_agree() {
        let mut hasher = PhashHasher::new();
        for (w, h) in
            [(1, 1), (1, 90), (90, 1), (31, 33), (33, 31), (70, 200), (200, 70), (97, 61), (513, 40)]
        {
            for channels in [1, 3] {
                let data = pattern(w, h, channels);
                let img =
                    if channels == 3 { ImageView::rgb(w, h, &data) } else { ImageView::gray(w, h, &data) };
                let dispatched = hasher.thumbnail(img);
                let (hi, vi) = (hasher.table(w as usize), hasher.table(h as usize));
                let portable =
                    resize_inline(img, &hasher.tables[hi], &hasher.tables[vi], &mut hasher.scratch);
                assert_eq!(dispatched, portable, "{w}x{h}x{channels}");
            }
        }
    }

    /// The thumbnail at every vector level this CPU has, against the portable resampler.
    fn levels_agree(hasher: &mut PhashHasher, img: ImageView<'_>) {
        let (hi, vi) = (hasher.table(img.width as usize), hasher.table(img.height as usize));
        let (h, v) = (&hasher.tables[hi], &hasher.tables[vi]);
        let want = resize_inline(img, h, v, &mut hasher.scratch);
        for level in simd::available() {
            let got = resize_at(level, img, h, v, &mut hasher.scratch);
            assert_eq!(
                got, want,
                "{level:?} differs from the portable resampler on {}x{}",
                img.width, img.height
            );
        }
    }

    #[test]
    fn every_level_resizes_like_the_portable_code() {
        let mut hasher = PhashHasher::new();
        for (w, h) in [
            (1, 1),
            (1, 90),
            (90, 1),
            (31, 33),
            (33, 31),
            (32, 32),
            (32, 300),
            (300, 32),
            (70, 200),
            (200, 70),
            (97, 61),
            (513, 40),
            (1280, 800),
            (800, 1280),
            (4000, 3),
            (3, 4000),
            // Over 8 MiB of RGB: the AVX2 grey conversion prefetches (`x86::PREFETCH_FROM`).
            (1700, 1700),
        ] {
            for channels in [1, 3] {
                let data = pattern(w, h, channels);
                let img =
                    if channels == 3 { ImageView::rgb(w, h, &data) } else { ImageView::gray(w, h, &data) };
                levels_agree(&mut hasher, img);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn every_level_resizes_random_images_like_the_portable_code(
            w in 1u32..700, h in 1u32..700, seed in proptest::prelude::any::<u64>(), grey in proptest::prelude::any::<bool>()
        ) {
            let n = (w * h) as usize * if grey { 1 } else { 3 };
            let mut x = seed | 1;
            let px: Vec<u8> = (0..n).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 24) as u8 }).collect();
            let img = if grey { ImageView::gray(w, h, &px) } else { ImageView::rgb(w, h, &px) };
            levels_agree(&mut PhashHasher::new(), img);
        }
    }

    #[test]
    fn a_reused_hasher_gives_the_same_hashes() {
        // More sizes than the table cache holds, visited twice, interleaved with grey images.
        let sizes: Vec<(u32, u32)> = (0..2 * TABLE_CACHE as u32).map(|i| (20 + 37 * i, 90 - 3 * i)).collect();
        let images: Vec<(u32, u32, Vec<u8>)> = sizes.iter().map(|&(w, h)| (w, h, pattern(w, h, 3))).collect();
        let fresh: Vec<Hash64> = images.iter().map(|(w, h, d)| phash(ImageView::rgb(*w, *h, d))).collect();
        let mut hasher = PhashHasher::new();
        for _ in 0..2 {
            for ((w, h, d), want) in images.iter().zip(&fresh) {
                assert_eq!(hasher.hash(ImageView::rgb(*w, *h, d)), *want, "{w}x{h}");
                let grey = pattern(*h, *w, 1);
                assert_eq!(
                    hasher.hash(ImageView::gray(*h, *w, &grey)),
                    phash(ImageView::gray(*h, *w, &grey))
                );
            }
        }
        assert!(hasher.tables.len() <= TABLE_CACHE);
    }

    #[test]
    fn zero_sized_images_do_not_panic() {
        assert_eq!(phash(ImageView::gray(0, 5, &[])), Hash64(0));
        assert_eq!(phash(ImageView::rgb(5, 0, &[])), Hash64(0));
    }

    #[test]
    fn constant_images_hash_like_imagehash() {
        // scipy returns exact zeros for every AC coefficient of a constant thumbnail, so the median is 0
        // and only a positive DC bit is set (checked with imagehash on `Image.new("L", (w, h), level)`);
        // `dct_low8` must produce the same exact zeros.
        for (w, h) in [(1, 1), (7, 300), (300, 7), (64, 64)] {
            let white = vec![255u8; (w * h) as usize];
            assert_eq!(phash(ImageView::gray(w, h, &white)), Hash64(1 << 63), "{w}x{h} white");
            let black = vec![0u8; (w * h) as usize];
            assert_eq!(phash(ImageView::gray(w, h, &black)), Hash64(0), "{w}x{h} black");
        }
    }
}
