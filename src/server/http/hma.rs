//! HMA's vocabulary on top of Pharos's: signal types and content types, how each signal type's text is
//! checked, bank names, and the per-request coin flip of `matching_enabled_ratio`.
//!
//! HMA ("OpenMediaMatch") names a hash kind a *signal type* (`pdq`, `video_md5`) and an input a *content
//! type* (`photo`, `video`). Each Pharos bank holds one [`Kind`]; the signal types below map onto kinds one
//! to one. `pdq` and `video_md5` are HMA's own; `phash`, `md5`, `sha1` and `sha256` are Pharos's additions
//! (hashed only when a request names them in `types`, so HMA clients see exactly HMA's answers).

use crate::matcher::{AnyHash, Kind};

/// A signal type: an HMA name for a bank kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SignalType {
    /// The name in requests and answers.
    pub(crate) name: &'static str,
    /// The kind of the banks it is matched against.
    pub(crate) kind: Kind,
    /// The content type it hashes.
    pub(crate) content: ContentType,
    /// Whether a hash of this content type carries it when the request names no `types` (HMA's defaults).
    pub(crate) default: bool,
}

/// What an upload or URL holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentType {
    /// An image: PDQ (and pHash and file digests when asked).
    Photo,
    /// Any other file (HMA's video): only digests of its bytes (nothing here decodes video).
    Video,
}

impl ContentType {
    /// Every content type, in HMA's order.
    pub(crate) const ALL: [ContentType; 2] = [ContentType::Photo, ContentType::Video];

    /// The name in requests (`photo`, `video`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            ContentType::Photo => "photo",
            ContentType::Video => "video",
        }
    }

    /// The content type of a name, or HMA's message.
    pub(crate) fn parse(name: &str) -> Result<ContentType, String> {
        ContentType::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| format!("no such content_type: '{name}'"))
    }

    /// The content type of a download from its `Content-Type` header, as HMA guesses it.
    pub(crate) fn of_mime(mime: &str) -> Result<ContentType, String> {
        let lower = mime.to_ascii_lowercase();
        if lower.starts_with("image") {
            Ok(ContentType::Photo)
        } else if lower.starts_with("video") {
            Ok(ContentType::Video)
        } else {
            Err(format!(
                "unsupported url ContentType: '{mime}', if you know the expected type, provide it with the \
                 content_type query param"
            ))
        }
    }
}

/// Every signal type, HMA's first (the order of `GET /c/signal_type`).
pub(crate) const SIGNAL_TYPES: [SignalType; 6] = [
    SignalType { name: "pdq", kind: Kind::Pdq, content: ContentType::Photo, default: true },
    SignalType { name: "video_md5", kind: Kind::Md5, content: ContentType::Video, default: true },
    SignalType { name: "phash", kind: Kind::Phash, content: ContentType::Photo, default: false },
    SignalType { name: "md5", kind: Kind::Md5, content: ContentType::Photo, default: false },
    SignalType { name: "sha1", kind: Kind::Sha1, content: ContentType::Photo, default: false },
    SignalType { name: "sha256", kind: Kind::Sha256, content: ContentType::Photo, default: false },
];

/// The signal type of a name.
pub(crate) fn signal_type(name: &str) -> Option<SignalType> {
    SIGNAL_TYPES.into_iter().find(|s| s.name == name)
}

/// The signal type that names a bank kind in answers (`video_md5` for MD5 banks, as HMA calls them).
pub(crate) fn signal_type_of(kind: Kind) -> SignalType {
    SIGNAL_TYPES.into_iter().find(|s| s.kind == kind).expect("every kind has a signal type")
}

/// The signal types a hash of `content` computes: those `types` names (comma-separated, items trimmed,
/// empty items skipped), or the content type's defaults when `types` is absent. Errors are HMA's messages.
pub(crate) fn selected(content: ContentType, types: Option<&str>) -> Result<Vec<SignalType>, String> {
    let Some(types) = types else {
        return Ok(SIGNAL_TYPES.into_iter().filter(|s| s.content == content && s.default).collect());
    };
    let mut out: Vec<SignalType> = Vec::new();
    for name in types.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match signal_type(name) {
            // MD5, SHA-1 and SHA-256 are digests of the bytes: a video has them too (but a photo has no
            // `video_md5`, as in HMA).
            Some(s) if s.content == content || (content == ContentType::Video && s.kind.is_exact()) => {
                if !out.contains(&s) {
                    out.push(s)
                }
            }
            _ => return Err(format!("signal type '{name}' doesn't exist or is disabled")),
        }
    }
    if out.is_empty() {
        return Err("empty signal type selection".into());
    }
    Ok(out)
}

