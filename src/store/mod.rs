//! Banks persisted in an embedded database in the data directory: [redb](https://docs.rs/redb).
//!
//! Why redb: pure Rust (no C toolchain, no service to run), ACID transactions over copy-on-write B-trees
//! whose commits are checksummed and made durable with `fsync` before `commit()` returns (the default
//! `Durability::Immediate`), so a commit that returned survives `kill -9` or power loss, and a torn one is
//! rolled back on the next open. It is mature (1.0 in 2023, file format stable since) and fast enough to read
//! a 10 M-hash bank in well under a second.
//!
//! Layout (one file, `DIR/banks.redb`; every entry table keyed by (bank name, id)), schema 2:
//! - `schema`: `"version"` → 2;
//! - `banks`: name → the bank's record, JSON: kind, creation time, next id, number removed, and its match
//!   policy ([`BankPolicy`]: negative, default radius, minimum quality, flood guard);
//! - `chunks`: (name, first id) → one batch of hashes as written by one `add` transaction: the time added
//!   (ms since the epoch, u64 LE) then the packed hashes ([`AnyHash::write_bytes`]: PDQ 4 little-endian u64
//!   limbs, pHash one, a digest its bytes). Loading a bank is a sequential read of a few large values, not
//!   millions of small rows;
//! - `entry_meta`: (name, id) → the entry's fields ([`EntryMeta`], plus the partner's added time), JSON,
//!   only for entries that have some: none of it enters RAM for matching;
//! - `disabled`: (name, id) → disabled until (ms; `u64::MAX`: until enabled), only for disabled entries —
//!   small, and read whole when a bank is loaded;
//! - `removed`: (name, id) → time removed (ms);
//! - `audit`: (time ms, sequence) → one [`AuditRecord`], JSON (the match audit; pruned by time).
//!
//! Ids are assigned densely from 0 in the order entries are added, and never reused; the matcher's row
//! number is the id. Each write is one transaction: all of it is durable, or none of it is.
//!
//! Schema 1 (before structured entries) had a 25-byte binary bank record and a `labels` table of label
//! strings. [`Store::open`] migrates such a file in one transaction (every label becomes the entry's
//! `label` field), so a crash during the migration leaves the schema-1 file as it was.

mod audit;
mod backend;
mod entry;
mod pg;

pub use audit::{AuditEntry, AuditEvent, AuditFilter, AuditRecord};
pub use backend::{BankStore, Change, ChangeOp, ChangeWatch, DumpRow};
pub use entry::{Entry, EntryMeta, EntryState, EntryUpdate, NewEntry};
pub use pg::{describe_url, redact_url, PgStore};

use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Kind};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");
const BANKS: TableDefinition<&str, &[u8]> = TableDefinition::new("banks");
const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("chunks");
const META: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entry_meta");
const DISABLED: TableDefinition<(&str, u64), u64> = TableDefinition::new("disabled");
const REMOVED: TableDefinition<(&str, u64), u64> = TableDefinition::new("removed");
const AUDIT: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("audit");
/// Schema 1 only: (name, id) → label.
const LABELS_V1: TableDefinition<(&str, u64), &str> = TableDefinition::new("labels");

/// The schema this code writes.
pub const SCHEMA_VERSION: u64 = 2;

/// The database file inside the data directory.
pub const DB_FILE: &str = "banks.redb";

/// Largest number of entries a bank can hold (row numbers are `u32`).
pub const MAX_ENTRIES: u64 = u32::MAX as u64;

/// `disabled` value of an entry disabled until it is enabled again.
const FOREVER: u64 = u64::MAX;

/// Flood guard of a bank: an entry that matches more than `max_matches` times within `window_s` seconds is
/// reported (metrics, audit) and, with `auto_disable`, disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodGuard {
    /// Matches allowed within the window.
    pub max_matches: u32,
    /// The window, in seconds.
    pub window_s: u32,
    /// Disable the entry when the limit is passed.
    #[serde(default)]
    pub auto_disable: bool,
}

/// How a bank takes part in matching, stored with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankPolicy {
    /// A negative bank holds known-benign hashes: a query that matches one of its entries has its matches in
    /// the other banks suppressed (reported as suppressed), and its own matches are never reported as hits.
    #[serde(default)]
    pub negative: bool,
    /// The radius used when a query gives none (else the kind's default); at most the kind's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radius: Option<u32>,
    /// Queries whose PDQ quality is known and lower are not matched against this bank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_quality: Option<u32>,
    /// Opt-in flood guard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodGuard>,
    /// HMA's `matching_enabled_ratio`, in millionths (absent: all of them): the share of the HTTP API's
    /// lookups that search this bank (each request draws one coin flip). At 0 the bank is left out of every
    /// search that does not name it, gRPC included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_ratio_ppm: Option<u32>,
}

/// [`BankPolicy::match_ratio_ppm`] of a bank that always matches.
pub const FULL_RATIO_PPM: u32 = 1_000_000;

impl BankPolicy {
    /// The matching ratio, 0 to 1.
    pub fn match_ratio(&self) -> f64 {
        f64::from(self.match_ratio_ppm.unwrap_or(FULL_RATIO_PPM)) / f64::from(FULL_RATIO_PPM)
    }

