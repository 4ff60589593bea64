//! The formats banks are imported from and exported to, and the query lines `pharos match` reads.
//!
//! [`Format`] names them (`bank import/export --format`); [`reader`] and [`writer`] dispatch. Without a
//! format, import auto-detects per line, as it always has (see [`EntryReader`]):
//! - `HEX` or `HEX,LABEL` (the label is the rest of the line, or one CSV field when it starts with a
//!   double quote, then it may hold commas, quotes and line breaks);
//! - the JSON lines `pharos hash` writes (the bank's kind picks `pdq`/`phash`/…; the label is `label`, else
//!   `path`; a line carrying `"error"` is an error), and the objects `--format jsonl` exports (`"hash"`);
//! - python-threatexchange's local-file lines, `SIGNAL_TYPE SIGNAL`;
//! - CSV with a header row: the hash is the first column named after the bank's kind, `hash`,
//!   `hash_value`, `signal`, `signal_value` or `indicator`; the label the first named `label`, `tags`,
//!   `content_id`, `indicator_id` or `id`; a `signal_type`/`hash_type` column must name the bank's kind;
//!   the columns `--format csv` writes (external_id, source, quality, …) are read too, and `tags` is the
//!   tag list when a `label` column is also there (else, as before, the label).
//!
//! The formats, both directions (what each field becomes is in the README's "Partner formats" table):
//! - [`Format::TeCsv`] (`te.rs`): ThreatExchange CSV as python-threatexchange's CLI stores it, and HMA 1.0's
//!   variant with the indicator id second;
//! - [`Format::PdqCli`] (`pdq_cli.rs`): Meta's `pdq-photo-hasher` output, plain and `--details`;
//! - [`Format::Pytx`] (`te.rs`): python-threatexchange local-file lines;
//! - [`Format::NcmecXml`] (`ncmec.rs`): NCMEC hash-sharing XML;
//! - [`Format::Stopncii`] (`stopncii.rs`): StopNCII hash records (JSON);
//! - [`Format::Csv`], [`Format::Jsonl`], [`Format::Hex`] (`own.rs`): Pharos's own; csv and jsonl carry
//!   every field of an entry and read back exactly.
//!
//! The line formats stream: a record at a time, memory bounded by [`MAX_RECORD_BYTES`], an error naming
//! the record's (first) line. The two document formats (NCMEC XML, StopNCII JSON) are parsed whole, so
//! they are capped at [`MAX_DOCUMENT_BYTES`]; their errors name the line of the record.
//!
//! A record can also be *skipped*: it is well-formed and understood but does not go into this bank (an
//! NCMEC PhotoDNA or video fingerprint, a deleted NCMEC entry, a signal of another kind). Skips are
//! reported, not errors.

mod lines;
mod ncmec;
mod own;
mod pdq_cli;
mod stopncii;
mod te;
mod time;

pub use lines::EntryReader;

use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Kind};
use crate::store::{Entry, NewEntry};
use std::io::{BufRead, Write};
use std::str::FromStr;

/// The longest line, and the longest CSV record spanning several lines, that an input may hold (1 MiB): the
/// most the reader buffers at once.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The largest NCMEC XML or StopNCII JSON document read (64 MiB): those are parsed whole, and an XML tree
/// takes several times its text, so their size bounds the memory an import takes (an NCMEC page of 1000
/// entries is well under 1 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// A line that could not be read (or a record that was skipped), with its 1-based number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number (for a record spanning lines, its first line).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One item of an input: an entry, a record that does not go into this bank, or one that is bad.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// An entry to add.
    Entry(NewEntry),
    /// A recognised record that is not for this bank (another kind of fingerprint, a deleted entry), and
    /// why: counted and reported, not an error.
    Skipped(LineError),
    /// A bad line (or record), and why.
    Invalid(LineError),
}

/// What one record of a format means, before its line number is attached.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Entry(NewEntry),
    Skip(String),
}

/// An entry's fields checked as a bank would check them ([`super::validate_meta`]), so that a bad field is
/// a numbered bad record at import rather than a failed transaction.
fn checked(e: NewEntry) -> std::result::Result<Item, String> {
    super::validate_meta(&e.meta).map_err(|e| e.to_string())?;
    Ok(Item::Entry(e))
}

