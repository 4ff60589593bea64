//! Hash types and the CPU reference hashers.
//!
//! The text forms are the ones partners exchange, so they are part of the contract:
//! - PDQ ([`Hash256`]): 64 lowercase hex digits, Meta's `Hash256::format()`. Bit `k` (k = 16·row + col of the
//!   16×16 DCT block) is worth 2^k of a 256-bit number printed most significant digit first.
//! - pHash ([`Hash64`]): 16 lowercase hex digits, imagehash's `str()`: the first bit of the row-major 8×8
//!   bit array (the DC term) is the most significant.

pub mod exact;
pub mod pdq;
pub mod phash;
pub mod simd;

use crate::error::{Error, Result};
use crate::pixels::ImageView;
use exact::ExactHashes;
use pdq::{Dihedral, PdqHash, PdqHasher};
use phash::PhashHasher;
use std::fmt;
use std::str::FromStr;

/// A 256-bit PDQ hash.
///
/// Stored as four little-endian limbs: bit `k` of the hash is bit `k % 64` of `limbs[k / 64]`. Meta's C++
/// keeps sixteen `u16` words with the same bit numbering; 64-bit limbs make the Hamming distance four
/// XOR + popcount operations, which is what the matcher spends its time on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash256 {
    /// Bit `k` is bit `k % 64` of `limbs[k / 64]`.
    pub limbs: [u64; 4],
}

impl Hash256 {
    /// The all-zero hash (what the reference returns for images smaller than 5 pixels a side).
    pub const ZERO: Hash256 = Hash256 { limbs: [0; 4] };

    /// Bit `k` (0..256).
    #[inline]
    pub fn bit(&self, k: usize) -> bool {
        (self.limbs[k >> 6] >> (k & 63)) & 1 == 1
    }

    /// Sets bit `k` (0..256).
    #[inline]
    pub fn set_bit(&mut self, k: usize) {
        self.limbs[k >> 6] |= 1 << (k & 63);
    }

    /// Number of differing bits.
    #[inline]
    pub fn distance(&self, other: &Hash256) -> u32 {
        self.limbs.iter().zip(other.limbs.iter()).map(|(a, b)| (a ^ b).count_ones()).sum()
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.limbs.iter().map(|l| l.count_ones()).sum()
    }

    /// The 32 bytes in big-endian order (the byte form of the hex text: first byte = first two digits).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.limbs.iter().rev().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_be_bytes());
        }
        out
    }

    /// Inverse of [`Hash256::to_bytes`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Hash256 {
        let mut limbs = [0u64; 4];
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            limbs[3 - i] = u64::from_be_bytes(chunk.try_into().expect("chunks_exact(8)"));
        }
        Hash256 { limbs }
    }

    /// Parses Meta's 64-hex-digit text form (either case).
    ///
    /// ```
    /// use pharos::hash::Hash256;
    /// // Meta's own test vector: bridge-1-original.jpg and its 90° rotation (PDQHasherTest.java).
    /// let a = Hash256::from_hex("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22")?;
    /// let b: Hash256 = "30a10efd71cc3d429013d48d0ffffc52e34e0e17ada952a9d29685211ea9e5af".parse()?;
    /// assert_eq!(a.to_hex(), "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22");
    /// assert!(a.distance(&b) > 31); // a rotation is not a match without the dihedral variants
    /// assert!(Hash256::from_hex("f8f8").is_err());
    /// # Ok::<(), pharos::Error>(())
    /// ```
    pub fn from_hex(s: &str) -> Result<Hash256> {
        if s.len() != 64 {
            return Err(Error::InvalidHash(format!(
                "'{}': a PDQ hash has 64 hex digits, this has {}",
                truncate_for_message(s),
                s.chars().count()
            )));
        }
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().rev().enumerate() {
            *limb = parse_hex_u64(&s[i * 16..i * 16 + 16], s)?;
        }
        Ok(Hash256 { limbs })
    }

    /// Meta's text form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for limb in self.limbs.iter().rev() {
            write!(f, "{limb:016x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({self})")
    }
}

impl FromStr for Hash256 {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Hash256::from_hex(s)
    }
}

/// A 64-bit pHash; bit 63 (the most significant) is the DC term, as in imagehash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash64(pub u64);

