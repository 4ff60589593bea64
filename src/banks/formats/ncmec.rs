//! NCMEC hash-sharing XML, the `queryResult` documents of its v2 API (shapes from python-threatexchange's
//! `exchanges/clients/ncmec/hash_api.py` and its test data):
//!
//! ```text
//! <queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">
//!   <images count="2" maxTimestamp="2017-10-24T15:10:00Z">
//!     <image><member id="42">Example Member</member><timestamp>2017-10-24T15:00:00Z</timestamp>
//!       <id>image1</id><classification>A1</classification>
//!       <fingerprints><md5>…</md5><sha1>…</sha1><pdna>…</pdna></fingerprints><feedback>…</feedback></image>
//!     <deletedImage><member id="43">…</member><id>image4</id><timestamp>…</timestamp></deletedImage>
//!   </images>
//!   <videos …><video>…</video><deletedVideo>…</deletedVideo></videos>
//!   <paging><next>…</next></paging>
//! </queryResult>
//! ```
//!
//! Import: each image fingerprint of the bank's kind (`md5`, `sha1`, `pdq`) becomes an entry: external id =
//! the NCMEC entry id, `source = ncmec`, added time = `timestamp`, and `metadata` `ncmec_member_id`,
//! `ncmec_member` (the member's name) and `ncmec_classification`. Skipped, with a message: the image's other
//! fingerprints (PhotoDNA `pdna`, other kinds, NETCLEAN, …), every video entry (Pharos holds no video
//! fingerprints), and deleted entries (tombstones: there is nothing to add; removing an earlier import's
//! entry is the operator's call). Feedback votes are not kept: they are other members' opinions at fetch time.
//!
//! Export writes the same shape from what the bank holds: one `<image>` per entry, with its one fingerprint;
//! an entry without an external id gets `pharos-ID`; member and classification when known. The document's
//! `count` and `maxTimestamp` come before the entries, so the writer builds the document in memory and
//! writes it at the end (its size is bounded like an import's, by the bank).
//!
//! XML is parsed by `roxmltree` (see Cargo.toml); the whole document is read, capped at
//! [`super::MAX_DOCUMENT_BYTES`].

use super::{io_error, read_document, time, EntryWriter, LineError, Record};
use crate::error::{Error, Result};
use crate::matcher::Kind;
use crate::store::{Entry, EntryMeta, NewEntry};
use std::io::{BufRead, Write};

/// The namespace NCMEC's documents declare.
const NAMESPACE: &str = "https://hashsharing.ncmec.org/hashsharing/v2";
/// Metadata keys.
pub(super) const MEMBER_ID: &str = "ncmec_member_id";
pub(super) const MEMBER: &str = "ncmec_member";
pub(super) const CLASSIFICATION: &str = "ncmec_classification";

/// The fingerprint element for a bank kind.
fn fingerprint_name(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Md5 => Some("md5"),
        Kind::Sha1 => Some("sha1"),
        Kind::Pdq => Some("pdq"),
        Kind::Phash | Kind::Sha256 => None,
    }
}

/// The records of an NCMEC XML document (read whole), for a bank of `kind`.
pub(super) fn read(input: impl BufRead, kind: Kind) -> std::vec::IntoIter<Result<Record>> {
    match read_all(input, kind) {
        Ok(records) => records.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
        Err(e) => vec![Err(e)].into_iter(),
    }
}

fn read_all(input: impl BufRead, kind: Kind) -> Result<Vec<Record>> {
    super::carries(super::Format::NcmecXml, kind)?;
    let text = read_document(input, "NCMEC XML")?;
    let doc = roxmltree::Document::parse(&text)
        .map_err(|e| Error::InvalidInput(format!("line {}: XML: {e}", e.pos().row)))?;
    let line = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row as usize;
    let root = doc.root_element();
    if root.tag_name().name() != "queryResult" {
        return Err(Error::InvalidInput(format!(
            "line {}: the root element is <{}>, not an NCMEC <queryResult>",
            line(root),
            root.tag_name().name()
        )));
    }
    let mut out = Vec::new();
    for group in root.children().filter(|n| n.is_element()) {
        let videos = match group.tag_name().name() {
            "images" => false,
            "videos" => true,
            _ => continue, // `paging` and anything else around the entries
        };
        for item in group.children().filter(|n| n.is_element()) {
            let at = |message: String| LineError { line: line(item), message };
            let id = child_text(item, "id");
            let name = item.tag_name().name();
            let id_text = id.unwrap_or("?");
            match (name, videos) {
                ("image", false) => image(item, kind, &line, &mut out),
                ("deletedImage", false) | ("deletedVideo", true) => out.push(Record::Skipped(at(format!(
                    "deleted NCMEC entry '{id_text}' (a tombstone): nothing to add"
                )))),
                ("video", true) => out.push(Record::Skipped(at(format!(
                    "NCMEC video entry '{id_text}': video fingerprints are not imported"
                )))),
                _ => out.push(Record::Invalid(at(format!(
                    "unexpected <{name}> in <{}>",
                    group.tag_name().name()
                )))),
            }
        }
    }
    Ok(out)
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.tag_name().name() == name)
}

fn child_text<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text()).map(str::trim).filter(|t| !t.is_empty())
}

/// The fields an image's entries share.
struct Base {
    meta: EntryMeta,
    added_ms: Option<u64>,
}

