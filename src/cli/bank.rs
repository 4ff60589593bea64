//! `pharos bank …`: create, list, add, import, remove, delete and export banks in the store.
//!
//! Input lines are validated in full before anything is written: a bad line is reported on stderr as
//! `LINE: message` (every bad line, not just the first) and nothing is written (exit 1), unless
//! `--skip-invalid` is given, in which case the good lines are written and the exit status is 2.
//! `--format F` names the input's format (`pharos::banks::formats::Format`; without it each line's format is
//! detected); records that are understood but do not go into the bank (another fingerprint kind, an NCMEC
//! PhotoDNA, video or deleted entry) are listed as skipped on stderr and counted, and do not change the exit
//! status. `export --format F` writes any of the same formats (default `csv`), refusing up front a format
//! that cannot carry the bank's kind.
//! `add` writes everything in one transaction; `import` commits in batches of `--batch` entries and prints
//! `committed N` on stderr after each durable commit, so an interrupted import leaves a known prefix.
//!
//! `import` streams its input, so its memory is bounded by `--batch` whatever the input's size: a regular
//! file (or stdin redirected from one) is read twice, to validate it and then, seeking back, to write it;
//! stdin from a pipe, which cannot be read twice, is spooled as it is validated, as packed hashes and labels
//! (never the raw input), to an anonymous temporary file in the data directory (the disk the bank goes to,
//! not a RAM-backed /tmp), removed when the import ends. `add` is one transaction and so holds its entries
//! in memory: `import` is the command for large inputs.

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use pharos::banks::formats::{self, Format, LineError, Record};
use pharos::matcher::{AnyHash, Kind};
use pharos::store::{EntryMeta, EntryState, NewEntry, Store};
use serde::Serialize;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where banks live: `--data-dir`, else `PHAROS_DATA_DIR`, else the platform's data location.
#[derive(Args, Debug, Clone)]
pub(crate) struct DataDir {
    /// Data directory holding the bank store [default: PHAROS_DATA_DIR, else the platform data
    /// directory's `pharos-data`, e.g. ~/.local/share/pharos-data].
    #[arg(long, global = true, env = "PHAROS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        // `$XDG_DATA_HOME` or `~/.local/share` on Linux, `~/Library/Application Support` on macOS,
        // `%APPDATA%` (the roaming AppData folder) on Windows.
        dirs::data_dir()
            .map(|d| d.join("pharos-data"))
            .context("no data directory: set --data-dir or PHAROS_DATA_DIR (no home directory is known)")
    }

    /// The directory given by flag or PHAROS_DATA_DIR, if any.
    pub(crate) fn explicit(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    pub(crate) fn open(&self) -> anyhow::Result<Store> {
        let dir = self.resolve()?;
        Ok(Store::open(&dir)?)
    }
}

#[derive(Args, Debug)]
pub(crate) struct BankArgs {
    #[command(flatten)]
    data_dir: DataDir,
    #[command(subcommand)]
    command: BankCommand,
}

#[derive(Subcommand, Debug)]
enum BankCommand {
    /// Create an empty bank.
    Create {
        /// Bank name (1-64 characters from A-Z a-z 0-9 _ . -).
        name: String,
        /// Hash kind the bank holds.
        #[arg(long, value_enum, default_value = "pdq")]
        kind: KindArg,
    },
    /// List banks: one JSON object per bank.
    List,
    /// Add hashes (`hex`, `hex,label`, `pharos hash` JSON lines, CSV, or `--format F`) in one transaction.
    Add(AddArgs),
    /// Import a (large) file of hashes, committing in batches with progress on stderr.
    Import(ImportArgs),
    /// Remove entries by id (all or nothing).
    Remove {
        /// Bank name.
        name: String,
        /// Entry ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Delete a bank and all its entries.
    Delete {
        /// Bank name.
        name: String,
    },
    /// Export a bank's entries.
    Export {
        /// Bank name.
        name: String,
        /// Output format (see README, "Partner formats").
        #[arg(long, value_enum, default_value = "csv")]
        format: FormatArg,
        /// Output file [default: stdout].
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    Pdq,
    Phash,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Pdq => Kind::Pdq,
            KindArg::Phash => Kind::Phash,
        }
    }
}

