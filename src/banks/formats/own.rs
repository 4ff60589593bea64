//! Pharos's own formats: `csv` (a header row, then every field of an entry), `jsonl` (one object per entry,
//! every field) and `hex` (one hash per line). csv and jsonl read back exactly what they wrote; their
//! readers also take the older exports (`hash,label` CSV; `{"id","hash","label","added_ms"}` lines).

use super::{checked, io_error, EntryWriter, Item};
use crate::error::{Error, Result};
use crate::matcher::Kind;
use crate::store::{Entry, EntryState, NewEntry};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// The columns `--format csv` writes, in order. `id` is the exporting bank's id (informative: an import
/// assigns its own ids); `tags` are space-separated (a tag holds no whitespace); `metadata` is a JSON
/// object of strings, empty when there is none; `state` is `active` or `disabled`.
pub(super) const CSV_HEADER: [&str; 12] = [
    "hash",
    "id",
    "external_id",
    "source",
    "tags",
    "quality",
    "note",
    "label",
    "added_ms",
    "state",
    "disabled_until_ms",
    "metadata",
];

/// Where the optional columns of a CSV header are.
pub(super) struct CsvCols {
    pub(super) external_id: Option<usize>,
    pub(super) source: Option<usize>,
    pub(super) tags: Option<usize>,
    pub(super) quality: Option<usize>,
    pub(super) note: Option<usize>,
    pub(super) added_ms: Option<usize>,
    pub(super) state: Option<usize>,
    pub(super) disabled_until_ms: Option<usize>,
    pub(super) metadata: Option<usize>,
}

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn number<T: std::str::FromStr>(what: &str, s: &str) -> std::result::Result<Option<T>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| format!("{what} '{s}' is not a whole number"))
}

fn state(s: &str, until: Option<u64>) -> std::result::Result<EntryState, String> {
    match s.trim() {
        "" | "active" if until.is_none() => Ok(EntryState::Active),
        "active" | "" => Err("disabled_until_ms is set but the state is not 'disabled'".into()),
        "disabled" => Ok(EntryState::Disabled { until_ms: until }),
        other => Err(format!("state '{other}': 'active' or 'disabled'")),
    }
}

fn metadata_json(s: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    if s.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(s).map_err(|e| format!("metadata is not a JSON object of strings: {e}"))
}

/// Fills in `e` from the Pharos columns of a CSV record that has them.
pub(super) fn csv_fields(
    c: CsvCols,
    f: &csv::StringRecord,
    e: &mut NewEntry,
) -> std::result::Result<(), String> {
    let m = &mut e.meta;
    if let Some(i) = c.external_id {
        m.external_id = text(&f[i]);
    }
    if let Some(i) = c.source {
        m.source = text(&f[i]);
    }
    if let Some(i) = c.note {
        m.note = text(&f[i]);
    }
    if let Some(i) = c.tags {
        f[i].split_whitespace().for_each(|t| m.add_tag(t));
    }
    if let Some(i) = c.quality {
        m.quality = number("quality", &f[i])?;
    }
    if let Some(i) = c.metadata {
        m.metadata = metadata_json(&f[i])?;
    }
    if let Some(i) = c.added_ms {
        e.added_ms = number("added_ms", &f[i])?;
    }
    let until = match c.disabled_until_ms {
        Some(i) => number("disabled_until_ms", &f[i])?,
        None => None,
    };
    if let Some(i) = c.state {
        e.state = state(&f[i], until)?;
    }
    Ok(())
}

