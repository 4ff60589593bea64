//! Multi-index hashing (Norouzi, Punjani & Fleet) over 16-bit substrings, with incremental updates.
//!
//! A hash of `L` 64-bit limbs is cut into `m = 4·L` substrings of 16 bits (16 for PDQ, 4 for pHash). If two
//! hashes are within distance `r`, at least one substring pair is within `⌊r/m⌋` (pigeonhole: were every
//! substring `⌊r/m⌋ + 1` apart, the total would exceed `r`). So a query probes, in each of the `m` tables,
//! every bucket within `⌊r/m⌋` bits of its own substring (1 bucket at PDQ radius ≤ 15, 17 at ≤ 31, 137 at
//! ≤ 47, …), checks the full distance of every row found, and the answer is exact at any radius.
//!
//! Memory layout (what keeps a PDQ bank under 100 bytes per hash):
//! - `rows`: the hashes, `8·L` bytes each; the row number is the entry's id in the store, so no id map;
//! - per table, one flat `Vec<u32>` of row numbers in which every bucket owns a contiguous slice
//!   (`start`, `len`, `cap`): 4 bytes per hash per table, 12 bytes per bucket (12.6 MB for PDQ);
//! - a tombstone bitset for removed rows (1 bit per row).
//!
//! Updates are incremental. Adding a row appends it to one bucket per table; a full bucket moves to the end
//! of its table's array with ~25 % slack, leaving a hole; a table whose holes exceed a quarter of its array is
//! compacted (one linear pass over that table). Removing a row swap-removes it from its bucket in each table
//! and sets its tombstone, so queries never see it and never pay for it.

use super::flat::distance;
use super::Hit;
use std::sync::OnceLock;

const BUCKETS: usize = 1 << 16;

/// One bucket: `post[start .. start + len]` are its rows; `post[start + len .. start + cap]` is slack.
#[derive(Clone, Copy, Default, Debug)]
struct Bucket {
    start: u32,
    len: u32,
    cap: u32,
}

/// The postings of one 16-bit substring position.
#[derive(Debug)]
struct Table {
    buckets: Vec<Bucket>,
    post: Vec<u32>,
    /// Slots in `post` that belong to no bucket any more (left behind by relocated buckets).
    garbage: usize,
}

impl Table {
    /// Builds the table for substring `t` of `rows` in one counting-sort pass, with no slack.
    fn build<const L: usize>(rows: &[[u64; L]], dead: &[u64], t: usize) -> Table {
        let mut buckets = vec![Bucket::default(); BUCKETS];
        let live = |i: usize| dead.get(i / 64).is_none_or(|w| (w >> (i % 64)) & 1 == 0);
        for (i, row) in rows.iter().enumerate() {
            if live(i) {
                buckets[substring(row, t) as usize].len += 1;
            }
        }
        let mut at = 0u32;
        for b in buckets.iter_mut() {
            b.start = at;
            b.cap = b.len;
            at += b.len;
            b.len = 0;
        }
        let mut post = vec![0u32; at as usize];
        for (i, row) in rows.iter().enumerate() {
            if live(i) {
                let b = &mut buckets[substring(row, t) as usize];
                post[(b.start + b.len) as usize] = i as u32;
                b.len += 1;
            }
        }
        Table { buckets, post, garbage: 0 }
    }

    fn push(&mut self, key: u16, row: u32) {
        let b = self.buckets[key as usize];
        if b.len == b.cap {
            let new_cap = b.len + (b.len / 4).max(2);
            let new_start = self.post.len();
            if self.post.capacity() - self.post.len() < new_cap as usize {
                // Grow the array by 1/16 at a time rather than doubling: the slack is RAM the budget counts.
                self.post.reserve_exact((new_cap as usize).max(self.post.len() / 16));
            }
            self.post.extend_from_within(b.start as usize..(b.start + b.len) as usize);
            self.post.resize(new_start + new_cap as usize, 0);
            self.garbage += b.cap as usize;
            self.buckets[key as usize] = Bucket { start: new_start as u32, len: b.len, cap: new_cap };
        }
        let b = &mut self.buckets[key as usize];
        self.post[(b.start + b.len) as usize] = row;
        b.len += 1;
        if self.garbage > 4096 && self.garbage > self.post.len() / 4 {
            self.compact();
        }
    }

    fn remove(&mut self, key: u16, row: u32) -> bool {
        let b = &mut self.buckets[key as usize];
        let slice = &mut self.post[b.start as usize..(b.start + b.len) as usize];
        match slice.iter().position(|&r| r == row) {
            Some(i) => {
                let last = slice.len() - 1;
                slice.swap(i, last);
                b.len -= 1;
                true
            }
            None => false,
        }
    }