impl Hash64 {
    /// Number of differing bits.
    #[inline]
    pub fn distance(&self, other: &Hash64) -> u32 {
        (self.0 ^ other.0).count_ones()
    }

    /// Parses imagehash's 16-hex-digit text form (either case).
    pub fn from_hex(s: &str) -> Result<Hash64> {
        if s.len() != 16 {
            return Err(Error::InvalidHash(format!(
                "'{}': a pHash has 16 hex digits, this has {}",
                truncate_for_message(s),
                s.chars().count()
            )));
        }
        Ok(Hash64(parse_hex_u64(s, s)?))
    }

    /// imagehash's text form: 16 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Hash64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Hash64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash64({self})")
    }
}

impl FromStr for Hash64 {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Hash64::from_hex(s)
    }
}

/// Everything computed for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashRecord {
    /// Width of the hashed pixels (after EXIF orientation, when applied).
    pub width: u32,
    /// Height of the hashed pixels.
    pub height: u32,
    /// PDQ hash and quality.
    pub pdq: PdqHash,
    /// 64-bit pHash.
    pub phash: Hash64,
    /// The PDQ dihedral variants, when asked for.
    pub dihedral: Option<Dihedral>,
    /// MD5, SHA-1 and SHA-256 of the encoded file, when asked for (they need the file's bytes, which the
    /// pixel hashers never see: set by whoever holds them, [`crate::hash::exact`]).
    pub exact: Option<ExactHashes>,
}

/// Scratch space for every CPU hasher, so hashing an image allocates nothing once warm; one per thread.
///
/// This is the CPU reference for a whole image: the GPU backend's results are tested against it, and the
/// engine falls back to it.
#[derive(Default)]
pub struct Hashers {
    pdq: PdqHasher,
    phash: PhashHasher,
}

impl Hashers {
    /// Empty scratch space (grows on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// PDQ (with the dihedral variants when asked) and pHash of decoded pixels.
    pub fn hash_pixels(&mut self, img: ImageView<'_>, dihedral: bool) -> HashRecord {
        let (pdq, dihedral) = if dihedral {
            let (h, d) = self.pdq.hash_with_dihedral(img);
            (h, Some(d))
        } else {
            (self.pdq.hash(img), None)
        };
        HashRecord {
            width: img.width,
            height: img.height,
            pdq,
            phash: self.phash.hash(img),
            dihedral,
            exact: None,
        }
    }
}

fn parse_hex_u64(digits: &str, whole: &str) -> Result<u64> {
    // from_str_radix accepts a leading '+', which is not hex.
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidHash(format!("'{}': not hexadecimal", truncate_for_message(whole))));
    }
    u64::from_str_radix(digits, 16).map_err(|e| Error::InvalidHash(format!("'{whole}': {e}")))
}

/// Error messages quote the offending text, but never more than a screenful of it.
fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bit_order() {
        let mut h = Hash256::ZERO;
        h.set_bit(0);
        h.set_bit(255);
        let hex = h.to_hex();
        assert_eq!(hex, format!("8{}1", "0".repeat(62)));
        assert_eq!(Hash256::from_hex(&hex).unwrap(), h);
        assert_eq!(Hash256::from_hex(&hex.to_uppercase()).unwrap(), h);
        assert_eq!(Hash256::from_bytes(&h.to_bytes()), h);
        assert_eq!(h.to_bytes()[0], 0x80);
        assert_eq!(h.count_ones(), 2);
    }

    #[test]
    fn distance_counts_bits() {
        let a = Hash256::from_hex(&"f".repeat(64)).unwrap();
        assert_eq!(a.distance(&Hash256::ZERO), 256);
        assert_eq!(Hash64(0b1011).distance(&Hash64(0)), 3);
    }

    #[test]
    fn bad_hex_is_rejected() {
        assert!(Hash256::from_hex("abc").is_err());
        assert!(Hash256::from_hex(&"g".repeat(64)).is_err());
        assert!(Hash256::from_hex(&format!("+{}", "0".repeat(63))).is_err());
        assert!(Hash64::from_hex("+000000000000000").is_err());
        assert_eq!(Hash64::from_hex("8000000000000001").unwrap(), Hash64(0x8000_0000_0000_0001));
    }
}
