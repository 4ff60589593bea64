// Mirrors `pdq::box_cols` (the reference's `boxAlongColsFloat`): the 1-D box filter down every column of
// plane_b into plane_a. Adjacent invocations take adjacent columns, so every step reads one contiguous run.
//
// One invocation walks one column sequentially with a running float32 sum — add the entering sample, then
// subtract the leaving one, then divide by the window count — which is the reference's exact sequence of
// roundings (a parallel prefix sum would round differently). On Vulkan every float operation is
// `NoContraction` (src/gpu/spirv.rs), so a driver cannot turn `(sum + x) − y` into `sum + (x − y)`; the
// division is `div_exact` (common.wgsl), integer long division, since a last-bit difference in a filtered
// value can move a DCT coefficient across the median.

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
            plane_a[base + oi * w] = div_exact(sum, count);
            ri += 1u;
            oi += 1u;
        }
        let c = count;
        for (var k = win; k < n; k++) {
            sum += plane_b[base + ri * w];
            sum -= plane_b[base + li * w];
            plane_a[base + oi * w] = div_exact(sum, c);
            li += 1u;
            ri += 1u;
            oi += 1u;
        }
        for (var k = 0u; k + 1u < half; k++) {
            sum -= plane_b[base + li * w];
            count -= 1u;
            plane_a[base + oi * w] = div_exact(sum, count);
            li += 1u;
            oi += 1u;
        }
    }
}
