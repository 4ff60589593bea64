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
use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};
use pharos::banks::formats::{self, Format, LineError, Record};
use pharos::matcher::{AnyHash, Kind};
use pharos::store::{
    AuditEvent, AuditRecord, BankInfo, BankPolicy, BankStore, EntryMeta, EntryState, EntryUpdate, FloodGuard,
    NewEntry, PgStore, Store,
};
use serde::Serialize;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Where banks live: `--data-dir`, else `PHAROS_DATA_DIR`, else the platform's data location.
#[derive(Args, Debug, Clone)]
pub(crate) struct DataDir {
    /// Data directory holding the bank store [default: PHAROS_DATA_DIR, else the platform data
    /// directory's `pharos-data`, e.g. ~/.local/share/pharos-data].
    #[arg(long, global = true, env = "PHAROS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL of a bank store shared by several daemons (postgres://user@host:port/db); without
    /// it, the embedded store in the data directory.
    #[arg(long, global = true, env = "PHAROS_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
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

    /// The bank store: PostgreSQL when a database URL is given, else the redb file in the data directory.
    pub(crate) fn open(&self) -> anyhow::Result<Arc<dyn BankStore>> {
        if let Some(url) = &self.database_url {
            let store = PgStore::open(url)
                .with_context(|| format!("opening the bank store {}", pharos::store::describe_url(url)))?;
            return Ok(Arc::new(store));
        }
        let dir = self.resolve()?;
        Ok(Arc::new(Store::open(&dir)?))
    }

