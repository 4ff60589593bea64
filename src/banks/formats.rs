//! The text formats banks are imported from and exported to, and that `pharos match` reads queries in.
//!
//! Input (one entry per line, or per CSV record; blank lines and lines starting with `#` are skipped):
//! - `HEX` or `HEX,LABEL`: 64 hex digits (PDQ) or 16 (pHash); the label is the rest of the line, or one
//!   CSV field when it starts with a double quote (then it may hold commas, quotes and line breaks);
//! - the JSON lines `pharos hash` writes (`{"path":…,"pdq":…,"quality":…,"phash":…}`): the bank's kind
//!   picks `pdq` or `phash`; the label is the `label` field if present, else `path`; a line carrying
//!   `"error"` (an image that could not be hashed) is an error;
//! - python-threatexchange's local-file exchange lines, `SIGNAL_TYPE SIGNAL` (e.g. `pdq 3a1f…`);
//! - CSV with a header row, as ThreatExchange / HMA tooling exchanges hashes: the hash is the first column
//!   named `pdq`/`phash` (the bank's kind), `hash`, `hash_value`, `signal`, `signal_value` or
//!   `indicator`; the label is the first column named `label`, `tags`, `content_id`, `indicator_id` or
//!   `id`; a `signal_type`/`hash_type` column, when there is one, must name the bank's kind. The header is
//!   recognised on the first non-blank line when its first field is not a hash.
//!
//! CSV is read by the `csv` crate (RFC 4180: a field is quoted when a double quote is its first character,
//! `""` inside it is a quote, and a quoted field may span lines). So the input is read record by record: a
//! record that opens a quoted field goes on over the following lines until the field closes, and an error
//! names the line the record starts on. A quoted field still open at the end of the input, or after
//! [`MAX_RECORD_BYTES`], is an error on its first line, and the lines after that are read again on their
//! own (as they would be had the stray quote not been there). Labels are trimmed of surrounding whitespace;
//! an empty label is no label.
//!
//! [`EntryReader`] yields the entries one at a time while it reads, so memory stays bounded by one record
//! whatever the size of the input (a line longer than [`MAX_RECORD_BYTES`] is an error, not a buffer).
//!
//! Output (`bank export --format`): `csv` (a header `hash,label` then `HEX,LABEL`, written by the `csv`
//! crate, quoted when needed; readable by the above), `hex` (one hash per line), `jsonl`
//! (`{"id":…,"hash":…,"label":…,"added_ms":…}`).

use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Kind};
use crate::store::{Entry, NewEntry};
use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};

/// The longest line, and the longest CSV record spanning several lines, that an input may hold (1 MiB): the
/// most the reader buffers at once.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A line that could not be read, with its 1-based number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number (for a CSV record spanning lines, its first line).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One item of an input: an entry, or a line that is not one.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// An entry to add.
    Entry(NewEntry),
    /// A bad line (or CSV record), and why.
    Invalid(LineError),
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
    /// The file's MD5, SHA-1 and SHA-256, when the line has them (`pharos hash --exact`).
    pub md5: Option<[u8; 16]>,
    /// See `md5`.
    pub sha1: Option<[u8; 20]>,
    /// See `md5`.
    pub sha256: Option<[u8; 32]>,
    /// The PDQ quality, when the line has one.
    pub quality: Option<u32>,
    /// The `path` field of a `pharos hash` line.
    pub path: Option<String>,
}

/// One physical line of the input.
#[derive(Clone, Debug)]
struct Line {
    /// 1-based.
    number: usize,
    /// Its text with its line terminator, if it had one; `None` for a line longer than [`MAX_RECORD_BYTES`]
    /// (skipped unread).
    text: Option<String>,
}

/// The physical lines of an input, with lines put back to be read again.
///
/// It is also what the CSV reader reads from: [`Lines::start_record`] hands it the first line of a
/// record, and when the CSV parser asks for more bytes than that line (it only does while a quoted field
/// is open) the next physical line follows, up to [`MAX_RECORD_BYTES`] for the record, then end of input.
#[derive(Debug)]
struct Lines<R> {
    input: R,
    /// Physical lines taken from `input` so far.
    read: usize,
    /// Lines to read again before `input` (those a record took before it turned out unterminated).
    replay: VecDeque<Line>,
    /// The bytes being served to the CSV parser, and how many it has taken.
    chunk: Vec<u8>,
    served: usize,
    /// The lines after the first that the current record took.
    continued: Vec<Line>,
    /// The size of the current record so far.
    record_bytes: usize,
    /// The current record's quoted field is still open at end of input or after the size limit.
    unterminated: bool,
}

