// Mirrors `pdq::quality`: Σ |trunc((u − v)·100 / 255)| over vertically and horizontally adjacent pairs of
// the 64 × 64 buffer, divided by 90 and capped at 100. One workgroup per image.
//
// Each term is float32 (a subtraction, a multiply, a division; each `NoContraction` on Vulkan) truncated toward
// zero, as in the reference, the division exact by `div_exact` (common.wgsl); the sum is integer,
// so the order in which the workgroup adds the terms cannot matter.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(6) var<storage, read_write> buf64: array<f32>;
@group(0) @binding(7) var<storage, read_write> hashes: array<u32>;

var<workgroup> partial: array<u32, 256>;

fn term(u: f32, v: f32) -> u32 {
    return u32(abs(i32(div_exact((u - v) * 100.0, 255u))));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = metas[wg.y];
    let base = wg.y * 4096u;
    var sum = 0u;
    if ((m.flags & FLAG_PDQ_SKIP) == 0u) {
        for (var k = lid; k < 4096u; k += 256u) {
            let i = k / 64u;
            let j = k % 64u;
            if (i < 63u) {
                sum += term(buf64[base + k], buf64[base + k + 64u]);
            }
            if (j < 63u) {
                sum += term(buf64[base + k], buf64[base + k + 1u]);
            }
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        hashes[wg.y * OUT_STRIDE + OUT_QUALITY] = min(100u, partial[0] / 90u);
    }
}
