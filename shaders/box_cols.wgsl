// Mirrors `pdq::box_cols` (the reference's `boxAlongColsFloat`): the 1-D box filter down every column of
// plane_b into plane_a. Adjacent invocations take adjacent columns, so every step reads one contiguous run.
//
// One invocation walks one column sequentially with a running float32 sum — add the entering sample, then
// subtract the leaving one, then divide by the window count — which is the reference's exact sequence of
// roundings (a parallel prefix sum would round differently). There is no multiply to fuse. The one
// operation WGSL does not pin down is the division (2.5 ULP allowed): `div_rn` (common.wgsl) corrects the
// driver's quotient to the exactly rounded one, since a last-bit difference in a filtered value can move a
// DCT coefficient across the median.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(4) var<storage, read_write> plane_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> plane_b: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = metas[wg.y];
    if ((m.flags & (FLAG_PDQ_SKIP | FLAG_NO_FILTER)) != 0u) {
        return;
    }
    let n = m.height;
    let w = m.width;
    let win = m.win_cols;
    let half = (win + 2u) / 2u;
    for (var col = wg.x * 64u + lid; col < w; col += nwg.x * 64u) {
        let base = m.plane + col;
        var sum = 0.0;
        var count = 0u;
        var li = 0u;
        var ri = 0u;
        var oi = 0u;
        for (var k = 0u; k + 1u < half; k++) {
            sum += plane_b[base + ri * w];
            count += 1u;
            ri += 1u;
        }
        for (var k = 0u; k < win + 1u - half; k++) {
            sum += plane_b[base + ri * w];
            count += 1u;
            plane_a[base + oi * w] = div_rn(sum, f32(count));
            ri += 1u;
            oi += 1u;
        }
        let c = f32(count);
        for (var k = win; k < n; k++) {
            sum += plane_b[base + ri * w];
            sum -= plane_b[base + li * w];
            plane_a[base + oi * w] = div_rn(sum, c);
            li += 1u;
            ri += 1u;
            oi += 1u;
        }
        for (var k = 0u; k + 1u < half; k++) {
            sum -= plane_b[base + li * w];
            count -= 1u;
            plane_a[base + oi * w] = div_rn(sum, f32(count));
            li += 1u;
            oi += 1u;
        }
    }
}