impl<R: BufRead> Lines<R> {
    fn new(input: R) -> Lines<R> {
        Lines {
            input,
            read: 0,
            replay: VecDeque::new(),
            chunk: Vec::new(),
            served: 0,
            continued: Vec::new(),
            record_bytes: 0,
            unterminated: false,
        }
    }

    /// The next physical line; `None` at end of input.
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        if let Some(line) = self.replay.pop_front() {
            return Ok(Some(line));
        }
        let number = self.read + 1;
        let at = |e: io::Error| io::Error::new(e.kind(), format!("line {number}: {e}"));
        let mut buf = Vec::new();
        let limit = MAX_RECORD_BYTES as u64 + 1;
        let n = (&mut self.input).take(limit).read_until(b'\n', &mut buf).map_err(at)?;
        if n == 0 {
            return Ok(None);
        }
        self.read = number;
        if buf.len() > MAX_RECORD_BYTES {
            skip_line(&mut self.input).map_err(at)?;
            return Ok(Some(Line { number, text: None }));
        }
        if number == 1 && buf.starts_with("\u{feff}".as_bytes()) {
            buf.drain(..3); // a UTF-8 byte order mark, as spreadsheets write
        }
        let text = String::from_utf8(buf).map_err(|_| {
            at(io::Error::new(io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
        })?;
        Ok(Some(Line { number, text: Some(text) }))
    }

    /// Makes `first` (a line's text) the start of the next record served to the CSV parser.
    fn start_record(&mut self, first: &str) {
        self.chunk.clear();
        self.chunk.extend_from_slice(first.as_bytes());
        if !first.ends_with('\n') {
            self.chunk.push(b'\n'); // the last line of the input ends the record too
        }
        self.served = 0;
        self.continued.clear();
        self.record_bytes = first.len();
        self.unterminated = false;
    }

    /// After a record: whether it was complete. When it was not, the lines it took after its first are
    /// put back to be read again.
    fn finish_record(&mut self) -> bool {
        if self.unterminated {
            for line in self.continued.drain(..).rev() {
                self.replay.push_front(line);
            }
            return false;
        }
        true
    }
}

/// Discards the rest of the current line of `input`.
fn skip_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            input.consume(i + 1);
            return Ok(());
        }
        let n = buf.len();
        input.consume(n);
    }
}