    /// Checks the policy against the bank's kind.
    pub fn validate(&self, kind: Kind) -> Result<()> {
        if self.match_ratio_ppm.is_some_and(|r| r > FULL_RATIO_PPM) {
            return Err(Error::InvalidInput("a matching ratio above 1".into()));
        }
        if let Some(r) = self.radius {
            if r > kind.max_radius() {
                return Err(Error::InvalidInput(format!(
                    "a default radius of {r} for a {kind} bank; at most {}",
                    kind.max_radius()
                )));
            }
        }
        if let Some(q) = self.min_quality {
            if q > 100 {
                return Err(Error::InvalidInput(format!("minimum quality {q}; PDQ quality is 0 to 100")));
            }
        }
        if let Some(f) = self.flood {
            if f.max_matches == 0 || f.window_s == 0 {
                return Err(Error::InvalidInput(
                    "a flood guard needs at least 1 match and a window of at least 1 second".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A bank's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankInfo {
    /// The bank's name.
    pub name: String,
    /// The kind of hash it holds.
    pub kind: Kind,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// The id the next entry will get (= entries ever added).
    pub next_id: u64,
    /// Entries removed so far.
    pub removed: u64,
    /// How it takes part in matching.
    pub policy: BankPolicy,
    /// The store's id of this incarnation of the bank: PostgreSQL's row id, so replicas can tell a bank
    /// deleted and created again under the same name from the one they hold; 0 in redb (one writer).
    pub uid: u64,
}

/// The bank record as stored (schema 2).
#[derive(Serialize, Deserialize)]
struct BankRecord {
    kind: String,
    created_ms: u64,
    next_id: u64,
    removed: u64,
    #[serde(default)]
    policy: BankPolicy,
}

impl BankInfo {
    /// Entries currently in the bank.
    pub fn live(&self) -> u64 {
        self.next_id - self.removed
    }

    fn encode(&self) -> Vec<u8> {
        let r = BankRecord {
            kind: self.kind.name().to_string(),
            created_ms: self.created_ms,
            next_id: self.next_id,
            removed: self.removed,
            policy: self.policy,
        };
        serde_json::to_vec(&r).expect("a bank record serialises")
    }

    fn decode(name: &str, b: &[u8]) -> Result<BankInfo> {
        let corrupt = |why: String| Error::Store(format!("bank record of '{name}' is corrupt: {why}"));
        let r: BankRecord = serde_json::from_slice(b).map_err(|e| corrupt(e.to_string()))?;
        let kind = r.kind.parse().map_err(|e: Error| corrupt(e.to_string()))?;
        Ok(BankInfo {
            name: name.to_string(),
            kind,
            created_ms: r.created_ms,
            next_id: r.next_id,
            removed: r.removed,
            policy: r.policy,
            uid: 0,
        })
    }

    /// Schema 1: kind (1 PDQ, 2 pHash), created, next id, removed; u64 little-endian.
    fn decode_v1(name: &str, b: &[u8]) -> Result<BankInfo> {
        let corrupt = || Error::Store(format!("schema-1 bank record of '{name}' is corrupt"));
        if b.len() != 25 {
            return Err(corrupt());
        }
        let kind = match b[0] {
            1 => Kind::Pdq,
            2 => Kind::Phash,
            _ => return Err(corrupt()),
        };
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(BankInfo {
            name: name.to_string(),
            kind,
            created_ms: u(1),
            next_id: u(9),
            removed: u(17),
            policy: BankPolicy::default(),
            uid: 0,
        })
    }
}

/// An entry's fields as stored in `entry_meta`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StoredMeta {
    #[serde(flatten)]
    meta: EntryMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    added_ms: Option<u64>,
}

impl StoredMeta {
    fn decode(name: &str, id: u64, b: &[u8]) -> Result<StoredMeta> {
        serde_json::from_slice(b)
            .map_err(|e| Error::Store(format!("bank '{name}': fields of entry {id} are corrupt: {e}")))
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("entry fields serialise")
    }
}

fn state_of(until: Option<u64>) -> EntryState {
    match until {
        None => EntryState::Active,
        Some(FOREVER) => EntryState::Disabled { until_ms: None },
        Some(t) => EntryState::Disabled { until_ms: Some(t) },
    }
}

/// Every hash ever added to a bank, in id order (row `i` is entry id `i`), packed as the matcher indexes them.
#[derive(Debug)]
pub enum Rows {
    /// PDQ: four little-endian limbs per hash.
    Pdq(Vec<[u64; 4]>),
    /// pHash: one u64 per hash.
    Phash(Vec<[u64; 1]>),
    /// MD5 digests.
    Md5(Vec<[u8; 16]>),
    /// SHA-1 digests.
    Sha1(Vec<[u8; 20]>),
    /// SHA-256 digests.
    Sha256(Vec<[u8; 32]>),
}

impl Rows {
    /// Empty rows of `kind`, with room for `n`.
    pub(crate) fn with_capacity(kind: Kind, n: usize) -> Rows {
        match kind {
            Kind::Pdq => Rows::Pdq(Vec::with_capacity(n)),
            Kind::Phash => Rows::Phash(Vec::with_capacity(n)),
            Kind::Md5 => Rows::Md5(Vec::with_capacity(n)),
            Kind::Sha1 => Rows::Sha1(Vec::with_capacity(n)),
            Kind::Sha256 => Rows::Sha256(Vec::with_capacity(n)),
        }
    }

    /// The rows as hashes, in order (what [`crate::matcher::Index::extend`] takes).
    pub fn into_hashes(self) -> Vec<AnyHash> {
        match self {
            Rows::Pdq(v) => v.into_iter().map(|limbs| AnyHash::Pdq(crate::hash::Hash256 { limbs })).collect(),
            Rows::Phash(v) => v.into_iter().map(|[h]| AnyHash::Phash(crate::hash::Hash64(h))).collect(),
            Rows::Md5(v) => v.into_iter().map(AnyHash::Md5).collect(),
            Rows::Sha1(v) => v.into_iter().map(AnyHash::Sha1).collect(),
            Rows::Sha256(v) => v.into_iter().map(AnyHash::Sha256).collect(),
        }
    }

    /// Appends one hash as [`AnyHash::write_bytes`] packs it (`b` is exactly the kind's size).
    pub(crate) fn push_bytes(&mut self, b: &[u8]) {
        let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        match self {
            Rows::Pdq(v) => v.push([u(0), u(1), u(2), u(3)]),
            Rows::Phash(v) => v.push([u(0)]),
            Rows::Md5(v) => v.push(b.try_into().expect("16 bytes")),
            Rows::Sha1(v) => v.push(b.try_into().expect("20 bytes")),
            Rows::Sha256(v) => v.push(b.try_into().expect("32 bytes")),
        }
    }
}

/// A bank's rows as stored: what the banks module indexes.
#[derive(Debug)]
pub struct StoredBank {
    /// Its metadata.
    pub info: BankInfo,
    /// Every row ever added, removed ones included (their ids are in `removed`).
    pub rows: Rows,
    /// Ids of the removed entries.
    pub removed: Vec<u64>,
    /// The disabled entries: id and, when it is limited, until when (ms).
    pub disabled: Vec<(u64, EntryState)>,
}

/// The bank store: one redb database file in a data directory.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    /// The next audit record's sequence number (keys are (time, sequence): unique even within one ms).
    audit_seq: std::sync::atomic::AtomicU64,
}

/// The metadata of bank `name` from the `banks` table of any transaction; `UnknownBank` when absent.
fn read_info(banks: &impl ReadableTable<&'static str, &'static [u8]>, name: &str) -> Result<BankInfo> {
    let v = banks.get(name).map_err(store_err)?.ok_or_else(|| Error::UnknownBank(name.to_string()))?;
    BankInfo::decode(name, v.value())
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Checks a bank name: 1 to 64 characters from `[A-Za-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidBankName(name.chars().take(80).collect()))
    }
}

fn hash_size(kind: Kind) -> usize {
    kind.bits() as usize / 8
}

/// The merge `for_each_entry` does: a bank's ids are dense (its chunks), its `entry_meta`, `disabled` and
/// `removed` tables sparse, all read in id order. Every read error of any table is returned, never taken for
/// the end of the table (which would export later removed entries as live and drop later fields).
mod merge {
    use super::{state_of, Entry, StoredMeta};
    use crate::error::Result;
    use crate::matcher::AnyHash;

    /// A sparse table read in id order, as `(id, value)` pairs.
    pub(super) struct Sparse<I, V> {
        iter: std::iter::Fuse<I>,
        next: Option<(u64, V)>,
    }

    impl<I: Iterator<Item = Result<(u64, V)>>, V> Sparse<I, V> {
        pub(super) fn new(iter: I) -> Sparse<I, V> {
            Sparse { iter: iter.fuse(), next: None }
        }

        /// The value at `id`, passing over smaller ids (ask for ids in increasing order).
        pub(super) fn at(&mut self, id: u64) -> Result<Option<V>> {
            loop {
                let (k, v) = match self.next.take() {
                    Some(kv) => kv,
                    None => match self.iter.next() {
                        Some(r) => r?,
                        None => return Ok(None),
                    },
                };
                if k > id {
                    self.next = Some((k, v));
                    return Ok(None);
                }
                if k == id {
                    return Ok(Some(v));
                }
            }
        }
    }

    /// The fields, states and removed ids (with `X`, what the removed table holds) of a bank, walked
    /// alongside its ids.
    pub(super) struct Merge<M, D, R, X> {
        meta: Sparse<M, StoredMeta>,
        disabled: Sparse<D, u64>,
        removed: Sparse<R, X>,
    }

    impl<M, D, R, X> Merge<M, D, R, X>
    where
        M: Iterator<Item = Result<(u64, StoredMeta)>>,
        D: Iterator<Item = Result<(u64, u64)>>,
        R: Iterator<Item = Result<(u64, X)>>,
    {
        pub(super) fn new(meta: M, disabled: D, removed: R) -> Merge<M, D, R, X> {
            Merge { meta: Sparse::new(meta), disabled: Sparse::new(disabled), removed: Sparse::new(removed) }
        }

        /// Row `id` (ask for ids in increasing order) and, when it was removed, what the removed table says.
        pub(super) fn row(&mut self, id: u64, hash: AnyHash, added_ms: u64) -> Result<(Entry, Option<X>)> {
            let stored = self.meta.at(id)?.unwrap_or_default();
            let state = state_of(self.disabled.at(id)?);
            let removed = self.removed.at(id)?;
            let entry =
                Entry { id, hash, meta: stored.meta, added_ms: stored.added_ms.unwrap_or(added_ms), state };
            Ok((entry, removed))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::error::Error;
        use crate::hash::Hash64;
        use crate::store::EntryState;

        type Items<V> = Vec<Result<(u64, V)>>;

        /// Exports ids `0..n` as `bank export` does: the live entries, or the first error.
        fn export(
            meta: Items<StoredMeta>,
            disabled: Items<u64>,
            removed: Items<()>,
            n: u64,
            out: &mut Vec<Entry>,
        ) -> Result<()> {
            let mut m = Merge::new(meta.into_iter(), disabled.into_iter(), removed.into_iter());
            for id in 0..n {
                if let (e, None) = m.row(id, AnyHash::Phash(Hash64(id)), 7)? {
                    out.push(e);
                }
            }
            Ok(())
        }

        fn disk() -> Error {
            Error::Store("read error".into())
        }

        fn labelled(id: u64, l: &str) -> Result<(u64, StoredMeta)> {
            let mut m = StoredMeta::default();
            m.meta.label = Some(l.to_string());
            Ok((id, m))
        }

        #[test]
        fn merges_fields_and_states_and_drops_removed_ids() {
            let meta = vec![labelled(1, "one"), labelled(2, "two"), labelled(4, "four")];
            let disabled = vec![Ok((1, super::super::FOREVER)), Ok((5, 99))];
            let removed = vec![Ok((2, ())), Ok((3, ()))];
            let mut out = Vec::new();
            export(meta, disabled, removed, 6, &mut out).unwrap();
            let got: Vec<_> = out.iter().map(|e| (e.id, e.meta.label.as_deref(), e.state)).collect();
            let active = EntryState::Active;
            assert_eq!(
                got,
                [
                    (0, None, active),
                    (1, Some("one"), EntryState::Disabled { until_ms: None }),
                    (4, Some("four"), active),
                    (5, None, EntryState::Disabled { until_ms: Some(99) })
                ]
            );
        }

        /// Defect 6: an error reading the removed ids fails the export; it never exports the entries after
        /// it as live.
        #[test]
        fn a_read_error_in_the_removed_ids_fails_the_export() {
            let removed = vec![Ok((1, ())), Err(disk()), Ok((3, ()))];
            let mut out = Vec::new();
            let r = export(vec![], vec![], removed, 5, &mut out);
            assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
            assert!(out.iter().all(|e| e.id < 2), "exported past the error: {out:?}");
        }

        /// Defect 6: an error reading the fields (or states) fails the export; it never drops the fields
        /// after it.
        #[test]
        fn a_read_error_in_the_fields_or_states_fails_the_export() {
            let meta = vec![labelled(0, "zero"), Err(disk()), labelled(3, "three")];
            let mut out = Vec::new();
            let r = export(meta, vec![], vec![], 5, &mut out);
            assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
            assert!(out.iter().all(|e| e.id < 1), "exported past the error: {out:?}");
            let mut out = Vec::new();
            let r = export(vec![], vec![Ok((0, 5)), Err(disk())], vec![], 5, &mut out);
            assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
            assert!(out.iter().all(|e| e.id < 1), "exported past the error: {out:?}");
        }
    }
}

impl Store {
    /// Opens (creating when needed) the store in `dir` (created too), migrating a schema-1 file.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Store(format!(
                "{} is in use by another process (one pharos process at a time per data directory)",
                path.display()
            )),
            e => Error::Store(format!("{}: {e}", path.display())),
        })?;
        let txn = db.begin_write().map_err(store_err)?;
        {
            let version = txn
                .open_table(SCHEMA)
                .map_err(store_err)?
                .get("version")
                .map_err(store_err)?
                .map(|v| v.value());
            match version {
                Some(SCHEMA_VERSION) => {}
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::Store(format!(
                    "{} has schema {v}, written by a newer pharos (this one reads up to {SCHEMA_VERSION})",
                    path.display()
                )))
                }
                _ => migrate_v1(&txn, &path)?,
            }
            txn.open_table(BANKS).map_err(store_err)?;
            txn.open_table(CHUNKS).map_err(store_err)?;
            txn.open_table(META).map_err(store_err)?;
            txn.open_table(DISABLED).map_err(store_err)?;
            txn.open_table(REMOVED).map_err(store_err)?;
            txn.open_table(AUDIT).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        let next_seq = {
            let txn = db.begin_read().map_err(store_err)?;
            let t = txn.open_table(AUDIT).map_err(store_err)?;
            let last = t.last().map_err(store_err)?.map_or(0, |(k, _)| k.value().1 + 1);
            last
        };
        Ok(Store { db, path, audit_seq: std::sync::atomic::AtomicU64::new(next_seq) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates an empty bank with the default policy.
    pub fn create_bank(&self, name: &str, kind: Kind) -> Result<BankInfo> {
        self.create_bank_with(name, kind, BankPolicy::default())
    }

    /// Creates an empty bank with a policy.
    pub fn create_bank_with(&self, name: &str, kind: Kind, policy: BankPolicy) -> Result<BankInfo> {
        validate_name(name)?;
        policy.validate(kind)?;
        let txn = self.db.begin_write().map_err(store_err)?;
        let info = BankInfo {
            name: name.to_string(),
            kind,
            created_ms: now_ms(),
            next_id: 0,
            removed: 0,
            policy,
            uid: 0,
        };
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            if banks.get(name).map_err(store_err)?.is_some() {
                return Err(Error::BankExists(name.to_string()));
            }
            banks.insert(name, &info.encode()[..]).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(info)
    }

    /// Replaces a bank's policy; returns the bank's metadata.
    pub fn set_policy(&self, name: &str, policy: BankPolicy) -> Result<BankInfo> {
        let txn = self.db.begin_write().map_err(store_err)?;
        let info;
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            let mut i = read_info(&banks, name)?;
            policy.validate(i.kind)?;
            i.policy = policy;
            banks.insert(name, &i.encode()[..]).map_err(store_err)?;
            info = i;
        }
        txn.commit().map_err(store_err)?;
        Ok(info)
    }

    /// Deletes a bank and all its entries.
    pub fn delete_bank(&self, name: &str) -> Result<()> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            if banks.remove(name).map_err(store_err)?.is_none() {
                return Err(Error::UnknownBank(name.to_string()));
            }
            let range = (name, 0u64)..=(name, u64::MAX);
            txn.open_table(CHUNKS)
                .map_err(store_err)?
                .retain_in(range.clone(), |_, _| false)
                .map_err(store_err)?;
            txn.open_table(META)
                .map_err(store_err)?
                .retain_in(range.clone(), |_, _| false)
                .map_err(store_err)?;
            txn.open_table(DISABLED)
                .map_err(store_err)?
                .retain_in(range.clone(), |_, _| false)
                .map_err(store_err)?;
            txn.open_table(REMOVED).map_err(store_err)?.retain_in(range, |_, _| false).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)
    }

    /// Every bank, by name.
    pub fn list_banks(&self) -> Result<Vec<BankInfo>> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let banks = txn.open_table(BANKS).map_err(store_err)?;
        let mut out = Vec::new();
        for item in banks.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            out.push(BankInfo::decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// One bank's metadata.
    pub fn bank(&self, name: &str) -> Result<BankInfo> {
        let txn = self.db.begin_read().map_err(store_err)?;
        read_info(&txn.open_table(BANKS).map_err(store_err)?, name)
    }

    /// Adds entries in one durable transaction: when this returns `Ok`, all of them survive a crash; on
    /// `Err`, none was written. Returns the id of the first (the others follow in order).
    pub fn add(&self, name: &str, entries: &[NewEntry]) -> Result<u64> {
        let txn = self.db.begin_write().map_err(store_err)?;
        let first;
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            let mut info = read_info(&banks, name)?;
            if let Some(e) = entries.iter().find(|e| e.hash.kind() != info.kind) {
                return Err(Error::KindMismatch { expected: info.kind.name(), found: e.hash.kind().name() });
            }
            if entries.is_empty() {
                return Ok(info.next_id);
            }
            first = info.next_id;
            if first + entries.len() as u64 > MAX_ENTRIES {
                return Err(Error::InvalidInput(format!("bank '{name}' would exceed {MAX_ENTRIES} entries")));
            }
            let mut blob = Vec::with_capacity(8 + entries.len() * hash_size(info.kind));
            blob.extend_from_slice(&now_ms().to_le_bytes());
            for e in entries {
                e.hash.write_bytes(&mut blob);
            }
            txn.open_table(CHUNKS).map_err(store_err)?.insert((name, first), &blob[..]).map_err(store_err)?;
            let mut meta = txn.open_table(META).map_err(store_err)?;
            let mut disabled = txn.open_table(DISABLED).map_err(store_err)?;
            for (i, e) in entries.iter().enumerate() {
                let id = first + i as u64;
                let stored = StoredMeta { meta: e.meta.clone(), added_ms: e.added_ms };
                if stored != StoredMeta::default() {
                    meta.insert((name, id), &stored.encode()[..]).map_err(store_err)?;
                }
                if let EntryState::Disabled { until_ms } = e.state {
                    disabled.insert((name, id), until_ms.unwrap_or(FOREVER)).map_err(store_err)?;
                }
            }
            info.next_id += entries.len() as u64;
            banks.insert(name, &info.encode()[..]).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(first)
    }

    /// Removes entries by id in one transaction (their fields and state go too); an id the bank does not hold
    /// (never added or already removed) fails the whole call and nothing is written.
    pub fn remove(&self, name: &str, ids: &[u64]) -> Result<()> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            let mut info = read_info(&banks, name)?;
            let mut removed = txn.open_table(REMOVED).map_err(store_err)?;
            let mut meta = txn.open_table(META).map_err(store_err)?;
            let mut disabled = txn.open_table(DISABLED).map_err(store_err)?;
            let now = now_ms();
            for &id in ids {
                if id >= info.next_id || removed.insert((name, id), now).map_err(store_err)?.is_some() {
                    return Err(Error::UnknownEntry { bank: name.to_string(), id });
                }
                meta.remove((name, id)).map_err(store_err)?;
                disabled.remove((name, id)).map_err(store_err)?;
                info.removed += 1;
            }
            banks.insert(name, &info.encode()[..]).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)
    }

    /// Changes entries in place (tags, note, state) in one durable transaction; an id the bank does not hold
    /// fails the whole call and nothing is written. Returns the entries' fields and states after the change
    /// (in the order of `updates`).
    pub fn update(&self, name: &str, updates: &[(u64, EntryUpdate)]) -> Result<Vec<(EntryMeta, EntryState)>> {
        let txn = self.db.begin_write().map_err(store_err)?;
        let mut out = Vec::with_capacity(updates.len());
        {
            let info = read_info(&txn.open_table(BANKS).map_err(store_err)?, name)?;
            let removed = txn.open_table(REMOVED).map_err(store_err)?;
            let mut meta = txn.open_table(META).map_err(store_err)?;
            let mut disabled = txn.open_table(DISABLED).map_err(store_err)?;
            for (id, u) in updates {
                let id = *id;
                if id >= info.next_id || removed.get((name, id)).map_err(store_err)?.is_some() {
                    return Err(Error::UnknownEntry { bank: name.to_string(), id });
                }
                let old = meta.get((name, id)).map_err(store_err)?.map(|v| v.value().to_vec());
                let mut stored = match old {
                    Some(b) => StoredMeta::decode(name, id, &b)?,
                    None => StoredMeta::default(),
                };
                let before = stored.clone();
                u.apply(&mut stored.meta);
                if stored != before {
                    if stored == StoredMeta::default() {
                        meta.remove((name, id)).map_err(store_err)?;
                    } else {
                        meta.insert((name, id), &stored.encode()[..]).map_err(store_err)?;
                    }
                }
                let state = match u.state {
                    Some(EntryState::Active) => {
                        disabled.remove((name, id)).map_err(store_err)?;
                        EntryState::Active
                    }
                    Some(EntryState::Disabled { until_ms }) => {
                        disabled.insert((name, id), until_ms.unwrap_or(FOREVER)).map_err(store_err)?;
                        EntryState::Disabled { until_ms }
                    }
                    None => state_of(disabled.get((name, id)).map_err(store_err)?.map(|v| v.value())),
                };
                out.push((stored.meta, state));
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(out)
    }

    /// Reads a bank's rows, removed ids and disabled entries in one consistent snapshot (sequential reads of
    /// large values).
    pub fn load(&self, name: &str) -> Result<StoredBank> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let info = read_info(&txn.open_table(BANKS).map_err(store_err)?, name)?;
        let range = (name, 0u64)..=(name, u64::MAX);
        let removed: Vec<u64> = {
            let t = txn.open_table(REMOVED).map_err(store_err)?;
            let mut v = Vec::with_capacity(info.removed as usize);
            for item in t.range(range.clone()).map_err(store_err)? {
                v.push(item.map_err(store_err)?.0.value().1);
            }
            v
        };
        let disabled = {
            let t = txn.open_table(DISABLED).map_err(store_err)?;
            let mut v = Vec::new();
            for item in t.range(range).map_err(store_err)? {
                let (k, until) = item.map_err(store_err)?;
                v.push((k.value().1, state_of(Some(until.value()))));
            }
            v
        };
        let chunks = txn.open_table(CHUNKS).map_err(store_err)?;
        let n = info.next_id as usize;
        macro_rules! read {
            ($variant:ident, $size:expr, $b:ident => $row:expr) => {{
                let mut rows = Vec::with_capacity(n);
                self.read_chunks(&chunks, name, $size, |$b| rows.push($row))?;
                check_rows(name, rows.len(), n)?;
                Rows::$variant(rows)
            }};
        }
        let u = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let rows = match info.kind {
            Kind::Pdq => read!(Pdq, 32, b => [u(b, 0), u(b, 1), u(b, 2), u(b, 3)]),
            Kind::Phash => read!(Phash, 8, b => [u(b, 0)]),
            Kind::Md5 => read!(Md5, 16, b => b.try_into().expect("16 bytes")),
            Kind::Sha1 => read!(Sha1, 20, b => b.try_into().expect("20 bytes")),
            Kind::Sha256 => read!(Sha256, 32, b => b.try_into().expect("32 bytes")),
        };
        Ok(StoredBank { info, rows, removed, disabled })
    }

    fn read_chunks(
        &self,
        chunks: &redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
        name: &str,
        size: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<()> {
        let mut expect = 0u64;
        for item in chunks.range((name, 0u64)..=(name, u64::MAX)).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let (first, blob) = (k.value().1, v.value());
            if first != expect || blob.len() < 8 || (blob.len() - 8) % size != 0 {
                return Err(Error::Store(format!("bank '{name}': chunk at id {first} is inconsistent")));
            }
            for h in blob[8..].chunks_exact(size) {
                f(h);
            }
            expect = first + ((blob.len() - 8) / size) as u64;
        }
        Ok(())
    }

    /// The fields of the given ids (empty where an entry has none).
    pub fn metas(&self, name: &str, ids: &[u64]) -> Result<Vec<EntryMeta>> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let t = txn.open_table(META).map_err(store_err)?;
        ids.iter()
            .map(|&id| match t.get((name, id)).map_err(store_err)? {
                Some(v) => Ok(StoredMeta::decode(name, id, v.value())?.meta),
                None => Ok(EntryMeta::default()),
            })
            .collect()
    }

    /// Appends audit records in one durable transaction.
    pub fn append_audit(&self, records: &[AuditRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut t = txn.open_table(AUDIT).map_err(store_err)?;
            for r in records {
                let seq = self.audit_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let json = serde_json::to_vec(r).expect("audit records serialise");
                t.insert((r.time_ms, seq), &json[..]).map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)
    }

    /// Calls `f` on the audit records that pass `filter`, oldest first (one consistent snapshot).
    pub fn for_each_audit(
        &self,
        filter: &AuditFilter,
        mut f: impl FnMut(AuditRecord) -> Result<()>,
    ) -> Result<()> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let t = txn.open_table(AUDIT).map_err(store_err)?;
        let from = (filter.since_ms.unwrap_or(0), 0u64);
        let until = filter.until_ms.unwrap_or(u64::MAX);
        let mut n = 0usize;
        for item in t.range(from..).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            if k.value().0 >= until || filter.limit.is_some_and(|l| n >= l) {
                break;
            }
            let r: AuditRecord = serde_json::from_slice(v.value())
                .map_err(|e| Error::Store(format!("audit record at {:?} is corrupt: {e}", k.value())))?;
            if filter.wants(&r) {
                n += 1;
                f(r)?;
            }
        }
        Ok(())
    }

    /// The `max` oldest audit records with their keys (the local audit spool of a replica drains these into
    /// the shared store, then deletes them with [`Store::delete_audit`]).
    pub(crate) fn oldest_audit(&self, max: usize) -> Result<Vec<((u64, u64), AuditRecord)>> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let t = txn.open_table(AUDIT).map_err(store_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(store_err)?.take(max) {
            let (k, v) = item.map_err(store_err)?;
            let r: AuditRecord = serde_json::from_slice(v.value())
                .map_err(|e| Error::Store(format!("audit record at {:?} is corrupt: {e}", k.value())))?;
            out.push((k.value(), r));
        }
        Ok(out)
    }

    /// Deletes the audit records with these keys, in one transaction.
    pub(crate) fn delete_audit(&self, keys: &[(u64, u64)]) -> Result<()> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut t = txn.open_table(AUDIT).map_err(store_err)?;
            for k in keys {
                t.remove(*k).map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)
    }

    /// Deletes up to `max` of the oldest audit records older than `before_ms`, in one transaction; returns
    /// how many. Callers loop while it returns `max`, so each transaction stays short and the writes it
    /// would delay (bank adds, audit appends) wait for a small step only.
    pub fn prune_audit(&self, before_ms: u64, max: usize) -> Result<usize> {
        let txn = self.db.begin_write().map_err(store_err)?;
        let mut n = 0usize;
        {
            let mut t = txn.open_table(AUDIT).map_err(store_err)?;
            t.retain_in((0u64, 0u64)..(before_ms, 0u64), |_, _| {
                n += 1;
                n > max
            })
            .map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(n.min(max))
    }

    /// The ids of the entries whose external id is each of `external_ids` (in that order; an empty list for
    /// one that no entry has). One pass over the bank's fields: for operators' edits, not for queries.
    pub fn ids_by_external_id(&self, name: &str, external_ids: &[String]) -> Result<Vec<(String, Vec<u64>)>> {
        let mut out: Vec<(String, Vec<u64>)> = external_ids.iter().map(|e| (e.clone(), Vec::new())).collect();
        if external_ids.is_empty() {
            return Ok(out);
        }
        let txn = self.db.begin_read().map_err(store_err)?;
        read_info(&txn.open_table(BANKS).map_err(store_err)?, name)?;
        let t = txn.open_table(META).map_err(store_err)?;
        for item in t.range((name, 0u64)..=(name, u64::MAX)).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let id = k.value().1;
            let m = StoredMeta::decode(name, id, v.value())?;
            if let Some(ext) = &m.meta.external_id {
                for (want, ids) in out.iter_mut() {
                    if want == ext {
                        ids.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Calls `f` on every live entry of a bank, in id order (what `bank export` writes): [`Store::dump`]
    /// without the removed rows. A read error ends it with that error: a removed entry is never passed as
    /// live, nor a field dropped.
    pub fn for_each_entry(&self, name: &str, mut f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        self.dump(name, &mut |r| if r.removed_ms.is_none() { f(r.entry) } else { Ok(()) }).map(drop)
    }
}

impl Store {
    /// Every row of a bank, removed ones included (with the time they were removed), in id order, from
    /// one snapshot: what `pharos migrate` copies to another store.
    pub fn dump(&self, name: &str, f: &mut dyn FnMut(DumpRow) -> Result<()>) -> Result<BankInfo> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let info = read_info(&txn.open_table(BANKS).map_err(store_err)?, name)?;
        let range = (name, 0u64)..=(name, u64::MAX);
        let removed_t = txn.open_table(REMOVED).map_err(store_err)?;
        let meta_t = txn.open_table(META).map_err(store_err)?;
        let disabled_t = txn.open_table(DISABLED).map_err(store_err)?;
        let chunks = txn.open_table(CHUNKS).map_err(store_err)?;
        let meta = meta_t.range(range.clone()).map_err(store_err)?.map(|r| {
            let (k, v) = r.map_err(store_err)?;
            let id = k.value().1;
            Ok((id, StoredMeta::decode(name, id, v.value())?))
        });
        let disabled = disabled_t
            .range(range.clone())
            .map_err(store_err)?
            .map(|r| r.map(|(k, v)| (k.value().1, v.value())).map_err(store_err));
        let removed = removed_t
            .range(range.clone())
            .map_err(store_err)?
            .map(|r| r.map(|(k, v)| (k.value().1, v.value())).map_err(store_err));
        let mut merge = merge::Merge::new(meta, disabled, removed);
        let size = hash_size(info.kind);
        let mut expect = 0u64;
        for item in chunks.range(range).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let (first, blob) = (k.value().1, v.value());
            if first != expect || blob.len() < 8 || (blob.len() - 8) % size != 0 {
                return Err(Error::Store(format!("bank '{name}': chunk at id {first} is inconsistent")));
            }
            let added_ms = u64::from_le_bytes(blob[..8].try_into().expect("8 bytes"));
            for (i, h) in blob[8..].chunks_exact(size).enumerate() {
                let (entry, removed_ms) =
                    merge.row(first + i as u64, AnyHash::from_bytes(info.kind, h), added_ms)?;
                f(DumpRow { entry, removed_ms })?;
            }
            expect = first + ((blob.len() - 8) / size) as u64;
        }
        check_rows(name, expect as usize, info.next_id as usize)?;
        Ok(info)
    }

    /// Creates bank `info` empty, keeping its creation time and policy, for [`Store::restore_rows`].
    pub fn restore_bank(&self, info: &BankInfo) -> Result<()> {
        validate_name(&info.name)?;
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            if banks.get(info.name.as_str()).map_err(store_err)?.is_some() {
                return Err(Error::BankExists(info.name.clone()));
            }
            let fresh = BankInfo { next_id: 0, removed: 0, uid: 0, ..info.clone() };
            banks.insert(info.name.as_str(), &fresh.encode()[..]).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)
    }

    /// Appends dumped rows to a bank being restored, in one transaction: ids must follow on from the
    /// bank's next id without a gap (as [`Store::dump`] gives them).
    pub fn restore_rows(&self, name: &str, rows: &[DumpRow]) -> Result<()> {
        let Some(first_row) = rows.first() else { return Ok(()) };
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            let mut info = read_info(&banks, name)?;
            let first = info.next_id;
            let chunk_ms = first_row.entry.added_ms;
            let mut blob = Vec::with_capacity(8 + rows.len() * hash_size(info.kind));
            blob.extend_from_slice(&chunk_ms.to_le_bytes());
            let mut meta = txn.open_table(META).map_err(store_err)?;
            let mut disabled = txn.open_table(DISABLED).map_err(store_err)?;
            let mut removed = txn.open_table(REMOVED).map_err(store_err)?;
            for (i, r) in rows.iter().enumerate() {
                let id = first + i as u64;
                check_restored(name, r, id, info.kind)?;
                r.entry.hash.write_bytes(&mut blob);
                let added = (r.entry.added_ms != chunk_ms).then_some(r.entry.added_ms);
                let stored = StoredMeta { meta: r.entry.meta.clone(), added_ms: added };
                if stored != StoredMeta::default() {
                    meta.insert((name, id), &stored.encode()[..]).map_err(store_err)?;
                }
                if let EntryState::Disabled { until_ms } = r.entry.state {
                    disabled.insert((name, id), until_ms.unwrap_or(FOREVER)).map_err(store_err)?;
                }
                if let Some(t) = r.removed_ms {
                    removed.insert((name, id), t).map_err(store_err)?;
                    info.removed += 1;
                }
            }
            if first + rows.len() as u64 > MAX_ENTRIES {
                return Err(Error::InvalidInput(format!("bank '{name}' would exceed {MAX_ENTRIES} entries")));
            }
            txn.open_table(CHUNKS).map_err(store_err)?.insert((name, first), &blob[..]).map_err(store_err)?;
            info.next_id += rows.len() as u64;
            banks.insert(name, &info.encode()[..]).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)
    }
}

/// Migrates a schema-1 file (or stamps a new, empty one) inside the open transaction `txn`: bank records
/// become schema-2 records with the default policy, every label becomes the `label` field of its entry, the
/// `labels` table is deleted, and the schema version is written. Nothing is committed here: the caller's
/// commit makes all of it durable at once.
fn migrate_v1(txn: &redb::WriteTransaction, path: &Path) -> Result<()> {
    let mut banks = txn.open_table(BANKS).map_err(store_err)?;
    let mut old = Vec::new();
    for item in banks.iter().map_err(store_err)? {
        let (k, v) = item.map_err(store_err)?;
        old.push((k.value().to_string(), v.value().to_vec()));
    }
    for (name, record) in &old {
        let info = BankInfo::decode_v1(name, record)?;
        banks.insert(name.as_str(), &info.encode()[..]).map_err(store_err)?;
    }
    let mut labels_moved = 0u64;
    let had_labels = txn.list_tables().map_err(store_err)?.any(|t| t.name() == LABELS_V1.name());
    if had_labels {
        let labels = txn.open_table(LABELS_V1).map_err(store_err)?;
        let mut meta = txn.open_table(META).map_err(store_err)?;
        for item in labels.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let (name, id) = k.value();
            let mut stored = StoredMeta::default();
            stored.meta.label = Some(v.value().to_string());
            meta.insert((name, id), &stored.encode()[..]).map_err(store_err)?;
            labels_moved += 1;
        }
        drop(labels);
        txn.delete_table(LABELS_V1).map_err(store_err)?;
    }
    txn.open_table(SCHEMA).map_err(store_err)?.insert("version", SCHEMA_VERSION).map_err(store_err)?;
    if !old.is_empty() || had_labels {
        tracing::info!(
            store = %path.display(),
            banks = old.len(),
            labels = labels_moved,
            "bank store migrated from schema 1 to {SCHEMA_VERSION}"
        );
    }
    Ok(())
}

/// A row given to `restore_rows` must be the bank's next id and of its kind (rows come in dump order).
fn check_restored(name: &str, r: &DumpRow, id: u64, kind: Kind) -> Result<()> {
    if r.entry.id == id && r.entry.hash.kind() == kind {
        return Ok(());
    }
    Err(Error::Store(format!(
        "restoring '{name}': row {} ({}) where id {id} ({kind}) was due",
        r.entry.id,
        r.entry.hash.kind()
    )))
}

fn check_rows(name: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Store(format!("bank '{name}': {got} hashes stored but the bank record says {want}")))
    }
}
