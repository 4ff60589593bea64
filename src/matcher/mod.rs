//! Exact Hamming range search over banks of PDQ (256-bit) and pHash (64-bit) hashes.
//!
//! - [`mih`]: the multi-index hash over 16-bit substrings, updated incrementally; exact at every radius.
//! - [`flat`](self): the brute-force scan, for small banks and large radii, and the oracle in tests.
//! - [`Index`]: one bank's index, whichever the kind; [`Index::search_batch`] answers many queries in
//!   parallel (rayon), optionally dihedral-aware (the 8 variants of a query, one list, best distance each).
//!
//! Rows are numbered as the store numbers entries (row = id), so a hit needs no lookup to name its entry;
//! labels and times stay in the store and are read only for the hits.

mod flat;
pub mod mih;

pub use mih::MihIndex;

use crate::error::{Error, Result};
use crate::hash::{Hash256, Hash64};
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// One match: the row (= the entry id in its bank) and its Hamming distance to the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hit {
    /// Row number in the index, which is the entry's id in the store.
    pub row: u32,
    /// Hamming distance (the best over the query's variants for dihedral queries).
    pub distance: u32,
}

/// Whether the hot loops may use the AVX2 + POPCNT build (cached by `std`).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2_popcnt() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt")
}

/// The two kinds of bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Meta's PDQ, 256 bits.
    Pdq,
    /// The 64-bit DCT pHash.
    Phash,
}

impl Kind {
    /// The name used on the command line, in the store and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pdq => "pdq",
            Kind::Phash => "phash",
        }
    }

    /// Bits per hash.
    pub fn bits(self) -> u32 {
        match self {
            Kind::Pdq => 256,
            Kind::Phash => 64,
        }
    }

    /// The largest radius a query may ask for: a quarter of the bits (PDQ 64, pHash 16). Unrelated PDQ hashes
    /// lie ~128 bits apart, so a larger radius matches noise, and it makes every query a full scan.
    pub fn max_radius(self) -> u32 {
        self.bits() / 4
    }

    /// The usual match radius: Meta's 31 for PDQ; 10 for the 64-bit pHash (a common choice, ~16 %).
    pub fn default_radius(self) -> u32 {
        match self {
            Kind::Pdq => 31,
            Kind::Phash => 10,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "pdq" => Ok(Kind::Pdq),
            "phash" => Ok(Kind::Phash),
            _ => Err(Error::InvalidInput(format!("unknown hash kind '{s}' (expected pdq or phash)"))),
        }
    }
}

/// A hash of either kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnyHash {
    /// A PDQ hash.
    Pdq(Hash256),
    /// A pHash.
    Phash(Hash64),
}

impl AnyHash {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyHash::Pdq(_) => Kind::Pdq,
            AnyHash::Phash(_) => Kind::Phash,
        }
    }

    /// Parses hex text, the kind given by the length (64 digits: PDQ, 16: pHash).
    pub fn from_hex(s: &str) -> Result<AnyHash> {
        match s.len() {
            16 => Ok(AnyHash::Phash(Hash64::from_hex(s)?)),
            _ => Ok(AnyHash::Pdq(Hash256::from_hex(s).map_err(|_| {
                Error::InvalidHash(if s.len() == 64 {
                    format!("'{}': not hexadecimal", short(s))
                } else {
                    format!(
                        "'{}': expected 64 hex digits (PDQ) or 16 (pHash), found {}",
                        short(s),
                        s.chars().count()
                    )
                })
            })?)),
        }
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        match self {
            AnyHash::Pdq(h) => h.to_hex(),
            AnyHash::Phash(h) => h.to_hex(),
        }
    }
}

fn short(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(80).collect::<String>())
    }
}

/// One bank's in-memory index.
#[derive(Debug)]
pub enum Index {
    /// A PDQ bank: 16 tables of 16-bit substrings.
    Pdq(MihIndex<4>),
    /// A pHash bank: 4 tables of 16-bit substrings.
    Phash(MihIndex<1>),
}

/// How to run a batch of queries.
#[derive(Clone, Copy, Debug)]
pub struct SearchOptions {
    /// Largest Hamming distance reported.
    pub radius: u32,
    /// Which algorithm answers.
    pub method: Method,
}

/// Which algorithm answers a query (all three give the same answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// The index or the scan, whichever visits less for this query.
    #[default]
    Auto,
    /// Always the multi-index.
    Index,
    /// Always the brute-force scan.
    Scan,
}

/// A query: one hash, or several variants of one image (the dihedral hashes) answered as one.
pub type Query = Vec<AnyHash>;

impl Index {
    /// An empty index of `kind`.
    pub fn new(kind: Kind) -> Index {
        match kind {
            Kind::Pdq => Index::Pdq(MihIndex::default()),
            Kind::Phash => Index::Phash(MihIndex::default()),
        }
    }