impl<R: BufRead> Read for Lines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.served == self.chunk.len() {
            if self.unterminated {
                return Ok(0);
            }
            // The parser wants more than the lines served: a quoted field goes on to the next line.
            let Some(line) = self.next_line()? else {
                self.unterminated = true;
                return Ok(0);
            };
            match &line.text {
                Some(t) if self.record_bytes + t.len() <= MAX_RECORD_BYTES => {
                    self.record_bytes += t.len();
                    self.chunk.clear();
                    self.chunk.extend_from_slice(t.as_bytes());
                    if !t.ends_with('\n') {
                        self.chunk.push(b'\n');
                    }
                    self.served = 0;
                    self.continued.push(line);
                }
                _ => {
                    self.unterminated = true;
                    self.continued.push(line);
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.served);
        out[..n].copy_from_slice(&self.chunk[self.served..self.served + n]);
        self.served += n;
        Ok(n)
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

/// What a record means, given what came before (it remembers a CSV header once seen).
#[derive(Debug)]
struct RecordParser {
    kind: Kind,
    csv: Option<CsvColumns>,
    seen_data: bool,
}

impl RecordParser {
    /// A `pharos hash` JSON line (trimmed).
    fn json(&mut self, t: &str) -> std::result::Result<Option<NewEntry>, String> {
        self.seen_data = true;
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
        self.entry(hex, label).map(Some)
    }

    /// A CSV record: `fields` as the `csv` crate split them, `raw` its text (trimmed). `None` for a header.
    fn record(
        &mut self,
        raw: &str,
        fields: &csv::StringRecord,
    ) -> std::result::Result<Option<NewEntry>, String> {
        if let Some(cols) = &self.csv {
            if fields.len() != cols.width {
                return Err(format!("{} CSV fields, the header has {}", fields.len(), cols.width));
            }
            if let Some(i) = cols.signal_type {
                self.check_signal_type(&fields[i])?;
            }
            return self.entry(&fields[cols.hash], cols.label.map(|i| fields[i].to_string())).map(Some);
        }
        let first = fields.get(0).unwrap_or("").trim();
        if !self.seen_data && fields.len() > 1 && !looks_like_hash(first) {
            self.csv = Some(self.header(fields)?);
            self.seen_data = true;
            return Ok(None);
        }
        self.seen_data = true;
        if fields.len() == 1 {
            // `SIGNAL_TYPE SIGNAL` (python-threatexchange local files) or a bare hash.
            let mut words = first.split_whitespace();
            if let (Some(ty), Some(sig), None) = (words.next(), words.next(), words.next()) {
                self.check_signal_type(ty)?;
                return self.entry(sig, None).map(Some);
            }
            return self.entry(first, None).map(Some);
        }
        // HEX,LABEL: the label is the rest of the record unless that is one quoted field.
        let rest = raw.split_once(',').map_or("", |(_, rest)| rest);
        let quoted = rest.trim_start();
        let label = if !quoted.starts_with('"') {
            rest.to_string()
        } else if rest.starts_with('"') && fields.len() == 2 {
            fields[1].to_string()
        } else {
            // Whitespace before the opening quote: still one quoted field when it reads as one.
            match csv_fields(quoted) {
                None => return Err("unterminated quoted CSV field".into()),
                Some(f) if f.len() == 1 => f[0].to_string(),
                Some(_) => rest.to_string(),
            }
        };
        self.entry(first, Some(label)).map(Some)
    }

    fn entry(&self, hex: &str, label: Option<String>) -> std::result::Result<NewEntry, String> {
        let hex = hex.trim();
        let hash = AnyHash::parse_for(self.kind, hex).map_err(|e| e.to_string())?;
        let label = label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        if let Some(l) = &label {
            super::validate_label(l).map_err(|e| e.to_string())?;
        }
        Ok(NewEntry::labelled(hash, label))
    }

    fn check_signal_type(&self, ty: &str) -> std::result::Result<(), String> {
        let t = ty.trim().to_ascii_lowercase();
        let ok = match self.kind {
            Kind::Pdq => t == "pdq" || t == "hash_pdq" || t == "pdq_hash",
            Kind::Phash => t == "phash" || t == "hash_phash",
            Kind::Md5 => t == "md5" || t == "hash_md5" || t == "video_md5",
            Kind::Sha1 => t == "sha1" || t == "hash_sha1",
            Kind::Sha256 => t == "sha256" || t == "hash_sha256",
        };
        if ok {
            Ok(())
        } else {
            Err(format!("signal type '{}' does not match this {} bank", ty.trim(), self.kind))
        }
    }

    fn header(&self, fields: &csv::StringRecord) -> std::result::Result<CsvColumns, String> {
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
}

fn json_text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn looks_like_hash(s: &str) -> bool {
    (s.len() == 64 || s.len() == 16) && s.bytes().all(|b| b.is_ascii_hexdigit())
        || s.split_whitespace().count() == 2
}

/// The CSV reader over `lines`: records end at `\n` (a `\r` before it is whitespace around an unquoted
/// field, or part of a quoted one), any number of fields.
fn csv_reader<R: BufRead>(lines: Lines<R>) -> csv::Reader<Lines<R>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(lines)
}

/// `s` read as one CSV record: its fields, or `None` when it leaves a quoted field open.
fn csv_fields(s: &str) -> Option<csv::StringRecord> {
    let mut rdr = csv_reader(Lines::new(io::empty()));
    rdr.get_mut().start_record(s);
    let mut rec = csv::StringRecord::new();
    rdr.read_record(&mut rec).ok()?;
    rdr.get_mut().finish_record().then_some(rec)
}

/// Reads the entries of an input for a bank of `kind`, one at a time, holding at most one record (see the
/// module documentation for the formats). Yields an entry or a bad line for each record in input order,
/// and ends at the first read error (an I/O error or text that is not UTF-8), which it returns.
pub struct EntryReader<R: BufRead> {
    csv: csv::Reader<Lines<R>>,
    fields: csv::StringRecord,
    parser: RecordParser,
    failed: bool,
}

impl<R: BufRead> EntryReader<R> {
    /// A reader of `input` for a bank of `kind`.
    pub fn new(input: R, kind: Kind) -> EntryReader<R> {
        EntryReader {
            csv: csv_reader(Lines::new(input)),
            fields: csv::StringRecord::new(),
            parser: RecordParser { kind, csv: None, seen_data: false },
            failed: false,
        }
    }

    /// The next record; `Ok(None)` at the end of the input.
    fn read(&mut self) -> Result<Option<Record>> {
        loop {
            let Some(line) = self.csv.get_mut().next_line().map_err(read_error)? else {
                return Ok(None);
            };
            let invalid =
                |message: String| Ok(Some(Record::Invalid(LineError { line: line.number, message })));
            let Some(text) = &line.text else {
                return invalid(format!("longer than {MAX_RECORD_BYTES} bytes"));
            };
            let t = text.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let parsed = if t.starts_with('{') {
                self.parser.json(t)
            } else {
                self.csv.get_mut().start_record(text.trim_start());
                match self.csv.read_record(&mut self.fields) {
                    Ok(_) => {}
                    Err(e) => {
                        return Err(match e.into_kind() {
                            csv::ErrorKind::Io(e) => read_error(e),
                            e => Error::InvalidInput(format!("line {}: CSV: {e:?}", line.number)),
                        })
                    }
                }
                let lines = self.csv.get_mut();
                if !lines.finish_record() {
                    return invalid("unterminated quoted CSV field".into());
                }
                if lines.continued.is_empty() {
                    self.parser.record(t, &self.fields)
                } else {
                    let mut raw = text.clone();
                    lines.continued.iter().filter_map(|l| l.text.as_deref()).for_each(|l| raw.push_str(l));
                    self.parser.record(raw.trim(), &self.fields)
                }
            };
            match parsed {
                Ok(None) => continue,
                Ok(Some(e)) => return Ok(Some(Record::Entry(e))),
                Err(message) => return invalid(message),
            }
        }
    }
}

fn read_error(e: io::Error) -> Error {
    Error::InvalidInput(e.to_string())
}

impl<R: BufRead> Iterator for EntryReader<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        let r = self.read().transpose();
        self.failed = matches!(r, Some(Err(_)));
        r
    }
}