/// `hex` as a hash of the bank's `kind` (a 64-digit SHA-256 and a PDQ hash look alike: the bank decides).
fn parse_hash(kind: Kind, hex: &str) -> std::result::Result<AnyHash, String> {
    AnyHash::parse_for(kind, hex.trim()).map_err(|e| e.to_string())
}

/// A named import/export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// ThreatExchange CSV: headerless `hash,descriptor_id,added_on,tags` (HMA 1.0: `hash,indicator_id,…`).
    TeCsv,
    /// `pdq-photo-hasher` output: `hash,quality,filename` or `hash=…,norm=…,delta=…,quality=…,filename=…`.
    PdqCli,
    /// python-threatexchange local-file lines: `SIGNAL_TYPE HASH` or a bare hash.
    Pytx,
    /// NCMEC hash-sharing XML (`queryResult` with `images`/`videos`).
    NcmecXml,
    /// StopNCII hash records (JSON document or JSON lines).
    Stopncii,
    /// Pharos CSV: a header row, every field.
    Csv,
    /// Pharos JSON lines: one object per entry, every field.
    Jsonl,
    /// One hex hash per line.
    Hex,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 8] = [
        Format::TeCsv,
        Format::PdqCli,
        Format::Pytx,
        Format::NcmecXml,
        Format::Stopncii,
        Format::Csv,
        Format::Jsonl,
        Format::Hex,
    ];

    /// The name used on the command line (`--format NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Format::TeCsv => "te-csv",
            Format::PdqCli => "pdq-cli",
            Format::Pytx => "pytx",
            Format::NcmecXml => "ncmec-xml",
            Format::Stopncii => "stopncii",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Hex => "hex",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
            Error::InvalidInput(format!("unknown format '{s}'; one of {}", names.join(", ")))
        })
    }
}

/// The records of `input` for a bank of `kind`, read as `format` (`None`: auto-detected per line, see the
/// module documentation). The iterator ends at the first read error (I/O, text that is not UTF-8, a
/// document over [`MAX_DOCUMENT_BYTES`], a format that cannot hold this kind), which it yields.
pub fn reader<'a, R: BufRead + 'a>(
    format: Option<Format>,
    input: R,
    kind: Kind,
) -> Box<dyn Iterator<Item = Result<Record>> + 'a> {
    let mode = match format {
        None => lines::Mode::Auto,
        Some(Format::TeCsv) => lines::Mode::TeCsv,
        Some(Format::PdqCli) => lines::Mode::PdqCli,
        Some(Format::Pytx) => lines::Mode::Pytx,
        Some(Format::Csv) => lines::Mode::Csv,
        Some(Format::Jsonl) => lines::Mode::Jsonl,
        Some(Format::Hex) => lines::Mode::Hex,
        Some(Format::NcmecXml) => return Box::new(ncmec::read(input, kind)),
        Some(Format::Stopncii) => return Box::new(stopncii::read(input, kind)),
    };
    if let Some(f) = format {
        if let Err(e) = carries(f, kind) {
            return Box::new(std::iter::once(Err(e)));
        }
    }
    Box::new(EntryReader::with_mode(input, kind, mode))
}

/// Whether `format` can hold hashes of `kind` at all (an error naming both when not).
pub fn carries(format: Format, kind: Kind) -> Result<()> {
    let ok = match format {
        Format::PdqCli => kind == Kind::Pdq,
        // python-threatexchange names PDQ `pdq` and file MD5s `video_md5`; it has no pHash or SHA types.
        Format::Pytx => matches!(kind, Kind::Pdq | Kind::Md5),
        // StopNCII shares ImagePDQ and VideoMD5 hashes.
        Format::Stopncii => matches!(kind, Kind::Pdq | Kind::Md5),
        // NCMEC fingerprints include MD5, SHA-1 and PDQ (and PhotoDNA and video ones Pharos does not hold).
        Format::NcmecXml => matches!(kind, Kind::Pdq | Kind::Md5 | Kind::Sha1),
        Format::TeCsv | Format::Csv | Format::Jsonl | Format::Hex => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("the {format} format cannot carry {kind} hashes")))
    }
}

