//! Banks: what a bank is, how it is searched, and the limits every search obeys — written once, used by
//! `pharos match` and the daemon alike.
//!
//! - [`BankSet`] (`set.rs`): the store plus one in-memory index per bank, kept in step (a write goes to the
//!   store first, one durable transaction, then to the index, under the bank's writer lock).
//! - [`SearchPolicy`]: the bounds of one query — at most `max_matches` results (nearest first, with a
//!   `truncated` flag), a radius no larger than [`Kind::max_radius`], at most [`MAX_VARIANTS`] hashes of
//!   one kind (the dihedral variants of one image).
//! - [`validate_label`]: what a label may contain.
//! - [`formats`]: the text forms banks are imported from and exported to (hex, `pharos hash` JSON lines,
//!   python-threatexchange, CSV), and the query lines `pharos match` reads.
//!
//! The store ([`crate::store`]) only stores rows; indexes are built here ([`load`]).

mod audit;
pub mod formats;
mod set;

pub use set::{BankHit, BankQuery, BankSet, BankSummary, SearchResult, Suppressed};

use crate::error::{Error, Result};
use crate::matcher::{AnyHash, ExactIndex, Index, Kind, MihIndex};
use crate::store::{BankInfo, BankStore, EntryMeta, EntryUpdate, Rows};

/// Most hashes of one kind in one query: an image and its 7 dihedral variants.
pub const MAX_VARIANTS: usize = 8;

/// Longest label, in bytes (a case number, a partner's id and tags fit easily).
pub const MAX_LABEL_BYTES: usize = 4096;

/// The bounds every search obeys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchPolicy {
    /// Most matches returned for one query (over all its banks), nearest first; the rest are cut and the
    /// result says it was truncated.
    pub max_matches: usize,
}

impl Default for SearchPolicy {
    fn default() -> Self {
        SearchPolicy { max_matches: 1000 }
    }
}

impl SearchPolicy {
    /// The radius to search `kind` with: the one asked for (at most the kind's maximum) or the default.
    pub fn radius(&self, kind: Kind, asked: Option<u32>) -> Result<u32> {
        if kind.is_exact() {
            return Ok(0); // equal or not: a radius means nothing to a digest bank
        }
        match asked {
            None => Ok(kind.default_radius()),
            Some(r) if r <= kind.max_radius() => Ok(r),
            Some(r) => Err(Error::InvalidInput(format!(
                "radius {r} is larger than the largest allowed for a {kind} hash ({}; unrelated hashes are ~{} bits apart)",
                kind.max_radius(),
                kind.bits() / 2
            ))),
        }
    }

    /// Checks a query's variants: at most [`MAX_VARIANTS`] of each kind.
    pub fn check_query(&self, query: &[AnyHash]) -> Result<()> {
        for kind in Kind::ALL {
            let n = query.iter().filter(|h| h.kind() == kind).count();
            if n > MAX_VARIANTS {
                return Err(Error::InvalidInput(format!(
                    "{n} {kind} hashes in one query; at most {MAX_VARIANTS} (an image and its dihedral variants)"
                )));
            }
        }
        Ok(())
    }
}

/// Checks a label: at most [`MAX_LABEL_BYTES`] bytes, and no control characters other than tab, newline
/// and carriage return (labels end up in logs, CSV files and terminals).
pub fn validate_label(label: &str) -> Result<()> {
    if label.len() > MAX_LABEL_BYTES {
        return Err(Error::InvalidInput(format!(
            "a label of {} bytes; at most {MAX_LABEL_BYTES}",
            label.len()
        )));
    }
    if let Some(c) = label.chars().find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        return Err(Error::InvalidInput(format!(
            "a label contains the control character U+{:04X}; only tab, newline and carriage return are allowed",
            u32::from(c)
        )));
    }
    Ok(())
}

/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// Most tags on one entry.
pub const MAX_TAGS: usize = 64;

/// Checks an entry's fields: every text field as [`validate_label`]; tags non-empty, at most
/// [`MAX_TAG_BYTES`] bytes, at most [`MAX_TAGS`] of them, without whitespace or commas (formats write tags
/// as space- or comma-separated lists); quality 0 to 100.
pub fn validate_meta(meta: &EntryMeta) -> Result<()> {
    let named = |what: &str, e: Error| Error::InvalidInput(format!("{what}: {e}"));
    for (what, v) in [
        ("label", &meta.label),
        ("external id", &meta.external_id),
        ("source", &meta.source),
        ("note", &meta.note),
    ] {
        if let Some(v) = v {
            validate_label(v).map_err(|e| named(what, e))?;
        }
    }
    for (k, v) in &meta.metadata {
        validate_label(k).map_err(|e| named("metadata key", e))?;
        validate_label(v).map_err(|e| named("metadata value", e))?;
    }
    if meta.tags.len() > MAX_TAGS {
        return Err(Error::InvalidInput(format!("{} tags; at most {MAX_TAGS}", meta.tags.len())));
    }
    for t in &meta.tags {
        validate_tag(t)?;
    }
    if let Some(q) = meta.quality {
        if q > 100 {
            return Err(Error::InvalidInput(format!("quality {q}; PDQ quality is 0 to 100")));
        }
    }
    Ok(())
}

/// Checks a change to entries: the tags it adds (as [`validate_tag`]) and its note (as [`validate_label`]).
pub fn validate_update(u: &EntryUpdate) -> Result<()> {
    for t in &u.add_tags {
        validate_tag(t)?;
    }
    if let Some(Some(n)) = &u.note {
        validate_label(n).map_err(|e| Error::InvalidInput(format!("note: {e}")))?;
    }
    Ok(())
}

/// Checks one tag (see [`validate_meta`]).
pub fn validate_tag(t: &str) -> Result<()> {
    if t.is_empty()
        || t.len() > MAX_TAG_BYTES
        || t.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(Error::InvalidInput(format!(
            "tag '{}': 1 to {MAX_TAG_BYTES} bytes without whitespace, commas or control characters",
            t.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// A bank read from the store and indexed, ready to query.
#[derive(Debug)]
pub struct LoadedBank {
    /// Its metadata.
    pub info: BankInfo,
    /// The index; row `i` is entry id `i`.
    pub index: Index,
    /// The disabled entries and until when.
    pub disabled: Vec<(u64, crate::store::EntryState)>,
}

/// Reads a bank from the store and builds its index: the time from store to ready-to-query.
pub fn load(store: &dyn BankStore, name: &str) -> Result<LoadedBank> {
    let stored = store.load(name)?;
    let index = match stored.rows {
        Rows::Pdq(rows) => Index::Pdq(MihIndex::build(rows, &stored.removed)),
        Rows::Phash(rows) => Index::Phash(MihIndex::build(rows, &stored.removed)),
        Rows::Md5(rows) => Index::Md5(ExactIndex::build(rows, &stored.removed)),
        Rows::Sha1(rows) => Index::Sha1(ExactIndex::build(rows, &stored.removed)),
        Rows::Sha256(rows) => Index::Sha256(ExactIndex::build(rows, &stored.removed)),
    };
    Ok(LoadedBank { info: stored.info, index, disabled: stored.disabled })
}
