//! [`BankStore`]: what the live banks ([`crate::banks::BankSet`]) need of a store, so the embedded redb
//! [`Store`] (one machine, the default) and a shared database (the fleet issue: PostgreSQL, several
//! replicas) are interchangeable behind it.
//!
//! The methods mirror [`Store`]'s; closures are `&mut dyn FnMut` so the trait can be used as an object.
//! Every write is durable when it returns (one transaction).

use super::{
    AuditFilter, AuditRecord, BankInfo, BankPolicy, Entry, EntryMeta, EntryState, EntryUpdate, NewEntry,
    Store, StoredBank,
};
use crate::error::Result;
use crate::matcher::Kind;
use std::fmt::Debug;

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
}
