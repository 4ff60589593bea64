//! Exact Hamming range search over banks of PDQ (256-bit) and pHash (64-bit) hashes, and exact lookup in
//! banks of file digests (MD5, SHA-1, SHA-256).
//!
//! - [`exact`]: the hash set of a digest bank (distance is always 0).
//! - [`mih`]: the multi-index hash over 16-bit substrings, updated incrementally; exact at every radius.
//! - [`flat`](self): the brute-force scan, for small banks and large radii, and the oracle in tests.
//! - [`Index`]: one bank's index, whichever the kind; [`Index::search_batch`] answers many queries in
//!   parallel (rayon), optionally dihedral-aware (the 8 variants of a query, one list, best distance each).
//!
//! Rows are numbered as the store numbers entries (row = id), so a hit needs no lookup to name its entry;
//! labels and times stay in the store and are read only for the hits.

pub mod exact;
mod flat;
pub mod mih;

pub use exact::ExactIndex;
pub use mih::MihIndex;

use crate::error::{Error, Result};
use crate::hash::exact::{hex, parse_hex};
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

/// The kinds of bank: two perceptual hashes (matched within a Hamming radius) and three digests of the
/// file bytes (matched exactly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Meta's PDQ, 256 bits.
    Pdq,
    /// The 64-bit DCT pHash.
    Phash,
    /// MD5 of the file bytes (NCMEC, python-threatexchange's `md5`).
    Md5,
    /// SHA-1 of the file bytes (NCMEC).
    Sha1,
    /// SHA-256 of the file bytes.
    Sha256,
}

impl Kind {
    /// Every kind, in the order banks of several kinds are listed.
    pub const ALL: [Kind; 5] = [Kind::Pdq, Kind::Phash, Kind::Md5, Kind::Sha1, Kind::Sha256];

    /// The name used on the command line, in the store and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pdq => "pdq",
            Kind::Phash => "phash",
            Kind::Md5 => "md5",
            Kind::Sha1 => "sha1",
            Kind::Sha256 => "sha256",
        }
    }

    /// Bits per hash.
    pub fn bits(self) -> u32 {
        match self {
            Kind::Pdq => 256,
            Kind::Phash => 64,
            Kind::Md5 => 128,
            Kind::Sha1 => 160,
            Kind::Sha256 => 256,
        }
    }

    /// True for the digests of file bytes, which match only when equal.
    pub fn is_exact(self) -> bool {
        matches!(self, Kind::Md5 | Kind::Sha1 | Kind::Sha256)
    }

    /// The largest radius a query may ask for: a quarter of the bits (PDQ 64, pHash 16); 0 for digests.
    /// Unrelated PDQ hashes lie ~128 bits apart, so a larger radius matches noise, and it makes every query
    /// a full scan.
    pub fn max_radius(self) -> u32 {
        if self.is_exact() {
            0
        } else {
            self.bits() / 4
        }
    }

    /// The usual match radius: Meta's 31 for PDQ; 10 for the 64-bit pHash (a common choice, ~16 %); 0 for
    /// digests.
    pub fn default_radius(self) -> u32 {
        match self {
            Kind::Pdq => 31,
            Kind::Phash => 10,
            Kind::Md5 | Kind::Sha1 | Kind::Sha256 => 0,
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
            "md5" => Ok(Kind::Md5),
            "sha1" | "sha-1" => Ok(Kind::Sha1),
            "sha256" | "sha-256" => Ok(Kind::Sha256),
            _ => Err(Error::InvalidInput(format!(
                "unknown hash kind '{}' (expected pdq, phash, md5, sha1 or sha256)",
                short(s)
            ))),
        }
    }
}

/// A hash of any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnyHash {
    /// A PDQ hash.
    Pdq(Hash256),
    /// A pHash.
    Phash(Hash64),
    /// An MD5 digest.
    Md5([u8; 16]),
    /// A SHA-1 digest.
    Sha1([u8; 20]),
    /// A SHA-256 digest.
    Sha256([u8; 32]),
}

