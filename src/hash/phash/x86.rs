//! AVX2 and AVX-512 kernels for the pHash thumbnail: the same integer arithmetic as the portable resampler
//! in `phash.rs` (which they are tested against), written with intrinsics because LLVM does not find the
//! shapes that matter on its own:
//! - Pillow's grey conversion straight from interleaved RGB, with byte shuffles and `vpmaddwd` (AVX2, into
//!   `i16` samples) or byte permutes and `vpdpwssd` (AVX-512, into bytes);
//! - the horizontal pass over eight rows at once, so each coefficient vector loaded serves eight rows: with
//!   AVX2 as `vpmaddwd` on aligned `i16` samples with each coefficient in one 16-bit piece, plus a second
//!   piece for the few around the kernel's peak, with AVX-512 VNNI as `vpdpbusd` on the grey bytes
//!   themselves and three 8-bit pieces (64 products per instruction);
//! - both vertical passes as whole-row vector multiply-adds.
//!
//! Integer sums do not depend on the order of their terms, and every sum here is taken modulo 2^32 exactly
//! like the portable code's wrapping sums, so the bytes are identical, not merely close.

use super::{clip8, luma, vertical_first_order, Axis, Scratch, LANES, PRECISION_BITS, SIZE, SPLIT_BITS};
use crate::pixels::{ImageView, Pixels};
use std::arch::x86_64::*;

/// Rows the horizontal pass filters side by side: each coefficient vector loaded serves this many rows.
/// Both passes run all eight in one sweep (the AVX2 one keeps a single accumulator per row, see
/// [`horizontal_rows`]). For wide images the coefficients outgrow the L1 cache (96 KB at 4000 pixels), so
/// fewer sweeps per row matter most there.
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

/// `R` rows of `width` samples each, `stride` apart, starting on a 32-byte boundary inside `line` (grown as
/// needed): the layout [`horizontal_rows`] loads aligned. Each row is followed by at least `LANES` samples
/// of padding, which the last vector of a run may read (their coefficients are zero).
fn aligned_rows(line: &mut Vec<i16>, rows: usize, width: usize) -> (&mut [i16], usize) {
    let stride = width.next_multiple_of(LANES) + LANES;
    line.resize(rows * stride + LANES, 0);
    let start = line.as_ptr().align_offset(32);
    (&mut line[start..start + rows * stride], stride)
}