/// The formats of `--format`, as the library names them ([`Format`]).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    /// ThreatExchange CSV: `hash,descriptor_id,added_on,tags` (reads HMA 1.0's 5-column variant too).
    TeCsv,
    /// Meta's pdq-photo-hasher output: `hash,quality,filename` (reads `--details` lines too).
    PdqCli,
    /// python-threatexchange local-file lines: `SIGNAL_TYPE HASH`.
    Pytx,
    /// NCMEC hash-sharing XML.
    NcmecXml,
    /// StopNCII hash records (JSON; exported as JSON lines).
    Stopncii,
    /// Pharos CSV: a header row, then every field of each entry.
    Csv,
    /// Pharos JSON lines: one object per entry with every field.
    Jsonl,
    /// One hex hash per line.
    Hex,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::TeCsv => Format::TeCsv,
            FormatArg::PdqCli => Format::PdqCli,
            FormatArg::Pytx => Format::Pytx,
            FormatArg::NcmecXml => Format::NcmecXml,
            FormatArg::Stopncii => Format::Stopncii,
            FormatArg::Csv => Format::Csv,
            FormatArg::Jsonl => Format::Jsonl,
            FormatArg::Hex => Format::Hex,
        }
    }
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Bank name.
    name: String,
    /// Write the valid lines even when some are bad (exit status 2).
    #[arg(long)]
    skip_invalid: bool,
    /// Input format [default: detected per line: hex, hex,label, `pharos hash` JSON, pytx lines, CSV with a
    /// header, Pharos jsonl]. Records that do not go into this bank (other fingerprint kinds, NCMEC PhotoDNA
    /// and video entries, deleted entries) are skipped and counted, not errors.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Input file, or `-` for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[command(flatten)]
    add: AddArgs,
    /// Create the bank first if it does not exist, with this kind.
    #[arg(long, value_enum)]
    create: Option<KindArg>,
    /// Entries per committed transaction.
    #[arg(long, default_value_t = 100_000)]
    batch: usize,
}

#[derive(Serialize)]
struct BankLine<'a> {
    name: &'a str,
    kind: &'static str,
    entries: u64,
    next_id: u64,
    created_ms: u64,
}