/// Writes entries in one format. `finish` must be called once after the last entry: it writes what a
/// format puts at the end (or, for NCMEC XML, the whole document) and flushes.
pub trait EntryWriter {
    /// Writes (or takes) one entry.
    fn write(&mut self, e: &Entry) -> Result<()>;
    /// Ends the output and flushes it.
    fn finish(&mut self) -> Result<()>;
}

/// A writer of `format` for the entries of a bank of `kind` to `out`; an error when the format cannot
/// carry that kind (e.g. StopNCII and pHash).
pub fn writer<'a, W: Write + 'a>(format: Format, out: W, kind: Kind) -> Result<Box<dyn EntryWriter + 'a>> {
    carries(format, kind)?;
    Ok(match format {
        Format::TeCsv => Box::new(te::TeCsvWriter::new(out)),
        Format::PdqCli => Box::new(pdq_cli::PdqCliWriter::new(out)),
        Format::Pytx => Box::new(te::PytxWriter::new(out, kind)),
        Format::NcmecXml => Box::new(ncmec::NcmecWriter::new(out)),
        Format::Stopncii => Box::new(stopncii::StopnciiWriter::new(out)),
        Format::Csv => Box::new(own::CsvWriter::new(out)?),
        Format::Jsonl => Box::new(own::JsonlWriter::new(out)),
        Format::Hex => Box::new(own::HexWriter::new(out)),
    })
}

