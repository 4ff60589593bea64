//! The text formats banks are imported from and exported to, and that `pharos match` reads queries in.
//!
//! Input (one entry per line; blank lines and lines starting with `#` are skipped):
//! - `HEX` or `HEX,LABEL`: 64 hex digits (PDQ) or 16 (pHash); the label is the rest of the line, or one
//!   CSV field when it starts with a double quote;
//! - the JSON lines `pharos hash` writes (`{"path":…,"pdq":…,"quality":…,"phash":…}`): the bank's kind
//!   picks `pdq` or `phash`; the label is the `label` field if present, else `path`; a line carrying
//!   `"error"` (an image that could not be hashed) is an error;
//! - python-threatexchange's local-file exchange lines, `SIGNAL_TYPE SIGNAL` (e.g. `pdq 3a1f…`);
//! - CSV with a header row, as ThreatExchange / HMA tooling exchanges hashes: the hash is the first column
//!   named `pdq`/`phash` (the bank's kind), `hash`, `hash_value`, `signal`, `signal_value` or
//!   `indicator`; the label is the first column named `label`, `tags`, `content_id`, `indicator_id` or
//!   `id`; a `signal_type`/`hash_type` column, when there is one, must name the bank's kind. Fields may be
//!   quoted (RFC 4180, no newlines inside fields). The header is recognised on the first non-blank line
//!   when its first field is not a hash.
//!
//! Output (`bank export --format`): `csv` (a header `hash,label` then `HEX,LABEL` with the label quoted
//! when needed; readable by the above), `hex` (one hash per line), `jsonl`
//! (`{"id":…,"hash":…,"label":…,"added_ms":…}`).

use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Kind};
use crate::store::NewEntry;
use std::io::BufRead;

/// A line that could not be read, with its 1-based number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Column positions of a CSV file with a header.
#[derive(Clone, Debug)]
struct CsvColumns {
    hash: usize,
    label: Option<usize>,
    signal_type: Option<usize>,
    width: usize,
}

/// A stateful line parser (it remembers a CSV header once seen).
#[derive(Debug)]
pub struct LineParser {
    kind: Kind,
    csv: Option<CsvColumns>,
    seen_data: bool,
}

/// What one input line holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// Nothing to do (blank, comment or header).
    Skip,
    /// An entry.
    Entry(NewEntry),
}

/// A query line for `pharos match`: the hashes found on it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryLine {
    /// The PDQ hash, when the line has one.
    pub pdq: Option<crate::hash::Hash256>,
    /// The seven PDQ dihedral variants, when the line has them (`pharos hash --dihedral`).
    pub pdq_dihedral: Vec<crate::hash::Hash256>,
    /// The pHash, when the line has one.
    pub phash: Option<crate::hash::Hash64>,
    /// The PDQ quality, when the line has one.
    pub quality: Option<u32>,
    /// The `path` field of a `pharos hash` line.
    pub path: Option<String>,
}

impl LineParser {
    /// A parser for entries of a bank of `kind`.
    pub fn new(kind: Kind) -> LineParser {
        LineParser { kind, csv: None, seen_data: false }
    }