    /// The PostgreSQL URL, when banks are shared there.
    pub(crate) fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
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
        /// Hash kind the bank holds: perceptual (pdq, phash: matched within a radius) or a digest of the
        /// file bytes (md5, sha1, sha256: matched when equal).
        #[arg(long, value_parser = kind_parser(), default_value = "pdq")]
        kind: Kind,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Replace a bank's match policy (negative, default radius, minimum quality, flood guard); options not
    /// given are reset to their defaults.
    Policy {
        /// Bank name.
        name: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List banks: one JSON object per bank.
    List,
    /// Change entries in place: tags, note, state (disabled entries never match but are kept and exported).
    /// All or nothing; prints each entry's fields afterwards as a JSON line.
    Update(UpdateArgs),
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
        #[arg(long, value_parser = format_parser(), default_value = "csv")]
        format: Format,
        /// Output file [default: stdout].
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

/// `--kind`: a [`Kind`] by its name (the names are listed in `--help`).
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = Kind> {
    clap::builder::PossibleValuesParser::new(Kind::ALL.map(Kind::name)).try_map(|s| s.parse::<Kind>())
}

/// `--format`: a [`Format`] by its name (see README "Partner formats"; the names are listed in `--help`).
fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    clap::builder::PossibleValuesParser::new(Format::ALL.map(Format::name)).try_map(|s| s.parse::<Format>())
}

/// A bank's match policy on the command line.
#[derive(Args, Debug, Clone)]
struct PolicyArgs {
    /// A negative bank: known-benign hashes. A query matching one of its entries has its matches in the
    /// other banks suppressed (reported as suppressed with this bank's entry).
    #[arg(long)]
    negative: bool,
    /// Radius used when a query gives none [default: the kind's, 31 for PDQ, 10 for pHash].
    #[arg(long, value_name = "R")]
    radius: Option<u32>,
    /// Queries whose PDQ quality is known and below this are not matched against the bank.
    #[arg(long, value_name = "Q")]
    min_quality: Option<u32>,
    /// Flood guard: an entry matching more than N times within --flood-window is reported (metrics,
    /// audit).
    #[arg(long, value_name = "N", requires = "flood_window")]
    flood_max: Option<u32>,
    /// The flood guard's window, e.g. `10m`, `1h`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "flood_max")]
    flood_window: Option<std::time::Duration>,
    /// Disable an entry when the flood guard trips.
    #[arg(long, requires = "flood_max")]
    flood_auto_disable: bool,
}

impl PolicyArgs {
    fn policy(&self) -> anyhow::Result<BankPolicy> {
        let flood = match (self.flood_max, self.flood_window) {
            (Some(max_matches), Some(w)) => {
                let window_s = u32::try_from(w.as_secs()).context("--flood-window is too long")?;
                anyhow::ensure!(window_s > 0, "--flood-window must be at least 1s");
                Some(FloodGuard { max_matches, window_s, auto_disable: self.flood_auto_disable })
            }
            _ => None,
        };
        Ok(BankPolicy {
            negative: self.negative,
            radius: self.radius,
            min_quality: self.min_quality,
            flood,
            match_ratio_ppm: None,
        })
    }
}

#[derive(Args, Debug)]
struct UpdateArgs {
    /// Bank name.
    name: String,
    /// Entry ids.
    ids: Vec<u64>,
    /// Also every entry with this external id (the partner's id; repeat for several).
    #[arg(long, value_name = "ID")]
    external_id: Vec<String>,
    /// Add a tag (repeat for several).
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Remove a tag (repeat for several).
    #[arg(long, value_name = "TAG")]
    untag: Vec<String>,
    /// Set the note.
    #[arg(long, conflicts_with = "clear_note")]
    note: Option<String>,
    /// Remove the note.
    #[arg(long)]
    clear_note: bool,
    /// Disable the entries: they never match, but are kept and exported.
    #[arg(long, conflicts_with = "enable")]
    disable: bool,
    /// With --disable: active again from this time (RFC 3339, e.g. 2027-01-31T00:00:00Z) or after this
    /// long (e.g. `30d`).
    #[arg(long, requires = "disable", value_name = "TIME|DURATION")]
    until: Option<String>,
    /// Enable the entries again.
    #[arg(long)]
    enable: bool,
}

/// `--until`: an RFC 3339 time or a duration from now, as ms since the Unix epoch.
fn parse_until(s: &str) -> anyhow::Result<u64> {
    let t = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let d = humantime::parse_duration(s)
                .map_err(|_| anyhow::anyhow!("--until '{s}': neither an RFC 3339 time nor a duration"))?;
            std::time::SystemTime::now() + d
        }
    };
    let ms = t.duration_since(std::time::UNIX_EPOCH).context("--until is before 1970")?.as_millis();
    Ok(u64::try_from(ms).unwrap_or(u64::MAX - 1))
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
    #[arg(long, value_parser = format_parser())]
    format: Option<Format>,
    /// Input file, or `-` for stdin.
    #[arg(default_value = "-")]
    input: PathBuf,
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[command(flatten)]
    add: AddArgs,
    /// Create the bank first if it does not exist, with this kind.
    #[arg(long, value_parser = kind_parser())]
    create: Option<Kind>,
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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    negative: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    radius: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_quality: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flood: Option<FloodGuard>,
}

impl<'a> BankLine<'a> {
    fn of(b: &'a BankInfo) -> BankLine<'a> {
        BankLine {
            name: &b.name,
            kind: b.kind.name(),
            entries: b.live(),
            next_id: b.next_id,
            created_ms: b.created_ms,
            negative: b.policy.negative,
            radius: b.policy.radius,
            min_quality: b.policy.min_quality,
            flood: b.policy.flood,
        }
    }
}

/// An entry's fields and state as `bank update` prints them.
#[derive(Serialize)]
struct EntryLine<'a> {
    id: u64,
    #[serde(flatten)]
    meta: &'a EntryMeta,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_until_ms: Option<u64>,
}

