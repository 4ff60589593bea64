//! The match audit: which bank entry matched what and when, kept durably so an operator can show it later
//! — never the image, only its hashes.
//!
//! Records live in the store's `audit` table keyed by (time in ms, sequence number), so listing a time
//! range and pruning everything older than the retention are range operations on the key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A query matched the entry and the match was reported.
    Match,
    /// A query matched the entry, but the match was withheld because the query also matched an entry of a
    /// negative bank (`by`).
    Suppressed,
    /// The entry passed its bank's flood guard (more matches in the window than allowed).
    Flood,
    /// The entry passed its bank's flood guard and was disabled.
    FloodDisabled,
    /// A bank was created (`caller` did it).
    BankCreated,
    /// A bank and its entries were deleted.
    BankDeleted,
    /// A bank's policy was replaced.
    PolicySet,
    /// `count` entries were added, ids from `entry_id` on.
    EntriesAdded,
    /// `count` entries were removed.
    EntriesRemoved,
    /// `count` entries were changed (tags, note, state).
    EntriesUpdated,
    /// `count` entries of the bank were exported (sent to the caller with their hashes).
    BankExported,
}

impl AuditEvent {
    /// The name used in exports and filters.
    pub fn name(self) -> &'static str {
        match self {
            AuditEvent::Match => "match",
            AuditEvent::Suppressed => "suppressed",
            AuditEvent::Flood => "flood",
            AuditEvent::FloodDisabled => "flood_disabled",
            AuditEvent::BankCreated => "bank_created",
            AuditEvent::BankDeleted => "bank_deleted",
            AuditEvent::PolicySet => "policy_set",
            AuditEvent::EntriesAdded => "entries_added",
            AuditEvent::EntriesRemoved => "entries_removed",
            AuditEvent::EntriesUpdated => "entries_updated",
            AuditEvent::BankExported => "bank_exported",
        }
    }
}

/// An entry named by an audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The bank.
    pub bank: String,
    /// The entry's id in it.
    pub entry_id: u64,
    /// The entry's external id, as it was at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    /// What happened.
    pub event: AuditEvent,
    /// The entry it happened to.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The Hamming distance of the match (0 for digests and flood events).
    pub distance: u32,
    /// The query's hashes, by kind (the first hash of each kind: for a dihedral query, the untransformed
    /// PDQ), lowercase hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// The request's id (the gRPC item id, or the input line of `pharos match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who asked (the caller's identity, once the daemon authenticates callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// For `suppressed`: the negative bank's entry that withheld the match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<AuditEntry>,
    /// For bank changes: how many entries the change or export concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AuditRecord {
    /// The record of a change to a bank (or an export of it) by `caller`: `entry_id` is the first id added
    /// (0 otherwise), `count` the entries concerned.
    pub fn bank_change(
        event: AuditEvent,
        bank: &str,
        entry_id: u64,
        count: Option<u64>,
        caller: Option<&str>,
    ) -> AuditRecord {
        AuditRecord {
            time_ms: super::now_ms(),
            event,
            entry: AuditEntry { bank: bank.to_string(), entry_id, external_id: None },
            distance: 0,
            query: BTreeMap::new(),
            request_id: None,
            caller: caller.map(str::to_string),
            by: None,
            count,
        }
    }
}

/// Which records to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// From this time on (ms, inclusive).
    pub since_ms: Option<u64>,
    /// Before this time (ms, exclusive).
    pub until_ms: Option<u64>,
    /// Only these banks (the entry's bank or, for suppressions, the negative bank); empty: every bank.
    pub banks: Vec<String>,
    /// At most this many records (oldest first); `None`: all.
    pub limit: Option<usize>,
}

impl AuditFilter {
    /// Whether `r` passes the bank filter (the time range is applied by the key range).
    pub fn wants(&self, r: &AuditRecord) -> bool {
        self.banks.is_empty()
            || self.banks.contains(&r.entry.bank)
            || r.by.as_ref().is_some_and(|b| self.banks.contains(&b.bank))
    }
}
