//! A CPU model of the shaders' float arithmetic under the liberties a GPU driver may take, to show without a
//! GPU which stages a fusing, reassociating or reciprocal-dividing compiler would break, and that the
//! shaders as written now leave it nothing to break.
//!
//! Each stage is written twice, as the shaders computed it:
//! - [`Formulation::Before`]: the WGSL translated by wgpu (no `NoContraction`), so every liberty applies:
//!   luma's two additions and the box filter's running `(sum + x) − y` may be reassociated, the DCT's
//!   `acc + (d·a + zero)` may lose its run-time zero (no-signed-zeros) and become one FMA, the division
//!   may be a multiplication by a reciprocal, and `div_rn`'s NaN/∞ guards may be compiled as if neither
//!   existed.
//! - [`Formulation::Now`]: every float `+ − ×` is `NoContraction` (`spirv`), which forbids all of the above,
//!   so those operations are modelled as the plain IEEE operations the reference performs; division is
//!   [`div_exact_with`], the mirror of `div_exact` in `shaders/common.wgsl`, fed the driver's (possibly
//!   sloppy) reciprocal as its estimate, which its integer checks correct whatever it is.
//!
//! `tests/exactness.rs` runs both over the corpus and the stress images and compares each stage with the
//! CPU reference. Not part of the hashing API.

use crate::hash::pdq::{self, box_cols, box_rows, decimate, window_size, MIN_HASHABLE_DIM};
use crate::hash::Hash256;
use crate::pixels::{ImageView, Pixels};

/// What a driver may do to float arithmetic that is not decorated `NoContraction`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Liberties {
    /// Contract `a·b + c` into one fused multiply-add (one rounding instead of two).
    pub fuse: bool,
    /// Reassociate sums (`(a + b) + c` → `a + (b + c)`), drop `+ 0.0` (no signed zeros), split long
    /// accumulations into partial sums.
    pub reassociate: bool,
    /// Divide by multiplying with a rounded reciprocal.
    pub reciprocal: bool,
    /// Divide as badly as Vulkan allows: 2.5 ULP below the true quotient (which, just above a power of two,
    /// is five steps of the binade below).
    pub sloppy_division: bool,
    /// Compile comparisons as if no operand were NaN or infinite (`a < b` as `!(a >= b)`).
    pub no_nans: bool,
}

impl Liberties {
    /// The liberties one at a time, then all together (AMD's and Metal's fast-math defaults are close to
    /// "all").
    pub fn worst_cases() -> [(&'static str, Liberties); 6] {
        let none = Liberties::default();
        [
            ("fused multiply-add", Liberties { fuse: true, ..none }),
            ("reassociation", Liberties { reassociate: true, ..none }),
            ("reciprocal division", Liberties { reciprocal: true, ..none }),
            ("division 2.5 ULP low", Liberties { sloppy_division: true, ..none }),
            ("no-NaN comparisons", Liberties { no_nans: true, ..none }),
            (
                "all together",
                Liberties {
                    fuse: true,
                    reassociate: true,
                    reciprocal: false,
                    sloppy_division: true,
                    no_nans: true,
                },
            ),
        ]
    }
}

/// Which shaders are modelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Formulation {
    /// The shaders before pinning: WGSL through wgpu, `div_rn` correcting the driver's quotient.
    Before,
    /// The shaders now: `NoContraction` SPIR-V and integer division.
    Now,
}

/// `s / c` rounded to nearest, ties to even, for `c` in 1..4096: the mirror of `div_exact` in
/// `shaders/common.wgsl`, operation for operation (same names), so that testing it against IEEE division
/// tests the shader's algorithm. The reciprocal is the correctly rounded one; [`div_exact_with`] takes the
/// driver's.
pub fn div_exact(s: f32, c: u32) -> f32 {
    div_exact_with(s, c, |cn| 1.0 / cn as f32)
}

