//! What a bank entry is beyond its hash: the fields hotlines and hash-sharing programmes exchange with it
//! (a partner's id, the programme it came from, tags, when it was added, PDQ quality, a note), and its state.
//!
//! None of this is in the matcher's index: it lives in the store and is read only for the entries a query
//! matched (and, for the state, once when a bank is loaded: see [`crate::banks`]).

use crate::matcher::AnyHash;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The descriptive fields of an entry. Every field is optional; an empty value is no value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Free text shown with a match (a case number, a file name; what `HEX,LABEL` lines carry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The partner's own id for it: ThreatExchange's descriptor/indicator id, NCMEC's file id, StopNCII's
    /// case number, HMA's content id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The programme or partner it came from (`ncmec`, `stopncii`, `threatexchange`, an organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Tags, in the order given, without duplicates (e.g. `disputed`, `false_positive`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// PDQ quality (0–100) as the partner computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u32>,
    /// An operator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Other named fields a format carries and Pharos has no column for (kept and exported again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl EntryMeta {
    /// True when no field is set (nothing is stored for such an entry).
    pub fn is_empty(&self) -> bool {
        *self == EntryMeta::default()
    }

    /// Adds `tag` unless it is already there.
    pub fn add_tag(&mut self, tag: &str) {
        if !self.tags.iter().any(|t| t == tag) {
            self.tags.push(tag.to_string());
        }
    }
}

/// Whether an entry matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// It matches.
    #[default]
    Active,
    /// It never matches (it is kept and exported): until `until_ms` (ms since the Unix epoch) when given,
    /// else until it is enabled again.
    Disabled {
        /// When it becomes active again by itself.
        until_ms: Option<u64>,
    },
}

impl EntryState {
    /// Whether it matches at `now_ms`.
    pub fn is_active_at(&self, now_ms: u64) -> bool {
        match self {
            EntryState::Active => true,
            EntryState::Disabled { until_ms } => until_ms.is_some_and(|t| now_ms >= t),
        }
    }

    /// The name used in exports and messages: `active` or `disabled`.
    pub fn name(&self) -> &'static str {
        match self {
            EntryState::Active => "active",
            EntryState::Disabled { .. } => "disabled",
        }
    }

    /// `until_ms` of a disabled state.
    pub fn disabled_until_ms(&self) -> Option<u64> {
        match self {
            EntryState::Active => None,
            EntryState::Disabled { until_ms } => *until_ms,
        }
    }
}

/// An entry to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    /// The hash (must be of the bank's kind).
    pub hash: AnyHash,
    /// Its descriptive fields.
    pub meta: EntryMeta,
    /// When the partner added it (ms since the Unix epoch), when the input says; else the time of the add.
    pub added_ms: Option<u64>,
    /// Its state (imports carry disabled entries too).
    pub state: EntryState,
}

impl NewEntry {
    /// An active entry with no fields.
    pub fn new(hash: AnyHash) -> NewEntry {
        NewEntry { hash, meta: EntryMeta::default(), added_ms: None, state: EntryState::Active }
    }

    /// An active entry with a label (or none).
    pub fn labelled(hash: AnyHash, label: Option<String>) -> NewEntry {
        let mut e = NewEntry::new(hash);
        e.meta.label = label;
        e
    }
}

/// A stored entry, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Id within the bank.
    pub id: u64,
    /// The hash.
    pub hash: AnyHash,
    /// Its descriptive fields.
    pub meta: EntryMeta,
    /// When it was added, ms since the Unix epoch (the partner's time when the input gave one).
    pub added_ms: u64,
    /// Its state.
    pub state: EntryState,
}

/// A change to an entry, applied in place (`None`/empty: that part is left as it is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryUpdate {
    /// Tags to add (kept in order, no duplicates).
    pub add_tags: Vec<String>,
    /// Tags to remove.
    pub remove_tags: Vec<String>,
    /// A new note; `Some(None)` clears it.
    pub note: Option<Option<String>>,
    /// A new state.
    pub state: Option<EntryState>,
}

impl EntryUpdate {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == EntryUpdate::default()
    }

    /// Applies the descriptive part to `meta`.
    pub fn apply(&self, meta: &mut EntryMeta) {
        meta.tags.retain(|t| !self.remove_tags.contains(t));
        for t in &self.add_tags {
            meta.add_tag(t);
        }
        if let Some(n) = &self.note {
            meta.note = n.clone();
        }
    }
}