/// Pillow's `rgb2l` for one row: interleaved RGB `src` to grey samples widened to `i16` in `out`.
///
/// Pillow computes `(19595·R + 38470·G + 7471·B + 2^15) >> 16`. 38470 does not fit a signed 16-bit
/// multiplier, so the green weight is split in two halves of 19235, one paired with red and one with blue:
/// `vpmaddwd` on the word pairs `(R, G)` and `(G, B)` gives `19595·R + 19235·G` and `19235·G + 7471·B`, whose
/// sum is Pillow's exactly (all terms are non-negative and the total is below 2^31).
///
/// The kernel is bound by the two shuffle pipes of AMD Zen 3 (byte shuffles, shifts, packs and lane
/// inserts all run there; `vpermq` takes more than a cycle), so it avoids them where it can: each 128-bit
/// lane's four pixels come from plain 32-byte loads joined by a blend (any pipe), chosen so that a vector
/// holds pixels 0..4 and 8..12 and its partner 4..8 and 12..16, and the grey bytes (byte 2 of each rounded
/// sum) are picked into words with one byte shuffle per vector and an OR, which leaves them in pixel order.
/// The four loads of a group stay within its 48 bytes, so the last group of a row is one more group,
/// shifted back to end with the row.
///
/// With `PREFETCH` each step also prefetches the input [`PREFETCH_AHEAD`] bytes on, for images that come
/// from DRAM (see [`PREFETCH_FROM`]).
#[target_feature(enable = "avx2")]
fn grey_row_rgb<const PREFETCH: bool>(src: &[u8], out: &mut [i16]) {
    let n = out.len();
    assert!(src.len() >= 3 * n, "an RGB row of {n} pixels");
    // Four pixels in 12 bytes of each 128-bit lane, from byte `at` of the lane, as (R, G) or (G, B) word
    // pairs; Z zeroes the high byte of each word.
    const Z: i8 = -128;
    // The low lane's pixels always start at its byte 0, the high lane's at byte `high`.
    let pairs = |high: i8, second: i8| {
        let lane = |at: i8| {
            let c = |i: i8| at + i + second;
            _mm_setr_epi8(c(0), Z, c(1), Z, c(3), Z, c(4), Z, c(6), Z, c(7), Z, c(9), Z, c(10), Z)
        };
        _mm256_set_m128i(lane(high), lane(0))
    };
    // Pixels 0..4 | 8..12 lie at byte 0 of both lanes of their vector; pixels 4..8 | 12..16 at byte 0 of the
    // low lane and byte 4 of the high one (see `group`).
    let (rg_a, gb_a) = (pairs(0, 0), pairs(0, 1));
    let (rg_b, gb_b) = (pairs(4, 0), pairs(4, 1));
    // Byte 2 of each 32-bit lane, as words 0..4 (first) or 4..8 (second) of the 128-bit lane.
    let first = _mm256_broadcastsi128_si256(_mm_setr_epi8(2, Z, 6, Z, 10, Z, 14, Z, Z, Z, Z, Z, Z, Z, Z, Z));
    let second = _mm256_broadcastsi128_si256(_mm_setr_epi8(Z, Z, Z, Z, Z, Z, Z, Z, 2, Z, 6, Z, 10, Z, 14, Z));
    let w_rg = _mm256_set1_epi32((19235 << 16) | 19595);
    let w_gb = _mm256_set1_epi32((7471 << 16) | 19235);
    let half = _mm256_set1_epi32(1 << 15);
    // Rounded sums (grey in byte 2) of the pixels in `v`, picked by the masks `rg` and `gb`.
    let sums = |v: __m256i, rg: __m256i, gb: __m256i| {
        let sum = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_shuffle_epi8(v, rg), w_rg),
            _mm256_madd_epi16(_mm256_shuffle_epi8(v, gb), w_gb),
        );
        _mm256_add_epi32(sum, half)
    };
    // The sixteen grey words of the pixels at byte `at` of `src`, in order.
    let group = |at: usize| {
        let g = &src[at..at + 48];
        // SAFETY: the loads at 0, 8, 12 and 16 read 32 bytes each, all within the 48 of `g`.
        let (a, b) = unsafe {
            let load = |i: usize| _mm256_loadu_si256(g.as_ptr().add(i).cast());
            // The low lane of the load at 0 and the high lane of the load at 8: bytes 0..16 | 24..40.
            let a = _mm256_blend_epi32::<0xf0>(load(0), load(8));
            // Bytes 12..28 | 32..48, the second lane's pixels from its byte 4.
            let b = _mm256_blend_epi32::<0xf0>(load(12), load(16));
            (a, b)
        };
        let (a, b) = (sums(a, rg_a, gb_a), sums(b, rg_b, gb_b));
        _mm256_or_si256(_mm256_shuffle_epi8(a, first), _mm256_shuffle_epi8(b, second))
    };
    let p = src.as_ptr();
    let mut i = 0;
    while i + 16 <= n {
        if PREFETCH {
            // A hint only: it never faults, so reaching past the end of the image is harmless.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(3 * i + PREFETCH_AHEAD).cast());
        }
        let words = group(3 * i);
        // SAFETY: i + 16 <= out.len().
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), words) };
        i += 16;
    }
    if i < n && n >= 16 {
        // The last 16 pixels again, overlapping the groups before (they get the same values).
        let words = group(3 * (n - 16));
        // SAFETY: n - 16 + 16 <= out.len().
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(n - 16).cast(), words) };
    } else {
        for (d, px) in out[i..].iter_mut().zip(src[3 * i..].chunks_exact(3)) {
            *d = i16::from(luma(px[0], px[1], px[2]));
        }
    }
}

/// How far ahead of its position [`grey_row_rgb`] prefetches: about a DRAM latency's worth of input at the
/// loop's pace (some 100 ns, or 50 steps of 48 bytes).
const PREFETCH_AHEAD: usize = 2560;

/// The RGB image size from which [`grey_row_rgb`] prefetches. A 12 MP image (36 MB) comes from DRAM, and
/// each block of rows is read in a burst between horizontal passes, faster than the hardware prefetchers
/// bring it in alone: prefetching took 12 MP from 3.9–4.2 ms to 2.9–3.1 on AMD Zen 3. An image that stays
/// in the last-level cache (1 MP is 3 MB) gains nothing from it and pays the instruction.
const PREFETCH_FROM: usize = 8 << 20;

