// Mirrors `pdq::box_cols` (the reference's `boxAlongColsFloat`): the 1-D box filter down every column of
// plane_b into plane_a. Adjacent invocations take adjacent columns, so every step reads one contiguous run.
//
// One invocation walks one column sequentially with a running float32 sum — add the entering sample, then
// subtract the leaving one, then divide by the window count — which is the reference's exact sequence of
// roundings (a parallel prefix sum would round differently). On Vulkan every float operation is
// `NoContraction` (src/gpu/spirv.rs), so a driver cannot turn `(sum + x) − y` into `sum + (x − y)`; the
// division is `div_exact` (common.wgsl), exact on any driver, since a last-bit difference in a filtered
// value can move a DCT coefficient across the median.
//
// Two entry points: `main` (the first round) filters every column and stores every output; when
// `params.columns` is set it stores them column by column (output (y, x) at x·height + y), the layout the
// second round's horizontal pass then reads (box_rows.wgsl). `sampled` (the second
// round) filters only the (at most 64 distinct) columns decimate samples, and divides and stores only at
// its 64 rows, row-major where decimate reads them: everything else of the second round is never read.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(4) var<storage, read_write> plane_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> plane_b: array<f32>;

fn filter_col(m: ImageMeta, col: u32, sampled_only: bool) {
    let n = m.height;
    let w = m.width;
    let win = m.win_cols;
    let half = (win + 2u) / 2u;
    let base = m.plane + col;
    // Output y of this column: plane_a[dst + y·step].
    var dst = base;
    var step = w;
    if (params.columns != 0u && !sampled_only) {
        dst = m.plane + col * n;
        step = 1u;
    }
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
        if (!sampled_only || is_sampled(oi, n)) {
            plane_a[dst + oi * step] = div_exact(sum, count);
        }
        ri += 1u;
        oi += 1u;
    }
    let c = count;
    for (var k = win; k < n; k++) {
        sum += plane_b[base + ri * w];
        sum -= plane_b[base + li * w];
        if (!sampled_only || is_sampled(oi, n)) {
            plane_a[dst + oi * step] = div_exact(sum, c);
        }
        li += 1u;
        ri += 1u;
        oi += 1u;
    }
    for (var k = 0u; k + 1u < half; k++) {
        sum -= plane_b[base + li * w];
        count -= 1u;
        if (!sampled_only || is_sampled(oi, n)) {
            plane_a[dst + oi * step] = div_exact(sum, count);
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
    for (var col = wg.x * 64u + lid; col < m.width; col += nwg.x * 64u) {
        filter_col(m, col, false);
    }
}

// One workgroup per image: invocation k filters decimate's k-th column, unless it is the same column as
// the (k − 1)-th (images narrower than 64), which the other invocation already does.
@compute @workgroup_size(64)
fn sampled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = metas[wg.y];
    if ((m.flags & (FLAG_PDQ_SKIP | FLAG_NO_FILTER)) != 0u) {
        return;
    }
    let col = ((2u * lid + 1u) * m.width) / 128u;
    if (lid > 0u && col == ((2u * lid - 1u) * m.width) / 128u) {
        return;
    }
    filter_col(m, col, true);
}
