// Mirrors `pdq::dct`: B = D · A · Dᵀ (16 × 16) of the 64 × 64 buffer A, float32, every sum in index order
// k = 0..63 as the reference's `dct64To16`. D is `pdq::dct_matrix()`, built once on the CPU with the
// reference's rounding and uploaded (consts[768..1792], row-major 16 × 64); no cosine is evaluated here.
//
// Fused multiply-add: the reference rounds the product, then the sum. A driver may contract `acc + d * a`
// into one FMA (a single rounding), or reassociate the running sum, either of which changes low bits and
// can flip hash bits next to the median. On Vulkan every float operation here is decorated
// `NoContraction` (src/gpu/spirv.rs), which forbids both; backends without that guarantee are refused
// unless the operator accepts the risk (src/gpu/context.rs).

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(3) var<storage, read> consts: array<f32>;
@group(0) @binding(6) var<storage, read_write> buf64: array<f32>;
@group(0) @binding(8) var<storage, read_write> dct16: array<f32>;

const D: u32 = 768u;

// T = D · A (16 × 64), shared by the workgroup.
var<workgroup> t: array<f32, 1024>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = metas[wg.y];
    if ((m.flags & FLAG_PDQ_SKIP) != 0u) {
        return;
    }
    let a = wg.y * 4096u;
    // T[i][j] = Σ_k D[i][k] · A[k][j]; four outputs per invocation.
    for (var o = lid; o < 1024u; o += 256u) {
        let i = o / 64u;
        let j = o % 64u;
        var acc = 0.0;
        for (var k = 0u; k < 64u; k++) {
            let p = consts[D + i * 64u + k] * buf64[a + k * 64u + j];
            acc = acc + p;
        }
        t[o] = acc;
    }
    workgroupBarrier();
    // B[i][j] = Σ_k T[i][k] · D[j][k].
    let i = lid / 16u;
    let j = lid % 16u;
    var acc = 0.0;
    for (var k = 0u; k < 64u; k++) {
        let p = t[i * 64u + k] * consts[D + j * 64u + k];
        acc = acc + p;
    }
    // Slot 0 of the image's 8 (the original; dihedral.wgsl fills 1..7).
    dct16[wg.y * 8u * 256u + lid] = acc;
}
