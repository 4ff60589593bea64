//! The crate's error type.
//!
//! One enum for the library so that front ends (the CLI today, gRPC later) can map every failure in a single
//! exhaustive `match`: the CLI prints [`Error`]'s `Display` text in its JSON `error` field, the daemon will map
//! the variants to status codes. Messages never contain pixel data or image bytes.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which limit an input exceeded (see `image::Limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The encoded file is larger than `max_bytes`.
    Bytes,
    /// The width in the header is larger than `max_width`.
    Width,
    /// The height in the header is larger than `max_height`.
    Height,
    /// `width × height` is larger than `max_pixels`.
    Pixels,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Bytes => "encoded size",
            Limit::Width => "width",
            Limit::Height => "height",
            Limit::Pixels => "pixel count",
        })
    }
}

/// Everything that can go wrong between bytes in and hashes out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input has no bytes at all.
    #[error("empty input")]
    Empty,
    /// The bytes are not one of the supported formats (JPEG, PNG, WebP, GIF, BMP, TIFF).
    #[error("unsupported or unrecognised image format{0}")]
    UnsupportedFormat(String),
    /// The header declares an image beyond a configured limit; nothing was decoded or allocated for pixels.
    #[error("image {what} {value} exceeds the limit of {limit}")]
    TooLarge {
        /// Which limit.
        what: Limit,
        /// The value the input declared.
        value: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The file is recognised but cannot be decoded (truncated, corrupt, inconsistent header, …).
    #[error("cannot decode {format} image: {reason}")]
    Decode {
        /// The detected container format.
        format: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// A hash string that does not parse (wrong length or not hexadecimal).
    #[error("invalid hash {0}")]
    InvalidHash(String),
    /// The requested hashing backend cannot be used on this machine or in this build.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// Reading an input failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An input line or argument that is not what was expected (the message says what and where).
    #[error("{0}")]
    InvalidInput(String),
    /// No bank has this name.
    #[error("unknown bank '{0}'")]
    UnknownBank(String),
    /// A bank with this name already exists.
    #[error("bank '{0}' already exists")]
    BankExists(String),
    /// A bank name that is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error("invalid bank name '{0}': use 1 to 64 characters from A-Z a-z 0-9 _ . -")]
    InvalidBankName(String),
    /// A hash of one kind offered to a bank or index of the other kind.
    #[error("a {found} hash cannot go in a {expected} bank")]
    KindMismatch {
        /// The bank's kind.
        expected: &'static str,
        /// The hash's kind.
        found: &'static str,
    },
    /// An entry id that the bank does not hold (never added, or already removed).
    #[error("bank '{bank}' has no entry {id}")]
    UnknownEntry {
        /// The bank.
        bank: String,
        /// The id asked for.
        id: u64,
    },
    /// No entry of the bank has this external id.
    #[error("bank '{bank}' has no entry with external id '{external_id}'")]
    UnknownExternalId {
        /// The bank.
        bank: String,
        /// The external id asked for (cut to 80 characters).
        external_id: String,
    },
    /// The embedded bank store failed (I/O, corruption, or the database is open in another process).
    #[error("bank store: {0}")]
    Store(String),
    /// The shared bank store (PostgreSQL) cannot be reached now; the same call may succeed later. Matching
    /// goes on from memory meanwhile; writes fail with this.
    #[error("bank store unavailable: {0}")]
    Unavailable(String),
    /// A bug caught at run time (a panic in a decoder or hasher): this item failed, the process goes on.
    #[error("internal error: {0}")]
    Internal(String),
}