/// A `--format jsonl` object (see [`JsonlWriter`]); fields other than `hash` may be absent or null.
pub(super) fn jsonl_entry(kind: Kind, v: &serde_json::Value) -> std::result::Result<Item, String> {
    let string = |k: &str| -> std::result::Result<Option<String>, String> {
        match v.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(text(s)),
            Some(_) => Err(format!("\"{k}\" is not a string")),
        }
    };
    let uint = |k: &str| -> std::result::Result<Option<u64>, String> {
        match v.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(x) => x.as_u64().map(Some).ok_or_else(|| format!("\"{k}\" is not a whole number")),
        }
    };
    let hex = string("hash")?.ok_or("\"hash\" is empty")?;
    let mut e = NewEntry::new(super::parse_hash(kind, &hex)?);
    let m = &mut e.meta;
    m.label = string("label")?;
    m.external_id = string("external_id")?;
    m.source = string("source")?;
    m.note = string("note")?;
    match v.get("tags") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(tags)) => {
            for t in tags {
                m.add_tag(t.as_str().ok_or("\"tags\" holds something other than strings")?);
            }
        }
        Some(_) => return Err("\"tags\" is not an array of strings".into()),
    }
    m.quality = uint("quality")?
        .map(|q| u32::try_from(q).map_err(|_| format!("quality {q}; PDQ quality is 0 to 100")))
        .transpose()?;
    if let Some(md) = v.get("metadata").filter(|x| !x.is_null()) {
        m.metadata = serde_json::from_value(md.clone())
            .map_err(|e| format!("\"metadata\" is not an object of strings: {e}"))?;
    }
    e.added_ms = uint("added_ms")?;
    let st = string("state")?.unwrap_or_default();
    e.state = state(&st, uint("disabled_until_ms")?)?;
    checked(e)
}

fn tags_text(e: &Entry) -> String {
    e.meta.tags.join(" ")
}

/// `--format csv`: [`CSV_HEADER`], then one record per entry, quoted by the `csv` crate where needed.
pub(super) struct CsvWriter<W: Write> {
    w: csv::Writer<W>,
}

impl<W: Write> CsvWriter<W> {
    pub(super) fn new(out: W) -> Result<CsvWriter<W>> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(out);
        w.write_record(CSV_HEADER).map_err(csv_error)?;
        Ok(CsvWriter { w })
    }
}

pub(super) fn csv_error(e: csv::Error) -> Error {
    Error::Io(e.into())
}

impl<W: Write> EntryWriter for CsvWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        let m = &e.meta;
        let metadata = if m.metadata.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&m.metadata).map_err(|e| Error::Io(e.into()))?
        };
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        self.w
            .write_record([
                e.hash.to_hex(),
                e.id.to_string(),
                opt(&m.external_id),
                opt(&m.source),
                tags_text(e),
                m.quality.map(|q| q.to_string()).unwrap_or_default(),
                opt(&m.note),
                opt(&m.label),
                e.added_ms.to_string(),
                e.state.name().to_string(),
                e.state.disabled_until_ms().map(|t| t.to_string()).unwrap_or_default(),
                metadata,
            ])
            .map_err(csv_error)
    }

    fn finish(&mut self) -> Result<()> {
        self.w.flush().map_err(io_error)
    }
}

/// One `--format jsonl` line: every field, in this order, `null`/`[]`/`{}` when empty.
#[derive(Serialize)]
struct JsonlLine<'a> {
    id: u64,
    hash: String,
    label: &'a Option<String>,
    external_id: &'a Option<String>,
    source: &'a Option<String>,
    tags: &'a [String],
    quality: Option<u32>,
    note: &'a Option<String>,
    metadata: &'a BTreeMap<String, String>,
    added_ms: u64,
    state: &'static str,
    disabled_until_ms: Option<u64>,
}

/// `--format jsonl`.
pub(super) struct JsonlWriter<W: Write> {
    out: W,
}

impl<W: Write> JsonlWriter<W> {
    pub(super) fn new(out: W) -> JsonlWriter<W> {
        JsonlWriter { out }
    }
}

impl<W: Write> EntryWriter for JsonlWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        let m = &e.meta;
        let line = JsonlLine {
            id: e.id,
            hash: e.hash.to_hex(),
            label: &m.label,
            external_id: &m.external_id,
            source: &m.source,
            tags: &m.tags,
            quality: m.quality,
            note: &m.note,
            metadata: &m.metadata,
            added_ms: e.added_ms,
            state: e.state.name(),
            disabled_until_ms: e.state.disabled_until_ms(),
        };
        serde_json::to_writer(&mut self.out, &line).map_err(|e| Error::Io(e.into()))?;
        self.out.write_all(b"\n").map_err(io_error)
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(io_error)
    }
}

/// `--format hex`: the hash alone.
pub(super) struct HexWriter<W: Write> {
    out: W,
}

impl<W: Write> HexWriter<W> {
    pub(super) fn new(out: W) -> HexWriter<W> {
        HexWriter { out }
    }
}

impl<W: Write> EntryWriter for HexWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        writeln!(self.out, "{}", e.hash.to_hex()).map_err(io_error)
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(io_error)
    }
}
