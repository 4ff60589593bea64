//! [`BankStore`]: what the live banks ([`crate::banks::BankSet`]) need of a store, so the embedded redb
//! [`Store`] (one machine, the default) and a shared database (the fleet issue: PostgreSQL, several
//! replicas) are interchangeable behind it.
//!
//! The methods mirror [`Store`]'s; closures are `&mut dyn FnMut` so the trait can be used as an object.
//! Every write is durable when it returns (one transaction).
//!
//! A store several processes write (PostgreSQL) also keeps a **change log**: every write appends one
//! [`Change`] with a sequence number, in commit order, and [`BankStore::changes_after`] /
//! [`BankStore::watch`] let each replica follow it and update its in-memory indexes incrementally (see
//! [`crate::banks::BankSet`]). A store only this process writes (redb) has no log: the default methods say so.

use super::{
    AuditFilter, AuditRecord, BankInfo, BankPolicy, Entry, EntryMeta, EntryState, EntryUpdate, NewEntry,
    Store, StoredBank,
};
use crate::error::{Error, Result};
use crate::matcher::Kind;
use std::fmt::Debug;
use std::time::Duration;

/// One committed write, as the change log of a shared store records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its place in the log: increasing, in commit order, without gaps a reader could overtake.
    pub seq: u64,
    /// When it was committed (ms since the Unix epoch, the writer's clock).
    pub time_ms: u64,
    /// The bank it changed.
    pub bank: String,
    /// The store's id of that bank's incarnation ([`BankInfo::uid`]): a bank deleted and created again
    /// under the same name has a new one.
    pub bank_uid: u64,
    /// What changed.
    pub op: ChangeOp,
}

/// What a [`Change`] did. Payloads are ids only: a replica reads the rows it needs (in one query) when it
/// applies the change, so the log stays small however large the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// The bank was created.
    Created,
    /// The bank and its entries were deleted.
    Deleted,
    /// The bank's policy was replaced.
    PolicySet,
    /// `count` entries were added with ids `first..first + count`.
    Added {
        /// The first id.
        first: u64,
        /// How many.
        count: u64,
    },
    /// These entries were removed.
    Removed {
        /// Their ids.
        ids: Vec<u64>,
    },
    /// These entries' fields or states changed.
    Updated {
        /// Their ids.
        ids: Vec<u64>,
    },
}

/// One row of a bank as `pharos migrate` copies it: every id, removed ones included (their hash keeps the
/// ids after them in place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpRow {
    /// The entry (for a removed one: its hash, time added and no fields).
    pub entry: Entry,
    /// When it was removed (ms since the Unix epoch); `None` while it is live.
    pub removed_ms: Option<u64>,
}

/// A wait for the next change of a shared store (PostgreSQL: a connection that LISTENs).
pub trait ChangeWatch: Send {
    /// Returns `Ok(true)` when a change was announced, `Ok(false)` after `timeout` without one; an error when
    /// the connection is lost (the caller makes a new watch).
    fn wait(&mut self, timeout: Duration) -> Result<bool>;
}