/// [`div_exact`] with the driver's `1.0 / f32(cn)` given by `rcp`: the shader uses it only as an estimate
/// that integer arithmetic verifies, so the quotient is the same for any reciprocal at all (the tests pass
/// ones several ULP off, zero, infinity and NaN).
pub fn div_exact_with(s: f32, c: u32, rcp: impl Fn(u32) -> f32) -> f32 {
    let bits = s.to_bits();
    let sign = bits & 0x8000_0000;
    let field = (bits >> 23) & 0xff;
    let mut man = bits & 0x7f_ffff;
    if (field == 0 && man == 0) || field == 255 || c == 1 {
        return s;
    }
    let mut e: i32;
    if field == 0 {
        e = -149;
    } else {
        man |= 0x80_0000;
        e = field as i32 - 150;
    }
    let lz = man.leading_zeros() - 8;
    man <<= lz;
    e -= lz as i32;
    let l = 32 - c.leading_zeros();
    let cn = c << (12 - l);
    let rcp = rcp(cn);
    let (hi_q, hi_r) = div_step(man << 7, cn, rcp, 1 << 20);
    let (lo_q, lo_r) = div_step(hi_r << 7, cn, rcp, 127);
    let q = (hi_q << 7) | lo_q;
    let sticky = lo_r != 0;
    let mut shift = if q >= 0x400_0000 { 3u32 } else { 2 };
    let biased = e - 2 - l as i32 + shift as i32 + 150;
    if biased < 1 {
        shift += (1 - biased) as u32;
    }
    if shift >= 32 {
        return f32::from_bits(sign);
    }
    let mut kept = q >> shift;
    let rest = q & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    if rest > half || (rest == half && (sticky || kept & 1 == 1)) {
        kept += 1;
    }
    let out = if biased >= 1 { ((biased - 1) as u32 * (1 << 23)) + kept } else { kept };
    f32::from_bits(sign | out)
}

/// The mirror of `div_step` (common.wgsl): `(⌊a / cn⌋, a mod cn)` from the estimate `⌊a·rcp⌋`, corrected
/// by one step each way, else by integer division. `as u32` saturates (NaN gives 0) where WGSL's
/// conversion clamps; either way some u32 that the checks then verify.
fn div_step(a: u32, cn: u32, rcp: f32, max_q: u32) -> (u32, u32) {
    let mut q = ((a as f32 * rcp) as u32).min(max_q);
    let mut p = q * cn;
    if p > a {
        q -= 1;
        p -= cn;
    } else if a - p >= cn {
        q += 1;
        p += cn;
    }
    if p > a || a - p >= cn {
        q = a / cn;
        p = q * cn;
    }
    (q, a - p)
}

/// The shaders' division of a float sum by a count, in `f` under `lib`.
fn divide(s: f32, c: u32, f: Formulation, lib: Liberties) -> f32 {
    match f {
        Formulation::Now => div_exact_with(s, c, |cn| driver_divide(1.0, cn as f32, lib)),
        Formulation::Before => div_rn_before(s, c as f32, lib),
    }
}

/// A float division `s / c` as a driver under `lib` may compute it.
fn driver_divide(s: f32, c: f32, lib: Liberties) -> f32 {
    if lib.sloppy_division {
        let exact = f64::from(s) / f64::from(c);
        let rounded = s / c;
        let ulp = f64::from(f32::from_bits(rounded.to_bits() & 0x7f80_0000)) * f64::from(f32::EPSILON);
        (exact - exact.signum() * 2.5 * ulp) as f32
    } else if lib.reciprocal {
        s * (1.0 / c)
    } else {
        s / c
    }
}

/// `div_rn` as the shaders had it: the driver's quotient, then the best of it and its neighbours up to 2 ULP
/// away by exact residual, with +∞ as the first "best" residual and NaN residuals for neighbours past zero.
fn div_rn_before(s: f32, c: f32, lib: Liberties) -> f32 {
    let q0 = driver_divide(s, c, lib);
    // A compiler that assumes no NaNs may evaluate `a < b` as `!(a >= b)`, which is true for a NaN `a`.
    #[allow(clippy::neg_cmp_op_on_partial_ord, reason = "the NaN-blind comparison is the point")]
    let less = |a: f32, b: f32| if lib.no_nans { !(a >= b) } else { a < b };
    let b = q0.to_bits() as i32;
    let mut best = q0;
    let mut best_r = f32::INFINITY;
    for k in -2..=2 {
        let q = f32::from_bits(b.wrapping_add(k) as u32);
        let r = residual_before(s, q, c, lib).abs();
        let tie_to_even = r == best_r && best.to_bits() & 1 == 1 && q.to_bits() & 1 == 0;
        if less(r, best_r) || tie_to_even {
            best = q;
            best_r = r;
        }
    }
    best
}

