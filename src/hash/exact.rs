//! Exact file hashes: MD5, SHA-1 and SHA-256 of the encoded bytes, as hotlines and hash-sharing programmes
//! exchange them (NCMEC's MD5/SHA-1, the Dutch Hashcheckserver's byte-identical matches, python-threatexchange's
//! `md5` signal type). Text form: lowercase hex, as `md5sum`, `sha1sum`, `sha256sum` and Python's
//! `hashlib.…().hexdigest()` print them.
//!
//! The three digests are fed the same chunks in turn, so a large file is read from memory once while it is
//! still in cache, not three times. The implementations are RustCrypto's (`md-5`, `sha1`, `sha2`), which use
//! the SHA extensions of x86 and ARM CPUs where they exist.

use crate::error::{Error, Result};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The exact hashes of one file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExactHashes {
    /// MD5 (16 bytes).
    pub md5: [u8; 16],
    /// SHA-1 (20 bytes).
    pub sha1: [u8; 20],
    /// SHA-256 (32 bytes).
    pub sha256: [u8; 32],
}

/// Bytes fed to each digest in turn: small enough to stay in L1/L2 between the three.
const CHUNK: usize = 16 << 10;

impl ExactHashes {
    /// Hashes `bytes` with all three functions.
    pub fn of(bytes: &[u8]) -> ExactHashes {
        let (mut md5, mut sha1, mut sha256) = (Md5::new(), Sha1::new(), Sha256::new());
        for chunk in bytes.chunks(CHUNK) {
            md5.update(chunk);
            sha1.update(chunk);
            sha256.update(chunk);
        }
        ExactHashes {
            md5: md5.finalize().into(),
            sha1: sha1.finalize().into(),
            sha256: sha256.finalize().into(),
        }
    }

    /// MD5 as 32 lowercase hex digits.
    pub fn md5_hex(&self) -> String {
        hex(&self.md5)
    }

    /// SHA-1 as 40 lowercase hex digits.
    pub fn sha1_hex(&self) -> String {
        hex(&self.sha1)
    }

    /// SHA-256 as 64 lowercase hex digits.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses a digest of `N` bytes from `2·N` hex digits (either case); `what` names it in the error
/// ("an MD5", "a SHA-1", …).
pub fn parse_hex<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let short = || s.chars().take(80).collect::<String>();
    if s.len() != 2 * N {
        return Err(Error::InvalidHash(format!(
            "'{}': {what} hash has {} hex digits, this has {}",
            short(),
            2 * N,
            s.chars().count()
        )));
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = s
            .get(2 * i..2 * i + 2)
            .and_then(|d| u8::from_str_radix(d, 16).ok().filter(|_| d.bytes().all(|c| c.is_ascii_hexdigit())))
            .ok_or_else(|| Error::InvalidHash(format!("'{}': not hexadecimal", short())))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_text_is_refused() {
        let h = ExactHashes::of(b"abc");
        assert_eq!(parse_hex::<16>(&h.md5_hex(), "an MD5").unwrap(), h.md5);
        assert_eq!(parse_hex::<20>(&h.sha1_hex().to_uppercase(), "a SHA-1").unwrap(), h.sha1);
        let e = parse_hex::<16>("abc", "an MD5").unwrap_err().to_string();
        assert!(e.contains("an MD5 hash has 32 hex digits, this has 3"), "{e}");
        assert!(parse_hex::<2>("+f00", "x").is_err());
        assert!(parse_hex::<2>("zz00", "x").is_err());
        assert!(parse_hex::<2>("é0", "x").is_err(), "multi-byte text of the right length");
    }

    /// The published test vectors (RFC 1321, FIPS 180-2 examples) for "" and "abc".
    #[test]
    fn known_vectors() {
        let empty = ExactHashes::of(b"");
        assert_eq!(empty.md5_hex(), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(empty.sha1_hex(), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(empty.sha256_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let abc = ExactHashes::of(b"abc");
        assert_eq!(abc.md5_hex(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(abc.sha1_hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(abc.sha256_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    /// Chunking does not change the result: a multi-chunk input equals the one-shot digests.
    #[test]
    fn chunked_equals_one_shot() {
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i * 31 % 251) as u8).collect();
        let got = ExactHashes::of(&data);
        assert_eq!(got.md5, <[u8; 16]>::from(Md5::digest(&data)));
        assert_eq!(got.sha1, <[u8; 20]>::from(Sha1::digest(&data)));
        assert_eq!(got.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    }
}
