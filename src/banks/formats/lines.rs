//! The line-oriented reader: physical lines with bounded length, CSV records (quoted fields may span
//! lines), and what each record means in the auto-detected input and the line formats.

use super::{json_text, Item, LineError, Record, MAX_RECORD_BYTES};
use crate::error::{Error, Result};
use crate::matcher::Kind;
use crate::store::NewEntry;
use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

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
#[derive(Clone, Debug, Default)]
struct CsvColumns {
    hash: usize,
    label: Option<usize>,
    signal_type: Option<usize>,
    width: usize,
    /// The columns `--format csv` writes besides hash and label.
    external_id: Option<usize>,
    source: Option<usize>,
    tags: Option<usize>,
    quality: Option<usize>,
    note: Option<usize>,
    added_ms: Option<usize>,
    state: Option<usize>,
    disabled_until_ms: Option<usize>,
    metadata: Option<usize>,
}

/// What a record means, given what came before (it remembers a CSV header once seen).
#[derive(Debug)]
struct RecordParser {
    kind: Kind,
    csv: Option<CsvColumns>,
    seen_data: bool,
    /// `--format csv`: the first record must be a header.
    require_header: bool,
}

impl RecordParser {
    /// A JSON line (trimmed): what `pharos hash` writes (a field named after the bank's kind), or what
    /// `--format jsonl` exports (a `"hash"` field and every other field of an entry; older exports had
    /// only `id`, `hash`, `label` and `added_ms`).
    fn json(&mut self, t: &str) -> std::result::Result<Option<Item>, String> {
        self.seen_data = true;
        let v: serde_json::Value = serde_json::from_str(t).map_err(|e| format!("invalid JSON: {e}"))?;
        if !v.is_object() {
            return Err("a JSON line that is not an object".into());
        }
        if let Some(err) = v.get("error") {
            return Err(format!("a `pharos hash` error line, not a hash: {}", json_text(err)));
        }
        let key = self.kind.name();
        if v.get(key).is_none() && v.get("hash").is_some() {
            return super::own::jsonl_entry(self.kind, &v).map(Some);
        }
        let hex = v.get(key).and_then(|h| h.as_str()).ok_or_else(|| {
            format!("JSON line has no \"{key}\" (or \"hash\") string for this {} bank", self.kind)
        })?;
        let label = v
            .get("label")
            .and_then(|l| l.as_str())
            .or_else(|| v.get("path").and_then(|p| p.as_str()))
            .map(str::to_string);
        let mut e = self.entry(hex, label)?;
        if self.kind == Kind::Pdq {
            e.meta.quality = v.get("quality").and_then(|q| q.as_u64()).map(|q| q.min(u32::MAX as u64) as u32);
        }
        super::checked(e).map(Some)
    }

    /// A CSV record: `fields` as the `csv` crate split them, `raw` its text (trimmed). `None` for a header.
    fn record(&mut self, raw: &str, fields: &csv::StringRecord) -> std::result::Result<Option<Item>, String> {
        if let Some(cols) = &self.csv {
            if fields.len() != cols.width {
                return Err(format!("{} CSV fields, the header has {}", fields.len(), cols.width));
            }
            if let Some(i) = cols.signal_type {
                self.check_signal_type(&fields[i])?;
            }
            let mut e = self.entry(&fields[cols.hash], cols.label.map(|i| fields[i].to_string()))?;
            super::own::csv_fields(cols_view(cols), fields, &mut e)?;
            return super::checked(e).map(Some);
        }
        let first = fields.get(0).unwrap_or("").trim();
        if self.require_header {
            if looks_like_hash(first) {
                return Err("a Pharos CSV starts with a header row (hash,…); this is data".into());
            }
            self.csv = Some(self.header(fields)?);
            self.seen_data = true;
            return Ok(None);
        }
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
                return self.entry(sig, None).map(|e| Some(Item::Entry(e)));
            }
            return self.entry(first, None).map(|e| Some(Item::Entry(e)));
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
        self.entry(first, Some(label)).map(|e| Some(Item::Entry(e)))
    }

    /// A `--format hex` line: one hash, nothing else.
    fn hex(&mut self, t: &str) -> std::result::Result<Option<Item>, String> {
        self.entry(t, None).map(|e| Some(Item::Entry(e)))
    }

    fn entry(&self, hex: &str, label: Option<String>) -> std::result::Result<NewEntry, String> {
        let hash = super::parse_hash(self.kind, hex)?;
        let label = label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        if let Some(l) = &label {
            super::super::validate_label(l).map_err(|e| e.to_string())?;
        }
        Ok(NewEntry::labelled(hash, label))
    }

    fn check_signal_type(&self, ty: &str) -> std::result::Result<(), String> {
        if super::te::signal_kind(ty) == Some(self.kind) {
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
        let label_col = find(&["label"]);
        Ok(CsvColumns {
            hash,
            label: label_col.or_else(|| find(&["tags", "content_id", "indicator_id", "id"])),
            signal_type: find(&["signal_type", "hash_type"]),
            width: names.len(),
            external_id: find(&["external_id"]),
            source: find(&["source"]),
            // A `tags` column next to a `label` column is the tag list; alone it is the label (as before).
            tags: label_col.and_then(|_| find(&["tags"])),
            quality: find(&["quality"]),
            note: find(&["note"]),
            added_ms: find(&["added_ms"]),
            state: find(&["state"]),
            disabled_until_ms: find(&["disabled_until_ms"]),
            metadata: find(&["metadata"]),
        })
    }
}