pub(crate) fn run(args: BankArgs) -> anyhow::Result<ExitCode> {
    let store = args.data_dir.open()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.command {
        BankCommand::Create { name, kind } => {
            let info = store.create_bank(&name, kind.into())?;
            eprintln!("created {} bank '{}' in {}", info.kind, info.name, store.path().display());
        }
        BankCommand::List => {
            for b in store.list_banks()? {
                let line = BankLine {
                    name: &b.name,
                    kind: b.kind.name(),
                    entries: b.live(),
                    next_id: b.next_id,
                    created_ms: b.created_ms,
                };
                serde_json::to_writer(&mut out, &line)?;
                writeln!(out)?;
            }
        }
        BankCommand::Add(a) => return add(&store, &a, None),
        BankCommand::Import(i) => {
            if let Some(kind) = i.create {
                match store.create_bank(&i.add.name, kind.into()) {
                    Ok(_) | Err(pharos::Error::BankExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            anyhow::ensure!(i.batch > 0, "--batch must be at least 1");
            return add(&store, &i.add, Some(i.batch));
        }
        BankCommand::Remove { name, ids } => {
            store.remove(&name, &ids)?;
            eprintln!("removed {} entries from '{name}'", ids.len());
        }
        BankCommand::Delete { name } => {
            store.delete_bank(&name)?;
            eprintln!("deleted bank '{name}'");
        }
        BankCommand::Export { name, format, output } => {
            let kind = store.bank(&name)?.kind;
            formats::carries(format.into(), kind)?;
            let mut w: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(&mut out),
            };
            let mut writer = formats::writer(format.into(), &mut w, kind)?;
            store.for_each_entry(&name, |e| writer.write(&e))?;
            writer.finish()?;
            drop(writer);
            w.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// An input of `add` or `import`.
enum Input {
    /// A regular file, or stdin redirected from one: it can be read again from `start`.
    File { file: File, start: u64 },
    /// stdin or a pipe: read once.
    Stream(Box<dyn Read>),
}

/// Input buffers: large sequential reads.
const READ_BUFFER: usize = 1 << 20;

fn open_input(path: &Path) -> anyhow::Result<Input> {
    if path.as_os_str() == "-" {
        #[cfg(unix)]
        {
            // stdin redirected from a file can be read twice like a named file (from where it stood).
            use std::os::fd::AsFd;
            if let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() {
                let mut file = File::from(fd);
                if file.metadata().is_ok_and(|m| m.is_file()) {
                    if let Ok(start) = file.stream_position() {
                        return Ok(Input::File { file, start });
                    }
                }
            }
        }
        return Ok(Input::Stream(Box::new(std::io::stdin())));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_file()) {
        Ok(Input::File { file, start: 0 })
    } else {
        Ok(Input::Stream(Box::new(file)))
    }
}

/// How many bad lines are printed; the others are counted.
const SHOWN: usize = 100;

/// The bad (or skipped) lines of an input: the first [`SHOWN`] to print, and how many there are.
#[derive(Default)]
struct BadLines {
    first: Vec<LineError>,
    count: usize,
}

impl BadLines {
    fn push(&mut self, e: LineError) {
        if self.first.len() < SHOWN {
            self.first.push(e);
        }
        self.count += 1;
    }

    /// Prints skipped records (they do not go into this bank: not errors) and how many there were.
    fn report_skipped(&self, source: &str, a: &AddArgs) {
        for e in &self.first {
            eprintln!("{source}:{e} (skipped)");
        }
        if self.count > SHOWN {
            eprintln!("{source}: … and {} more skipped records", self.count - SHOWN);
        }
        if self.count > 0 {
            eprintln!("skipped {} record(s) of {source} that do not go into bank '{}'", self.count, a.name);
        }
    }

    /// Prints them; fails (nothing is to be written) when there are some and `--skip-invalid` is not given.
    fn report(&self, source: &str, a: &AddArgs) -> anyhow::Result<()> {
        for e in &self.first {
            eprintln!("{source}:{e}");
        }
        if self.count > SHOWN {
            eprintln!("{source}: … and {} more bad lines", self.count - SHOWN);
        }
        if self.count > 0 && !a.skip_invalid {
            anyhow::bail!(
                "{} bad line(s) in {source}; nothing was written to bank '{}' (--skip-invalid writes the good lines)",
                self.count,
                a.name
            );
        }
        Ok(())
    }
}

/// `add` (batch = None: one transaction) and `import` (commits every `batch` entries).
fn add(store: &Store, a: &AddArgs, batch: Option<usize>) -> anyhow::Result<ExitCode> {
    // The bank must exist (and tells us the kind) before the input is read.
    let info = store.bank(&a.name)?;
    let source =
        if a.input.as_os_str() == "-" { "<stdin>".to_string() } else { a.input.display().to_string() };
    let input = open_input(&a.input)?;
    let (first, added, bad) = match batch {
        None => add_in_one_transaction(store, a, info.kind, input, &source)?,
        Some(batch) => import_in_batches(store, a, info.kind, input, &source, batch)?,
    };
    eprintln!("added {added} entries to '{}' (ids {first}..{})", a.name, first + added);
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// `add`: every entry in memory, then one transaction. Returns the first id, the number of entries written
/// and of bad lines.
fn add_in_one_transaction(
    store: &Store,
    a: &AddArgs,
    kind: Kind,
    input: Input,
    source: &str,
) -> anyhow::Result<(u64, u64, usize)> {
    let input: Box<dyn Read> = match input {
        Input::File { file, .. } => Box::new(file),
        Input::Stream(r) => r,
    };
    let mut entries = Vec::new();
    let mut bad = BadLines::default();
    let mut skipped = BadLines::default();
    for r in formats::reader(a.format.map(Format::from), BufReader::with_capacity(READ_BUFFER, input), kind) {
        match r? {
            Record::Entry(e) => entries.push(e),
            Record::Skipped(e) => skipped.push(e),
            Record::Invalid(e) => bad.push(e),
        }
    }
    skipped.report_skipped(source, a);
    bad.report(source, a)?;
    let first = store.add(&a.name, &entries)?;
    Ok((first, entries.len() as u64, bad.count))
}

/// `import`: validates the whole input in a first streaming pass, then writes it in a second, `batch`
/// entries per transaction (see the module documentation). Returns what [`add_in_one_transaction`] does.
fn import_in_batches(
    store: &Store,
    a: &AddArgs,
    kind: Kind,
    input: Input,
    source: &str,
    batch: usize,
) -> anyhow::Result<(u64, u64, usize)> {
    let mut bad = BadLines::default();
    let mut good = 0u64;
    let format = a.format.map(Format::from);
    match input {
        Input::File { file, start } => {
            let mut rdr = BufReader::with_capacity(READ_BUFFER, file);
            let mut skipped = BadLines::default();
            for r in formats::reader(format, &mut rdr, kind) {
                match r? {
                    Record::Entry(_) => good += 1,
                    Record::Skipped(e) => skipped.push(e),
                    Record::Invalid(e) => bad.push(e),
                }
            }
            skipped.report_skipped(source, a);
            bad.report(source, a)?;
            let mut file = rdr.into_inner();
            file.seek(SeekFrom::Start(start)).with_context(|| format!("cannot read {source} again"))?;
            let changed =
                |what: String| anyhow::anyhow!("{source} changed while it was being imported: {what}");
            let entries = formats::reader(format, BufReader::with_capacity(READ_BUFFER, file), kind)
                .filter_map(|r| match r {
                    Ok(Record::Entry(e)) => Some(Ok(e)),
                    Ok(Record::Skipped(_)) => None,
                    Ok(Record::Invalid(_)) if a.skip_invalid => None,
                    Ok(Record::Invalid(e)) => Some(Err(changed(format!("{e}")))),
                    Err(e) => Some(Err(e.into())),
                });
            let (first, written) = write_batches(store, &a.name, entries, batch)?;
            if written != good {
                return Err(changed(format!("it held {good} entries, then {written}")));
            }
            Ok((first, written, bad.count))
        }
        Input::Stream(r) => {
            let dir = store.path().parent().unwrap_or(Path::new("."));
            let mut spool = Spool::new(dir, kind)?;
            let mut skipped = BadLines::default();
            for r in formats::reader(format, BufReader::with_capacity(READ_BUFFER, r), kind) {
                match r? {
                    Record::Entry(e) => spool.push(&e).context("cannot write the import's spool file")?,
                    Record::Skipped(e) => skipped.push(e),
                    Record::Invalid(e) => bad.push(e),
                }
            }
            skipped.report_skipped(source, a);
            bad.report(source, a)?;
            let (first, written) = write_batches(store, &a.name, spool.into_entries()?, batch)?;
            Ok((first, written, bad.count))
        }
    }
}

/// Writes `entries` in transactions of `batch`, printing `committed N` after each. Returns the first id and
/// the number written.
fn write_batches(
    store: &Store,
    name: &str,
    entries: impl Iterator<Item = anyhow::Result<NewEntry>>,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let mut buf = Vec::with_capacity(batch.min(1 << 16));
    let mut first = None;
    let mut done = 0u64;
    let mut commit = |buf: &mut Vec<NewEntry>| -> anyhow::Result<()> {
        let id = store.add(name, buf)?;
        first.get_or_insert(id);
        done += buf.len() as u64;
        buf.clear();
        // Printed only after the commit returned: every entry counted here is durable.
        let _ = writeln!(std::io::stderr().lock(), "committed {done}");
        Ok(())
    };
    for e in entries {
        buf.push(e?);
        if buf.len() == batch {
            commit(&mut buf)?;
        }
    }
    if !buf.is_empty() {
        commit(&mut buf)?;
    }
    Ok((first.unwrap_or(0), done))
}

/// The entries of an input that cannot be read twice, kept until the whole input has been validated: each
/// as its hash's stored bytes ([`AnyHash::write_bytes`]), then `0` (an active entry with no fields) or the
/// length + 1 (u64 LE) of a JSON record of its fields, added time and state, in an anonymous temporary
/// file (removed by the OS when it is closed, even on a crash).
struct Spool {
    w: BufWriter<File>,
    kind: Kind,
    len: u64,
    buf: Vec<u8>,
}

/// What the spool keeps of an entry besides its hash.
#[derive(Serialize, serde::Deserialize)]
struct Spooled {
    meta: EntryMeta,
    added_ms: Option<u64>,
    /// `Some(until)` for a disabled entry.
    disabled: Option<Option<u64>>,
}

impl Spool {
    fn new(dir: &Path, kind: Kind) -> anyhow::Result<Spool> {
        let file = tempfile::tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        Ok(Spool { w: BufWriter::with_capacity(READ_BUFFER, file), kind, len: 0, buf: Vec::new() })
    }

    fn push(&mut self, e: &NewEntry) -> std::io::Result<()> {
        self.buf.clear();
        e.hash.write_bytes(&mut self.buf);
        self.w.write_all(&self.buf)?;
        if e.meta.is_empty() && e.added_ms.is_none() && e.state == EntryState::Active {
            self.w.write_all(&0u64.to_le_bytes())?;
        } else {
            let rec = Spooled {
                meta: e.meta.clone(),
                added_ms: e.added_ms,
                disabled: match e.state {
                    EntryState::Active => None,
                    EntryState::Disabled { until_ms } => Some(until_ms),
                },
            };
            let json = serde_json::to_vec(&rec)?;
            self.w.write_all(&(json.len() as u64 + 1).to_le_bytes())?;
            self.w.write_all(&json)?;
        }
        self.len += 1;
        Ok(())
    }

    /// The entries, in the order they were pushed.
    fn into_entries(self) -> anyhow::Result<impl Iterator<Item = anyhow::Result<NewEntry>>> {
        let mut file = self.w.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        let mut r = BufReader::with_capacity(READ_BUFFER, file);
        let kind = self.kind;
        Ok((0..self.len).map(move |_| unspool(&mut r, kind).context("cannot read the import's spool file")))
    }
}

fn unspool(r: &mut impl Read, kind: Kind) -> anyhow::Result<NewEntry> {
    let mut hash = vec![0u8; kind.bits() as usize / 8];
    r.read_exact(&mut hash)?;
    let mut e = NewEntry::new(AnyHash::from_bytes(kind, &hash));
    let mut n = [0u8; 8];
    r.read_exact(&mut n)?;
    match u64::from_le_bytes(n) {
        0 => {}
        n => {
            let mut b = vec![0; usize::try_from(n - 1)?];
            r.read_exact(&mut b)?;
            let rec: Spooled = serde_json::from_slice(&b)?;
            e.meta = rec.meta;
            e.added_ms = rec.added_ms;
            e.state = rec.disabled.map_or(EntryState::Active, |until_ms| EntryState::Disabled { until_ms });
        }
    }
    Ok(e)
}

/// Used by `match` too: the hashes of a query line that a bank of `kind` can use.
pub(crate) fn kind_hashes(q: &pharos::banks::formats::QueryLine, kind: Kind, dihedral: bool) -> Vec<AnyHash> {
    match kind {
        Kind::Pdq => {
            let mut v: Vec<AnyHash> = q.pdq.map(AnyHash::Pdq).into_iter().collect();
            if dihedral {
                v.extend(q.pdq_dihedral.iter().map(|h| AnyHash::Pdq(*h)));
            }
            v
        }
        Kind::Phash => q.phash.map(AnyHash::Phash).into_iter().collect(),
        Kind::Md5 => q.md5.map(AnyHash::Md5).into_iter().collect(),
        Kind::Sha1 => q.sha1.map(AnyHash::Sha1).into_iter().collect(),
        Kind::Sha256 => q.sha256.map(AnyHash::Sha256).into_iter().collect(),
    }
}
