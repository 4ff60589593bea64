// Shared declarations, prepended to every stage shader (src/gpu/pipelines.rs and tests/shaders.rs do the
// concatenation; WGSL has no include).
//
// Keep in sync with src/gpu/layout.rs (`Params`, `ImageMeta`): same fields, same order, all 32-bit.

struct Params {
    // Images in this submission (workgroup_id.y indexes them).
    n_images: u32,
    // 1 when the dihedral variants are computed (threshold runs on 8 slots per image), else 0.
    dihedral: u32,
    // Always 0.0, but only known at run time: adding it to a product stops the driver from contracting
    // `acc + a * b` into a fused multiply-add, which the CPU reference does not do (see dct.wgsl).
    zero: f32,
    // Test hook, 0 in production: ULPs added to every quotient before `div_rn` corrects it, to show that
    // the correction recovers the exactly rounded quotient from an inexact division.
    div_perturb: i32,
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

// `s / c` rounded to nearest (ties to even), as the CPU's IEEE division gives it, for a count `c` (a positive
// integer below 2^12: box windows and 255).
//
// WGSL lets a driver divide to within 2.5 ULP (some divide through a reciprocal); a last-bit difference in
// a box-filter output or a quality term can move a hash bit. So the driver's quotient is only a first
// guess: among it and its neighbours up to 2 ULP away, the nearest to s / c is the one with the smallest
// residual |s − q·c|, computed exactly by `residual`.
fn div_rn(s: f32, c: f32) -> f32 {
    let q0 = bitcast<f32>(bitcast<i32>(s / c) + params.div_perturb);
    let b = bitcast<i32>(q0);
    var best = q0;
    var best_r = bitcast<f32>(0x7f800000u); // +infinity
    for (var k = -2; k <= 2; k++) {
        // A neighbour past zero or infinity is NaN or infinite: its residual never wins.
        let q = bitcast<f32>(b + k);
        let r = abs(residual(s, q, c));
        let tie_to_even = r == best_r && (bitcast<u32>(best) & 1u) == 1u && (bitcast<u32>(q) & 1u) == 0u;
        if (r < best_r || tie_to_even) {
            best = q;
            best_r = r;
        }
    }
    return best;
}

// s − q·c exactly, for c an integer below 2^12 and q within a few ULP of s / c, with plain float32
// operations (fma is not reliably fused: SPIR-V does not promise it, and lavapipe does not fuse it).
// q splits into qh (its top 12 significant bits, by masking) and ql = q − qh (the low 12 bits, exact), so
// qh·c and ql·c are exact products (at most 24 bits); s − qh·c is exact (the two are within a factor of two:
// Sterbenz), and so is the last subtraction, whose result, the true residual, is representable. Exact
// products also make contraction into FMA harmless here.
fn residual(s: f32, q: f32, c: f32) -> f32 {
    let qh = bitcast<f32>(bitcast<u32>(q) & 0xfffff000u);
    let ql = q - qh;
    return (s - qh * c) - ql * c;
}