/// The optional Pharos columns of a header, as `own.rs` fills them in.
fn cols_view(c: &CsvColumns) -> super::own::CsvCols {
    super::own::CsvCols {
        external_id: c.external_id,
        source: c.source,
        tags: c.tags,
        quality: c.quality,
        note: c.note,
        added_ms: c.added_ms,
        state: c.state,
        disabled_until_ms: c.disabled_until_ms,
        metadata: c.metadata,
    }
}

fn looks_like_hash(s: &str) -> bool {
    matches!(s.len(), 16 | 32 | 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
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

/// How [`EntryReader`] reads each line: auto-detected, or as one line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Auto,
    Csv,
    Jsonl,
    TeCsv,
    PdqCli,
    Pytx,
    Hex,
}

/// Reads the entries of an input for a bank of `kind`, one at a time, holding at most one record (see the
/// module documentation for the formats). Yields an entry, a skipped record or a bad line for each record
/// in input order, and ends at the first read error (an I/O error or text that is not UTF-8), which it
/// returns. Blank lines and lines starting with `#` are not records.
pub struct EntryReader<R: BufRead> {
    csv: csv::Reader<Lines<R>>,
    fields: csv::StringRecord,
    parser: RecordParser,
    mode: Mode,
    failed: bool,
}

impl<R: BufRead> EntryReader<R> {
    /// A reader of `input` for a bank of `kind`, auto-detecting each line's format.
    pub fn new(input: R, kind: Kind) -> EntryReader<R> {
        EntryReader::with_mode(input, kind, Mode::Auto)
    }

    pub(super) fn with_mode(input: R, kind: Kind, mode: Mode) -> EntryReader<R> {
        EntryReader {
            csv: csv_reader(Lines::new(input)),
            fields: csv::StringRecord::new(),
            parser: RecordParser { kind, csv: None, seen_data: false, require_header: mode == Mode::Csv },
            mode,
            failed: false,
        }
    }

    /// Reads the CSV record starting at `text` into `self.fields`; its raw text (all its lines, trimmed),
    /// or why it is bad.
    fn csv_record(&mut self, number: usize, text: &str) -> Result<std::result::Result<String, String>> {
        self.csv.get_mut().start_record(text.trim_start());
        if let Err(e) = self.csv.read_record(&mut self.fields) {
            return Err(match e.into_kind() {
                csv::ErrorKind::Io(e) => read_error(e),
                e => Error::InvalidInput(format!("line {number}: CSV: {e:?}")),
            });
        }
        let lines = self.csv.get_mut();
        if !lines.finish_record() {
            return Ok(Err("unterminated quoted CSV field".into()));
        }
        let mut raw = text.to_string();
        lines.continued.iter().filter_map(|l| l.text.as_deref()).for_each(|l| raw.push_str(l));
        Ok(Ok(raw.trim().to_string()))
    }

    /// The next record; `Ok(None)` at the end of the input.
    fn read(&mut self) -> Result<Option<Record>> {
        loop {
            let Some(line) = self.csv.get_mut().next_line().map_err(read_error)? else {
                return Ok(None);
            };
            let at = |message: String| LineError { line: line.number, message };
            let Some(text) = &line.text else {
                return Ok(Some(Record::Invalid(at(format!("longer than {MAX_RECORD_BYTES} bytes")))));
            };
            let t = text.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let kind = self.parser.kind;
            let parsed = match self.mode {
                Mode::Jsonl => self.parser.json(t),
                Mode::Auto if t.starts_with('{') => self.parser.json(t),
                Mode::Csv if t.starts_with('{') => Err("a JSON line in a CSV input".into()),
                Mode::PdqCli => super::pdq_cli::line(t).map(Some),
                Mode::Pytx => super::te::pytx_line(kind, t).map(Some),
                Mode::Hex => self.parser.hex(t),
                Mode::Auto | Mode::Csv | Mode::TeCsv => match self.csv_record(line.number, text)? {
                    Err(message) => Err(message),
                    Ok(raw) if self.mode == Mode::TeCsv => super::te::te_csv_record(kind, &self.fields, &raw),
                    Ok(raw) => self.parser.record(&raw, &self.fields),
                },
            };
            return Ok(Some(match parsed {
                Ok(None) => continue,
                Ok(Some(Item::Entry(e))) => Record::Entry(e),
                Ok(Some(Item::Skip(message))) => Record::Skipped(at(message)),
                Err(message) => Record::Invalid(at(message)),
            }));
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

#[cfg(test)]
mod tests {
    use super::super::read_entries;
    use super::*;
    use crate::matcher::AnyHash;

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
            Record::Invalid(e) | Record::Skipped(e) => panic!("{e}"),
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
}