pub(crate) fn run(args: BankArgs) -> anyhow::Result<ExitCode> {
    let store = args.data_dir.open()?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.command {
        BankCommand::Create { name, kind, policy } => {
            let info = store.create_bank_with(&name, kind, policy.policy()?)?;
            audited(store.as_ref(), AuditEvent::BankCreated, &name, 0, None);
            let negative = if info.policy.negative { "negative " } else { "" };
            eprintln!("created {negative}{} bank '{}' in {}", info.kind, info.name, store.describe());
        }
        BankCommand::Policy { name, policy } => {
            // The matching ratio is the HTTP API's (HMA's `matching_enabled_ratio`): kept.
            let policy =
                BankPolicy { match_ratio_ppm: store.bank(&name)?.policy.match_ratio_ppm, ..policy.policy()? };
            let info = store.set_policy(&name, policy)?;
            audited(store.as_ref(), AuditEvent::PolicySet, &name, 0, None);
            serde_json::to_writer(&mut out, &BankLine::of(&info))?;
            writeln!(out)?;
        }
        BankCommand::List => {
            for b in store.list_banks()? {
                serde_json::to_writer(&mut out, &BankLine::of(&b))?;
                writeln!(out)?;
            }
        }
        BankCommand::Update(u) => {
            let state = if u.enable {
                Some(EntryState::Active)
            } else if u.disable {
                Some(EntryState::Disabled { until_ms: u.until.as_deref().map(parse_until).transpose()? })
            } else {
                None
            };
            let note = if u.clear_note { Some(None) } else { u.note.clone().map(Some) };
            let update = EntryUpdate { add_tags: u.tag.clone(), remove_tags: u.untag.clone(), note, state };
            anyhow::ensure!(
                !update.is_empty(),
                "nothing to change: give --tag, --untag, --note, --clear-note, --disable or --enable"
            );
            pharos::banks::validate_update(&update)?;
            let mut ids = u.ids.clone();
            for (ext, found) in store.ids_by_external_id(&u.name, &u.external_id)? {
                anyhow::ensure!(!found.is_empty(), "bank '{}' has no entry with external id '{ext}'", u.name);
                ids.extend(found);
            }
            anyhow::ensure!(!ids.is_empty(), "no entries named: give ids or --external-id");
            ids.sort_unstable();
            ids.dedup();
            let updates: Vec<_> = ids.iter().map(|&id| (id, update.clone())).collect();
            let after = store.update(&u.name, &updates)?;
            audited(store.as_ref(), AuditEvent::EntriesUpdated, &u.name, 0, Some(ids.len() as u64));
            for (id, (meta, state)) in ids.iter().zip(&after) {
                let line = EntryLine {
                    id: *id,
                    meta,
                    state: state.name(),
                    disabled_until_ms: state.disabled_until_ms(),
                };
                serde_json::to_writer(&mut out, &line)?;
                writeln!(out)?;
            }
            eprintln!("updated {} entries of '{}'", ids.len(), u.name);
        }
        BankCommand::Add(a) => return add(store.as_ref(), &args.data_dir, &a, None),
        BankCommand::Import(i) => {
            if let Some(kind) = i.create {
                match store.create_bank_with(&i.add.name, kind, BankPolicy::default()) {
                    Ok(_) => audited(store.as_ref(), AuditEvent::BankCreated, &i.add.name, 0, None),
                    Err(pharos::Error::BankExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            anyhow::ensure!(i.batch > 0, "--batch must be at least 1");
            return add(store.as_ref(), &args.data_dir, &i.add, Some(i.batch));
        }
        BankCommand::Remove { name, ids } => {
            store.remove(&name, &ids)?;
            audited(store.as_ref(), AuditEvent::EntriesRemoved, &name, 0, Some(ids.len() as u64));
            eprintln!("removed {} entries from '{name}'", ids.len());
        }
        BankCommand::Delete { name } => {
            store.delete_bank(&name)?;
            audited(store.as_ref(), AuditEvent::BankDeleted, &name, 0, None);
            eprintln!("deleted bank '{name}'");
        }
        BankCommand::Export { name, format, output } => {
            let kind = store.bank(&name)?.kind;
            formats::carries(format, kind)?;
            match &output {
                // A file is written beside its destination and renamed over it only when the export is
                // complete: a failed export (an entry the format cannot carry, a full disk) leaves no
                // partial file, and an existing file is replaced whole or not at all.
                Some(p) => {
                    let dir = match p.parent() {
                        Some(d) if !d.as_os_str().is_empty() => d,
                        _ => Path::new("."),
                    };
                    let tmp = tempfile::NamedTempFile::new_in(dir)
                        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
                    let mut w = std::io::BufWriter::new(tmp);
                    export(store.as_ref(), &name, format, kind, &mut w)?;
                    let tmp = w.into_inner().map_err(|e| e.into_error())?;
                    tmp.as_file().sync_all()?;
                    tmp.persist(p).with_context(|| format!("cannot write {}", p.display()))?;
                }
                None => export(store.as_ref(), &name, format, kind, &mut out)?,
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes every live entry of bank `name` to `w` in `format`.
fn export(
    store: &dyn BankStore,
    name: &str,
    format: formats::Format,
    kind: Kind,
    w: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut writer = formats::writer(format, &mut *w, kind)?;
    let mut sent = 0u64;
    let result = store.for_each_entry(name, &mut |e| {
        writer.write(&e)?;
        sent += 1;
        Ok(())
    });
    // Recorded however the export ended: what was written out is what counts.
    audited(store, AuditEvent::BankExported, name, 0, Some(sent));
    result?;
    writer.finish()?;
    drop(writer);
    w.flush()?;
    Ok(())
}

/// Records a bank change made with this CLI in the store's audit, by `cli:$USER` (the daemon records its
/// callers' identities the same way). The change is already committed: a failed record is a warning.
fn audited(store: &dyn BankStore, event: AuditEvent, bank: &str, first_id: u64, count: Option<u64>) {
    let user =
        std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
    let record = AuditRecord::bank_change(event, bank, first_id, count, Some(&format!("cli:{user}")));
    if let Err(e) = store.append_audit(&[record]) {
        eprintln!("warning: the change was made but its audit record was not written: {e}");
    }
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
fn add(store: &dyn BankStore, dir: &DataDir, a: &AddArgs, batch: Option<usize>) -> anyhow::Result<ExitCode> {
    // The bank must exist (and tells us the kind) before the input is read.
    let info = store.bank(&a.name)?;
    let source =
        if a.input.as_os_str() == "-" { "<stdin>".to_string() } else { a.input.display().to_string() };
    let input = open_input(&a.input)?;
    let (first, added, bad) = match batch {
        None => add_in_one_transaction(store, a, info.kind, input, &source)?,
        Some(batch) => import_in_batches(store, dir, a, info.kind, input, &source, batch)?,
    };
    eprintln!("added {added} entries to '{}' (ids {first}..{})", a.name, first + added);
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// `add`: every entry in memory, then one transaction. Returns the first id, the number of entries written
/// and of bad lines.
fn add_in_one_transaction(
    store: &dyn BankStore,
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
    for r in formats::reader(a.format, BufReader::with_capacity(READ_BUFFER, input), kind) {
        match r? {
            Record::Entry(e) => entries.push(e),
            Record::Skipped(e) => skipped.push(e),
            Record::Invalid(e) => bad.push(e),
        }
    }
    skipped.report_skipped(source, a);
    bad.report(source, a)?;
    let first = store.add(&a.name, &entries)?;
    audited(store, AuditEvent::EntriesAdded, &a.name, first, Some(entries.len() as u64));
    Ok((first, entries.len() as u64, bad.count))
}

/// `import`: validates the whole input in a first streaming pass, then writes it in a second, `batch`
/// entries per transaction (see the module documentation). Returns what [`add_in_one_transaction`] does.
fn import_in_batches(
    store: &dyn BankStore,
    data_dir: &DataDir,
    a: &AddArgs,
    kind: Kind,
    input: Input,
    source: &str,
    batch: usize,
) -> anyhow::Result<(u64, u64, usize)> {
    let mut bad = BadLines::default();
    let mut good = 0u64;
    let format = a.format;
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
            // The spool goes in the data directory (hashes and fields only), with a shared store too.
            let dir = data_dir.resolve()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut spool = Spool::new(&dir, kind)?;
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
    store: &dyn BankStore,
    name: &str,
    entries: impl Iterator<Item = anyhow::Result<NewEntry>>,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let mut buf = Vec::with_capacity(batch.min(1 << 16));
    let mut first = None;
    let mut done = 0u64;
    let mut commit = |buf: &mut Vec<NewEntry>| -> anyhow::Result<()> {
        let id = store.add(name, buf)?;
        audited(store, AuditEvent::EntriesAdded, name, id, Some(buf.len() as u64));
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