/// `s − q·c` as `(s − qh·c) − ql·c`; a reassociating driver may compute `s − (qh·c + ql·c)`.
fn residual_before(s: f32, q: f32, c: f32, lib: Liberties) -> f32 {
    let qh = f32::from_bits(q.to_bits() & 0xffff_f000);
    let ql = q - qh;
    if lib.reassociate {
        s - (qh * c + ql * c)
    } else {
        (s - qh * c) - ql * c
    }
}

/// Luma of every pixel (`pdq::luma`'s values): the tables' products, then two additions.
pub fn luma(img: ImageView<'_>, f: Formulation, lib: Liberties, out: &mut [f32]) {
    let t = pdq::luma_tables();
    let reassoc = f == Formulation::Before && lib.reassociate;
    let y = |r: u8, g: u8, b: u8| {
        let (r, g, b) = (t[0][r as usize], t[1][g as usize], t[2][b as usize]);
        if reassoc {
            r + (g + b)
        } else {
            (r + g) + b
        }
    };
    match img.pixels {
        Pixels::Rgb(px) => {
            for (o, p) in out.iter_mut().zip(px.chunks_exact(3)) {
                *o = y(p[0], p[1], p[2]);
            }
        }
        Pixels::Gray(px) => {
            for (o, &v) in out.iter_mut().zip(px) {
                *o = y(v, v, v);
            }
        }
    }
}

/// One box filter run (`box_rows.wgsl`'s loop) over `n` samples at stride `step`.
fn box_run(
    input: &[f32],
    out: &mut [f32],
    n: usize,
    step: usize,
    win: usize,
    f: Formulation,
    lib: Liberties,
) {
    let half = (win + 2) / 2;
    let reassoc = f == Formulation::Before && lib.reassociate;
    let (mut sum, mut count, mut li, mut ri, mut oi) = (0f32, 0u32, 0, 0, 0);
    for _ in 0..half - 1 {
        sum += input[ri * step];
        count += 1;
        ri += 1;
    }
    for _ in 0..win + 1 - half {
        sum += input[ri * step];
        count += 1;
        out[oi * step] = divide(sum, count, f, lib);
        ri += 1;
        oi += 1;
    }
    for _ in win..n {
        let (x, y) = (input[ri * step], input[li * step]);
        sum = if reassoc { sum + (x - y) } else { (sum + x) - y };
        out[oi * step] = divide(sum, count, f, lib);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..half - 1 {
        sum -= input[li * step];
        count -= 1;
        out[oi * step] = divide(sum, count, f, lib);
        li += 1;
        oi += 1;
    }
}

/// `box_rows.wgsl` in the model (mirrors `pdq::box_rows`).
pub fn model_box_rows(
    input: &[f32],
    out: &mut [f32],
    h: usize,
    w: usize,
    win: usize,
    f: Formulation,
    lib: Liberties,
) {
    for r in 0..h {
        box_run(&input[r * w..(r + 1) * w], &mut out[r * w..(r + 1) * w], w, 1, win, f, lib);
    }
}

/// `box_cols.wgsl` in the model (mirrors `pdq::box_cols`).
pub fn model_box_cols(
    input: &[f32],
    out: &mut [f32],
    h: usize,
    w: usize,
    win: usize,
    f: Formulation,
    lib: Liberties,
) {
    for c in 0..w {
        box_run(&input[c..], &mut out[c..], h, w, win, f, lib);
    }
}

/// `quality.wgsl` in the model (mirrors `pdq::quality`).
pub fn model_quality(buf: &[f32; 4096], f: Formulation, lib: Liberties) -> u32 {
    let term =
        |u: f32, v: f32| -> u64 { (divide((u - v) * 100.0, 255, f, lib) as i32).unsigned_abs().into() };
    let mut sum = 0u64;
    for k in 0..4096 {
        let (i, j) = (k / 64, k % 64);
        if i < 63 {
            sum += term(buf[k], buf[k + 64]);
        }
        if j < 63 {
            sum += term(buf[k], buf[k + 1]);
        }
    }
    (sum / 90).min(100) as u32
}

/// One dot product of the DCT: Σ_k x[k]·y[k] in index order, as the shader's loop writes it.
fn dot(x: impl Iterator<Item = (f32, f32)>, f: Formulation, lib: Liberties) -> f32 {
    let liberties = f == Formulation::Before;
    // Before: `acc = acc + (d * a + zero)`. Fusing alone gives fma(d, a, 0) = the rounded product, so the
    // zero protects; reassociation without signed zeros removes `+ 0` and exposes `acc + d * a`, which then
    // fuses; reassociation alone may split the sum into partial sums (as a vectorising compiler does).
    let fuse = liberties && lib.fuse && lib.reassociate;
    let split = liberties && lib.reassociate;
    let mut acc = [0f32; 4];
    for (k, (a, b)) in x.enumerate() {
        let lane = if split { k % 4 } else { 0 };
        acc[lane] = if fuse { a.mul_add(b, acc[lane]) } else { acc[lane] + a * b };
    }
    if split {
        (acc[0] + acc[1]) + (acc[2] + acc[3])
    } else {
        acc[0]
    }
}

/// `dct.wgsl` in the model (mirrors `pdq::dct`): B = D · A · Dᵀ.
pub fn model_dct(a: &[f32; 4096], f: Formulation, lib: Liberties) -> [f32; 256] {
    let d = pdq::dct_matrix();
    let mut t = [0f32; 1024];
    for (o, v) in t.iter_mut().enumerate() {
        let (i, j) = (o / 64, o % 64);
        *v = dot((0..64).map(|k| (d[i][k], a[k * 64 + j])), f, lib);
    }
    let mut b = [0f32; 256];
    for (o, v) in b.iter_mut().enumerate() {
        let (i, j) = (o / 16, o % 16);
        *v = dot((0..64).map(|k| (t[i * 64 + k], d[j][k])), f, lib);
    }
    b
}

/// What one image gives in the model: every stage's output, for comparison with the CPU reference's.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRun {
    /// After luma.
    pub luma: Vec<f32>,
    /// After the four box passes (rows, cols, rows, cols).
    pub filtered: Vec<f32>,
    /// The 64 × 64 decimation.
    pub buf64: Vec<f32>,
    /// Quality.
    pub quality: u32,
    /// The 16 × 16 DCT.
    pub dct: Vec<f32>,
    /// The PDQ hash.
    pub hash: Hash256,
}

