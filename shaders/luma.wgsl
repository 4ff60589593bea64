// Mirrors `pdq::luma`: float32 luma (0.299·R + 0.587·G) + 0.114·B of every pixel into plane_a.
//
// The three products come from `consts[0..768]`, the CPU's tables (`c · v` rounded to float32 for every
// byte value v), so only the two additions happen here, in the reference's order: no multiply is left for
// a driver to fuse with them. A grey byte g is the pixel (g, g, g).
//
// Layout: row-major, unless `params.columns` is set (src/gpu/layout.rs, `RowLayout`): then an image the
// box filter runs on gets its luma plane column by column (pixel (y, x) at x·height + y), so that the first
// horizontal pass, which walks each row with one invocation, reads 32 adjacent rows' samples from adjacent
// addresses at every step (box_rows.wgsl). This pass is fully parallel (one invocation per pixel): it reads
// the pixels in order and lets the stores scatter. A 64 × 64 image, which skips the filter, always keeps
// the row-major layout decimate reads.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(2) var<storage, read> pixels: array<u32>;
@group(0) @binding(3) var<storage, read> consts: array<f32>;
@group(0) @binding(4) var<storage, read_write> plane_a: array<f32>;

fn byte_at(word0: u32, k: u32) -> u32 {
    let w = pixels[word0 + (k >> 2u)];
    return (w >> ((k & 3u) * 8u)) & 0xffu;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = metas[wg.y];
    if ((m.flags & FLAG_PDQ_SKIP) != 0u) {
        return;
    }
    let n = m.width * m.height;
    for (var p = wg.x * 64u + lid; p < n; p += nwg.x * 64u) {
        var y: f32;
        if (m.channels == 3u) {
            let r = byte_at(m.pixel_word, 3u * p);
            let g = byte_at(m.pixel_word, 3u * p + 1u);
            let b = byte_at(m.pixel_word, 3u * p + 2u);
            y = consts[r] + consts[256u + g] + consts[512u + b];
        } else {
            let v = byte_at(m.pixel_word, p);
            y = consts[v] + consts[256u + v] + consts[512u + v];
        }
        if (params.columns == 0u || (m.flags & FLAG_NO_FILTER) != 0u) {
            plane_a[m.plane + p] = y;
        } else {
            let row = p / m.width;
            plane_a[m.plane + (p - row * m.width) * m.height + row] = y;
        }
    }
}
