// Shared declarations, prepended to every stage shader (src/gpu/pipelines.rs and tests/shaders.rs do the
// concatenation; WGSL has no include).
//
// Keep in sync with src/gpu/layout.rs (`Params`, `ImageMeta`): same fields, same order, all 32-bit.

struct Params {
    // Images in this submission (workgroup_id.y indexes them).
    n_images: u32,
    // 1 when the dihedral variants are computed (threshold runs on 8 slots per image), else 0.
    dihedral: u32,
    // 1 when the horizontal box passes read planes stored column by column (sample (y, x) at x·height + y),
    // which luma.wgsl and box_cols.wgsl's first round then write; 0: every plane row-major. Same values
    // either way (src/gpu/layout.rs, `RowLayout`).
    columns: u32,
    // Unused (keeps the struct at 16 bytes, the uniform layout the host writes).
    _pad1: u32,
}

// Binding 0 of both bind groups (PDQ and pHash).
@group(0) @binding(0) var<uniform> params: Params;

struct ImageMeta {
    width: u32,
    height: u32,
    // 1 (grey) or 3 (interleaved RGB) bytes per pixel.
    channels: u32,
    // Index in `pixels` (u32 words) of the image's first byte; images start on a word boundary.
    pixel_word: u32,
    // Index in plane_a / plane_b (f32) of this image's height × width plane.
    plane: u32,
    // Box-filter windows: along rows (from the width) and along columns (from the height).
    win_rows: u32,
    win_cols: u32,
    // FLAG_* bits below.
    flags: u32,
    // pHash: index in `temp` of this image's intermediate image.
    temp: u32,
    // pHash: index in `coeffs` of the horizontal and vertical LANCZOS tables (see src/gpu/layout.rs).
    h_axis: u32,
    v_axis: u32,
    // pHash: distance between consecutive outputs' coefficient runs in those tables.
    h_stride: u32,
    v_stride: u32,
    // pHash, horizontal-first order: the first input row the vertical pass reads and how many it reads.
    span_first: u32,
    span_len: u32,
    _pad: u32,
}

// PDQ stages do nothing for this image (a side below MIN_HASHABLE_DIM; the host answers for it).
const FLAG_PDQ_SKIP: u32 = 1u;
// 64 × 64 input: the reference skips the box filter (decimation is then the identity).
const FLAG_NO_FILTER: u32 = 2u;
// pHash: Pillow runs the vertical pass first for this shape.
const FLAG_VERTICAL_FIRST: u32 = 4u;
// pHash: nothing to do (a zero-sized image).
const FLAG_PHASH_SKIP: u32 = 8u;

// Hash output per image, in u32 words: 8 hashes × 8 words (original, then the 7 dihedral variants in the
// reference's order), then the quality.
const OUT_STRIDE: u32 = 72u;
const OUT_QUALITY: u32 = 64u;