    /// The kind of hash it holds.
    pub fn kind(&self) -> Kind {
        match self {
            Index::Pdq(_) => Kind::Pdq,
            Index::Phash(_) => Kind::Phash,
        }
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        match self {
            Index::Pdq(i) => i.len(),
            Index::Phash(i) => i.len(),
        }
    }

    /// True when no row is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the index (hashes included).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Index::Pdq(i) => i.heap_bytes(),
            Index::Phash(i) => i.heap_bytes(),
        }
    }

    /// The hash in `row`.
    pub fn get(&self, row: u32) -> Option<AnyHash> {
        match self {
            Index::Pdq(i) => i.get(row).map(|l| AnyHash::Pdq(Hash256 { limbs: *l })),
            Index::Phash(i) => i.get(row).map(|l| AnyHash::Phash(Hash64(l[0]))),
        }
    }

    /// Appends hashes (next row numbers); every hash must be of the index's kind.
    pub fn extend(&mut self, hashes: &[AnyHash]) -> Result<()> {
        let kind = self.kind();
        if let Some(h) = hashes.iter().find(|h| h.kind() != kind) {
            return Err(Error::KindMismatch { expected: kind.name(), found: h.kind().name() });
        }
        match self {
            Index::Pdq(i) => i.extend(
                &hashes
                    .iter()
                    .filter_map(|h| if let AnyHash::Pdq(p) = h { Some(p.limbs) } else { None })
                    .collect::<Vec<_>>(),
            ),
            Index::Phash(i) => i.extend(
                &hashes
                    .iter()
                    .filter_map(|h| if let AnyHash::Phash(p) = h { Some([p.0]) } else { None })
                    .collect::<Vec<_>>(),
            ),
        }
        Ok(())
    }

    /// Removes a row; false if it was not live.
    pub fn remove(&mut self, row: u32) -> bool {
        match self {
            Index::Pdq(i) => i.remove(row),
            Index::Phash(i) => i.remove(row),
        }
    }

    /// Answers one query: every live row within the radius of any of its variants, by row, each with its
    /// best distance. Variants of another kind than the bank's are ignored.
    pub fn search(&self, query: &[AnyHash], opts: SearchOptions, out: &mut Vec<Hit>) {
        out.clear();
        match self {
            Index::Pdq(i) => {
                for h in query {
                    if let AnyHash::Pdq(p) = h {
                        run(i, &p.limbs, opts, out);
                    }
                }
            }
            Index::Phash(i) => {
                for h in query {
                    if let AnyHash::Phash(p) = h {
                        run(i, &[p.0], opts, out);
                    }
                }
            }
        }
        if query.len() > 1 {
            out.sort_unstable();
            out.dedup_by_key(|h| h.row);
        }
    }

    /// Answers many queries in parallel on the current rayon pool, one result list per query, in order.
    pub fn search_batch(&self, queries: &[Query], opts: SearchOptions) -> Vec<Vec<Hit>> {
        queries
            .par_iter()
            .map_init(Vec::new, |buf, q| {
                self.search(q, opts, buf);
                buf.clone()
            })
            .collect()
    }
}

fn run<const L: usize>(i: &MihIndex<L>, q: &[u64; L], opts: SearchOptions, out: &mut Vec<Hit>) {
    match opts.method {
        Method::Auto => i.search(q, opts.radius, out),
        Method::Index => i.search_index(q, opts.radius, out),
        Method::Scan => i.search_scan(q, opts.radius, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dihedral_query_reports_best_distance_once() {
        let mut idx = Index::new(Kind::Pdq);
        let a = Hash256 { limbs: [0, 0, 0, 0] };
        let b = Hash256 { limbs: [u64::MAX, 0, 0, 0] };
        idx.extend(&[AnyHash::Pdq(a), AnyHash::Pdq(b)]).unwrap();
        let mut near_a = a;
        near_a.set_bit(200);
        let q = vec![AnyHash::Pdq(near_a), AnyHash::Pdq(a)];
        let mut out = Vec::new();
        idx.search(&q, SearchOptions { radius: 31, method: Method::Auto }, &mut out);
        assert_eq!(out, vec![Hit { row: 0, distance: 0 }]);
    }

    #[test]
    fn kind_mismatch_is_refused() {
        let mut idx = Index::new(Kind::Phash);
        let err = idx.extend(&[AnyHash::Pdq(Hash256::ZERO)]).unwrap_err();
        assert!(matches!(err, Error::KindMismatch { .. }), "{err}");
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn remove_hides_rows() {
        let mut idx = Index::new(Kind::Phash);
        idx.extend(&[AnyHash::Phash(Hash64(1)), AnyHash::Phash(Hash64(3))]).unwrap();
        assert!(idx.remove(0));
        assert!(!idx.remove(0));
        let mut out = Vec::new();
        for method in [Method::Index, Method::Scan] {
            idx.search(&[AnyHash::Phash(Hash64(1))], SearchOptions { radius: 2, method }, &mut out);
            assert_eq!(out, vec![Hit { row: 1, distance: 1 }]);
        }
    }
}