    /// Parses one line (without its newline).
    pub fn parse(&mut self, line: &str) -> std::result::Result<Parsed, String> {
        let line = line.trim_end_matches('\r');
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            return Ok(Parsed::Skip);
        }
        if t.starts_with('{') {
            self.seen_data = true;
            return self.parse_json(t).map(Parsed::Entry);
        }
        if let Some(cols) = &self.csv {
            let cols = cols.clone();
            return self.parse_csv_row(t, &cols).map(Parsed::Entry);
        }
        let fields = split_csv(t)?;
        let first = fields[0].trim();
        if !self.seen_data && fields.len() > 1 && !looks_like_hash(first) {
            self.csv = Some(self.header(&fields)?);
            self.seen_data = true;
            return Ok(Parsed::Skip);
        }
        self.seen_data = true;
        if fields.len() == 1 {
            // `SIGNAL_TYPE SIGNAL` (python-threatexchange local files) or a bare hash.
            let mut words = first.split_whitespace();
            if let (Some(ty), Some(sig), None) = (words.next(), words.next(), words.next()) {
                self.check_signal_type(ty)?;
                return self.entry(sig, None).map(Parsed::Entry);
            }
            return self.entry(first, None).map(Parsed::Entry);
        }
        // HEX,LABEL: the label is the rest of the line unless it is one quoted field.
        let label = match t.split_once(',') {
            Some((_, rest)) if rest.trim_start().starts_with('"') && fields.len() == 2 => fields[1].clone(),
            Some((_, rest)) => rest.to_string(),
            None => String::new(),
        };
        self.entry(first, Some(label)).map(Parsed::Entry)
    }

    fn entry(&self, hex: &str, label: Option<String>) -> std::result::Result<NewEntry, String> {
        let hash = AnyHash::from_hex(hex.trim()).map_err(|e| e.to_string())?;
        if hash.kind() != self.kind {
            return Err(
                Error::KindMismatch { expected: self.kind.name(), found: hash.kind().name() }.to_string()
            );
        }
        let label = label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        Ok(NewEntry { hash, label })
    }

    fn check_signal_type(&self, ty: &str) -> std::result::Result<(), String> {
        let t = ty.trim().to_ascii_lowercase();
        let ok = match self.kind {
            Kind::Pdq => t == "pdq" || t == "hash_pdq" || t == "pdq_hash",
            Kind::Phash => t == "phash" || t == "hash_phash",
        };
        if ok {
            Ok(())
        } else {
            Err(format!("signal type '{}' does not match this {} bank", ty.trim(), self.kind))
        }
    }

    fn header(&self, fields: &[String]) -> std::result::Result<CsvColumns, String> {
        let names: Vec<String> = fields.iter().map(|f| f.trim().to_ascii_lowercase()).collect();
        let find = |cands: &[&str]| cands.iter().find_map(|c| names.iter().position(|n| n == c));
        let hash = find(&[self.kind.name(), "hash", "hash_value", "signal", "signal_value", "indicator"])
            .ok_or_else(|| {
                format!(
                    "'{}' is neither a hash nor a CSV header with a hash column \
                     ({}, hash, hash_value, signal, signal_value or indicator)",
                    fields[0].trim(),
                    self.kind
                )
            })?;
        Ok(CsvColumns {
            hash,
            label: find(&["label", "tags", "content_id", "indicator_id", "id"]),
            signal_type: find(&["signal_type", "hash_type"]),
            width: names.len(),
        })
    }

    fn parse_csv_row(&self, t: &str, cols: &CsvColumns) -> std::result::Result<NewEntry, String> {
        let fields = split_csv(t)?;
        if fields.len() != cols.width {
            return Err(format!("{} CSV fields, the header has {}", fields.len(), cols.width));
        }
        if let Some(i) = cols.signal_type {
            self.check_signal_type(&fields[i])?;
        }
        self.entry(&fields[cols.hash], cols.label.map(|i| fields[i].clone()))
    }

    fn parse_json(&self, t: &str) -> std::result::Result<NewEntry, String> {
        let v: serde_json::Value = serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("a `pharos hash` error line, not a hash: {}", json_text(err)));
        }
        let key = self.kind.name();
        let hex = v
            .get(key)
            .and_then(|h| h.as_str())
            .ok_or_else(|| format!("JSON line has no \"{key}\" string for this {} bank", self.kind))?;
        let label = v
            .get("label")
            .and_then(|l| l.as_str())
            .or_else(|| v.get("path").and_then(|p| p.as_str()))
            .map(str::to_string);
        self.entry(hex, label)
    }
}

fn json_text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn looks_like_hash(s: &str) -> bool {
    (s.len() == 64 || s.len() == 16) && s.bytes().all(|b| b.is_ascii_hexdigit())
        || s.split_whitespace().count() == 2
}

/// Splits one CSV record (RFC 4180 quoting, no embedded newlines).
fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut at_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            at_start = true;
            continue;
        } else if c == '"' && at_start && cur.trim().is_empty() {
            cur.clear();
            quoted = true;
        } else {
            cur.push(c);
        }
        at_start = false;
    }
    if quoted {
        return Err("unterminated quoted CSV field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Quotes a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Reads every line of `input` for a bank of `kind`: the entries, and the lines that failed (all of
/// them, so that one run reports every problem).
pub fn read_entries(input: impl BufRead, kind: Kind) -> Result<(Vec<NewEntry>, Vec<LineError>)> {
    let mut parser = LineParser::new(kind);
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Error::InvalidInput(format!("line {}: {e}", i + 1)))?;
        match parser.parse(&line) {
            Ok(Parsed::Skip) => {}
            Ok(Parsed::Entry(e)) => entries.push(e),
            Err(message) => errors.push(LineError { line: i + 1, message }),
        }
    }
    Ok((entries, errors))
}