/// Pillow's `rgb2l` for one row with AVX-512, into bytes: the same sums as [`grey_row_rgb`], sixteen pixels
/// (48 bytes, one masked load) per vector. Two byte permutes (`vpermb`, zero-masking the high bytes) gather
/// the `(R, G)` and `(G, B)` word pairs, and both multiply-adds accumulate onto the rounding constant with
/// `vpdpwssd`. The rounded sum is below 2^24, so the grey value is simply byte 2 of each 32-bit lane: for
/// 64 pixels, two two-source byte permutes and a blend pick those out of four vectors of sums, in pixel
/// order, instead of shifting and narrowing each vector.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
fn grey_bytes_rgb_vbmi(src: &[u8], out: &mut [u8]) {
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
    // Opaque to the optimiser: knowing the indices, LLVM rewrites each zero-masked `vpermb` (one uop) as a
    // two-source `vpermt2b` from a zero vector plus a register copy.
    let (rg, gb) = (std::hint::black_box(index(0)), std::hint::black_box(index(1)));
    // Byte q of each 32-byte half: byte 2 of lane q of the first source (q < 16) or of the second.
    let third_bytes = {
        let mut idx = [0u8; 64];
        for (p, i) in idx.iter_mut().enumerate() {
            let q = (p % 32) as u8;
            *i = if q < 16 { 4 * q + 2 } else { 64 + 4 * (q - 16) + 2 };
        }
        // SAFETY: 64 readable bytes.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    };
    let low_bytes: __mmask64 = 0x5555_5555_5555_5555;
    let w_rg = _mm512_set1_epi32((19235 << 16) | 19595);
    let w_gb = _mm512_set1_epi32((7471 << 16) | 19235);
    let half = _mm512_set1_epi32(1 << 15);
    // Pillow's rounded sums (grey << 16 plus a remainder) of the sixteen pixels from pixel `i`.
    let sums = |i: usize| {
        // SAFETY: callers keep i + 16 <= n, so bytes 3i..3i + 48 are in `src`; the mask loads only those.
        let v = unsafe { _mm512_maskz_loadu_epi8((1 << 48) - 1, src.as_ptr().add(3 * i).cast()) };
        let acc = _mm512_dpwssd_epi32(half, _mm512_maskz_permutexvar_epi8(low_bytes, rg, v), w_rg);
        _mm512_dpwssd_epi32(acc, _mm512_maskz_permutexvar_epi8(low_bytes, gb, v), w_gb)
    };
    let mut i = 0;
    while i + 64 <= n {
        let (a, b, c, d) = (sums(i), sums(i + 16), sums(i + 32), sums(i + 48));
        let ab = _mm512_permutex2var_epi8(a, third_bytes, b);
        let cd = _mm512_permutex2var_epi8(c, third_bytes, d);
        // SAFETY: i + 64 <= out.len().
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(i).cast(), _mm512_mask_blend_epi64(0xf0, ab, cd)) };
        i += 64;
    }
    while i + 16 <= n {
        let grey = _mm512_cvtepi32_epi8(_mm512_srli_epi32::<16>(sums(i)));
        // SAFETY: i + 16 <= out.len().
        unsafe { _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), grey) };
        i += 16;
    }
    for (d, px) in out[i..].iter_mut().zip(src[3 * i..].chunks_exact(3)) {
        *d = luma(px[0], px[1], px[2]);
    }
}

