// Mirrors `pdq::decimate`: samples the filtered plane (plane_a) at the 64 × 64 "target centres" into buf64.
//
// The reference computes row floor((r + 0.5)·h / 64) in double; (r + 0.5)·h and the division by 64 are
// exact in double, so the integer floor((2r + 1)·h / 128) is the same number.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(4) var<storage, read_write> plane_a: array<f32>;
@group(0) @binding(6) var<storage, read_write> buf64: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = metas[wg.y];
    if ((m.flags & FLAG_PDQ_SKIP) != 0u) {
        return;
    }
    // 64 workgroups of 64: workgroup x is output row r, invocation c is output column c.
    let r = wg.x;
    let c = lid;
    let ini = ((2u * r + 1u) * m.height) / 128u;
    let inj = ((2u * c + 1u) * m.width) / 128u;
    buf64[wg.y * 4096u + r * 64u + c] = plane_a[m.plane + ini * m.width + inj];
}
