//! AVX2 kernels for the pHash thumbnail: the same integer arithmetic as the portable resampler in
//! `phash.rs` (which they are tested against), written with intrinsics because LLVM does not find the
//! shapes that matter on its own:
//! - Pillow's grey conversion straight from interleaved RGB, with byte shuffles and `vpmaddwd`;
//! - the horizontal pass over eight rows at once, so each coefficient vector loaded serves eight rows;
//! - both vertical passes as whole-row vector multiply-adds.
//!
//! Integer sums do not depend on the order of their terms, and every sum here is taken modulo 2^32 exactly
//! like the portable code's wrapping sums, so the bytes are identical, not merely close.

use super::{clip8, luma, vertical_first_order, Axis, Scratch, LANES, PRECISION_BITS, SIZE, SPLIT_BITS};
use crate::pixels::{ImageView, Pixels};
use std::arch::x86_64::*;

/// Rows the horizontal pass filters side by side: each coefficient vector loaded serves this many rows.
/// With AVX-512 (32 registers) all eight run in one sweep; with AVX2 (16 registers) as two sweeps of four.
/// For wide images the coefficients outgrow the L1 cache (96 KB at 4000 pixels), so fewer sweeps per row
/// matter most there.
const ROWS: usize = 8;

/// The grey 32×32 thumbnail, as `super::resize_inline` computes it.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn resize_avx2(
    img: ImageView<'_>,
    horiz: &Axis,
    vert: &Axis,
    scratch: &mut Scratch,
) -> [u8; SIZE * SIZE] {
    if vertical_first_order(img.width, img.height) {
        vertical_first::<false>(img, horiz, vert, scratch)
    } else {
        horizontal_first::<false>(img, horiz, vert, scratch)
    }
}

/// [`resize_avx2`] with the grey conversion and the horizontal pass in AVX-512 (`vpermb` to take RGB apart,
/// `vpdpwssd`: 32 multiply-adds and the accumulation in one instruction).
///
/// # Safety
/// The CPU must support AVX2, AVX-512 F, BW, VL, VNNI and VBMI.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn resize_avx512(
    img: ImageView<'_>,
    horiz: &Axis,
    vert: &Axis,
    scratch: &mut Scratch,
) -> [u8; SIZE * SIZE] {
    if vertical_first_order(img.width, img.height) {
        vertical_first::<true>(img, horiz, vert, scratch)
    } else {
        horizontal_first::<true>(img, horiz, vert, scratch)
    }
}

/// The horizontal pass on `R` rows, with AVX-512 VNNI when `VNNI` (see [`horizontal_rows_vnni`]).
///
/// # Safety
/// With `VNNI`, the CPU must support AVX-512 F, BW, VL and VNNI.
#[inline(always)]
unsafe fn horizontal<const R: usize, const VNNI: bool>(
    lines: &[i16],
    stride: usize,
    axis: &Axis,
    out: &mut [u8],
) {
    if VNNI {
        // SAFETY: the caller guarantees the features.
        unsafe { horizontal_rows_vnni::<R>(lines, stride, axis, out) }
    } else if R == 8 {
        // Four accumulators of each kind per row: eight rows would spill AVX2's sixteen registers.
        let (top, bottom) = out.split_at_mut(4 * SIZE);
        // SAFETY: every caller is compiled with AVX2 enabled.
        unsafe {
            horizontal_rows::<4>(lines, stride, axis, top);
            horizontal_rows::<4>(&lines[4 * stride..], stride, axis, bottom);
        }
    } else {
        // SAFETY: every caller is compiled with AVX2 enabled.
        unsafe { horizontal_rows::<R>(lines, stride, axis, out) }
    }
}

