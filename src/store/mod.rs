//! Banks persisted in an embedded database in the data directory: [redb](https://docs.rs/redb).
//!
//! Why redb: pure Rust (no C toolchain, no service to run), ACID transactions over copy-on-write B-trees
//! whose commits are checksummed and made durable with `fsync` before `commit()` returns (the default
//! `Durability::Immediate`), so a commit that returned survives `kill -9` or power loss, and a torn one is
//! rolled back on the next open. It is mature (1.0 in 2023, file format stable since) and fast enough to read
//! a 10 M-hash bank in well under a second.
//!
//! Layout (one file, `DIR/banks.redb`; every table keyed by bank name first):
//! - `banks`: name → kind, creation time, next id, number removed;
//! - `chunks`: (name, first id) → one batch of hashes as written by one `add` transaction: the time added
//!   (ms since the epoch, u64 LE) then the packed hashes (PDQ: 4 little-endian u64 limbs; pHash: one u64).
//!   Loading a bank is a sequential read of a few large values, not millions of small rows;
//! - `labels`: (name, id) → label, only for entries that have one (labels never enter RAM for matching);
//! - `removed`: (name, id) → time removed (ms).
//!
//! Ids are assigned densely from 0 in the order entries are added, and never reused; the matcher's row
//! number is the id. Each `add` is one transaction: all its entries are durable, or none are.

use crate::error::{Error, Result};
use crate::hash::{Hash256, Hash64};
use crate::matcher::{AnyHash, Kind};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const BANKS: TableDefinition<&str, &[u8]> = TableDefinition::new("banks");
const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("chunks");
const LABELS: TableDefinition<(&str, u64), &str> = TableDefinition::new("labels");
const REMOVED: TableDefinition<(&str, u64), u64> = TableDefinition::new("removed");

/// The database file inside the data directory.
pub const DB_FILE: &str = "banks.redb";

/// Largest number of entries a bank can hold (row numbers are `u32`).
pub const MAX_ENTRIES: u64 = u32::MAX as u64;

/// A bank's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankInfo {
    /// The bank's name.
    pub name: String,
    /// PDQ or pHash.
    pub kind: Kind,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// The id the next entry will get (= entries ever added).
    pub next_id: u64,
    /// Entries removed so far.
    pub removed: u64,
}

impl BankInfo {
    /// Entries currently in the bank.
    pub fn live(&self) -> u64 {
        self.next_id - self.removed
    }

    fn encode(&self) -> [u8; 25] {
        let mut b = [0u8; 25];
        b[0] = match self.kind {
            Kind::Pdq => 1,
            Kind::Phash => 2,
        };
        b[1..9].copy_from_slice(&self.created_ms.to_le_bytes());
        b[9..17].copy_from_slice(&self.next_id.to_le_bytes());
        b[17..25].copy_from_slice(&self.removed.to_le_bytes());
        b
    }

    fn decode(name: &str, b: &[u8]) -> Result<BankInfo> {
        let corrupt = || Error::Store(format!("bank record of '{name}' is corrupt"));
        if b.len() != 25 {
            return Err(corrupt());
        }
        let kind = match b[0] {
            1 => Kind::Pdq,
            2 => Kind::Phash,
            _ => return Err(corrupt()),
        };
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(BankInfo { name: name.to_string(), kind, created_ms: u(1), next_id: u(9), removed: u(17) })
    }
}

/// An entry to add: a hash and an optional label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// The hash (must be of the bank's kind).
    pub hash: AnyHash,
    /// Free text kept with the entry (e.g. a case number or source file name).
    pub label: Option<String>,
}

/// A stored entry, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Id within the bank.
    pub id: u64,
    /// The hash.
    pub hash: AnyHash,
    /// The label, if one was given.
    pub label: Option<String>,
    /// When it was added, ms since the Unix epoch.
    pub added_ms: u64,
}

/// Every hash ever added to a bank, in id order (row `i` is entry id `i`), packed as the matcher indexes them.
#[derive(Debug)]
pub enum Rows {
    /// PDQ: four little-endian limbs per hash.
    Pdq(Vec<[u64; 4]>),
    /// pHash: one u64 per hash.
    Phash(Vec<[u64; 1]>),
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
}

/// The bank store: one redb database file in a data directory.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