/// Row `y` of `img` in grey bytes: the image's own row if it is grey, else converted into `buf`
/// (`img.width` bytes).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL, VNNI and VBMI.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
unsafe fn grey_bytes<'a>(img: ImageView<'a>, y: usize, buf: &'a mut [u8]) -> &'a [u8] {
    let width = img.width as usize;
    match img.pixels {
        Pixels::Gray(p) => &p[y * width..(y + 1) * width],
        Pixels::Rgb(p) => {
            grey_bytes_rgb_vbmi(&p[3 * y * width..3 * (y + 1) * width], &mut buf[..width]);
            &buf[..width]
        }
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
#[target_feature(enable = "avx2")]
fn grey_row(img: ImageView<'_>, y: usize, out: &mut [i16]) {
    let width = img.width as usize;
    match img.pixels {
        Pixels::Gray(p) => grey_row_gray(&p[y * width..(y + 1) * width], out),
        Pixels::Rgb(p) => {
            let row = &p[3 * y * width..3 * (y + 1) * width];
            if p.len() >= PREFETCH_FROM {
                grey_row_rgb::<true>(row, out)
            } else {
                grey_row_rgb::<false>(row, out)
            }
        }
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
/// `LANES - 1` more, whose coefficients are zero), and its 32 outputs go to `out[r·32..]`. Rows should start
/// on 32-byte boundaries: every sample load is then aligned (see `Axis::hi`).
///
/// Per output, `Σ s·k` is split as `2^15·Σ s·hi + Σ s·lo` (see `Axis::hi`). The `hi` sum runs first, over
/// its short window only, and is shifted in place; the `lo` products then accumulate onto it, so a row
/// needs one accumulator (lane by lane the shift is the same modulo 2^32 as shifting the total), and eight
/// rows fit AVX2's sixteen registers with the coefficients. With eight rows the eight sums of an output are
/// reduced together ([`reduce8_avx2`]) and rounded as one vector.
#[target_feature(enable = "avx2")]
fn horizontal_rows<const R: usize>(lines: &[i16], stride: usize, axis: &Axis, out: &mut [u8]) {
    assert!(out.len() >= R * SIZE);
    // Output xx's bytes for rows 0..8 (R == 8), transposed into `out` at the end.
    let mut columns = [0u64; SIZE];
    for xx in 0..SIZE {
        let (first, taps) = axis.words[xx];
        let (start, len) = axis.hi_window[xx];
        let base = xx * axis.word_stride;
        // Everything the loops below read, checked once (the `hi` window lies within the run).
        assert!(start + len <= taps);
        assert!(
            (R - 1) * stride + first + taps <= lines.len() && base + taps <= axis.hi.len().min(axis.lo.len())
        );
        let (hi, lo, s) = (axis.hi[base..].as_ptr(), axis.lo[base..].as_ptr(), lines[first..].as_ptr());
        let mut acc = [_mm256_setzero_si256(); R];
        if len > 0 {
            for j in (start..start + len).step_by(LANES) {
                // SAFETY: j + 16 <= start + len <= taps, covered by the assertions above.
                unsafe {
                    let k = _mm256_loadu_si256(hi.add(j).cast());
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let v = _mm256_loadu_si256(s.add(r * stride + j).cast());
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(v, k));
                    }
                }
            }
            for acc in &mut acc {
                *acc = _mm256_slli_epi32::<{ SPLIT_BITS as i32 }>(*acc);
            }
        }
        for j in (0..taps).step_by(LANES) {
            // SAFETY: j + 16 <= taps, and the assertion above covers every row's `taps` samples.
            unsafe {
                let k = _mm256_loadu_si256(lo.add(j).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let v = _mm256_loadu_si256(s.add(r * stride + j).cast());
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(v, k));
                }
            }
        }
        if R == 8 {
            // Pillow's clip8(2^21 + sum) on the eight sums at once: the shifted sums lie within ±2^9, so
            // the signed pack to words is exact and the unsigned pack to bytes clamps to 0..=255.
            let v = _mm256_add_epi32(reduce8_avx2(&acc[..8]), _mm256_set1_epi32(1 << (PRECISION_BITS - 1)));
            let v = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(v);
            let words = _mm256_packs_epi32(v, v);
            // Bytes 0..4 of each 128-bit half: rows 0..4, then rows 4..8.
            let bytes = _mm256_packus_epi16(words, words);
            let (low, high) =
                (_mm256_extract_epi32::<0>(bytes) as u32, _mm256_extract_epi32::<4>(bytes) as u32);
            columns[xx] = u64::from(low) | u64::from(high) << 32;
        } else {
            for (r, &acc) in acc.iter().enumerate() {
                out[r * SIZE + xx] = clip8((1i32 << (PRECISION_BITS - 1)).wrapping_add(hsum(acc)));
            }
        }
    }
    if R == 8 {
        for (xx, column) in columns.iter().enumerate() {
            for (r, byte) in column.to_le_bytes().into_iter().enumerate() {
                out[r * SIZE + xx] = byte;
            }
        }
    }
}

/// The lane sums (modulo 2^32) of eight vectors, in order: pairs of vectors interleaved and added, so each
/// add works for two, then four, then eight of them at once.
#[target_feature(enable = "avx2")]
fn reduce8_avx2(v: &[__m256i]) -> __m256i {
    assert_eq!(v.len(), 8);
    // Per 128-bit half, lanes [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
    let pair =
        |a: __m256i, b: __m256i| _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
    // Per 128-bit half, the four vectors' sums of that half.
    let quad =
        |p: __m256i, q: __m256i| _mm256_add_epi32(_mm256_unpacklo_epi64(p, q), _mm256_unpackhi_epi64(p, q));
    let q0 = quad(pair(v[0], v[1]), pair(v[2], v[3]));
    let q1 = quad(pair(v[4], v[5]), pair(v[6], v[7]));
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(q0, q1), _mm256_permute2x128_si256::<0x31>(q0, q1))
}