/// Pillow's `rgb2l` for one row: interleaved RGB `src` to grey samples widened to `i16` in `out`.
///
/// Pillow computes `(19595·R + 38470·G + 7471·B + 2^15) >> 16`. 38470 does not fit a signed 16-bit
/// multiplier, so the green weight is split in two halves of 19235, one paired with red and one with blue:
/// `vpmaddwd` on the word pairs `(R, G)` and `(G, B)` gives `19595·R + 19235·G` and `19235·G + 7471·B`, whose
/// sum is Pillow's exactly (all terms are non-negative and the total is below 2^31).
#[target_feature(enable = "avx2")]
fn grey_row_rgb(src: &[u8], out: &mut [i16]) {
    let n = out.len();
    assert!(src.len() >= 3 * n, "an RGB row of {n} pixels");
    // Each 128-bit lane holds four pixels (12 bytes, 16 loaded); Z zeroes the high byte of each word.
    const Z: i8 = -128;
    let rg = _mm256_broadcastsi128_si256(_mm_setr_epi8(0, Z, 1, Z, 3, Z, 4, Z, 6, Z, 7, Z, 9, Z, 10, Z));
    let gb = _mm256_broadcastsi128_si256(_mm_setr_epi8(1, Z, 2, Z, 4, Z, 5, Z, 7, Z, 8, Z, 10, Z, 11, Z));
    let w_rg = _mm256_set1_epi32((19235 << 16) | 19595);
    let w_gb = _mm256_set1_epi32((7471 << 16) | 19235);
    let half = _mm256_set1_epi32(1 << 15);
    let p = src.as_ptr();
    // Eight pixels from byte offset `at`: lanes from bytes at..at+16 and at+12..at+28.
    let eight = |at: usize| {
        // SAFETY: callers keep at + 28 <= src.len().
        let v = unsafe { _mm256_loadu2_m128i(p.add(at + 12).cast::<__m128i>(), p.add(at).cast::<__m128i>()) };
        let sum = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_shuffle_epi8(v, rg), w_rg),
            _mm256_madd_epi16(_mm256_shuffle_epi8(v, gb), w_gb),
        );
        _mm256_srli_epi32::<16>(_mm256_add_epi32(sum, half))
    };
    let mut i = 0;
    // 16 pixels are 48 bytes, but the last 16-byte load starts at byte 36 of them: keep 4 bytes of slack.
    while 3 * i + 52 <= src.len() && i + 16 <= n {
        let (a, b) = (eight(3 * i), eight(3 * i + 24));
        // packs interleaves the 128-bit lanes (a0-3 b0-3 | a4-7 b4-7); the permute restores pixel order.
        let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
        // SAFETY: i + 16 <= out.len().
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), words) };
        i += 16;
    }
    for (d, px) in out[i..].iter_mut().zip(src[3 * i..].chunks_exact(3)) {
        *d = i16::from(luma(px[0], px[1], px[2]));
    }
}

/// [`grey_row_rgb`] with AVX-512: sixteen pixels (48 bytes, one masked load) per step, the `(R, G)` and
/// `(G, B)` word pairs gathered with two byte permutes (`vpermb`, zero-masking the high bytes), and both
/// multiply-adds accumulated onto the rounding constant with `vpdpwssd`. Same sums as [`grey_row_rgb`].
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
fn grey_row_rgb_vbmi(src: &[u8], out: &mut [i16]) {
    let n = out.len();
    assert!(src.len() >= 3 * n, "an RGB row of {n} pixels");
    // Word 2i of the permuted vector is pixel i's first channel, word 2i + 1 its second.
    let index = |first: u8| {
        let mut idx = [0u8; 64];
        for i in 0..16u8 {
            idx[4 * i as usize] = 3 * i + first;
            idx[4 * i as usize + 2] = 3 * i + first + 1;
        }
        // SAFETY: 64 readable bytes.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    };
    let (rg, gb) = (index(0), index(1));
    let low_bytes: __mmask64 = 0x5555_5555_5555_5555;
    let w_rg = _mm512_set1_epi32((19235 << 16) | 19595);
    let w_gb = _mm512_set1_epi32((7471 << 16) | 19235);
    let half = _mm512_set1_epi32(1 << 15);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: bytes 3i..3i + 48 are in `src` (3·(i + 16) <= 3n); the mask loads exactly those.
        let v = unsafe { _mm512_maskz_loadu_epi8((1 << 48) - 1, src.as_ptr().add(3 * i).cast()) };
        let acc = _mm512_dpwssd_epi32(half, _mm512_maskz_permutexvar_epi8(low_bytes, rg, v), w_rg);
        let acc = _mm512_dpwssd_epi32(acc, _mm512_maskz_permutexvar_epi8(low_bytes, gb, v), w_gb);
        let words = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(acc));
        // SAFETY: i + 16 <= out.len().
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), words) };
        i += 16;
    }
    for (d, px) in out[i..].iter_mut().zip(src[3 * i..].chunks_exact(3)) {
        *d = i16::from(luma(px[0], px[1], px[2]));
    }
}

/// A grey row widened to `i16`.
#[target_feature(enable = "avx2")]
fn grey_row_gray(src: &[u8], out: &mut [i16]) {
    let n = out.len();
    assert!(src.len() >= n, "a grey row of {n} pixels");
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: 16 bytes at src[i..] and 16 words at out[i..] are in bounds.
        unsafe {
            let v = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), _mm256_cvtepu8_epi16(v));
        }
        i += 16;
    }
    for (d, &s) in out[i..].iter_mut().zip(&src[i..n]) {
        *d = i16::from(s);
    }
}

