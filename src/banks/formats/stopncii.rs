//! StopNCII hash records (python-threatexchange's `exchanges/clients/stopncii/api.py`, `StopNCIIHashRecord`):
//!
//! ```text
//! {"lastModtimestamp": 1625175071, "signalType": "ImagePDQ", "hashValue": "9def…", "hashStatus": "Active",
//!  "caseNumbers": {"cc592711-…": "Active"}, "CSPFeedbacks": [{"source": "…", "feedbackValue": "Blocked", …}]}
//! ```
//!
//! Read from a `FetchHashes` response (`{"count":…, "hashRecords": [records…], …}`), a JSON array of records,
//! or JSON lines of records or responses (what saving one response per line gives): the input is a stream
//! of JSON values, each one of those. The document is read whole (capped at
//! [`super::MAX_DOCUMENT_BYTES`]); each record is parsed on its own, so a bad record is a bad record on its
//! line and the others still count.
//!
//! Mapping (documented in the README too):
//! - `signalType` `ImagePDQ` → a PDQ bank, `VideoMD5` → an MD5 bank; any other type, or a type of another
//!   kind than the bank's, is skipped;
//! - `caseNumbers`: the first case number (in the document's order) → `external_id`; all of them with their
//!   statuses, in order, → `metadata["stopncii_case_numbers"]` (a JSON array of `[case, status]` pairs),
//!   from which export writes them back;
//! - `hashStatus` → `metadata["stopncii_status"]`, and `Withdrawn`/`Deleted` (StopNCII: "should be deleted
//!   by client") → the entry is disabled (kept, never matches); `Received`, `Active`, `Unknown` → active;
//! - `lastModtimestamp` (seconds) → `added_ms`; `source` = `stopncii`;
//! - `CSPFeedbacks` (other platforms' verdicts) are not kept.
//!
//! Export writes JSON lines, one record per entry; `hashStatus` is the kept status when it agrees with the
//! entry's state, else `Withdrawn` for a disabled entry and `Active` for an active one.

use super::{io_error, line_at, read_document, EntryWriter, Item, LineError, Record};
use crate::error::{Error, Result};
use crate::matcher::Kind;
use crate::store::{Entry, EntryState, NewEntry};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::io::{BufRead, Write};

pub(super) const STATUS: &str = "stopncii_status";
pub(super) const CASES: &str = "stopncii_case_numbers";
const STATUSES: [&str; 5] = ["Unknown", "Received", "Active", "Withdrawn", "Deleted"];

/// A top-level value that may be a `FetchHashes` response.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(rename = "hashRecords", borrow)]
    hash_records: Option<Vec<&'a RawValue>>,
}

