//! Exact-match banks (MD5, SHA-1, SHA-256 of file bytes): a hash set, not a Hamming search.
//!
//! Layout: `rows` holds every digest ever added in row order (row = entry id, as in [`super::MihIndex`]);
//! `heads` maps a digest to the newest live row holding it, and `chain[row]` links to the next older live
//! row with the same digest (partners do send the same file twice, under two ids). Per entry that is the
//! digest, 4 bytes of chain and one map slot (digest + row): about 50 bytes for MD5, 85 for SHA-256.
//!
//! The map keeps std's randomly keyed SipHash: the keys are digests, but bank contents arrive from
//! partners and a keyed hash costs nothing noticeable next to the work around one lookup.

use super::Hit;
use std::collections::HashMap;

const NONE: u32 = u32::MAX;

/// The hash set of one exact bank of `N`-byte digests.
#[derive(Debug, Default)]
pub struct ExactIndex<const N: usize> {
    rows: Vec<[u8; N]>,
    chain: Vec<u32>,
    /// Removed rows, one bit each.
    dead: Vec<u64>,
    heads: HashMap<[u8; N], u32>,
    live: usize,
}

impl<const N: usize> ExactIndex<N> {
    /// Indexes `rows` (row `i` is entry id `i`), leaving out the `removed` ids.
    pub fn build(rows: Vec<[u8; N]>, removed: &[u64]) -> ExactIndex<N> {
        let mut idx = ExactIndex {
            chain: Vec::with_capacity(rows.len()),
            dead: vec![0; rows.len().div_ceil(64)],
            heads: HashMap::with_capacity(rows.len() - removed.len().min(rows.len())),
            rows: Vec::new(),
            live: 0,
        };
        for &id in removed {
            if let Some(w) = idx.dead.get_mut(id as usize / 64) {
                *w |= 1 << (id % 64);
            }
        }
        for (row, d) in rows.iter().enumerate() {
            idx.chain.push(NONE);
            if !idx.is_dead(row) {
                idx.link(d, row as u32);
            }
        }
        idx.rows = rows;
        idx
    }

    fn is_dead(&self, row: usize) -> bool {
        self.dead.get(row / 64).is_some_and(|w| (w >> (row % 64)) & 1 == 1)
    }

    fn link(&mut self, d: &[u8; N], row: u32) {
        let old = self.heads.insert(*d, row).unwrap_or(NONE);
        self.chain[row as usize] = old;
        self.live += 1;
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no row is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The digest in `row`, if it is live.
    pub fn get(&self, row: u32) -> Option<&[u8; N]> {
        let r = row as usize;
        (r < self.rows.len() && !self.is_dead(r)).then(|| &self.rows[r])
    }

    /// Appends digests (the next row numbers).
    pub fn extend(&mut self, digests: &[[u8; N]]) {
        for d in digests {
            let row = self.rows.len() as u32;
            self.rows.push(*d);
            self.chain.push(NONE);
            if self.dead.len() * 64 < self.rows.len() {
                self.dead.push(0);
            }
            self.link(d, row);
        }
    }

    /// Removes a row; false if it was not live.
    pub fn remove(&mut self, row: u32) -> bool {
        let r = row as usize;
        if r >= self.rows.len() || self.is_dead(r) {
            return false;
        }
        self.dead[r / 64] |= 1 << (r % 64);
        self.live -= 1;
        let d = self.rows[r];
        let next = self.chain[r];
        let head = self.heads.get(&d).copied().unwrap_or(NONE);
        if head == row {
            if next == NONE {
                self.heads.remove(&d);
            } else {
                self.heads.insert(d, next);
            }
        } else {
            let mut at = head;
            while at != NONE {
                if self.chain[at as usize] == row {
                    self.chain[at as usize] = next;
                    break;
                }
                at = self.chain[at as usize];
            }
        }
        self.chain[r] = NONE;
        true
    }

    /// Appends every live row holding `d` to `out` (distance 0), newest first.
    pub fn search(&self, d: &[u8; N], out: &mut Vec<Hit>) {
        let mut at = self.heads.get(d).copied().unwrap_or(NONE);
        while at != NONE {
            out.push(Hit { row: at, distance: 0 });
            at = self.chain[at as usize];
        }
    }

    /// Heap bytes held (an estimate for the map: std's table keeps one control byte per slot).
    pub fn heap_bytes(&self) -> usize {
        self.rows.capacity() * N
            + self.chain.capacity() * 4
            + self.dead.capacity() * 8
            + self.heads.capacity() * (N + 4 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(idx: &ExactIndex<2>, d: [u8; 2]) -> Vec<u32> {
        let mut out = Vec::new();
        idx.search(&d, &mut out);
        out.iter().map(|h| h.row).collect()
    }

    #[test]
    fn duplicates_removal_and_rebuild_agree() {
        let all = vec![[1, 1], [2, 2], [1, 1], [3, 3], [1, 1]];
        let mut idx = ExactIndex::build(all[..2].to_vec(), &[]);
        idx.extend(&all[2..]);
        assert_eq!(rows(&idx, [1, 1]), [4, 2, 0]);
        assert_eq!(rows(&idx, [9, 9]), Vec::<u32>::new());
        assert!(idx.remove(2)); // the middle of the chain
        assert!(!idx.remove(2));
        assert_eq!(rows(&idx, [1, 1]), [4, 0]);
        assert!(idx.remove(4)); // the head
        assert_eq!(rows(&idx, [1, 1]), [0]);
        assert!(idx.remove(0));
        assert_eq!(rows(&idx, [1, 1]), Vec::<u32>::new());
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get(0), None);
        assert_eq!(idx.get(3), Some(&[3, 3]));
        let rebuilt = ExactIndex::build(all, &[0, 2, 4]);
        assert_eq!(rebuilt.len(), 2);
        assert_eq!(rows(&rebuilt, [1, 1]), Vec::<u32>::new());
        assert_eq!(rows(&rebuilt, [2, 2]), [1]);
        assert_eq!(rebuilt.get(4), None);
    }
}