/// Reads every record of `input` for a bank of `kind`: the entries, and the lines that failed (all of
/// them). This holds the whole input's entries in memory: for small inputs; [`EntryReader`] streams.
pub fn read_entries(input: impl BufRead, kind: Kind) -> Result<(Vec<NewEntry>, Vec<LineError>)> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for r in EntryReader::new(input, kind) {
        match r? {
            Record::Entry(e) => entries.push(e),
            Record::Invalid(e) => errors.push(e),
        }
    }
    Ok((entries, errors))
}

/// Writes `bank export --format csv`: a `hash,label` header, then one `HEX,LABEL` record per entry
/// (quoted by the `csv` crate when the label needs it, so that [`EntryReader`] reads it back exactly).
#[derive(Debug)]
pub struct CsvExport<W: Write> {
    w: csv::Writer<W>,
}

impl<W: Write> CsvExport<W> {
    /// Writes the header to `w`.
    pub fn new(w: W) -> Result<CsvExport<W>> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(w);
        w.write_record(["hash", "label"]).map_err(csv_error)?;
        Ok(CsvExport { w })
    }

    /// Writes one entry.
    pub fn write(&mut self, e: &Entry) -> Result<()> {
        let hash = e.hash.to_hex();
        self.w.write_record([hash.as_str(), e.meta.label.as_deref().unwrap_or("")]).map_err(csv_error)
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.w.flush().map_err(Error::Io)
    }
}

fn csv_error(e: csv::Error) -> Error {
    Error::Io(e.into())
}