// `s / c` rounded to nearest (ties to even), exactly as the CPU's IEEE division gives it, for any float32 `s`
// and a count `c` in 1..4095 (box windows and 255). Exact whatever the driver does to float arithmetic.
//
// Why not `s / f32(c)`: WGSL and Vulkan allow a division to be off by 2.5 ULP (several drivers multiply by a
// reciprocal), and a last-bit difference in a box-filter output or a quality term can move a hash bit. A
// float quotient corrected afterwards would still lean on the driver's handling of NaN and infinity (zero
// sums) and on a bound on its error; the integer quotient below depends on neither.
//
// s = M·2^E with M normalised to 24 bits, c = C·2^(L−12) with C normalised to 12 bits. The integer quotient
// Q = ⌊M·2^14 / C⌋ (26 or 27 bits) and whether a remainder is left (sticky) come from two short divisions,
// ⌊A / C⌋ with A = M·2^7 < 2^31 and then ⌊(A mod C)·2^7 / C⌋ (`div_step`); Q is then rounded to 24 bits (or
// fewer, for a subnormal quotient) to nearest, ties to even. Mirrored operation for operation by
// `pharos::gpu::model::div_exact`, which the tests compare with IEEE division, also with a deliberately
// wrong reciprocal.
fn div_exact(s: f32, c: u32) -> f32 {
    let bits = bitcast<u32>(s);
    let sign = bits & 0x80000000u;
    let field = (bits >> 23u) & 0xffu;
    var man = bits & 0x7fffffu;
    if ((field == 0u && man == 0u) || field == 255u || c == 1u) {
        return s; // ±0, ±∞ and NaN divide to themselves; so does anything by 1.
    }
    var e: i32;
    if (field == 0u) {
        e = -149; // subnormal
    } else {
        man |= 0x800000u;
        e = i32(field) - 150;
    }
    let lz = countLeadingZeros(man) - 8u;
    man <<= lz;
    e -= i32(lz);
    let l = 32u - countLeadingZeros(c);
    let cn = c << (12u - l);
    // The driver's reciprocal, only ever used as an estimate that `div_step` verifies in integers.
    let rcp = 1.0 / f32(cn);
    let hi = div_step(man << 7u, cn, rcp, 1u << 20u);
    let lo = div_step(hi.y << 7u, cn, rcp, 127u);
    let q = (hi.x << 7u) | lo.x;
    let sticky = lo.y != 0u;
    // s / c = (Q + frac)·2^(e − 2 − l); keep 24 bits of Q.
    var shift = 2u;
    if (q >= 0x4000000u) {
        shift = 3u;
    }
    // Biased exponent of the result if it is normal: Q >> shift has its top bit at 2^23.
    let biased = e - 2 - i32(l) + i32(shift) + 150;
    if (biased < 1) {
        shift += u32(1 - biased); // a subnormal result keeps fewer bits
    }
    if (shift >= 32u) {
        return bitcast<f32>(sign); // below half the smallest subnormal
    }
    var kept = q >> shift;
    let rest = q & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (sticky || (kept & 1u) == 1u))) {
        kept += 1u; // a carry into bit 24 (or into bit 23 of a subnormal) lands in the exponent field
    }
    var out = kept;
    if (biased >= 1) {
        out = (u32(biased - 1) << 23u) + kept;
    }
    return bitcast<f32>(sign | out);
}

// (⌊a / cn⌋, a mod cn) for a < 2^31 (exact in float32: at most 24 significant bits here), 2048 ≤ cn < 4096
// and a quotient at most `max_q`, without an integer division in the usual case: the estimate
// ⌊a · rcp⌋ is off by at most one whenever `rcp` is within a few ULP of 1/cn (Vulkan allows 2.5), and one
// step each way corrects it; if the driver's reciprocal is worse than that, exact integer division decides.
// The checks are integer comparisons on p = q·cn ≤ 2^20·4095 < 2^32, so nothing wraps. Integer division on
// a GPU is a sequence of some twenty instructions; this is a multiply, a conversion and two compares.
fn div_step(a: u32, cn: u32, rcp: f32, max_q: u32) -> vec2<u32> {
    var q = min(u32(f32(a) * rcp), max_q);
    var p = q * cn;
    if (p > a) {
        q -= 1u;
        p -= cn;
    } else if (a - p >= cn) {
        q += 1u;
        p += cn;
    }
    if (p > a || a - p >= cn) {
        q = a / cn;
        p = q * cn;
    }
    return vec2<u32>(q, a - p);
}

// Whether index `x` of an axis of `n` samples is one of decimate's 64 target centres floor((2k + 1)·n / 128)
// (decimate.wgsl). The smallest k with (2k + 1)·n ≥ 128·x is ceil(128·x / n) / 2; x is a centre when that
// k exists and its centre is still below x + 1. Integer arithmetic, exact for any side up to 2^24.
fn is_sampled(x: u32, n: u32) -> bool {
    let k = ((128u * x + n - 1u) / n) / 2u;
    return k < 64u && (2u * k + 1u) * n < 128u * (x + 1u);
}