/// Pillow's horizontal pass on `R` rows of grey bytes with AVX-512 VNNI: row `r` is `lines[r·stride..]`, its
/// 32 outputs go to `out[r·32..]`.
///
/// `vpdpbusd` multiplies 64 unsigned samples by 64 signed bytes and adds each group of four products into
/// a 32-bit lane, wrapping. Each coefficient is three signed bytes (`Axis::pieces`), so a row keeps three
/// accumulators whose shifted sum, modulo 2^32, is Pillow's `Σ s·k`; the top piece is multiplied only in
/// the chunks where it is not zero (`Axis::top_chunks`). The last 64 taps of a run are a masked load, so
/// nothing past the run is read and no padding is needed. With eight rows the 24 accumulators and the
/// three coefficient vectors fit AVX-512's 32 registers; the eight sums of an output are reduced together
/// ([`reduce8`]) and rounded as one vector, and the block's 8×32 bytes are transposed into rows at the end.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
fn horizontal_bytes<const R: usize>(lines: &[u8], stride: usize, axis: &Axis, out: &mut [u8]) {
    assert!(out.len() >= R * SIZE);
    let [top, middle, low] = &axis.pieces;
    // Output xx's bytes for rows 0..8 (R == 8), transposed into `out` at the end.
    let mut columns = [0u64; SIZE];
    for xx in 0..SIZE {
        let (xmin, count) = axis.bounds[xx];
        let base = xx * axis.stride;
        // Everything the loop below reads, checked once.
        assert!((R - 1) * stride + xmin + count <= lines.len());
        assert!(base + count <= top.len().min(middle.len()).min(low.len()));
        let (k0, k1, k2) = (top[base..].as_ptr(), middle[base..].as_ptr(), low[base..].as_ptr());
        let s = lines[xmin..].as_ptr();
        let (top_first, top_end) = axis.top_chunks[xx];
        let mut acc = [[_mm512_setzero_si512(); 3]; R];
        for chunk in 0..count.div_ceil(64) {
            let j = 64 * chunk;
            let left = count - j;
            let mask: __mmask64 = if left >= 64 { !0 } else { (1 << left) - 1 };
            // SAFETY: the mask limits every load to j..count, covered by the assertions above; masked-off
            // bytes are neither read nor faulted on.
            unsafe {
                let w1 = _mm512_maskz_loadu_epi8(mask, k1.add(j).cast());
                let w2 = _mm512_maskz_loadu_epi8(mask, k2.add(j).cast());
                if (top_first..top_end).contains(&chunk) {
                    let w0 = _mm512_maskz_loadu_epi8(mask, k0.add(j).cast());
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let v = _mm512_maskz_loadu_epi8(mask, s.add(r * stride + j).cast());
                        acc[0] = _mm512_dpbusd_epi32(acc[0], v, w0);
                        acc[1] = _mm512_dpbusd_epi32(acc[1], v, w1);
                        acc[2] = _mm512_dpbusd_epi32(acc[2], v, w2);
                    }
                } else {
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let v = _mm512_maskz_loadu_epi8(mask, s.add(r * stride + j).cast());
                        acc[1] = _mm512_dpbusd_epi32(acc[1], v, w1);
                        acc[2] = _mm512_dpbusd_epi32(acc[2], v, w2);
                    }
                }
            }
        }
        let sums = acc.map(|[a0, a1, a2]| {
            let a01 = _mm512_add_epi32(_mm512_slli_epi32::<8>(a0), a1);
            _mm512_add_epi32(_mm512_slli_epi32::<8>(a01), a2)
        });
        if R == 8 {
            // Pillow's clip8(2^21 + sum) on the eight sums at once.
            let v = _mm256_add_epi32(reduce8(&sums[..8]), _mm256_set1_epi32(1 << (PRECISION_BITS - 1)));
            let v = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(v);
            let v = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_setzero_si256()), _mm256_set1_epi32(255));
            columns[xx] = _mm_cvtsi128_si64(_mm256_cvtepi32_epi8(v)) as u64;
        } else {
            for (r, &v) in sums.iter().enumerate() {
                out[r * SIZE + xx] =
                    clip8((1i32 << (PRECISION_BITS - 1)).wrapping_add(_mm512_reduce_add_epi32(v)));
            }
        }
    }
    if R == 8 {
        // Eight columns of eight bytes (byte 8i + r: output i, row r) to eight rows of eight.
        let transpose = {
            let mut idx = [0u8; 64];
            for (p, i) in idx.iter_mut().enumerate() {
                *i = (8 * (p % 8) + p / 8) as u8;
            }
            // SAFETY: 64 readable bytes.
            unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
        };
        for (group, columns) in columns.chunks_exact(8).enumerate() {
            let mut rows = [0u64; 8];
            // SAFETY: 8 u64s are 64 readable and writable bytes.
            unsafe {
                let v = _mm512_loadu_si512(columns.as_ptr().cast());
                _mm512_storeu_si512(rows.as_mut_ptr().cast(), _mm512_permutexvar_epi8(transpose, v));
            }
            for (r, row) in rows.iter().enumerate() {
                out[r * SIZE + 8 * group..][..8].copy_from_slice(&row.to_le_bytes());
            }
        }
    }
}