/// Row `y` of `img` in grey, widened to `i16`, into `out` (`img.width` samples).
///
/// # Safety
/// With `VBMI`, the CPU must support AVX-512 F, BW, VL, VNNI and VBMI.
#[target_feature(enable = "avx2")]
unsafe fn grey_row<const VBMI: bool>(img: ImageView<'_>, y: usize, out: &mut [i16]) {
    let width = img.width as usize;
    match img.pixels {
        Pixels::Gray(p) => grey_row_gray(&p[y * width..(y + 1) * width], out),
        // SAFETY: the caller guarantees the features.
        Pixels::Rgb(p) if VBMI => unsafe { grey_row_rgb_vbmi(&p[3 * y * width..3 * (y + 1) * width], out) },
        Pixels::Rgb(p) => grey_row_rgb(&p[3 * y * width..3 * (y + 1) * width], out),
    }
}

/// The sum of the eight 32-bit lanes, modulo 2^32.
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
    _mm_cvtsi128_si32(x)
}

/// Pillow's horizontal pass on `R` rows at once: row `r` is `lines[r·stride..]` (its samples, then at least
/// `LANES - 1` more whose coefficients are zero), and its 32 outputs go to `out[r·32..]`.
///
/// Per output, `Σ s·k` is split as `2^11·Σ s·hi + Σ s·lo` (see `Axis::hi`); the two partial sums of each
/// lane are combined before the horizontal add, which modulo 2^32 is the same thing.
#[target_feature(enable = "avx2")]
fn horizontal_rows<const R: usize>(lines: &[i16], stride: usize, axis: &Axis, out: &mut [u8]) {
    assert!(out.len() >= R * SIZE);
    for xx in 0..SIZE {
        let (xmin, count) = axis.bounds[xx];
        let taps = count.div_ceil(LANES) * LANES;
        let base = xx * axis.stride;
        // Everything the loop below reads, checked once.
        assert!(
            (R - 1) * stride + xmin + taps <= lines.len() && base + taps <= axis.hi.len().min(axis.lo.len())
        );
        let (hi, lo, s) = (axis.hi[base..].as_ptr(), axis.lo[base..].as_ptr(), lines[xmin..].as_ptr());
        let mut acc_hi = [_mm256_setzero_si256(); R];
        let mut acc_lo = [_mm256_setzero_si256(); R];
        for j in (0..taps).step_by(LANES) {
            // SAFETY: j + 16 <= taps, and the assertion above covers every row's `taps` samples.
            unsafe {
                let k_hi = _mm256_loadu_si256(hi.add(j).cast());
                let k_lo = _mm256_loadu_si256(lo.add(j).cast());
                for r in 0..R {
                    let v = _mm256_loadu_si256(s.add(r * stride + j).cast());
                    acc_hi[r] = _mm256_add_epi32(acc_hi[r], _mm256_madd_epi16(v, k_hi));
                    acc_lo[r] = _mm256_add_epi32(acc_lo[r], _mm256_madd_epi16(v, k_lo));
                }
            }
        }
        for r in 0..R {
            let sum =
                hsum(_mm256_add_epi32(_mm256_slli_epi32::<{ SPLIT_BITS as i32 }>(acc_hi[r]), acc_lo[r]));
            out[r * SIZE + xx] = clip8((1i32 << (PRECISION_BITS - 1)).wrapping_add(sum));
        }
    }
}

