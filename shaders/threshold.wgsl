// Mirrors `pdq::threshold`: bit 16·i + j is set iff B[i][j] is strictly greater than the lower median (the
// 128th smallest of the 256 values, what the reference's Torben selection returns). One workgroup per
// (image, slot): workgroup x is the slot (0 = original, 1..7 = dihedral variants).
//
// The median is found by ranking, not sorting: the value with fewer than 128 values below it and at least
// 128 at or below it. Comparisons only, so the result is exact; ties all name the same value.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(7) var<storage, read_write> hashes: array<u32>;
@group(0) @binding(8) var<storage, read_write> dct16: array<f32>;

var<workgroup> values: array<f32, 256>;
var<workgroup> median: f32;
var<workgroup> bits: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = metas[wg.y];
    if ((m.flags & FLAG_PDQ_SKIP) != 0u) {
        return;
    }
    let slot = wg.x;
    let v = dct16[(wg.y * 8u + slot) * 256u + lid];
    values[lid] = v;
    workgroupBarrier();
    var below = 0u;
    var at_or_below = 0u;
    for (var k = 0u; k < 256u; k++) {
        let x = values[k];
        below += select(0u, 1u, x < v);
        at_or_below += select(0u, 1u, x <= v);
    }
    if (below <= 127u && at_or_below >= 128u) {
        median = v;
    }
    workgroupBarrier();
    bits[lid] = select(0u, 1u, v > median);
    workgroupBarrier();
    if (lid < 8u) {
        var word = 0u;
        for (var b = 0u; b < 32u; b++) {
            word |= bits[lid * 32u + b] << b;
        }
        hashes[wg.y * OUT_STRIDE + slot * 8u + lid] = word;
    }
}
