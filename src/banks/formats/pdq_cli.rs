//! Meta's `pdq-photo-hasher` output (`pdq/cpp/bin/pdq-photo-hasher.cpp`): `HASH,QUALITY,FILENAME` per image,
//! or with `--details` `hash=HASH,norm=N,delta=D,quality=Q,filename=FILENAME`. The file name is printed
//! as is (`printf`, no quoting), so it is everything after the last fixed field and may hold commas.
//!
//! Mapping: quality → `quality`, filename → `label`, norm and delta → `metadata["pdq_norm"]`,
//! `metadata["pdq_delta"]` (delta is the distance to the previous image hashed in that run: kept, not
//! meaningful alone); the `xform` of `--pdqdih --details` lines → `metadata["pdq_xform"]`. The writer writes the plain form, the label as the file name (empty when none, quality
//! empty when unknown); a label with a line break cannot be written as one line, which is an error.

use super::{checked, io_error, EntryWriter, Item};
use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Kind};
use crate::store::{Entry, NewEntry};
use std::io::Write;

fn quality(q: &str) -> std::result::Result<Option<u32>, String> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(None);
    }
    q.parse().map(Some).map_err(|_| format!("quality '{q}' is not a whole number"))
}

/// One line (trimmed, not blank).
pub(super) fn line(t: &str) -> std::result::Result<Item, String> {
    let mut e;
    if let Some(details) = t.strip_prefix("hash=") {
        let (fields, filename) = match details.split_once(",filename=") {
            Some((f, name)) => (f, Some(name)),
            None => (details, None),
        };
        let mut parts = fields.split(',');
        let hex = parts.next().unwrap_or("");
        e = NewEntry::new(AnyHash::parse(Kind::Pdq, hex.trim()).map_err(|e| e.to_string())?);
        for kv in parts {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("'{kv}' is not KEY=VALUE"))?;
            match k.trim() {
                "quality" => e.meta.quality = quality(v)?,
                // `--pdqdih` with `--details` names each dihedral variant's line.
                "xform" => {
                    e.meta.metadata.insert("pdq_xform".into(), v.trim().to_string());
                }
                "norm" | "delta" => {
                    let n: u32 = v.trim().parse().map_err(|_| format!("{k} '{v}' is not a whole number"))?;
                    e.meta.metadata.insert(format!("pdq_{}", k.trim()), n.to_string());
                }
                other => return Err(format!("unknown pdq-photo-hasher field '{other}'")),
            }
        }
        e.meta.label = filename.filter(|f| !f.is_empty()).map(str::to_string);
    } else {
        let mut parts = t.splitn(3, ',');
        let (hex, q, name) = (parts.next(), parts.next(), parts.next());
        let (Some(hex), Some(q)) = (hex, q) else {
            return Err(
                "a pdq-photo-hasher line is HASH,QUALITY,FILENAME or hash=…,quality=…,filename=…".into()
            );
        };
        e = NewEntry::new(AnyHash::parse(Kind::Pdq, hex.trim()).map_err(|e| e.to_string())?);
        e.meta.quality = quality(q)?;
        e.meta.label = name.filter(|f| !f.is_empty()).map(str::to_string);
    }
    if let Some(l) = &e.meta.label {
        super::super::validate_label(l).map_err(|e| e.to_string())?;
    }
    checked(e)
}

/// `--format pdq-cli`: `HASH,QUALITY,FILENAME`.
pub(super) struct PdqCliWriter<W: Write> {
    out: W,
}

impl<W: Write> PdqCliWriter<W> {
    pub(super) fn new(out: W) -> PdqCliWriter<W> {
        PdqCliWriter { out }
    }
}

impl<W: Write> EntryWriter for PdqCliWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        let name = e.meta.label.as_deref().unwrap_or("");
        if name.contains(['\n', '\r']) {
            return Err(Error::InvalidInput(format!(
                "entry {}: its label has a line break, which a pdq-photo-hasher line cannot hold",
                e.id
            )));
        }
        let q = e.meta.quality.map(|q| q.to_string()).unwrap_or_default();
        writeln!(self.out, "{},{q},{name}", e.hash.to_hex()).map_err(io_error)
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(io_error)
    }
}
