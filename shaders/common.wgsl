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
    _pad: u32,
}

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