fn json_text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn io_error(e: std::io::Error) -> Error {
    Error::Io(e)
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

/// Reads every record of `input` for a bank of `kind`: the entries, and the lines that failed (all of
/// them; skipped records are dropped). This holds the whole input's entries in memory: for small inputs; [`EntryReader`] streams.
pub fn read_entries(input: impl BufRead, kind: Kind) -> Result<(Vec<NewEntry>, Vec<LineError>)> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for r in EntryReader::new(input, kind) {
        match r? {
            Record::Entry(e) => entries.push(e),
            Record::Invalid(e) => errors.push(e),
            Record::Skipped(_) => {}
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

/// Reads a whole document format's input (NCMEC XML, StopNCII JSON), at most [`MAX_DOCUMENT_BYTES`],
/// without a leading byte order mark.
fn read_document(input: impl BufRead, what: &str) -> Result<String> {
    use std::io::Read as _;
    let mut buf = Vec::new();
    input.take(MAX_DOCUMENT_BYTES as u64 + 1).read_to_end(&mut buf).map_err(io_error)?;
    if buf.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::InvalidInput(format!(
            "the {what} document is larger than {} MiB, the most read at once; split it (e.g. one file per page)",
            MAX_DOCUMENT_BYTES >> 20
        )));
    }
    if buf.starts_with("\u{feff}".as_bytes()) {
        buf.drain(..3);
    }
    String::from_utf8(buf).map_err(|e| {
        Error::InvalidInput(format!(
            "the {what} document is not UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The 1-based line of byte `offset` in `doc`, counting on from an earlier (`from_offset`, `from_line`).
fn line_at(doc: &str, from: (usize, usize), offset: usize) -> usize {
    from.1 + doc.as_bytes()[from.0..offset].iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EntryMeta, EntryState};

    const PDQ: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
    const MD5: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

    fn records(format: Option<Format>, kind: Kind, text: &str) -> Vec<Record> {
        reader(format, text.as_bytes(), kind).collect::<Result<_>>().unwrap()
    }

    fn entries(format: Option<Format>, kind: Kind, text: &str) -> Vec<NewEntry> {
        records(format, kind, text)
            .into_iter()
            .map(|r| match r {
                Record::Entry(e) => e,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn export(format: Format, kind: Kind, es: &[Entry]) -> String {
        let mut out = Vec::new();
        let mut w = writer(format, &mut out, kind).unwrap();
        for e in es {
            w.write(e).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        String::from_utf8(out).unwrap()
    }

    /// Entries with every field set in some way, labels that need quoting, both states.
    fn sample() -> Vec<Entry> {
        let hash = AnyHash::parse(Kind::Pdq, PDQ).unwrap();
        let labels = [None, Some("a,b"), Some("q\"q"), Some("l1\nl2"), Some("\"x\""), Some("# y"), Some("z")];
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut meta = EntryMeta { label: l.map(str::to_string), ..Default::default() };
                if i % 2 == 1 {
                    meta.external_id = Some(format!("ext-{i}"));
                    meta.source = Some("ncmec".into());
                    meta.tags = vec!["disputed".into(), format!("t{i}")];
                    meta.quality = Some(90 + i as u32);
                    meta.note = Some("note, \"quoted\"\nline".into());
                    meta.metadata.insert("k".into(), format!("v{i}, \"w\""));
                }
                let state = match i % 3 {
                    0 => EntryState::Active,
                    1 => EntryState::Disabled { until_ms: None },
                    _ => EntryState::Disabled { until_ms: Some(1_700_000_000_000 + i as u64) },
                };
                Entry { id: i as u64, hash, meta, added_ms: 1_600_000_000_123 + i as u64, state }
            })
            .collect()
    }

    fn as_new(e: &Entry) -> NewEntry {
        NewEntry { hash: e.hash, meta: e.meta.clone(), added_ms: Some(e.added_ms), state: e.state }
    }

    #[test]
    fn names_parse_back() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
        }
        assert!("xml".parse::<Format>().unwrap_err().to_string().contains("te-csv"));
    }

    /// csv and jsonl carry every field exactly, read as their format and auto-detected alike.
    #[test]
    fn own_formats_round_trip_every_field() {
        let es = sample();
        let want: Vec<NewEntry> = es.iter().map(as_new).collect();
        for f in [Format::Csv, Format::Jsonl] {
            let text = export(f, Kind::Pdq, &es);
            assert_eq!(entries(Some(f), Kind::Pdq, &text), want, "{f}:\n{text}");
            assert_eq!(entries(None, Kind::Pdq, &text), want, "{f} auto-detected:\n{text}");
        }
        let hex = export(Format::Hex, Kind::Pdq, &es);
        assert_eq!(hex, format!("{PDQ}\n").repeat(es.len()));
        assert_eq!(entries(Some(Format::Hex), Kind::Pdq, &hex).len(), es.len());
    }

    /// What the exports of before partner formats wrote still reads.
    #[test]
    fn old_exports_still_read() {
        let old_csv = format!("hash,label\n{PDQ},\n{PDQ},\"a,b\"\n");
        for f in [None, Some(Format::Csv)] {
            let e = entries(f, Kind::Pdq, &old_csv);
            assert_eq!(e.iter().map(|e| e.meta.label.as_deref()).collect::<Vec<_>>(), [None, Some("a,b")]);
        }
        let old_jsonl = format!(
            "{{\"id\":0,\"hash\":\"{PDQ}\",\"label\":null,\"added_ms\":5}}\n{{\"id\":1,\"hash\":\"{PDQ}\",\"label\":\"x\",\"added_ms\":6}}\n"
        );
        for f in [None, Some(Format::Jsonl)] {
            let e = entries(f, Kind::Pdq, &old_jsonl);
            assert_eq!(e[0].added_ms, Some(5));
            assert_eq!(e[1].meta.label.as_deref(), Some("x"));
        }
        // A Pharos CSV must start with its header.
        let r = records(Some(Format::Csv), Kind::Pdq, &format!("{PDQ},x\n"));
        assert!(matches!(&r[0], Record::Invalid(e) if e.line == 1 && e.message.contains("header")), "{r:?}");
    }

    #[test]
    fn te_csv_both_variants() {
        let text = format!(
            "{PDQ},3058061737574159,2020-07-01T18:31:15+0000,tag1 true_positive\n\
             {PDQ},42,12345,mine,\r\n{PDQ},0,,\n"
        );
        let e = entries(Some(Format::TeCsv), Kind::Pdq, &text);
        assert_eq!(e[0].meta.external_id.as_deref(), Some("3058061737574159"));
        assert_eq!(e[0].added_ms, Some(1_593_628_275_000));
        assert_eq!(e[0].meta.tags, ["tag1", "true_positive"]);
        assert_eq!(e[0].meta.source.as_deref(), Some("threatexchange"));
        assert_eq!(e[1].meta.external_id.as_deref(), Some("12345"));
        assert_eq!(e[1].meta.metadata.get("te_indicator_id").map(String::as_str), Some("42"));
        assert_eq!(e[1].meta.metadata.get("te_added_on").map(String::as_str), Some("mine"));
        assert_eq!((e[2].meta.external_id.as_ref(), e[2].added_ms), (None, None));
        let es: Vec<Entry> = e
            .iter()
            .enumerate()
            .map(|(i, n)| Entry {
                id: i as u64,
                hash: n.hash,
                meta: n.meta.clone(),
                added_ms: n.added_ms.unwrap_or(0),
                state: n.state,
            })
            .collect();
        let out = export(Format::TeCsv, Kind::Pdq, &es);
        assert_eq!(
            out,
            format!("{PDQ},3058061737574159,2020-07-01T18:31:15+0000,tag1 true_positive\n{PDQ},12345,mine,\n{PDQ},0,1970-01-01T00:00:00+0000,\n")
        );
        let bad = format!("{PDQ},x,,\n{PDQ},1,yesterday,\n{PDQ},1\n");
        let lines: Vec<_> = records(Some(Format::TeCsv), Kind::Pdq, &bad)
            .into_iter()
            .map(|r| match r {
                Record::Invalid(e) => e.line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, [1, 2, 3]);
    }

    #[test]
    fn pdq_cli_both_forms() {
        let text = format!(
            "{PDQ},100,dir/a, b.jpg\nhash={PDQ},norm=128,delta=0,quality=49,filename=c.png\n{PDQ},87,\n\
             hash={PDQ},quality=70,xform=rot90,filename=d.jpg\n"
        );
        let e = entries(Some(Format::PdqCli), Kind::Pdq, &text);
        assert_eq!((e[0].meta.quality, e[0].meta.label.as_deref()), (Some(100), Some("dir/a, b.jpg")));
        assert_eq!((e[1].meta.quality, e[1].meta.label.as_deref()), (Some(49), Some("c.png")));
        assert_eq!(e[1].meta.metadata.get("pdq_norm").map(String::as_str), Some("128"));
        assert_eq!(e[2].meta.label, None);
        assert_eq!(e[3].meta.metadata.get("pdq_xform").map(String::as_str), Some("rot90"));
        let bad = records(Some(Format::PdqCli), Kind::Pdq, &format!("{PDQ}\n{PDQ},high,x\n"));
        assert!(bad.iter().all(|r| matches!(r, Record::Invalid(_))), "{bad:?}");
        assert!(reader(Some(Format::PdqCli), &b""[..], Kind::Md5).next().unwrap().is_err());
    }

    #[test]
    fn pytx_lines_skip_other_signal_types() {
        let text = format!("pdq {PDQ}\nvideo_md5 {MD5}\nurl https://example.com/x\n{PDQ}\n");
        let r = records(Some(Format::Pytx), Kind::Pdq, &text);
        assert!(matches!(r[0], Record::Entry(_)) && matches!(r[3], Record::Entry(_)), "{r:?}");
        assert!(matches!(&r[1], Record::Skipped(e) if e.line == 2), "{r:?}");
        assert!(matches!(&r[2], Record::Skipped(e) if e.line == 3), "{r:?}");
        let r = records(Some(Format::Pytx), Kind::Md5, &text);
        assert!(matches!(&r[1], Record::Entry(e) if e.hash.to_hex() == MD5), "{r:?}");
        assert!(matches!(&r[3], Record::Invalid(e) if e.line == 4), "{r:?}");
        assert!(writer(Format::Pytx, Vec::new(), Kind::Sha1).is_err());
    }

    /// A 64-digit hex string is a SHA-256 in a sha256 bank, in every format that reads bare hashes.
    #[test]
    fn the_bank_kind_decides_64_digits() {
        for f in [None, Some(Format::Hex), Some(Format::TeCsv)] {
            let line = if f == Some(Format::TeCsv) { format!("{PDQ},1,,\n") } else { format!("{PDQ}\n") };
            let e = entries(f, Kind::Sha256, &line);
            assert_eq!(e[0].hash.kind(), Kind::Sha256, "{f:?}");
        }
    }

    #[test]
    fn formats_refuse_kinds_they_cannot_carry() {
        for (f, k) in
            [(Format::Stopncii, Kind::Phash), (Format::PdqCli, Kind::Md5), (Format::NcmecXml, Kind::Sha256)]
        {
            let err = writer(f, Vec::new(), k).err().expect("an error");
            assert!(err.to_string().contains(f.name()), "{err}");
        }
    }
}