/// Parses one `pharos match` query line: hex (either kind) or a `pharos hash` JSON line. `Ok(None)` for
/// a blank or comment line.
pub fn parse_query(line: &str) -> std::result::Result<Option<QueryLine>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let mut q = QueryLine {
        pdq: None,
        pdq_dihedral: Vec::new(),
        phash: None,
        md5: None,
        sha1: None,
        sha256: None,
        quality: None,
        path: None,
    };
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
        if let Some(h) = hex("md5") {
            q.md5 = Some(crate::hash::exact::parse_hex(h, "an MD5").map_err(|e| e.to_string())?);
        }
        if let Some(h) = hex("sha1") {
            q.sha1 = Some(crate::hash::exact::parse_hex(h, "a SHA-1").map_err(|e| e.to_string())?);
        }
        if let Some(h) = hex("sha256") {
            q.sha256 = Some(crate::hash::exact::parse_hex(h, "a SHA-256").map_err(|e| e.to_string())?);
        }
        if q.pdq.is_none() && q.phash.is_none() && q.md5.is_none() && q.sha1.is_none() && q.sha256.is_none() {
            return Err("JSON line has none of \"pdq\", \"phash\", \"md5\", \"sha1\", \"sha256\"".into());
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
        AnyHash::Md5(d) => q.md5 = Some(d),
        AnyHash::Sha1(d) => q.sha1 = Some(d),
        AnyHash::Sha256(d) => q.sha256 = Some(d),
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
        let labels: Vec<_> = e.iter().map(|e| e.meta.label.as_deref()).collect();
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
        assert_eq!(e[0].meta.label.as_deref(), Some("a,b"));
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

    fn entries(kind: Kind, text: &str) -> Vec<Record> {
        EntryReader::new(text.as_bytes(), kind).collect::<Result<_>>().unwrap()
    }

    fn label(r: &Record) -> Option<&str> {
        match r {
            Record::Entry(e) => e.meta.label.as_deref(),
            Record::Invalid(e) => panic!("{e}"),
        }
    }

    /// `n` lines `PDQ,i` made as they are read; panics when more than `limit` bytes are read.
    struct Tripwire {
        next: u64,
        n: u64,
        line: Vec<u8>,
        at: usize,
        read: usize,
        limit: usize,
    }

    impl Tripwire {
        fn new(n: u64, limit: usize) -> Tripwire {
            Tripwire { next: 0, n, line: Vec::new(), at: 0, read: 0, limit }
        }
    }

    impl Read for Tripwire {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.at == self.line.len() {
                if self.next == self.n {
                    return Ok(0);
                }
                self.line = format!("{PDQ},{}\n", self.next).into_bytes();
                self.next += 1;
                self.at = 0;
            }
            let k = out.len().min(self.line.len() - self.at);
            out[..k].copy_from_slice(&self.line[self.at..self.at + k]);
            self.at += k;
            self.read += k;
            assert!(self.read <= self.limit, "read {} bytes of the input for its first entries", self.read);
            Ok(k)
        }
    }

    /// Defect 10: the reader yields entries as it reads: the first 100 of a million lines (≈ 70 MB) come
    /// after reading at most 64 KiB, and the rest is read on demand, one record at a time.
    #[test]
    fn entries_are_read_lazily() {
        let src = Tripwire::new(1_000_000, 64 << 10);
        let mut r = EntryReader::new(io::BufReader::with_capacity(8 << 10, src), Kind::Pdq);
        for i in 0..100 {
            let e = r.next().expect("an entry").expect("no read error");
            assert_eq!(label(&e), Some(i.to_string().as_str()));
        }
        // Without the tripwire, the whole input streams through (the reader holds one record).
        let mut r = EntryReader::new(io::BufReader::new(Tripwire::new(200_000, usize::MAX)), Kind::Pdq);
        assert_eq!(r.by_ref().count(), 200_000);
        assert!(r.csv.get_ref().chunk.capacity() < 1 << 10, "one line at a time");
    }

    /// Defect 9: a quoted field may hold commas, quotes and line breaks (it spans physical lines); the
    /// records after it are numbered by their own physical lines.
    #[test]
    fn quoted_fields_span_lines() {
        let text = format!(
            "hash,label\n{PDQ},\"a, \"\"b\"\"\nc\r\n\n# d\n{{e}}\"\n{PDQ},plain\n{PDQ},\"x\ny\"\r\nnot a hash,z\n"
        );
        let (e, err) = one(Kind::Pdq, &text);
        let labels: Vec<_> = e.iter().map(|e| e.meta.label.as_deref()).collect();
        assert_eq!(labels, [Some("a, \"b\"\nc\r\n\n# d\n{e}"), Some("plain"), Some("x\ny")]);
        assert_eq!(err.iter().map(|e| e.line).collect::<Vec<_>>(), [10], "{err:?}");
        // Without a header: `HEX,"…"` is one quoted label, wherever its lines end.
        let (e, err) = one(Kind::Pdq, &format!("{PDQ},\"1\n2\",\n{PDQ}, \"3, 4\"\n{PDQ},\"5\n\"\"6\"\"\"\n"));
        assert!(err.is_empty(), "{err:?}");
        let labels: Vec<_> = e.iter().map(|e| e.meta.label.as_deref()).collect();
        assert_eq!(labels, [Some("\"1\n2\","), Some("3, 4"), Some("5\n\"6\"")]);
    }

    /// A quote that never closes is an error on its line, and the lines it would have swallowed are read
    /// on their own, as before quoted fields could span lines.
    #[test]
    fn an_unterminated_quote_is_one_bad_line() {
        let text = format!("{PDQ},\"oops\n{PDQ},fine\n\n# c\n{PDQ}\n");
        let r = entries(Kind::Pdq, &text);
        assert_eq!(
            r[0],
            Record::Invalid(LineError { line: 1, message: "unterminated quoted CSV field".into() })
        );
        assert_eq!(r[1..].iter().map(label).collect::<Vec<_>>(), [Some("fine"), None]);
        let text = format!("signal_type,signal_value,tags\npdq,{PDQ},\"open\npdq,{PDQ},t\n");
        let r = entries(Kind::Pdq, &text);
        assert_eq!(
            r[0],
            Record::Invalid(LineError { line: 2, message: "unterminated quoted CSV field".into() })
        );
        assert_eq!(label(&r[1]), Some("t"));
        assert_eq!(r.len(), 2);
    }

    /// Memory stays bounded by one record: a line over the limit is a bad line (skipped unread), and so is a
    /// quoted field still open after it, whose lines are then read again on their own.
    #[test]
    fn records_are_bounded() {
        let long = "x".repeat(MAX_RECORD_BYTES + 10);
        let text = format!("{PDQ},{long}\n{PDQ},ok\n{PDQ},\"{}\n{PDQ},b\n{PDQ},{long}\n", "y".repeat(100));
        let r = entries(Kind::Pdq, &text);
        let message = format!("longer than {MAX_RECORD_BYTES} bytes");
        assert_eq!(r[0], Record::Invalid(LineError { line: 1, message: message.clone() }));
        assert_eq!(label(&r[1]), Some("ok"));
        assert_eq!(
            r[2],
            Record::Invalid(LineError { line: 3, message: "unterminated quoted CSV field".into() })
        );
        assert_eq!(label(&r[3]), Some("b"));
        assert_eq!(r[4], Record::Invalid(LineError { line: 5, message }));
        assert_eq!(r.len(), 5);
    }

    /// CRLF line ends, a byte order mark, and a last line without a line end read as plain lines.
    #[test]
    fn crlf_bom_and_no_final_newline() {
        let text = format!("\u{feff}hash,label\r\n{PDQ},a\r\n{PDQ},\"b\"\r\n{PDQ},c");
        let (e, err) = one(Kind::Pdq, &text);
        assert!(err.is_empty(), "{err:?}");
        let labels: Vec<_> = e.iter().map(|e| e.meta.label.as_deref()).collect();
        assert_eq!(labels, [Some("a"), Some("b"), Some("c")]);
        let err = EntryReader::new(&b"\xff\n"[..], Kind::Pdq).next().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "line 1: stream did not contain valid UTF-8");
    }

    /// What `bank export --format csv` writes reads back as the same entries.
    #[test]
    fn csv_export_reads_back() {
        let labels = [None, Some("a,b"), Some("q\"q"), Some("l1\nl2"), Some("\"x\""), Some("# y"), Some("z")];
        let mut out = Vec::new();
        let mut w = CsvExport::new(&mut out).unwrap();
        for (i, l) in labels.iter().enumerate() {
            let hash = AnyHash::from_hex(PDQ).unwrap();
            let meta = crate::store::EntryMeta { label: l.map(str::to_string), ..Default::default() };
            let state = crate::store::EntryState::Active;
            w.write(&Entry { id: i as u64, hash, meta, added_ms: 0, state }).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(&format!("hash,label\n{PDQ},\n{PDQ},\"a,b\"\n")), "{text}");
        let (e, err) = one(Kind::Pdq, &text);
        assert!(err.is_empty(), "{err:?}");
        assert_eq!(e.iter().map(|e| e.meta.label.as_deref()).collect::<Vec<_>>(), labels);
    }
}
