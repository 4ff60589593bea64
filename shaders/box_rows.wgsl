// Mirrors `pdq::box_rows` (the reference's `boxAlongRowsFloat`): the 1-D box filter along every row of
// plane_a into plane_b.
//
// One invocation walks one row sequentially with a running float32 sum — add the entering sample, then
// subtract the leaving one, then divide by the window count — which is the reference's exact sequence of
// roundings (a parallel prefix sum would round differently). On Vulkan every float operation is
// `NoContraction` (src/gpu/spirv.rs), so a driver cannot turn `(sum + x) − y` into `sum + (x − y)`; the
// division is `div_exact` (common.wgsl), exact on any driver, since a last-bit difference in a filtered
// value can move a DCT coefficient across the median.
//
// Memory access: by default the input plane is row-major, so each invocation streams its own row and each
// 32-byte sector it loads serves its next 7 steps from L1. When `params.columns` is set the input plane is
// stored column by column instead (sample (y, x) at x·height + y; luma.wgsl and box_cols.wgsl write it so),
// so at every step adjacent invocations (adjacent rows) read adjacent addresses: one contiguous run per
// warp. Which is faster depends on the GPU (src/gpu/layout.rs, `RowLayout`). Either way the output is
// row-major, which box_cols reads contiguously. A tiled version in workgroup memory was tried: it needs
// barriers inside the walk's loop, which made lavapipe's shader compile take minutes.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(4) var<storage, read_write> plane_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> plane_b: array<f32>;

fn filter_row(m: ImageMeta, row: u32, sampled_only: bool) {
    let n = m.width;
    let win = m.win_rows;
    let half = (win + 2u) / 2u;
    // Input sample x of this row is at plane_a[inp + x·stride]; output x at plane_b[dst + x].
    var inp = m.plane + row * n;
    var stride = 1u;
    if (params.columns != 0u) {
        inp = m.plane + row;
        stride = m.height;
    }
    let dst = m.plane + row * n;
    var sum = 0.0;
    var count = 0u;
    var li = 0u;
    var ri = 0u;
    var oi = 0u;
    for (var k = 0u; k + 1u < half; k++) {
        sum += plane_a[inp + ri * stride];
        count += 1u;
        ri += 1u;
    }
    for (var k = 0u; k < win + 1u - half; k++) {
        sum += plane_a[inp + ri * stride];
        count += 1u;
        if (!sampled_only || is_sampled(oi, n)) {
            plane_b[dst + oi] = div_exact(sum, count);
        }
        ri += 1u;
        oi += 1u;
    }
    let c = count;
    for (var k = win; k < n; k++) {
        sum += plane_a[inp + ri * stride];
        sum -= plane_a[inp + li * stride];
        if (!sampled_only || is_sampled(oi, n)) {
            plane_b[dst + oi] = div_exact(sum, c);
        }
        li += 1u;
        ri += 1u;
        oi += 1u;
    }
    for (var k = 0u; k + 1u < half; k++) {
        sum -= plane_a[inp + li * stride];
        count -= 1u;
        if (!sampled_only || is_sampled(oi, n)) {
            plane_b[dst + oi] = div_exact(sum, count);
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