/// One `<image>`: an entry per fingerprint of the bank's kind, a skip per other fingerprint.
fn image(item: roxmltree::Node, kind: Kind, line: &dyn Fn(roxmltree::Node) -> usize, out: &mut Vec<Record>) {
    let at = |n: roxmltree::Node, message: String| LineError { line: line(n), message };
    let Some(id) = child_text(item, "id") else {
        out.push(Record::Invalid(at(item, "an NCMEC <image> without an <id>".into())));
        return;
    };
    // What every entry of this image carries; its hash is set per fingerprint below.
    let mut base = Base { meta: EntryMeta::default(), added_ms: None };
    base.meta.external_id = Some(id.to_string());
    base.meta.source = Some("ncmec".into());
    if let Some(m) = child(item, "member") {
        if let Some(mid) = m.attribute("id") {
            base.meta.metadata.insert(MEMBER_ID.into(), mid.to_string());
        }
        if let Some(name) = m.text().map(str::trim).filter(|t| !t.is_empty()) {
            base.meta.metadata.insert(MEMBER.into(), name.to_string());
        }
    }
    if let Some(c) = child_text(item, "classification") {
        base.meta.metadata.insert(CLASSIFICATION.into(), c.to_string());
    }
    if let Some(ts) = child_text(item, "timestamp") {
        match time::parse(ts) {
            Some(ms) => base.added_ms = Some(ms),
            None => {
                let message =
                    format!("NCMEC entry '{id}': timestamp '{ts}' is not a time (2017-10-24T15:00:00Z)");
                out.push(Record::Invalid(at(item, message)));
                return;
            }
        }
    }
    let fingerprints: Vec<_> = child(item, "fingerprints")
        .map(|f| f.children().filter(|c| c.is_element()).collect())
        .unwrap_or_default();
    if fingerprints.is_empty() {
        out.push(Record::Invalid(at(item, format!("NCMEC entry '{id}' has no fingerprints"))));
        return;
    }
    let wanted = fingerprint_name(kind);
    for f in fingerprints {
        let fname = f.tag_name().name().to_ascii_lowercase();
        if Some(fname.as_str()) != wanted {
            let what = if fname == "pdna" { "a PhotoDNA (pdna)".to_string() } else { format!("a {fname}") };
            out.push(Record::Skipped(at(
                f,
                format!("NCMEC entry '{id}': {what} fingerprint, not for this {kind} bank"),
            )));
            continue;
        }
        let hex = f.text().unwrap_or("").trim();
        let record = match super::parse_hash(kind, hex) {
            Ok(hash) => {
                let mut e = NewEntry::new(hash);
                e.meta = base.meta.clone();
                e.added_ms = base.added_ms;
                match super::checked(e) {
                    Ok(super::Item::Entry(e)) => Record::Entry(e),
                    Ok(super::Item::Skip(m)) => Record::Skipped(at(f, m)),
                    Err(m) => Record::Invalid(at(f, format!("NCMEC entry '{id}': {m}"))),
                }
            }
            Err(m) => Record::Invalid(at(f, format!("NCMEC entry '{id}': {fname}: {m}"))),
        };
        out.push(record);
    }
}

/// `s` with the five XML special characters escaped (text and attribute values alike).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `--format ncmec-xml` (see the module documentation).
pub(super) struct NcmecWriter<W: Write> {
    out: W,
    images: String,
    count: u64,
    max_ms: u64,
}

impl<W: Write> NcmecWriter<W> {
    pub(super) fn new(out: W) -> NcmecWriter<W> {
        NcmecWriter { out, images: String::new(), count: 0, max_ms: 0 }
    }
}

impl<W: Write> EntryWriter for NcmecWriter<W> {
    fn write(&mut self, e: &Entry) -> Result<()> {
        let tag = fingerprint_name(e.hash.kind())
            .ok_or_else(|| Error::InvalidInput(format!("NCMEC XML has no {} fingerprint", e.hash.kind())))?;
        let md = &e.meta.metadata;
        let s = &mut self.images;
        s.push_str("    <image>\n");
        if let Some(mid) = md.get(MEMBER_ID) {
            let name = md.get(MEMBER).map_or(String::new(), |n| escape(n));
            s.push_str(&format!("      <member id=\"{}\">{name}</member>\n", escape(mid)));
        }
        s.push_str(&format!("      <timestamp>{}</timestamp>\n", time::ncmec(e.added_ms)));
        let id = e.meta.external_id.clone().unwrap_or_else(|| format!("pharos-{}", e.id));
        s.push_str(&format!("      <id>{}</id>\n", escape(&id)));
        if let Some(c) = md.get(CLASSIFICATION) {
            s.push_str(&format!("      <classification>{}</classification>\n", escape(c)));
        }
        s.push_str(&format!(
            "      <fingerprints>\n        <{tag}>{}</{tag}>\n      </fingerprints>\n",
            e.hash.to_hex()
        ));
        s.push_str("    </image>\n");
        self.count += 1;
        self.max_ms = self.max_ms.max(e.added_ms);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let mut doc = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<queryResult xmlns=\"{NAMESPACE}\">\n"
        );
        if self.count == 0 {
            doc.push_str("  <images count=\"0\"/>\n");
        } else {
            doc.push_str(&format!(
                "  <images count=\"{}\" maxTimestamp=\"{}\">\n",
                self.count,
                time::ncmec(self.max_ms)
            ));
            doc.push_str(&std::mem::take(&mut self.images));
            doc.push_str("  </images>\n");
        }
        doc.push_str("</queryResult>\n");
        self.out.write_all(doc.as_bytes()).map_err(io_error)?;
        self.out.flush().map_err(io_error)
    }
}