/// The bank rows, the entries' fields and the audit, durably.
pub trait BankStore: Send + Sync + Debug {
    /// Where it lives, for messages (a file path, a database's host and name).
    fn describe(&self) -> String;
    /// Creates an empty bank (`BankExists` when the name is taken).
    fn create_bank_with(&self, name: &str, kind: Kind, policy: BankPolicy) -> Result<BankInfo>;
    /// Replaces a bank's policy.
    fn set_policy(&self, name: &str, policy: BankPolicy) -> Result<BankInfo>;
    /// Deletes a bank and its entries.
    fn delete_bank(&self, name: &str) -> Result<()>;
    /// Every bank.
    fn list_banks(&self) -> Result<Vec<BankInfo>>;
    /// One bank's record.
    fn bank(&self, name: &str) -> Result<BankInfo>;
    /// Adds entries (all or none); returns the first id.
    fn add(&self, name: &str, entries: &[NewEntry]) -> Result<u64>;
    /// Removes entries by id (all or none).
    fn remove(&self, name: &str, ids: &[u64]) -> Result<()>;
    /// Changes entries in place (all or none); the fields and states after the change.
    fn update(&self, name: &str, updates: &[(u64, EntryUpdate)]) -> Result<Vec<(EntryMeta, EntryState)>>;
    /// Every row of a bank, for indexing.
    fn load(&self, name: &str) -> Result<StoredBank>;
    /// The fields of some entries.
    fn metas(&self, name: &str, ids: &[u64]) -> Result<Vec<EntryMeta>>;
    /// The live entries with each external id.
    fn ids_by_external_id(&self, name: &str, external_ids: &[String]) -> Result<Vec<(String, Vec<u64>)>>;
    /// Calls `f` on every live entry of a bank, in id order.
    fn for_each_entry(&self, name: &str, f: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()>;
    /// Appends audit records (one transaction).
    fn append_audit(&self, records: &[AuditRecord]) -> Result<()>;
    /// Calls `f` on the audit records that pass `filter`, oldest first.
    fn for_each_audit(
        &self,
        filter: &AuditFilter,
        f: &mut dyn FnMut(AuditRecord) -> Result<()>,
    ) -> Result<()>;
    /// Deletes at most `max` audit records older than `before_ms`; how many.
    fn prune_audit(&self, before_ms: u64, max: usize) -> Result<usize>;

    /// Every row of a bank, removed ones included, in id order, from one snapshot; returns its record.
    fn dump(&self, name: &str, f: &mut dyn FnMut(DumpRow) -> Result<()>) -> Result<BankInfo>;
    /// Creates bank `info` (name, kind, creation time, policy) empty, for [`BankStore::restore_rows`];
    /// `BankExists` when the name is taken.
    fn restore_bank(&self, info: &BankInfo) -> Result<()>;
    /// Appends dumped rows to a bank being restored (one transaction; ids follow on from its next id).
    fn restore_rows(&self, name: &str, rows: &[DumpRow]) -> Result<()>;

    /// The sequence number of the newest change in the log, or `None` for a store without one (only this
    /// process writes it, so there is nothing to follow).
    fn log_position(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// At most `max` changes with a sequence number above `seq`, oldest first.
    fn changes_after(&self, _seq: u64, _max: usize) -> Result<Vec<Change>> {
        Ok(Vec::new())
    }
    /// Deletes the changes committed before `before_ms`, always keeping the newest (a replica further
    /// behind than that finds a gap and reads every bank again); how many.
    fn prune_changes(&self, _before_ms: u64) -> Result<usize> {
        Ok(0)
    }
    /// A wait for announcements of new changes (`None`: the store announces none).
    fn watch(&self) -> Result<Option<Box<dyn ChangeWatch>>> {
        Ok(None)
    }
    /// A bank's rows from id `first` on (row 0 of the result is id `first`), with the removed and disabled
    /// ones among them, and the bank's record: what a replica appends after the rows it has.
    fn load_from(&self, name: &str, first: u64) -> Result<StoredBank> {
        let _ = (name, first);
        Err(Error::Store(format!("{} has no change log to follow", self.describe())))
    }
    /// The state of each entry now (`None`: removed or never added), in the order of `ids`.
    fn entry_states(&self, name: &str, ids: &[u64]) -> Result<Vec<Option<EntryState>>> {
        let _ = (name, ids);
        Err(Error::Store(format!("{} has no change log to follow", self.describe())))
    }
}

impl BankStore for Store {
    fn describe(&self) -> String {
        self.path().display().to_string()
    }
    fn create_bank_with(&self, name: &str, kind: Kind, policy: BankPolicy) -> Result<BankInfo> {
        Store::create_bank_with(self, name, kind, policy)
    }
    fn set_policy(&self, name: &str, policy: BankPolicy) -> Result<BankInfo> {
        Store::set_policy(self, name, policy)
    }
    fn delete_bank(&self, name: &str) -> Result<()> {
        Store::delete_bank(self, name)
    }
    fn list_banks(&self) -> Result<Vec<BankInfo>> {
        Store::list_banks(self)
    }
    fn bank(&self, name: &str) -> Result<BankInfo> {
        Store::bank(self, name)
    }
    fn add(&self, name: &str, entries: &[NewEntry]) -> Result<u64> {
        Store::add(self, name, entries)
    }
    fn remove(&self, name: &str, ids: &[u64]) -> Result<()> {
        Store::remove(self, name, ids)
    }
    fn update(&self, name: &str, updates: &[(u64, EntryUpdate)]) -> Result<Vec<(EntryMeta, EntryState)>> {
        Store::update(self, name, updates)
    }
    fn load(&self, name: &str) -> Result<StoredBank> {
        Store::load(self, name)
    }
    fn metas(&self, name: &str, ids: &[u64]) -> Result<Vec<EntryMeta>> {
        Store::metas(self, name, ids)
    }
    fn ids_by_external_id(&self, name: &str, external_ids: &[String]) -> Result<Vec<(String, Vec<u64>)>> {
        Store::ids_by_external_id(self, name, external_ids)
    }
    fn for_each_entry(&self, name: &str, f: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
        Store::for_each_entry(self, name, f)
    }
    fn append_audit(&self, records: &[AuditRecord]) -> Result<()> {
        Store::append_audit(self, records)
    }
    fn for_each_audit(
        &self,
        filter: &AuditFilter,
        f: &mut dyn FnMut(AuditRecord) -> Result<()>,
    ) -> Result<()> {
        Store::for_each_audit(self, filter, f)
    }
    fn prune_audit(&self, before_ms: u64, max: usize) -> Result<usize> {
        Store::prune_audit(self, before_ms, max)
    }
    fn dump(&self, name: &str, f: &mut dyn FnMut(DumpRow) -> Result<()>) -> Result<BankInfo> {
        Store::dump(self, name, f)
    }
    fn restore_bank(&self, info: &BankInfo) -> Result<()> {
        Store::restore_bank(self, info)
    }
    fn restore_rows(&self, name: &str, rows: &[DumpRow]) -> Result<()> {
        Store::restore_rows(self, name, rows)
    }
}