/// The lane sums (modulo 2^32) of eight vectors, in order: three rounds of adding halves, the vectors
/// interleaved so that every add works for two, four, then eight of them at once (about 20 instructions
/// instead of eight separate reductions of ten).
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn reduce8(v: &[__m512i]) -> __m256i {
    assert_eq!(v.len(), 8);
    // 128-bit chunks [a0 + a2, a1 + a3, b0 + b2, b1 + b3] of a pair of vectors.
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b),
        )
    };
    let (p01, p23, p45, p67) = (pair(v[0], v[1]), pair(v[2], v[3]), pair(v[4], v[5]), pair(v[6], v[7]));
    // Chunk c of `quad` holds four partial sums of vector c of the four.
    let quad = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b),
        )
    };
    let (q0, q1) = (quad(p01, p23), quad(p45, p67));
    // Lanes 0 and 1 of chunk c: the sums of vectors c and c + 4.
    let t = _mm512_add_epi32(_mm512_unpacklo_epi32(q0, q1), _mm512_unpackhi_epi32(q0, q1));
    let u = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b01_00_11_10>(t));
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, u))
}

/// `acc[x] += row[x]·k` for a row of bytes (wrapping), sixteen lanes at a time.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn mul_add_row_bytes(acc: &mut [i32], row: &[u8], k: i32) {
    let n = acc.len().min(row.len());
    let kv = _mm512_set1_epi32(k);
    let mut x = 0;
    while x + 16 <= n {
        // SAFETY: x + 16 <= n, within both slices.
        unsafe {
            let s = _mm512_cvtepu8_epi32(_mm_loadu_si128(row.as_ptr().add(x).cast()));
            let a = acc.as_mut_ptr().add(x).cast::<__m512i>();
            _mm512_storeu_si512(a, _mm512_add_epi32(_mm512_loadu_si512(a), _mm512_mullo_epi32(s, kv)));
        }
        x += 16;
    }
    for (a, &s) in acc[x..n].iter_mut().zip(&row[x..n]) {
        *a = a.wrapping_add(i32::from(s) * k);
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

/// Pillow's usual order (see `super::horizontal_first`): grey rows eight at a time through the horizontal
/// pass into a 32-wide intermediate image, then the vertical pass. With `VNNI` the rows are bytes and a grey
/// image's own rows are filtered in place (no copy).
#[target_feature(enable = "avx2")]
fn horizontal_first<const VNNI: bool>(
    img: ImageView<'_>,
    horiz: &Axis,
    vert: &Axis,
    scratch: &mut Scratch,
) -> [u8; SIZE * SIZE] {
    let width = img.width as usize;
    let rows = vert.span();
    let Scratch { line, bytes, temp, .. } = scratch;
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
    } else if VNNI {
        // Grey rows as bytes, ROWS at a time: a grey image's own rows when they are consecutive in it.
        // Converted rows start on cache lines (`stride` bytes apart), so the converter's 64-byte stores
        // never straddle two lines.
        let stride = match img.pixels {
            Pixels::Gray(_) => width,
            Pixels::Rgb(_) => width.next_multiple_of(64),
        };
        bytes.resize(ROWS * stride + 64, 0);
        let start = bytes.as_ptr().align_offset(64);
        let converted = &mut bytes[start..start + ROWS * stride];
        let mut y = rows.start;
        for out in temp.chunks_mut(ROWS * SIZE) {
            let n = out.len() / SIZE;
            let block: &[u8] = match img.pixels {
                Pixels::Gray(p) => &p[y * width..(y + n) * width],
                Pixels::Rgb(_) => {
                    for (r, line) in converted.chunks_exact_mut(stride).take(n).enumerate() {
                        // SAFETY: `VNNI` is only set by `resize_avx512`, whose caller guarantees the features.
                        unsafe { grey_bytes(img, y + r, &mut line[..width]) };
                    }
                    &converted[..n * stride]
                }
            };
            // SAFETY: as above.
            unsafe {
                if n == ROWS {
                    horizontal_bytes::<ROWS>(block, stride, horiz, out);
                } else {
                    for (row, out) in block.chunks(stride).zip(out.chunks_exact_mut(SIZE)) {
                        horizontal_bytes::<1>(&row[..width], width, horiz, out);
                    }
                }
            }
            y += n;
        }
    } else {
        let (lines, stride) = aligned_rows(line, ROWS, width);
        let mut y = rows.start;
        for out in temp.chunks_mut(ROWS * SIZE) {
            let n = out.len() / SIZE;
            for r in 0..n {
                grey_row(img, y + r, &mut lines[r * stride..r * stride + width]);
            }
            if n == ROWS {
                horizontal_rows::<ROWS>(lines, stride, horiz, out);
            } else {
                for (r, out) in out.chunks_exact_mut(SIZE).enumerate() {
                    horizontal_rows::<1>(&lines[r * stride..(r + 1) * stride], stride, horiz, out);
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
    let Scratch { line, bytes, acc, .. } = scratch;
    acc.clear();
    acc.resize(SIZE * width, 1 << (PRECISION_BITS - 1));
    let (lines, stride) = aligned_rows(line, ROWS, width);
    bytes.resize(ROWS * width, 0);
    let mut first_out = 0;
    for y in vert.span() {
        // The row in grey: bytes for the AVX-512 kernels, words for the AVX2 ones.
        let row: &[u8] = if VNNI {
            // SAFETY: `VNNI` is only set by `resize_avx512`, whose caller guarantees the features.
            unsafe { grey_bytes(img, y, &mut bytes[..width]) }
        } else {
            grey_row(img, y, &mut lines[..width]);
            &[]
        };
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
                let acc = &mut acc[yy * width..(yy + 1) * width];
                if VNNI {
                    // SAFETY: as above.
                    unsafe { mul_add_row_bytes(acc, row, k) };
                } else {
                    mul_add_row(acc, &lines[..width], k);
                }
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
    for (rows, out) in acc.chunks_exact(ROWS * width).zip(thumb.chunks_exact_mut(ROWS * SIZE)) {
        if VNNI {
            for (d, &a) in bytes.iter_mut().zip(rows) {
                *d = clip8(a);
            }
            // SAFETY: as above.
            unsafe { horizontal_bytes::<ROWS>(bytes, width, horiz, out) };
        } else {
            for (r, src) in rows.chunks_exact(width).enumerate() {
                for (d, &a) in lines[r * stride..r * stride + width].iter_mut().zip(src) {
                    *d = i16::from(clip8(a));
                }
            }
            horizontal_rows::<ROWS>(lines, stride, horiz, out);
        }
    }
    thumb
}
