// Mirrors `pdq::box_rows` (the reference's `boxAlongRowsFloat`): the 1-D box filter along every row of
// plane_a into plane_b.
//
// One invocation walks one row sequentially with a running float32 sum — add the entering sample, then
// subtract the leaving one, then divide by the window count — which is the reference's exact sequence of
// roundings (a parallel prefix sum would round differently). On Vulkan every float operation is
// `NoContraction` (src/gpu/spirv.rs), so a driver cannot turn `(sum + x) − y` into `sum + (x − y)`; the
// division is `div_exact` (common.wgsl), integer long division, since a last-bit difference in a filtered
// value can move a DCT coefficient across the median.
//
// Two entry points: `main` (the first round) stores every output; `sampled` (the second round) still runs
// every running sum, in the same order, but divides and stores only at the 64 columns decimate samples,
// as the CPU's streaming filter does (`pdq::jarosz_decimate`): the second vertical pass reads nothing else.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(4) var<storage, read_write> plane_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> plane_b: array<f32>;

fn filter_row(m: ImageMeta, row: u32, sampled_only: bool) {
    let n = m.width;
    let win = m.win_rows;
    let half = (win + 2u) / 2u;
    let base = m.plane + row * n;
    var sum = 0.0;
    var count = 0u;
    var li = 0u;
    var ri = 0u;
    var oi = 0u;
    for (var k = 0u; k + 1u < half; k++) {
        sum += plane_a[base + ri];
        count += 1u;
        ri += 1u;
    }
    for (var k = 0u; k < win + 1u - half; k++) {
        sum += plane_a[base + ri];
        count += 1u;
        if (!sampled_only || is_sampled(oi, n)) {
            plane_b[base + oi] = div_exact(sum, count);
        }
        ri += 1u;
        oi += 1u;
    }
    let c = count;
    for (var k = win; k < n; k++) {
        sum += plane_a[base + ri];
        sum -= plane_a[base + li];
        if (!sampled_only || is_sampled(oi, n)) {
            plane_b[base + oi] = div_exact(sum, c);
        }
        li += 1u;
        ri += 1u;
        oi += 1u;
    }
    for (var k = 0u; k + 1u < half; k++) {
        sum -= plane_a[base + li];
        count -= 1u;
        if (!sampled_only || is_sampled(oi, n)) {
            plane_b[base + oi] = div_exact(sum, count);
        }
        li += 1u;
        oi += 1u;
    }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = metas[wg.y];
    if ((m.flags & (FLAG_PDQ_SKIP | FLAG_NO_FILTER)) != 0u) {
        return;
    }
    for (var row = wg.x * 64u + lid; row < m.height; row += nwg.x * 64u) {
        filter_row(m, row, false);
    }
}

@compute @workgroup_size(64)
fn sampled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = metas[wg.y];
    if ((m.flags & (FLAG_PDQ_SKIP | FLAG_NO_FILTER)) != 0u) {
        return;
    }
    for (var row = wg.x * 64u + lid; row < m.height; row += nwg.x * 64u) {
        filter_row(m, row, true);
    }
}