    /// Rewrites the array bucket after bucket with no holes, keeping each bucket's slack.
    fn compact(&mut self) {
        let total: usize = self.buckets.iter().map(|b| b.cap as usize).sum();
        let mut post = Vec::with_capacity(total);
        for b in self.buckets.iter_mut() {
            let start = post.len() as u32;
            post.extend_from_slice(&self.post[b.start as usize..(b.start + b.cap) as usize]);
            b.start = start;
        }
        self.post = post;
        self.garbage = 0;
    }

    #[inline(always)]
    fn bucket(&self, key: usize) -> &[u32] {
        let b = self.buckets[key];
        &self.post[b.start as usize..(b.start + b.len) as usize]
    }

    fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>() + self.post.capacity() * 4
    }
}

/// How many postings ahead the probe loop prefetches the hash it will compare.
const PREFETCH_AHEAD: usize = 12;

/// A hint that `x` will be read soon (no effect on the result).
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and the pointer comes from a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Substring `t` (16 bits) of a hash.
#[inline(always)]
fn substring<const L: usize>(h: &[u64; L], t: usize) -> u16 {
    (h[t / 4] >> ((t % 4) * 16)) as u16
}

/// Every 16-bit mask, ordered by popcount; `MASK_ENDS[k]` = number of masks with popcount ≤ k.
fn masks() -> &'static (Vec<u16>, [usize; 17]) {
    static MASKS: OnceLock<(Vec<u16>, [usize; 17])> = OnceLock::new();
    MASKS.get_or_init(|| {
        let mut all: Vec<u16> = (0..=u16::MAX).collect();
        all.sort_by_key(|m| (m.count_ones(), *m));
        let mut ends = [0usize; 17];
        for (k, end) in ends.iter_mut().enumerate() {
            *end = all.iter().filter(|m| m.count_ones() as usize <= k).count();
        }
        (all, ends)
    })
}

/// Number of buckets probed per table at substring radius `s`.
pub(crate) fn probes_per_table(s: u32) -> usize {
    masks().1[s.min(16) as usize]
}

/// A multi-index over hashes of `L` 64-bit limbs (`L = 4`: PDQ, `L = 1`: pHash).
#[derive(Debug)]
pub struct MihIndex<const L: usize> {
    rows: Vec<[u64; L]>,
    dead: Vec<u64>,
    dead_count: usize,
    tables: Vec<Table>,
}

impl<const L: usize> Default for MihIndex<L> {
    fn default() -> Self {
        Self::build(Vec::new(), &[])
    }
}

impl<const L: usize> MihIndex<L> {
    /// Number of substring tables.
    pub const TABLES: usize = 4 * L;

    /// Builds the index over `rows` (row `i` is id `i`); the ids in `removed` are tombstoned. The tables are
    /// built in parallel (one counting sort each).
    pub fn build(rows: Vec<[u64; L]>, removed: &[u64]) -> Self {
        use rayon::prelude::*;
        let mut dead = vec![0u64; rows.len().div_ceil(64)];
        let mut dead_count = 0;
        for &id in removed {
            if let Some(w) = dead.get_mut(id as usize / 64) {
                if (*w >> (id % 64)) & 1 == 0 {
                    *w |= 1 << (id % 64);
                    dead_count += 1;
                }
            }
        }
        let tables = (0..Self::TABLES).into_par_iter().map(|t| Table::build(&rows, &dead, t)).collect();
        MihIndex { rows, dead, dead_count, tables }
    }