/// Runs the whole PDQ of `img` in the model. `None` below PDQ's minimum size (nothing is computed there).
pub fn run(img: ImageView<'_>, f: Formulation, lib: Liberties) -> Option<ModelRun> {
    if img.width < MIN_HASHABLE_DIM || img.height < MIN_HASHABLE_DIM {
        return None;
    }
    let (h, w) = (img.height as usize, img.width as usize);
    let mut luma_out = vec![0f32; h * w];
    luma(img, f, lib, &mut luma_out);
    let mut buf64 = [0f32; 4096];
    let filtered = if h == 64 && w == 64 {
        buf64.copy_from_slice(&luma_out);
        luma_out.clone()
    } else {
        let (wr, wc) = (window_size(w), window_size(h));
        let mut a = luma_out.clone();
        let mut b = vec![0f32; h * w];
        for _ in 0..2 {
            model_box_rows(&a, &mut b, h, w, wr, f, lib);
            model_box_cols(&b, &mut a, h, w, wc, f, lib);
        }
        decimate(&a, h, w, &mut buf64);
        a
    };
    let quality = model_quality(&buf64, f, lib);
    let dct = model_dct(&buf64, f, lib);
    Some(ModelRun {
        luma: luma_out,
        filtered,
        buf64: buf64.to_vec(),
        quality,
        dct: dct.to_vec(),
        hash: pdq::threshold(&dct),
    })
}