/// Parses a signal of a type as HMA validates it: PDQ is exactly 64 lowercase hex digits (not trimmed);
/// digests are trimmed and lowercased first. The error is HMA's reason text (`invalid PDQ hash`).
pub(crate) fn parse_signal(st: SignalType, text: &str) -> Result<AnyHash, String> {
    match st.kind {
        Kind::Pdq => {
            if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err("invalid PDQ hash".into());
            }
            AnyHash::parse(Kind::Pdq, text).map_err(|_| "invalid PDQ hash".into())
        }
        Kind::Phash => {
            if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err("invalid pHash: 16 lowercase hex digits expected".into());
            }
            AnyHash::parse(Kind::Phash, text).map_err(|e| e.to_string())
        }
        Kind::Md5 | Kind::Sha1 | Kind::Sha256 => {
            let clean = text.trim().to_ascii_lowercase();
            let digits = st.kind.bits() as usize / 4;
            if clean.len() != digits || !clean.bytes().all(|b| b.is_ascii_hexdigit()) {
                let what = match st.kind {
                    Kind::Md5 => "MD5",
                    Kind::Sha1 => "SHA-1",
                    _ => "SHA-256",
                };
                return Err(format!("'{}' is not a valid {what} hash", clip(text)));
            }
            AnyHash::parse(st.kind, &clean).map_err(|e| e.to_string())
        }
    }
}

/// At most 80 characters of caller text, for messages.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The distance as HMA writes it in lookups: a string, `"-"` for kinds without one (digests).
pub(crate) fn distance_text(kind: Kind, d: u32) -> String {
    if kind.is_exact() {
        "-".into()
    } else {
        d.to_string()
    }
}

/// Whether a bank name is one HMA accepts (`[A-Z_][A-Z0-9_]*`, and Pharos's 64 characters).
pub(crate) fn valid_bank_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// The message HMA answers for a bank name it refuses.
pub(crate) const BANK_NAME_RULE: &str = "Bank names must be UPPER_WITH_UNDERSCORE";

/// The per-request coin flip of HMA's `matching_enabled_ratio`: a number in [0, 1), the same for every
/// bank of one request and signal type. With a `seed` it is a function of the seed (so a caller can
/// reproduce a decision; the values are Pharos's own, not Python's `random.Random(seed)`); without one it
/// is fresh for each request.
pub(crate) fn coin_flip(seed: Option<&str>, signal_type: &str) -> f64 {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    match seed {
        Some(s) => h.update(s.as_bytes()),
        None => {
            use std::sync::atomic::{AtomicU64, Ordering};
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            h.update(nanos.to_le_bytes());
            h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
            h.update(std::process::id().to_le_bytes());
        }
    }
    h.update([0]);
    h.update(signal_type.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    // 53 random bits, as a double in [0, 1).
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a bank with this ratio takes part in a request whose coin flip is `flip` (HMA: `ratio >= flip`).
pub(crate) fn takes_part(ratio: f64, flip: f64) -> bool {
    ratio >= flip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_checked_as_hma_checks_them() {
        let pdq = signal_type("pdq").unwrap();
        let h = "f".repeat(64);
        assert!(parse_signal(pdq, &h).is_ok());
        assert_eq!(parse_signal(pdq, &"F".repeat(64)).unwrap_err(), "invalid PDQ hash");
        assert_eq!(parse_signal(pdq, &format!(" {h}")).unwrap_err(), "invalid PDQ hash");
        let md5 = signal_type("video_md5").unwrap();
        assert!(parse_signal(md5, " D41D8CD98F00B204E9800998ECF8427E ").is_ok());
        assert_eq!(parse_signal(md5, "xyz").unwrap_err(), "'xyz' is not a valid MD5 hash");
    }

    #[test]
    fn types_select_as_hma_does() {
        let names = |v: Vec<SignalType>| v.iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(selected(ContentType::Photo, None).unwrap()), ["pdq"]);
        assert_eq!(names(selected(ContentType::Video, None).unwrap()), ["video_md5"]);
        assert_eq!(names(selected(ContentType::Photo, Some(" pdq, ,phash")).unwrap()), ["pdq", "phash"]);
        assert_eq!(selected(ContentType::Photo, Some(",")).unwrap_err(), "empty signal type selection");
        assert_eq!(
            selected(ContentType::Photo, Some("video_md5")).unwrap_err(),
            "signal type 'video_md5' doesn't exist or is disabled"
        );
    }

    #[test]
    fn bank_names_and_coin_flips() {
        assert!(valid_bank_name("TEST_BANK_2"));
        assert!(valid_bank_name("_X"));
        for bad in ["", "lower", "2X", "A-B", "A.B", &"A".repeat(65)] {
            assert!(!valid_bank_name(bad), "{bad}");
        }
        let a = coin_flip(Some("s"), "pdq");
        assert_eq!(a, coin_flip(Some("s"), "pdq"));
        assert!((0.0..1.0).contains(&a));
        assert!(takes_part(1.0, 0.999_999));
        assert!(!takes_part(0.0, 0.5));
    }
}
