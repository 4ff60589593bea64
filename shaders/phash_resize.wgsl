// Mirrors the pHash thumbnail, `PhashHasher::thumbnail` (Pillow 13's `convert("L")` then the separable
// fixed-point LANCZOS resize to 32 × 32): integer arithmetic only, so the bytes are Pillow's exactly.
//
// The coefficient tables are the CPU's (`phash` `Axis::prepare`, Pillow's `precompute_coeffs` +
// `normalize_coeffs_8bpc`), uploaded per distinct input length. Layout of one axis at offset o in
// `coeffs`: (xmin, count) of the 32 outputs at o + 2·xx, then each output's coefficients at
// o + 64 + xx·stride. Sums are `i32` starting at 2^21 and wrap like the CPU's; `clip8` keeps bits 22..29.
//
// Pillow picks the pass order from the shape (FLAG_VERTICAL_FIRST, decided on the CPU as in
// `resize_inline`), and skips a pass whose side is already 32. `first` runs the first pass into `temp`,
// `second` the other one into `thumbs` (one byte per u32). The DCT and median that follow are float64 in
// imagehash; WGSL has no f64, so they run on the CPU (`phash::hash_thumbnail`) from these thumbnails.

@group(0) @binding(1) var<storage, read> metas: array<ImageMeta>;
@group(0) @binding(2) var<storage, read> pixels: array<u32>;
@group(0) @binding(3) var<storage, read> coeffs: array<i32>;
@group(0) @binding(4) var<storage, read_write> temp: array<u32>;
@group(0) @binding(5) var<storage, read_write> thumbs: array<u32>;

const PRECISION_BITS: u32 = 22u;

fn byte_at(word0: u32, k: u32) -> u32 {
    let w = pixels[word0 + (k >> 2u)];
    return (w >> ((k & 3u) * 8u)) & 0xffu;
}

// Pillow's `rgb2l`, or the grey byte itself.
fn grey(m: ImageMeta, y: u32, x: u32) -> i32 {
    let p = y * m.width + x;
    if (m.channels == 3u) {
        let r = byte_at(m.pixel_word, 3u * p);
        let g = byte_at(m.pixel_word, 3u * p + 1u);
        let b = byte_at(m.pixel_word, 3u * p + 2u);
        return i32((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16u);
    }
    return i32(byte_at(m.pixel_word, p));
}

fn clip8(acc: i32) -> u32 {
    return u32(clamp(acc >> PRECISION_BITS, 0, 255));
}

@compute @workgroup_size(64)
fn first(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = metas[wg.y];
    if ((m.flags & FLAG_PHASH_SKIP) != 0u) {
        return;
    }
    if ((m.flags & FLAG_VERTICAL_FIRST) == 0u) {
        // Horizontal pass over the rows the vertical pass will read: span_len × 32.
        let n = m.span_len * 32u;
        for (var idx = wg.x * 64u + lid; idx < n; idx += nwg.x * 64u) {
            let y = m.span_first + idx / 32u;
            let xx = idx % 32u;
            if (m.width == 32u) {
                temp[m.temp + idx] = u32(grey(m, y, xx));
            } else {
                let xmin = u32(coeffs[m.h_axis + 2u * xx]);
                let count = u32(coeffs[m.h_axis + 2u * xx + 1u]);
                let ks = m.h_axis + 64u + xx * m.h_stride;
                var acc = 1i << (PRECISION_BITS - 1u);
                for (var t = 0u; t < count; t++) {
                    acc += grey(m, y, xmin + t) * coeffs[ks + t];
                }
                temp[m.temp + idx] = clip8(acc);
            }
        }
    } else {
        // Vertical pass over the full width: 32 × width.
        let n = 32u * m.width;
        for (var idx = wg.x * 64u + lid; idx < n; idx += nwg.x * 64u) {
            let yy = idx / m.width;
            let x = idx % m.width;
            let ymin = u32(coeffs[m.v_axis + 2u * yy]);
            let count = u32(coeffs[m.v_axis + 2u * yy + 1u]);
            let ks = m.v_axis + 64u + yy * m.v_stride;
            var acc = 1i << (PRECISION_BITS - 1u);
            for (var t = 0u; t < count; t++) {
                acc += grey(m, ymin + t, x) * coeffs[ks + t];
            }
            temp[m.temp + idx] = clip8(acc);
        }
    }
}

@compute @workgroup_size(64)
fn second(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = metas[wg.y];
    if ((m.flags & FLAG_PHASH_SKIP) != 0u) {
        return;
    }
    // 16 workgroups of 64: the 1024 thumbnail bytes.
    let idx = wg.x * 64u + lid;
    let yy = idx / 32u;
    let xx = idx % 32u;
    var out: u32;
    if ((m.flags & FLAG_VERTICAL_FIRST) == 0u) {
        if (m.height == 32u) {
            out = temp[m.temp + idx];
        } else {
            // Vertical pass over temp, whose first row is input row span_first.
            let ymin = u32(coeffs[m.v_axis + 2u * yy]);
            let count = u32(coeffs[m.v_axis + 2u * yy + 1u]);
            let ks = m.v_axis + 64u + yy * m.v_stride;
            var acc = 1i << (PRECISION_BITS - 1u);
            for (var t = 0u; t < count; t++) {
                acc += i32(temp[m.temp + (ymin - m.span_first + t) * 32u + xx]) * coeffs[ks + t];
            }
            out = clip8(acc);
        }
    } else {
        if (m.width == 32u) {
            out = temp[m.temp + idx];
        } else {
            // Horizontal pass over row yy of the width × 32 intermediate image.
            let xmin = u32(coeffs[m.h_axis + 2u * xx]);
            let count = u32(coeffs[m.h_axis + 2u * xx + 1u]);
            let ks = m.h_axis + 64u + xx * m.h_stride;
            var acc = 1i << (PRECISION_BITS - 1u);
            for (var t = 0u; t < count; t++) {
                acc += i32(temp[m.temp + yy * m.width + xmin + t]) * coeffs[ks + t];
            }
            out = clip8(acc);
        }
    }
    thumbs[wg.y * 1024u + idx] = out;
}