/// The same stages by the CPU reference's own functions (`pdq::luma`, `box_rows`, `box_cols`, …), which
/// the model's outputs are compared with.
pub fn reference(img: ImageView<'_>) -> Option<ModelRun> {
    if img.width < MIN_HASHABLE_DIM || img.height < MIN_HASHABLE_DIM {
        return None;
    }
    let (h, w) = (img.height as usize, img.width as usize);
    let mut luma_out = vec![0f32; h * w];
    pdq::luma(img, &mut luma_out);
    let mut buf64 = [0f32; 4096];
    let filtered = if h == 64 && w == 64 {
        buf64.copy_from_slice(&luma_out);
        luma_out.clone()
    } else {
        let (wr, wc) = (window_size(w), window_size(h));
        let mut a = luma_out.clone();
        let mut b = vec![0f32; h * w];
        let mut sums = vec![0f32; w];
        for _ in 0..2 {
            box_rows(&a, &mut b, h, w, wr);
            box_cols(&b, &mut a, h, w, wc, &mut sums);
        }
        decimate(&a, h, w, &mut buf64);
        a
    };
    let dct = pdq::dct(&buf64);
    Some(ModelRun {
        luma: luma_out,
        filtered,
        buf64: buf64.to_vec(),
        quality: pdq::quality(&buf64),
        dct: dct.to_vec(),
        hash: pdq::threshold(&dct),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SplitMix64;

    fn check(s: f32, c: u32) {
        let want = s / c as f32;
        let got = div_exact(s, c);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{s:e} ({:#x}) / {c}: got {got:e}, want {want:e}",
            s.to_bits()
        );
    }

    #[test]
    fn div_exact_equals_ieee_division_on_every_count_and_hard_dividends() {
        let mut rng = SplitMix64::new(11);
        for c in 1..4096u32 {
            // Multiples of c (exact quotients), values next to powers of two, small integers, zero, the
            // subnormal range, and random bit patterns across every exponent.
            let mut dividends =
                vec![0.0, -0.0, f32::MIN_POSITIVE, f32::from_bits(1), f32::from_bits(0x7f_ffff), f32::MAX];
            for k in [1u32, 2, 3, 5, 255, 1 << 20] {
                dividends.push((c * k.min(4096)) as f32);
            }
            for p in [-140i32, -126, -20, -1, 0, 1, 8, 12, 20, 23, 24, 60, 127] {
                // 2^p, built from bits (subnormal below 2^-126).
                let x = if p >= -126 {
                    f32::from_bits(((p + 127) as u32) << 23)
                } else {
                    f32::from_bits(1 << (p + 149))
                };
                dividends.extend([x, f32::from_bits(x.to_bits() - 1), f32::from_bits(x.to_bits() + 1)]);
            }
            for _ in 0..64 {
                let bits = rng.next_u64() as u32 & 0x7fff_ffff;
                if bits >> 23 != 0xff {
                    dividends.push(f32::from_bits(bits));
                }
                dividends.push((rng.below(1 << 24) as f32) / 64.0);
            }
            for s in dividends {
                check(s, c);
                check(-s, c);
            }
        }
    }

    /// The reciprocal is only an estimate: a correctly rounded one, ones a few ULP off either way (Vulkan
    /// allows 2.5), and useless ones (zero, negative, infinite, NaN, off by a factor) all give IEEE's
    /// quotient, on every count and a spread of dividends.
    #[test]
    fn div_exact_is_exact_whatever_the_drivers_reciprocal() {
        type Reciprocal = fn(u32) -> f32;
        let wrong: [(&str, Reciprocal); 9] = [
            ("exact", |cn| 1.0 / cn as f32),
            ("3 ulp low", |cn| f32::from_bits((1.0 / cn as f32).to_bits() - 3)),
            ("3 ulp high", |cn| f32::from_bits((1.0 / cn as f32).to_bits() + 3)),
            ("f64 truncated", |cn| (1.0 / f64::from(cn)) as f32),
            ("zero", |_| 0.0),
            ("negative", |cn| -1.0 / cn as f32),
            ("infinite", |_| f32::INFINITY),
            ("NaN", |_| f32::NAN),
            ("2× too big", |cn| 2.0 / cn as f32),
        ];
        let mut rng = SplitMix64::new(12);
        for c in 1..4096u32 {
            let mut dividends =
                vec![f32::MIN_POSITIVE, f32::from_bits(1), f32::MAX, c as f32, (c * 3) as f32];
            for _ in 0..8 {
                let bits = rng.next_u64() as u32 & 0x7f7f_ffff;
                dividends.push(f32::from_bits(bits));
                dividends.push(rng.below(1 << 24) as f32 / 64.0);
            }
            for s in dividends {
                let want = s / c as f32;
                for (name, rcp) in wrong {
                    let got = div_exact_with(s, c, rcp);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{s:e} / {c} with a {name} reciprocal: {got:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn div_exact_equals_ieee_division_on_every_mantissa_for_some_counts() {
        // Every mantissa of one binade (2^23 dividends) for the counts where rounding is hardest to get right:
        // the window sizes of common widths and 255 (quality).
        for c in [3u32, 7, 10, 255] {
            for m in 0..(1u32 << 23) {
                let s = f32::from_bits((127 << 23) | m);
                let want = s / c as f32;
                assert_eq!(div_exact(s, c).to_bits(), want.to_bits(), "{s:e} / {c}");
            }
        }
    }
}