impl AnyHash {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyHash::Pdq(_) => Kind::Pdq,
            AnyHash::Phash(_) => Kind::Phash,
            AnyHash::Md5(_) => Kind::Md5,
            AnyHash::Sha1(_) => Kind::Sha1,
            AnyHash::Sha256(_) => Kind::Sha256,
        }
    }

    /// Parses hex text, the kind given by the length: 64 digits PDQ, 16 pHash, 32 MD5, 40 SHA-1. A SHA-256
    /// is 64 digits too, so it is read only by [`AnyHash::parse`] with its kind named.
    pub fn from_hex(s: &str) -> Result<AnyHash> {
        match s.len() {
            16 => Ok(AnyHash::Phash(Hash64::from_hex(s)?)),
            32 => AnyHash::parse(Kind::Md5, s),
            40 => AnyHash::parse(Kind::Sha1, s),
            _ => Ok(AnyHash::Pdq(Hash256::from_hex(s).map_err(|_| {
                Error::InvalidHash(if s.len() == 64 {
                    format!("'{}': not hexadecimal", short(s))
                } else {
                    format!(
                        "'{}': expected 64 hex digits (PDQ), 16 (pHash), 32 (MD5) or 40 (SHA-1), found {}",
                        short(s),
                        s.chars().count()
                    )
                })
            })?)),
        }
    }

    /// Parses hex text as a hash of `kind` (either case).
    pub fn parse(kind: Kind, s: &str) -> Result<AnyHash> {
        Ok(match kind {
            Kind::Pdq => AnyHash::Pdq(Hash256::from_hex(s)?),
            Kind::Phash => AnyHash::Phash(Hash64::from_hex(s)?),
            Kind::Md5 => AnyHash::Md5(parse_hex(s, "an MD5")?),
            Kind::Sha1 => AnyHash::Sha1(parse_hex(s, "a SHA-1")?),
            Kind::Sha256 => AnyHash::Sha256(parse_hex(s, "a SHA-256")?),
        })
    }

    /// Parses hex text for a bank of `kind`: a hash of that kind, or an error that says which kind the text
    /// is when it is another one ("a phash hash cannot go in a pdq bank (…)"). A 64-digit text is read as
    /// the bank's kind (SHA-256 or PDQ).
    pub fn parse_for(kind: Kind, s: &str) -> Result<AnyHash> {
        match AnyHash::parse(kind, s) {
            Ok(h) => Ok(h),
            Err(why) => match AnyHash::from_hex(s) {
                Ok(h) if h.kind() != kind => Err(Error::InvalidInput(format!(
                    "{} ({why})",
                    Error::KindMismatch { expected: kind.name(), found: h.kind().name() }
                ))),
                _ => Err(why),
            },
        }
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        match self {
            AnyHash::Pdq(h) => h.to_hex(),
            AnyHash::Phash(h) => h.to_hex(),
            AnyHash::Md5(d) => hex(d),
            AnyHash::Sha1(d) => hex(d),
            AnyHash::Sha256(d) => hex(d),
        }
    }

    /// The hash's bytes as its bank stores them: PDQ as four little-endian u64 limbs, pHash as one, a digest
    /// as its bytes.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        match self {
            AnyHash::Pdq(p) => p.limbs.iter().for_each(|l| out.extend_from_slice(&l.to_le_bytes())),
            AnyHash::Phash(p) => out.extend_from_slice(&p.0.to_le_bytes()),
            AnyHash::Md5(d) => out.extend_from_slice(d),
            AnyHash::Sha1(d) => out.extend_from_slice(d),
            AnyHash::Sha256(d) => out.extend_from_slice(d),
        }
    }

    /// Reads what [`AnyHash::write_bytes`] wrote for `kind`; `b` must be `kind.bits() / 8` bytes.
    pub fn from_bytes(kind: Kind, b: &[u8]) -> AnyHash {
        let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        match kind {
            Kind::Pdq => AnyHash::Pdq(Hash256 { limbs: [u(0), u(1), u(2), u(3)] }),
            Kind::Phash => AnyHash::Phash(Hash64(u(0))),
            Kind::Md5 => AnyHash::Md5(b.try_into().expect("16 bytes")),
            Kind::Sha1 => AnyHash::Sha1(b.try_into().expect("20 bytes")),
            Kind::Sha256 => AnyHash::Sha256(b.try_into().expect("32 bytes")),
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
    /// An MD5 bank.
    Md5(ExactIndex<16>),
    /// A SHA-1 bank.
    Sha1(ExactIndex<20>),
    /// A SHA-256 bank.
    Sha256(ExactIndex<32>),
}

/// Calls `$body` with `$i` bound to the index inside, whichever variant `$index` is.
macro_rules! each {
    ($index:expr, $i:ident => $body:expr) => {
        match $index {
            Index::Pdq($i) => $body,
            Index::Phash($i) => $body,
            Index::Md5($i) => $body,
            Index::Sha1($i) => $body,
            Index::Sha256($i) => $body,
        }
    };
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
            Kind::Md5 => Index::Md5(ExactIndex::default()),
            Kind::Sha1 => Index::Sha1(ExactIndex::default()),
            Kind::Sha256 => Index::Sha256(ExactIndex::default()),
        }
    }

    /// The kind of hash it holds.
    pub fn kind(&self) -> Kind {
        match self {
            Index::Pdq(_) => Kind::Pdq,
            Index::Phash(_) => Kind::Phash,
            Index::Md5(_) => Kind::Md5,
            Index::Sha1(_) => Kind::Sha1,
            Index::Sha256(_) => Kind::Sha256,
        }
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        each!(self, i => i.len())
    }

    /// True when no row is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the index (hashes included).
    pub fn heap_bytes(&self) -> usize {
        each!(self, i => i.heap_bytes())
    }

    /// The hash in `row` if the row is live (not removed).
    pub fn get_live(&self, row: u32) -> Option<AnyHash> {
        let live = match self {
            Index::Pdq(i) => i.is_live(row),
            Index::Phash(i) => i.is_live(row),
            // Digest indexes answer only live rows.
            Index::Md5(_) | Index::Sha1(_) | Index::Sha256(_) => true,
        };
        if live {
            self.get(row)
        } else {
            None
        }
    }

    /// The hash in `row`.
    pub fn get(&self, row: u32) -> Option<AnyHash> {
        match self {
            Index::Pdq(i) => i.get(row).map(|l| AnyHash::Pdq(Hash256 { limbs: *l })),
            Index::Phash(i) => i.get(row).map(|l| AnyHash::Phash(Hash64(l[0]))),
            Index::Md5(i) => i.get(row).map(|d| AnyHash::Md5(*d)),
            Index::Sha1(i) => i.get(row).map(|d| AnyHash::Sha1(*d)),
            Index::Sha256(i) => i.get(row).map(|d| AnyHash::Sha256(*d)),
        }
    }

    /// Appends hashes (next row numbers); every hash must be of the index's kind.
    pub fn extend(&mut self, hashes: &[AnyHash]) -> Result<()> {
        let kind = self.kind();
        if let Some(h) = hashes.iter().find(|h| h.kind() != kind) {
            return Err(Error::KindMismatch { expected: kind.name(), found: h.kind().name() });
        }
        macro_rules! rows {
            ($variant:ident, $h:ident => $row:expr) => {
                hashes
                    .iter()
                    .filter_map(|h| if let AnyHash::$variant($h) = h { Some($row) } else { None })
                    .collect::<Vec<_>>()
            };
        }
        match self {
            Index::Pdq(i) => i.extend(&rows!(Pdq, p => p.limbs)),
            Index::Phash(i) => i.extend(&rows!(Phash, p => [p.0])),
            Index::Md5(i) => i.extend(&rows!(Md5, d => *d)),
            Index::Sha1(i) => i.extend(&rows!(Sha1, d => *d)),
            Index::Sha256(i) => i.extend(&rows!(Sha256, d => *d)),
        }
        Ok(())
    }

    /// Removes a row; false if it was not live.
    pub fn remove(&mut self, row: u32) -> bool {
        each!(self, i => i.remove(row))
    }

    /// Answers one query: every live row within the radius of any of its variants, by row, each with its
    /// best distance. Variants of another kind than the bank's are ignored; a digest bank ignores the
    /// radius (equal or not).
    pub fn search(&self, query: &[AnyHash], opts: SearchOptions, out: &mut Vec<Hit>) {
        out.clear();
        match self {
            Index::Md5(i) => query.iter().for_each(|h| {
                if let AnyHash::Md5(d) = h {
                    i.search(d, out)
                }
            }),
            Index::Sha1(i) => query.iter().for_each(|h| {
                if let AnyHash::Sha1(d) = h {
                    i.search(d, out)
                }
            }),
            Index::Sha256(i) => query.iter().for_each(|h| {
                if let AnyHash::Sha256(d) = h {
                    i.search(d, out)
                }
            }),
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
