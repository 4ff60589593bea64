//! Exact file hashes: MD5, SHA-1 and SHA-256 of the encoded bytes, as hotlines and hash-sharing programmes
//! exchange them (NCMEC's MD5/SHA-1, the Dutch Hashcheckserver's byte-identical matches, python-threatexchange's
//! `md5` signal type). Text form: lowercase hex, as `md5sum`, `sha1sum`, `sha256sum` and Python's
//! `hashlib.…().hexdigest()` print them.
//!
//! The three digests are fed the same chunks in turn, so a large file is read from memory once while it is
//! still in cache, not three times. The implementations are RustCrypto's (`md-5`, `sha1`, `sha2`), which use
//! the SHA extensions of x86 and ARM CPUs where they exist.

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
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