    /// Rows ever added (live or removed); the next row added gets this number.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.rows.len() - self.dead_count
    }

    /// True when there is no live row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash in `row`, live or not.
    pub fn get(&self, row: u32) -> Option<&[u64; L]> {
        self.rows.get(row as usize)
    }

    /// Whether `row` exists and has not been removed.
    pub fn is_live(&self, row: u32) -> bool {
        (row as usize) < self.rows.len() && (self.dead[row as usize / 64] >> (row % 64)) & 1 == 0
    }

    /// Appends rows (they get the next row numbers) and indexes them.
    pub fn extend(&mut self, hashes: &[[u64; L]]) {
        if hashes.len() > 4096 && hashes.len() > self.len() {
            // A batch larger than the bank: one counting sort is cheaper than as many bucket appends.
            let mut rows = std::mem::take(&mut self.rows);
            rows.extend_from_slice(hashes);
            let removed: Vec<u64> = (0..rows.len() as u64).filter(|&i| !self.is_live_in(i)).collect();
            *self = Self::build(rows, &removed);
            return;
        }
        for h in hashes {
            let row = self.rows.len() as u32;
            self.rows.push(*h);
            if self.dead.len() * 64 < self.rows.len() {
                self.dead.push(0);
            }
            for (t, table) in self.tables.iter_mut().enumerate() {
                table.push(substring(h, t), row);
            }
        }
    }

    fn is_live_in(&self, id: u64) -> bool {
        self.dead.get(id as usize / 64).is_none_or(|w| (w >> (id % 64)) & 1 == 0)
    }

    /// Removes a row from every table and tombstones it; false if it was not live.
    pub fn remove(&mut self, row: u32) -> bool {
        if !self.is_live(row) {
            return false;
        }
        let h = self.rows[row as usize];
        for (t, table) in self.tables.iter_mut().enumerate() {
            let found = table.remove(substring(&h, t), row);
            debug_assert!(found, "row {row} missing from table {t}");
        }
        self.dead[row as usize / 64] |= 1 << (row % 64);
        self.dead_count += 1;
        true
    }

    /// Rows within `radius` of `q` through the index, sorted by row (exact at any radius).
    pub fn search_index(&self, q: &[u64; L], radius: u32, out: &mut Vec<Hit>) {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2_popcnt() {
            // SAFETY: the CPU supports AVX2 and POPCNT (checked at run time).
            unsafe { self.probe_avx2(q, radius, out) };
            return;
        }
        self.probe(q, radius, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    fn probe_avx2(&self, q: &[u64; L], radius: u32, out: &mut Vec<Hit>) {
        self.probe(q, radius, out)
    }

    #[inline(always)]
    fn probe(&self, q: &[u64; L], radius: u32, out: &mut Vec<Hit>) {
        let s = radius / Self::TABLES as u32;
        let masks = &masks().0[..probes_per_table(s)];
        let start = out.len();
        for (t, table) in self.tables.iter().enumerate() {
            let qs = substring(q, t) as usize;
            for &m in masks {
                let bucket = table.bucket(qs ^ m as usize);
                for (j, &row) in bucket.iter().enumerate() {
                    // The rows a bucket names are scattered over the whole bank: ask for the one a few
                    // postings ahead now, so that several cache misses are in flight at once.
                    if let Some(&ahead) = bucket.get(j + PREFETCH_AHEAD) {
                        prefetch(&self.rows[ahead as usize]);
                    }
                    let d = distance(&self.rows[row as usize], q);
                    if d <= radius {
                        out.push(Hit { row, distance: d });
                    }
                }
            }
        }
        // A row close to the query is found in several tables: keep one copy.
        out[start..].sort_unstable_by_key(|h| h.row);
        let mut keep = start;
        for i in start..out.len() {
            if keep == start || out[keep - 1].row != out[i].row {
                out[keep] = out[i];
                keep += 1;
            }
        }
        out.truncate(keep);
    }

    /// Rows within `radius` of `q` by scanning every row, sorted by row: the oracle.
    pub fn search_scan(&self, q: &[u64; L], radius: u32, out: &mut Vec<Hit>) {
        super::flat::scan(&self.rows, &self.dead, q, radius, out)
    }

    /// How many postings a probe at `radius` would visit (exactly), or `None` once it exceeds `limit`.
    fn candidates(&self, q: &[u64; L], radius: u32, limit: usize) -> Option<usize> {
        let s = radius / Self::TABLES as u32;
        let probes = probes_per_table(s);
        if probes * Self::TABLES > limit {
            return None;
        }
        let masks = &masks().0[..probes];
        let mut total = 0usize;
        for (t, table) in self.tables.iter().enumerate() {
            let qs = substring(q, t) as usize;
            for &m in masks {
                total += table.buckets[qs ^ m as usize].len as usize;
            }
            if total > limit {
                return None;
            }
        }
        Some(total)
    }

    /// Rows within `radius` of `q`, sorted by row, by whichever of the index and the scan is cheaper here:
    /// the index when the buckets it would visit hold fewer than an eighth of the rows (a random access costs
    /// several sequential ones), the scan otherwise.
    pub fn search(&self, q: &[u64; L], radius: u32, out: &mut Vec<Hit>) {
        let limit = self.rows.len() / 8;
        if self.rows.len() >= 1024 && self.candidates(q, radius, limit).is_some() {
            self.search_index(q, radius, out)
        } else {
            self.search_scan(q, radius, out)
        }
    }

    /// Heap bytes held (capacities, not lengths): hashes, postings, bucket tables, tombstones.
    pub fn heap_bytes(&self) -> usize {
        self.rows.capacity() * 8 * L
            + self.dead.capacity() * 8
            + self.tables.iter().map(Table::heap_bytes).sum::<usize>()
    }
}