/// [`horizontal_rows`] with 512-bit `vpdpwssd` (multiply pairs of words and add them into the 32-bit
/// accumulator, wrapping, in one instruction). A run of taps that is not a multiple of 32 ends with a
/// masked load of 16, so nothing past the run's `taps` is read (or, for the samples, touched at all).
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn horizontal_rows_vnni<const R: usize>(lines: &[i16], stride: usize, axis: &Axis, out: &mut [u8]) {
    assert!(out.len() >= R * SIZE);
    for xx in 0..SIZE {
        let (xmin, count) = axis.bounds[xx];
        let taps = count.div_ceil(LANES) * LANES;
        let base = xx * axis.stride;
        assert!(
            (R - 1) * stride + xmin + taps <= lines.len() && base + taps <= axis.hi.len().min(axis.lo.len())
        );
        let (hi, lo, s) = (axis.hi[base..].as_ptr(), axis.lo[base..].as_ptr(), lines[xmin..].as_ptr());
        let mut acc_hi = [_mm512_setzero_si512(); R];
        let mut acc_lo = [_mm512_setzero_si512(); R];
        let mut j = 0;
        while j < taps {
            // 32 words, or the 16 that are left (taps is a multiple of 16).
            let mask: __mmask32 = if j + 32 <= taps { !0 } else { 0xffff };
            // SAFETY: the mask limits every load to j..taps, covered by the assertion above; masked-off
            // elements are neither read nor faulted on.
            unsafe {
                let k_hi = _mm512_maskz_loadu_epi16(mask, hi.add(j));
                let k_lo = _mm512_maskz_loadu_epi16(mask, lo.add(j));
                for r in 0..R {
                    let v = _mm512_maskz_loadu_epi16(mask, s.add(r * stride + j));
                    acc_hi[r] = _mm512_dpwssd_epi32(acc_hi[r], v, k_hi);
                    acc_lo[r] = _mm512_dpwssd_epi32(acc_lo[r], v, k_lo);
                }
            }
            j += 32;
        }
        for r in 0..R {
            let v = _mm512_add_epi32(_mm512_slli_epi32::<SPLIT_BITS>(acc_hi[r]), acc_lo[r]);
            let sum = _mm512_reduce_add_epi32(v);
            out[r * SIZE + xx] = clip8((1i32 << (PRECISION_BITS - 1)).wrapping_add(sum));
        }
    }
}

/// `acc[x] += row[x]·k` for the whole row (wrapping, as the portable code's sums).
#[target_feature(enable = "avx2")]
fn mul_add_row(acc: &mut [i32], row: &[i16], k: i32) {
    let n = acc.len().min(row.len());
    let kv = _mm256_set1_epi32(k);
    let mut x = 0;
    while x + 8 <= n {
        // SAFETY: x + 8 <= n, within both slices.
        unsafe {
            let s = _mm256_cvtepi16_epi32(_mm_loadu_si128(row.as_ptr().add(x).cast()));
            let a = acc.as_mut_ptr().add(x).cast::<__m256i>();
            _mm256_storeu_si256(a, _mm256_add_epi32(_mm256_loadu_si256(a), _mm256_mullo_epi32(s, kv)));
        }
        x += 8;
    }
    for (a, &s) in acc[x..n].iter_mut().zip(&row[x..n]) {
        *a = a.wrapping_add(i32::from(s) * k);
    }
}

/// Pillow's usual order (see `super::horizontal_first`): grey rows four at a time through the horizontal
/// pass into a 32-wide intermediate image, then the vertical pass.
#[target_feature(enable = "avx2")]
fn horizontal_first<const VNNI: bool>(
    img: ImageView<'_>,
    horiz: &Axis,
    vert: &Axis,
    scratch: &mut Scratch,
) -> [u8; SIZE * SIZE] {
    let width = img.width as usize;
    let rows = vert.span();
    let Scratch { line, temp, .. } = scratch;
    temp.resize(rows.len() * SIZE, 0);
    if width == SIZE {
        // No horizontal pass: the intermediate image is the grey image.
        for (out, y) in temp.chunks_exact_mut(SIZE).zip(rows.clone()) {
            match img.pixels {
                Pixels::Gray(p) => out.copy_from_slice(&p[y * SIZE..(y + 1) * SIZE]),
                Pixels::Rgb(p) => {
                    for (d, px) in out.iter_mut().zip(p[3 * y * SIZE..3 * (y + 1) * SIZE].chunks_exact(3)) {
                        *d = luma(px[0], px[1], px[2]);
                    }
                }
            }
        }
    } else {
        let stride = width + LANES;
        line.resize(ROWS * stride, 0);
        let mut y = rows.start;
        for out in temp.chunks_mut(ROWS * SIZE) {
            let n = out.len() / SIZE;
            for r in 0..n {
                // SAFETY: `VNNI` is only set by `resize_avx512`, whose caller guarantees the features.
                unsafe { grey_row::<VNNI>(img, y + r, &mut line[r * stride..r * stride + width]) };
            }
            // SAFETY: `VNNI` is only set by `resize_avx512`, whose caller guarantees the features.
            unsafe {
                if n == ROWS {
                    horizontal::<ROWS, VNNI>(line, stride, horiz, out);
                } else {
                    for (r, out) in out.chunks_exact_mut(SIZE).enumerate() {
                        horizontal::<1, VNNI>(&line[r * stride..(r + 1) * stride], stride, horiz, out);
                    }
                }
            }
            y += n;
        }
    }
    let mut thumb = [0u8; SIZE * SIZE];
    if img.height as usize == SIZE {
        thumb.copy_from_slice(&temp[..SIZE * SIZE]);
    } else {
        vertical(temp, vert, &mut thumb);
    }
    thumb
}