/// The case numbers of a record, in the document's order (a `serde_json::Map` would sort them).
struct Cases(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Cases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Cases, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cases;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of case number → status")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Cases, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry::<String, String>()? {
                    v.push(kv);
                }
                Ok(Cases(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// One record as StopNCII writes it.
#[derive(Deserialize)]
struct HashRecord {
    #[serde(rename = "lastModtimestamp", default)]
    last_mod: Option<u64>,
    #[serde(rename = "signalType")]
    signal_type: String,
    #[serde(rename = "hashValue")]
    hash_value: String,
    #[serde(rename = "hashStatus", default)]
    hash_status: Option<String>,
    #[serde(rename = "caseNumbers", default)]
    case_numbers: Option<Cases>,
}

/// The records of a StopNCII input (read whole), for a bank of `kind`.
pub(super) fn read(input: impl BufRead, kind: Kind) -> std::vec::IntoIter<Result<Record>> {
    match read_all(input, kind) {
        Ok(records) => records.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
        Err(e) => vec![Err(e)].into_iter(),
    }
}

fn read_all(input: impl BufRead, kind: Kind) -> Result<Vec<Record>> {
    super::carries(super::Format::Stopncii, kind)?;
    let doc = read_document(input, "StopNCII JSON")?;
    let mut out = Vec::new();
    let mut pos = (0, 1);
    let mut line_of = |raw: &RawValue| {
        let offset = raw.get().as_ptr() as usize - doc.as_ptr() as usize;
        pos = (offset, line_at(&doc, pos, offset));
        pos.1
    };
    let values = serde_json::Deserializer::from_str(&doc).into_iter::<&RawValue>();
    for value in values {
        let value = value.map_err(|e| Error::InvalidInput(format!("line {}: JSON: {e}", e.line())))?;
        let records: Vec<&RawValue> = if value.get().starts_with('[') {
            serde_json::from_str(value.get()).map_err(|e| json_error(line_of(value), e))?
        } else {
            match serde_json::from_str::<Page>(value.get()) {
                Ok(Page { hash_records: Some(r) }) => r,
                _ => vec![value],
            }
        };
        for r in records {
            let line = line_of(r);
            let at = |message: String| LineError { line, message };
            out.push(match record(kind, r) {
                Ok(Item::Entry(e)) => Record::Entry(e),
                Ok(Item::Skip(m)) => Record::Skipped(at(m)),
                Err(m) => Record::Invalid(at(m)),
            });
        }
    }
    Ok(out)
}

fn json_error(line: usize, e: serde_json::Error) -> Error {
    Error::InvalidInput(format!("line {line}: JSON: {}", without_position(&e)))
}

/// A serde error's message without its " at line L column C" (which counts within the record).
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    s.rsplit_once(" at line ").map_or(s.clone(), |(m, _)| m.to_string())
}

fn record(kind: Kind, raw: &RawValue) -> std::result::Result<Item, String> {
    let r: HashRecord = serde_json::from_str(raw.get())
        .map_err(|e| format!("not a StopNCII hash record: {}", without_position(&e)))?;
    let record_kind = match r.signal_type.as_str() {
        "ImagePDQ" => Some(Kind::Pdq),
        "VideoMD5" => Some(Kind::Md5),
        _ => None,
    };
    if record_kind != Some(kind) {
        return Ok(Item::Skip(format!("a StopNCII {} hash, not for this {kind} bank", r.signal_type)));
    }
    let mut e = NewEntry::new(super::parse_hash(kind, &r.hash_value)?);
    e.meta.source = Some("stopncii".into());
    if let Some(status) = r.hash_status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(format!("hashStatus '{status}' is not one of {}", STATUSES.join(", ")));
        }
        if matches!(status.as_str(), "Withdrawn" | "Deleted") {
            e.state = EntryState::Disabled { until_ms: None };
        }
        e.meta.metadata.insert(STATUS.into(), status);
    }
    if let Some(Cases(cases)) = r.case_numbers.filter(|c| !c.0.is_empty()) {
        e.meta.external_id = Some(cases[0].0.clone());
        let json = serde_json::to_string(&cases).map_err(|e| e.to_string())?;
        e.meta.metadata.insert(CASES.into(), json);
    }
    e.added_ms = r.last_mod.map(|s| s.saturating_mul(1000));
    super::checked(e)
}

/// `caseNumbers` written in the kept order.
struct CasesOut<'a>(&'a [(String, String)]);

impl Serialize for CasesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct RecordOut<'a> {
    #[serde(rename = "lastModtimestamp")]
    last_mod: u64,
    #[serde(rename = "signalType")]
    signal_type: &'static str,
    #[serde(rename = "hashValue")]
    hash_value: String,
    #[serde(rename = "hashStatus")]
    hash_status: &'a str,
    #[serde(rename = "caseNumbers")]
    case_numbers: CasesOut<'a>,
}

/// `--format stopncii`: JSON lines of hash records.
pub(super) struct StopnciiWriter<W: Write> {
    out: W,
}

impl<W: Write> StopnciiWriter<W> {
    pub(super) fn new(out: W) -> StopnciiWriter<W> {
        StopnciiWriter { out }
    }
}

impl<W: Write> EntryWriter for StopnciiWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        let signal_type = match e.hash.kind() {
            Kind::Pdq => "ImagePDQ",
            Kind::Md5 => "VideoMD5",
            k => return Err(Error::InvalidInput(format!("StopNCII has no signal type for {k} hashes"))),
        };
        let kept = e.meta.metadata.get(STATUS).map(String::as_str);
        let disabled = e.state != EntryState::Active;
        let hash_status = match kept {
            Some(s @ ("Withdrawn" | "Deleted")) if disabled => s,
            Some(s @ ("Received" | "Active" | "Unknown")) if !disabled => s,
            _ if disabled => "Withdrawn",
            _ => "Active",
        };
        let cases: Vec<(String, String)> = match e.meta.metadata.get(CASES) {
            Some(json) => serde_json::from_str(json).map_err(|err| {
                Error::InvalidInput(format!(
                    "entry {}: metadata {CASES} is not a list of [case, status]: {err}",
                    e.id
                ))
            })?,
            None => e.meta.external_id.iter().map(|c| (c.clone(), hash_status.to_string())).collect(),
        };
        let rec = RecordOut {
            last_mod: e.added_ms / 1000,
            signal_type,
            hash_value: e.hash.to_hex(),
            hash_status,
            case_numbers: CasesOut(&cases),
        };
        serde_json::to_writer(&mut self.out, &rec).map_err(|e| Error::Io(e.into()))?;
        self.out.write_all(b"\n").map_err(io_error)
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(io_error)
    }
}
