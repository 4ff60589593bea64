//! The brute-force scan: every live row, XOR + popcount. It serves small banks and large radii (where the
//! multi-index would touch most of the bank anyway), and it is the oracle the index is tested against.
//!
//! The loop is written so that LLVM vectorises it; the popcount instruction is not in the x86-64 baseline,
//! so the hot loops are compiled twice and picked at run time (AVX2 + POPCNT, or the portable build).

use super::Hit;

/// Hamming distance between two hashes of `L` limbs.
#[inline(always)]
pub(crate) fn distance<const L: usize>(a: &[u64; L], b: &[u64; L]) -> u32 {
    let mut d = 0;
    for i in 0..L {
        d += (a[i] ^ b[i]).count_ones();
    }
    d
}

#[inline(always)]
fn scan_generic<const L: usize>(
    rows: &[[u64; L]],
    dead: &[u64],
    q: &[u64; L],
    radius: u32,
    out: &mut Vec<Hit>,
) {
    // Blocks of 64 rows: a branch-free pass builds a bit mask of the rows within the radius, the block's
    // tombstone word clears the removed ones, and only the (rare) survivors are visited.
    for (block, chunk) in rows.chunks(64).enumerate() {
        let mut mask = 0u64;
        for (i, row) in chunk.iter().enumerate() {
            mask |= ((distance(row, q) <= radius) as u64) << i;
        }
        mask &= !dead.get(block).copied().unwrap_or(0);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            out.push(Hit { row: (block * 64 + i) as u32, distance: distance(&chunk[i], q) });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
fn scan_avx2<const L: usize>(rows: &[[u64; L]], dead: &[u64], q: &[u64; L], radius: u32, out: &mut Vec<Hit>) {
    scan_generic(rows, dead, q, radius, out)
}

/// Appends every live row within `radius` of `q` to `out`, in row order.
pub(crate) fn scan<const L: usize>(
    rows: &[[u64; L]],
    dead: &[u64],
    q: &[u64; L],
    radius: u32,
    out: &mut Vec<Hit>,
) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_popcnt() {
        // SAFETY: the CPU supports AVX2 and POPCNT (checked at run time).
        unsafe { scan_avx2(rows, dead, q, radius, out) };
        return;
    }
    scan_generic(rows, dead, q, radius, out)
}