/// Pillow's vertical pass on the 32-wide intermediate image (`super::vertical`): 32 accumulators per output
/// row, four vectors, one multiply-add of a whole input row per coefficient.
#[target_feature(enable = "avx2")]
fn vertical(temp: &[u8], axis: &Axis, thumb: &mut [u8; SIZE * SIZE]) {
    let first_row = axis.bounds[0].0;
    for (yy, out) in thumb.chunks_exact_mut(SIZE).enumerate() {
        let (ymin, count) = axis.bounds[yy];
        let ks = &axis.fixed[yy * axis.stride..yy * axis.stride + count];
        let rows = &temp[(ymin - first_row) * SIZE..(ymin - first_row + count) * SIZE];
        let mut acc = [_mm256_set1_epi32(1 << (PRECISION_BITS - 1)); SIZE / 8];
        for (row, &k) in rows.chunks_exact(SIZE).zip(ks) {
            let kv = _mm256_set1_epi32(k);
            // SAFETY: `row` is 32 bytes.
            let (a, b) = unsafe {
                (_mm_loadu_si128(row.as_ptr().cast()), _mm_loadu_si128(row.as_ptr().add(16).cast()))
            };
            let wide = [
                _mm256_cvtepu8_epi32(a),
                _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(a)),
                _mm256_cvtepu8_epi32(b),
                _mm256_cvtepu8_epi32(_mm_srli_si128::<8>(b)),
            ];
            for (acc, s) in acc.iter_mut().zip(wide) {
                *acc = _mm256_add_epi32(*acc, _mm256_mullo_epi32(s, kv));
            }
        }
        let mut sums = [0i32; SIZE];
        for (i, v) in acc.into_iter().enumerate() {
            // SAFETY: `sums[8i..8i + 8]` is 8 writable i32s.
            unsafe { _mm256_storeu_si256(sums.as_mut_ptr().add(8 * i).cast(), v) };
        }
        for (o, &a) in out.iter_mut().zip(&sums) {
            *o = clip8(a);
        }
    }
}

/// Pillow's order for tall images (`super::vertical_first`): every input row of the span, converted to grey
/// once, is multiplied into the accumulator rows of the outputs whose windows contain it; then the 32
/// accumulator rows are rounded to bytes and go through the horizontal pass.
#[target_feature(enable = "avx2")]
fn vertical_first<const VNNI: bool>(
    img: ImageView<'_>,
    horiz: &Axis,
    vert: &Axis,
    scratch: &mut Scratch,
) -> [u8; SIZE * SIZE] {
    let width = img.width as usize;
    let stride = width + LANES;
    let Scratch { line, acc, .. } = scratch;
    acc.clear();
    acc.resize(SIZE * width, 1 << (PRECISION_BITS - 1));
    line.resize(ROWS * stride, 0);
    let mut first_out = 0;
    for y in vert.span() {
        // SAFETY: `VNNI` is only set by `resize_avx512`, whose caller guarantees the features.
        unsafe { grey_row::<VNNI>(img, y, &mut line[..width]) };
        // Windows are ordered, so the outputs reading row y are a contiguous run from `first_out`.
        while first_out < SIZE && vert.bounds[first_out].0 + vert.bounds[first_out].1 <= y {
            first_out += 1;
        }
        for yy in first_out..SIZE {
            let (ymin, count) = vert.bounds[yy];
            if y < ymin {
                break;
            }
            if y < ymin + count {
                let k = vert.fixed[yy * vert.stride + (y - ymin)];
                mul_add_row(&mut acc[yy * width..(yy + 1) * width], &line[..width], k);
            }
        }
    }

    let mut thumb = [0u8; SIZE * SIZE];
    if width == SIZE {
        for (o, &a) in thumb.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
        return thumb;
    }
    for (yy0, out) in (0..SIZE).step_by(ROWS).zip(thumb.chunks_exact_mut(ROWS * SIZE)) {
        for r in 0..ROWS {
            let src = &acc[(yy0 + r) * width..(yy0 + r + 1) * width];
            for (d, &a) in line[r * stride..r * stride + width].iter_mut().zip(src) {
                *d = i16::from(clip8(a));
            }
        }
        // SAFETY: `VNNI` is only set by `resize_avx512`, whose caller guarantees the features.
        unsafe { horizontal::<ROWS, VNNI>(line, stride, horiz, out) };
    }
    thumb
}