/// Parses one `pharos match` query line: hex (either kind) or a `pharos hash` JSON line. `Ok(None)` for
/// a blank or comment line.
pub fn parse_query(line: &str) -> std::result::Result<Option<QueryLine>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let mut q = QueryLine { pdq: None, pdq_dihedral: Vec::new(), phash: None, quality: None, path: None };
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("a `pharos hash` error line, not a hash: {}", json_text(&err.clone())));
        }
        let hex = |k: &str| v.get(k).and_then(|h| h.as_str());
        if let Some(h) = hex("pdq") {
            q.pdq = Some(crate::hash::Hash256::from_hex(h).map_err(|e| e.to_string())?);
        }
        if let Some(h) = hex("phash") {
            q.phash = Some(crate::hash::Hash64::from_hex(h).map_err(|e| e.to_string())?);
        }
        if q.pdq.is_none() && q.phash.is_none() {
            return Err("JSON line has neither \"pdq\" nor \"phash\"".into());
        }
        q.quality = v.get("quality").and_then(|x| x.as_u64()).map(|x| x.min(u32::MAX as u64) as u32);
        q.path = v.get("path").and_then(|p| p.as_str()).map(str::to_string);
        if let Some(d) = v.get("dihedral").and_then(|d| d.as_object()) {
            for (name, h) in d {
                let h = h.as_str().ok_or_else(|| format!("dihedral \"{name}\" is not a string"))?;
                q.pdq_dihedral.push(crate::hash::Hash256::from_hex(h).map_err(|e| e.to_string())?);
            }
        }
        return Ok(Some(q));
    }
    let hex = t.split(',').next().unwrap_or(t).trim();
    match AnyHash::from_hex(hex).map_err(|e| e.to_string())? {
        AnyHash::Pdq(h) => q.pdq = Some(h),
        AnyHash::Phash(h) => q.phash = Some(h),
    }
    Ok(Some(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDQ: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

    fn one(kind: Kind, text: &str) -> (Vec<NewEntry>, Vec<LineError>) {
        read_entries(text.as_bytes(), kind).unwrap()
    }

    #[test]
    fn every_input_format() {
        let text = format!(
            "# comment\n{PDQ}\n{PDQ},case 1, part 2\n{{\"path\":\"a.jpg\",\"pdq\":\"{PDQ}\",\"quality\":90,\"phash\":\"aca29c1c33dc23d7\"}}\npdq {PDQ}\n"
        );
        let (e, err) = one(Kind::Pdq, &text);
        assert!(err.is_empty(), "{err:?}");
        let labels: Vec<_> = e.iter().map(|e| e.label.as_deref()).collect();
        assert_eq!(labels, vec![None, Some("case 1, part 2"), Some("a.jpg"), None]);
        let (e, err) =
            one(Kind::Phash, "{\"path\":\"a.jpg\",\"pdq\":\"00\",\"phash\":\"aca29c1c33dc23d7\"}\n");
        assert!(err.is_empty(), "{err:?}");
        assert_eq!(e[0].hash, AnyHash::from_hex("aca29c1c33dc23d7").unwrap());
    }

    #[test]
    fn csv_with_header() {
        let text = format!("signal_type,signal_value,tags\npdq,{PDQ},\"a,b\"\nPDQ,{PDQ},\n");
        let (e, err) = one(Kind::Pdq, &text);
        assert!(err.is_empty(), "{err:?}");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].label.as_deref(), Some("a,b"));
        let (_, err) = one(Kind::Pdq, &format!("signal_type,signal_value\nphash,{PDQ}\n"));
        assert_eq!(err[0].line, 2);
    }

    #[test]
    fn bad_lines_are_numbered() {
        let text =
            format!("{PDQ}\nxyz\n{}\naca29c1c33dc23d7\n{{\"path\":\"b\",\"error\":\"broken\"}}\n", &PDQ[1..]);
        let (e, err) = one(Kind::Pdq, &text);
        assert_eq!(e.len(), 1);
        let lines: Vec<_> = err.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5], "{err:?}");
        assert!(err[2].message.contains("phash hash cannot go in a pdq bank"), "{}", err[2].message);
    }
}
