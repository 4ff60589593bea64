// Mirrors `pdq::dihedral`: the seven dihedral variants of an image's 16 × 16 DCT (slot 0) into slots 1..7,
// in the reference's order: rot90, rot180, rot270, flipx, flipy, flipplus1, flipminus1. Reversing an axis
// negates the coefficients with an even index on that axis (frequency index + 1 is odd); a transposition
// swaps the indices. Sign changes and moves only: exact. threshold.wgsl then hashes every slot.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(8) var<storage, read_write> dct16: array<f32>;

fn even(x: u32) -> bool {
    return (x & 1u) == 0u;
}

fn put(base: u32, slot: u32, transpose: bool, negate: bool, i: u32, j: u32, v: f32) {
    var r = i;
    var c = j;
    if (transpose) {
        r = j;
        c = i;
    }
    var x = v;
    if (negate) {
        x = -v;
    }
    dct16[base + slot * 256u + r * 16u + c] = x;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = metas[wg.y];
    if ((m.flags & FLAG_PDQ_SKIP) != 0u) {
        return;
    }
    let base = wg.y * 8u * 256u;
    let i = lid / 16u;
    let j = lid % 16u;
    let v = dct16[base + lid];
    put(base, 1u, true, even(j), i, j, v);
    put(base, 2u, false, !even(i + j), i, j, v);
    put(base, 3u, true, even(i), i, j, v);
    put(base, 4u, false, even(i), i, j, v);
    put(base, 5u, false, even(j), i, j, v);
    put(base, 6u, true, false, i, j, v);
    put(base, 7u, true, !even(i + j), i, j, v);
}
