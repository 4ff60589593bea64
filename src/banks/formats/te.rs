//! python-threatexchange's formats: the ThreatExchange CSV its CLI keeps
//! (`cli/dataset/simple_serialization.py`) and the local-file exchange lines (`exchanges/impl/file_api.py`).
//!
//! ThreatExchange CSV, no header, written by Python's `csv` module: `hash,descriptor_id,added_on,tags`
//! (`SimpleDescriptorRollup.as_row`): the descriptor id is an integer, `added_on` is ThreatExchange's time
//! (`2020-07-01T18:31:15+0000`) or the word `mine` (the rollup's marker for the reader's own opinion), tags
//! are space-separated. HMA 1.0 (`HMASerialization`) inserted the indicator id as the second column; the
//! reader tells the two apart by their column count (4 or 5).
//!
//! Mapping (the choices, documented in the README too):
//! - descriptor id → `external_id` (ThreatExchange's id for the opinion; `0` means none, as the writer puts
//!   `0` for an entry without a numeric external id, since pytx parses the column as an integer);
//! - HMA's indicator id → `metadata["te_indicator_id"]` (it names the hash, not the opinion: not the
//!   external id); the writer always writes the 4-column CLI form, which pytx's CLI reads;
//! - `added_on` → `added_ms`; `mine` (or any value kept from an import) → `metadata["te_added_on"]`, which
//!   the writer puts back in place of the time;
//! - `source` is `threatexchange`: the format only ever comes from ThreatExchange.
//!
//! Local-file lines: `SIGNAL_TYPE SIGNAL`, or the signal alone (the exchange's config then names the type).
//! pytx calls a PDQ hash `pdq` and a file MD5 `video_md5` (`VideoMD5Signal`); Pharos also reads its own
//! kind names (`md5`, `phash`, `sha1`, `sha256`). A line of another signal type is skipped, not an error:
//! a pytx file mixes types.

use super::{checked, io_error, time, EntryWriter, Item};
use crate::error::Result;
use crate::matcher::Kind;
use crate::store::{Entry, NewEntry};
use std::io::Write;

/// Metadata key for HMA 1.0's indicator id.
pub(super) const INDICATOR_ID: &str = "te_indicator_id";
/// Metadata key for an `added_on` that is not a time (`mine`).
pub(super) const ADDED_ON: &str = "te_added_on";

/// The bank kind a signal type name means: python-threatexchange's and ThreatExchange's names
/// (`pdq`, `video_md5`, `HASH_PDQ`, `HASH_MD5`, …) and Pharos's own.
pub(super) fn signal_kind(ty: &str) -> Option<Kind> {
    match ty.trim().to_ascii_lowercase().as_str() {
        "pdq" | "hash_pdq" | "pdq_hash" => Some(Kind::Pdq),
        "phash" | "hash_phash" => Some(Kind::Phash),
        "md5" | "hash_md5" | "video_md5" | "hash_video_md5" => Some(Kind::Md5),
        "sha1" | "hash_sha1" => Some(Kind::Sha1),
        "sha256" | "hash_sha256" => Some(Kind::Sha256),
        _ => None,
    }
}

/// One local-file line (trimmed, not blank).
pub(super) fn pytx_line(kind: Kind, t: &str) -> std::result::Result<Item, String> {
    let words: Vec<&str> = t.split_whitespace().collect();
    match words[..] {
        [hex] => Ok(Item::Entry(NewEntry::new(super::parse_hash(kind, hex)?))),
        [ty, hex] if signal_kind(ty) == Some(kind) => {
            Ok(Item::Entry(NewEntry::new(super::parse_hash(kind, hex)?)))
        }
        [ty, _] => Ok(Item::Skip(format!("a '{ty}' signal, not for this {kind} bank"))),
        _ => Err(format!(
            "{} words; a python-threatexchange line is 'SIGNAL_TYPE HASH' or a hash",
            words.len()
        )),
    }
}

/// One ThreatExchange CSV record (see the module documentation).
pub(super) fn te_csv_record(
    kind: Kind,
    f: &csv::StringRecord,
    _raw: &str,
) -> std::result::Result<Option<Item>, String> {
    let (hash, indicator, rest) = match f.len() {
        4 => (&f[0], None, [&f[1], &f[2], &f[3]]),
        5 => (&f[0], Some(&f[1]), [&f[2], &f[3], &f[4]]),
        n => {
            return Err(format!(
                "{n} fields; ThreatExchange CSV has 4 (hash,descriptor_id,added_on,tags) \
                 or 5 (HMA 1.0: hash,indicator_id,descriptor_id,added_on,tags)"
            ))
        }
    };
    let [descriptor, added_on, tags] = rest;
    let mut e = NewEntry::new(super::parse_hash(kind, hash)?);
    let m = &mut e.meta;
    m.source = Some("threatexchange".into());
    let descriptor = descriptor.trim();
    let id: u64 = descriptor.parse().map_err(|_| format!("descriptor id '{descriptor}' is not a number"))?;
    if id != 0 {
        m.external_id = Some(descriptor.to_string());
    }
    if let Some(ind) = indicator {
        let ind = ind.trim();
        if ind.is_empty() {
            return Err("the indicator id (HMA 1.0's second column) is empty".into());
        }
        m.metadata.insert(INDICATOR_ID.into(), ind.to_string());
    }
    let added_on = added_on.trim();
    if added_on == "mine" {
        m.metadata.insert(ADDED_ON.into(), added_on.to_string());
    } else if !added_on.is_empty() {
        e.added_ms = Some(time::parse(added_on).ok_or_else(|| {
            format!("added_on '{added_on}' is neither a ThreatExchange time (2020-07-01T18:31:15+0000) nor 'mine'")
        })?);
    }
    // Python's csv module ends rows with CRLF, so the last field may end in a `\r`.
    tags.trim().split(' ').filter(|t| !t.is_empty()).for_each(|t| e.meta.add_tag(t));
    checked(e).map(Some)
}

/// `--format te-csv`: the 4-column form python-threatexchange's CLI writes and reads.
pub(super) struct TeCsvWriter<W: Write> {
    w: csv::Writer<W>,
}

impl<W: Write> TeCsvWriter<W> {
    pub(super) fn new(out: W) -> TeCsvWriter<W> {
        TeCsvWriter { w: csv::WriterBuilder::new().has_headers(false).from_writer(out) }
    }
}

impl<W: Write> EntryWriter for TeCsvWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        let m = &e.meta;
        let descriptor = m
            .external_id
            .as_deref()
            .filter(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("0");
        let added_on = m.metadata.get(ADDED_ON).cloned().unwrap_or_else(|| time::te(e.added_ms));
        let tags = m.tags.join(" ");
        self.w
            .write_record([e.hash.to_hex().as_str(), descriptor, &added_on, &tags])
            .map_err(super::own::csv_error)
    }

    fn finish(&mut self) -> Result<()> {
        self.w.flush().map_err(io_error)
    }
}

/// `--format pytx`: `pdq HEX` or `video_md5 HEX` (the names pytx gives these signal types).
pub(super) struct PytxWriter<W: Write> {
    out: W,
    name: &'static str,
}

impl<W: Write> PytxWriter<W> {
    pub(super) fn new(out: W, kind: Kind) -> PytxWriter<W> {
        // `carries` has already refused the kinds pytx has no name for.
        let name = if kind == Kind::Md5 { "video_md5" } else { "pdq" };
        PytxWriter { out, name }
    }
}

impl<W: Write> EntryWriter for PytxWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        writeln!(self.out, "{} {}", self.name, e.hash.to_hex()).map_err(io_error)
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(io_error)
    }
}