/// The metadata of bank `name` from the `banks` table of any transaction; `UnknownBank` when absent.
fn read_info(banks: &impl ReadableTable<&'static str, &'static [u8]>, name: &str) -> Result<BankInfo> {
    let v = banks.get(name).map_err(store_err)?.ok_or_else(|| Error::UnknownBank(name.to_string()))?;
    BankInfo::decode(name, v.value())
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

fn now_ms() -> u64 {
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

fn encode_hash(h: &AnyHash, out: &mut Vec<u8>) {
    match h {
        AnyHash::Pdq(p) => p.limbs.iter().for_each(|l| out.extend_from_slice(&l.to_le_bytes())),
        AnyHash::Phash(p) => out.extend_from_slice(&p.0.to_le_bytes()),
    }
}

fn decode_hash(kind: Kind, b: &[u8]) -> AnyHash {
    let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    match kind {
        Kind::Pdq => AnyHash::Pdq(Hash256 { limbs: [u(0), u(1), u(2), u(3)] }),
        Kind::Phash => AnyHash::Phash(Hash64(u(0))),
    }
}

/// The merge `for_each_entry` does: a bank's ids are dense (its chunks), its `labels` and `removed` tables
/// sparse, all three read in id order. Every read error of either table is returned, never taken for the
/// end of the table (which would export later removed entries as live and drop later labels).
mod merge {
    use super::Entry;
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

    /// The labels and removed ids of a bank, walked alongside its ids.
    pub(super) struct Merge<L, R> {
        labels: Sparse<L, String>,
        removed: Sparse<R, ()>,
    }

    impl<L, R> Merge<L, R>
    where
        L: Iterator<Item = Result<(u64, String)>>,
        R: Iterator<Item = Result<(u64, ())>>,
    {
        pub(super) fn new(labels: L, removed: R) -> Merge<L, R> {
            Merge { labels: Sparse::new(labels), removed: Sparse::new(removed) }
        }

        /// Entry `id` (ask for ids in increasing order), or `None` when it was removed.
        pub(super) fn entry(&mut self, id: u64, hash: AnyHash, added_ms: u64) -> Result<Option<Entry>> {
            let label = self.labels.at(id)?;
            if self.removed.at(id)?.is_some() {
                return Ok(None);
            }
            Ok(Some(Entry { id, hash, label, added_ms }))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::error::Error;
        use crate::hash::Hash64;

        /// Exports ids `0..n` as `bank export` does: the live entries, or the first error.
        fn export<L, R>(mut m: Merge<L, R>, n: u64, out: &mut Vec<Entry>) -> Result<()>
        where
            L: Iterator<Item = Result<(u64, String)>>,
            R: Iterator<Item = Result<(u64, ())>>,
        {
            for id in 0..n {
                if let Some(e) = m.entry(id, AnyHash::Phash(Hash64(id)), 7)? {
                    out.push(e);
                }
            }
            Ok(())
        }

        fn disk() -> Error {
            Error::Store("read error".into())
        }

        #[test]
        fn merges_labels_and_drops_removed_ids() {
            let labels =
                vec![Ok((1, "one".to_string())), Ok((2, "two".to_string())), Ok((4, "four".to_string()))];
            let removed = vec![Ok((2, ())), Ok((3, ()))];
            let mut out = Vec::new();
            export(Merge::new(labels.into_iter(), removed.into_iter()), 6, &mut out).unwrap();
            let got: Vec<_> = out.iter().map(|e| (e.id, e.label.as_deref())).collect();
            assert_eq!(got, [(0, None), (1, Some("one")), (4, Some("four")), (5, None)]);
        }

        /// Defect 6: an error reading the removed ids fails the export; it never exports the entries after
        /// it as live.
        #[test]
        fn a_read_error_in_the_removed_ids_fails_the_export() {
            let removed = vec![Ok((1, ())), Err(disk()), Ok((3, ()))];
            let mut out = Vec::new();
            let r = export(Merge::new(std::iter::empty(), removed.into_iter()), 5, &mut out);
            assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
            assert!(out.iter().all(|e| e.id < 2), "exported past the error: {out:?}");
        }

        /// Defect 6: an error reading the labels fails the export; it never drops the labels after it.
        #[test]
        fn a_read_error_in_the_labels_fails_the_export() {
            let labels = vec![Ok((0, "zero".to_string())), Err(disk()), Ok((3, "three".to_string()))];
            let mut out = Vec::new();
            let r = export(Merge::new(labels.into_iter(), std::iter::empty()), 5, &mut out);
            assert!(matches!(r, Err(Error::Store(_))), "{r:?}");
            assert!(out.iter().all(|e| e.id < 1), "exported past the error: {out:?}");
        }
    }
}

impl Store {
    /// Opens (creating when needed) the store in `dir` (created too).
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
            txn.open_table(BANKS).map_err(store_err)?;
            txn.open_table(CHUNKS).map_err(store_err)?;
            txn.open_table(LABELS).map_err(store_err)?;
            txn.open_table(REMOVED).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(Store { db, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates an empty bank.
    pub fn create_bank(&self, name: &str, kind: Kind) -> Result<BankInfo> {
        validate_name(name)?;
        let txn = self.db.begin_write().map_err(store_err)?;
        let info = BankInfo { name: name.to_string(), kind, created_ms: now_ms(), next_id: 0, removed: 0 };
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
            txn.open_table(LABELS)
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
                encode_hash(&e.hash, &mut blob);
            }
            txn.open_table(CHUNKS).map_err(store_err)?.insert((name, first), &blob[..]).map_err(store_err)?;
            let mut labels = txn.open_table(LABELS).map_err(store_err)?;
            for (i, e) in entries.iter().enumerate() {
                if let Some(l) = &e.label {
                    labels.insert((name, first + i as u64), l.as_str()).map_err(store_err)?;
                }
            }
            info.next_id += entries.len() as u64;
            banks.insert(name, &info.encode()[..]).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(first)
    }

    /// Removes entries by id in one transaction; an id the bank does not hold (never added or already
    /// removed) fails the whole call and nothing is written.
    pub fn remove(&self, name: &str, ids: &[u64]) -> Result<()> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut banks = txn.open_table(BANKS).map_err(store_err)?;
            let mut info = read_info(&banks, name)?;
            let mut removed = txn.open_table(REMOVED).map_err(store_err)?;
            let now = now_ms();
            for &id in ids {
                if id >= info.next_id || removed.insert((name, id), now).map_err(store_err)?.is_some() {
                    return Err(Error::UnknownEntry { bank: name.to_string(), id });
                }
                info.removed += 1;
            }
            banks.insert(name, &info.encode()[..]).map_err(store_err)?;
        }
        txn.commit().map_err(store_err)
    }

    /// Reads a bank's rows and removed ids in one consistent snapshot (sequential reads of large values).
    pub fn load(&self, name: &str) -> Result<StoredBank> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let info = read_info(&txn.open_table(BANKS).map_err(store_err)?, name)?;
        let removed: Vec<u64> = {
            let t = txn.open_table(REMOVED).map_err(store_err)?;
            let mut v = Vec::with_capacity(info.removed as usize);
            for item in t.range((name, 0u64)..=(name, u64::MAX)).map_err(store_err)? {
                v.push(item.map_err(store_err)?.0.value().1);
            }
            v
        };
        let chunks = txn.open_table(CHUNKS).map_err(store_err)?;
        let n = info.next_id as usize;
        let rows = match info.kind {
            Kind::Pdq => {
                let mut rows: Vec<[u64; 4]> = Vec::with_capacity(n);
                self.read_chunks(&chunks, name, 32, |b| {
                    let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
                    rows.push([u(0), u(1), u(2), u(3)]);
                })?;
                check_rows(name, rows.len(), n)?;
                Rows::Pdq(rows)
            }
            Kind::Phash => {
                let mut rows: Vec<[u64; 1]> = Vec::with_capacity(n);
                self.read_chunks(&chunks, name, 8, |b| {
                    rows.push([u64::from_le_bytes(b.try_into().expect("8 bytes"))]);
                })?;
                check_rows(name, rows.len(), n)?;
                Rows::Phash(rows)
            }
        };
        Ok(StoredBank { info, rows, removed })
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

    /// Labels of the given ids (`None` where an entry has none).
    pub fn labels(&self, name: &str, ids: &[u64]) -> Result<Vec<Option<String>>> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let t = txn.open_table(LABELS).map_err(store_err)?;
        ids.iter()
            .map(|&id| Ok(t.get((name, id)).map_err(store_err)?.map(|v| v.value().to_string())))
            .collect()
    }

    /// Calls `f` on every live entry of a bank, in id order (what `bank export` writes). A read error ends
    /// it with that error: a removed entry is never passed as live, nor a label dropped.
    pub fn for_each_entry(&self, name: &str, mut f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let info = read_info(&txn.open_table(BANKS).map_err(store_err)?, name)?;
        let range = (name, 0u64)..=(name, u64::MAX);
        let removed_t = txn.open_table(REMOVED).map_err(store_err)?;
        let labels_t = txn.open_table(LABELS).map_err(store_err)?;
        let chunks = txn.open_table(CHUNKS).map_err(store_err)?;
        let labels = labels_t
            .range(range.clone())
            .map_err(store_err)?
            .map(|r| r.map(|(k, v)| (k.value().1, v.value().to_string())).map_err(store_err));
        let removed = removed_t
            .range(range.clone())
            .map_err(store_err)?
            .map(|r| r.map(|(k, _)| (k.value().1, ())).map_err(store_err));
        let mut merge = merge::Merge::new(labels, removed);
        let size = hash_size(info.kind);
        for item in chunks.range(range).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let (first, blob) = (k.value().1, v.value());
            if blob.len() < 8 || (blob.len() - 8) % size != 0 {
                return Err(Error::Store(format!("bank '{name}': chunk at id {first} is inconsistent")));
            }
            let added_ms = u64::from_le_bytes(blob[..8].try_into().expect("8 bytes"));
            for (i, h) in blob[8..].chunks_exact(size).enumerate() {
                if let Some(e) = merge.entry(first + i as u64, decode_hash(info.kind, h), added_ms)? {
                    f(e)?;
                }
            }
        }
        Ok(())
    }
}

fn check_rows(name: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Store(format!("bank '{name}': {got} hashes stored but the bank record says {want}")))
    }
}
