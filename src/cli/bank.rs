//! `pharos bank …`: create, list, add, import, remove, delete and export banks in the store.
//!
//! Input lines are validated in full before anything is written: a bad line is reported on stderr as
//! `LINE: message` (every bad line, not just the first) and nothing is written (exit 1), unless
//! `--skip-invalid` is given, in which case the good lines are written and the exit status is 2.
//! `add` writes everything in one transaction; `import` commits in batches of `--batch` entries and prints
//! `committed N` on stderr after each durable commit, so an interrupted import leaves a known prefix.

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use pharos::matcher::{AnyHash, Kind};
use pharos::store::formats::{csv_field, read_entries};
use pharos::store::{NewEntry, Store};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
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
        platform_data_dir()
            .map(|d| d.join("pharos-data"))
            .context("no data directory: set --data-dir or PHAROS_DATA_DIR (HOME is not set)")
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

/// `$XDG_DATA_HOME` or `~/.local/share` on Unix, `~/Library/Application Support` on macOS, `%APPDATA%`
/// on Windows.
fn platform_data_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if cfg!(windows) {
        return env("APPDATA");
    }
    let home = env("HOME");
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/Application Support"));
    }
    env("XDG_DATA_HOME").or_else(|| home.map(|h| h.join(".local/share")))
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
    /// Add hashes (`hex`, `hex,label`, `pharos hash` JSON lines, CSV) in one transaction.
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
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExportFormat {
    /// `hash,label` header, then one `HEX,LABEL` row per entry.
    Csv,
    /// One hex hash per line.
    Hex,
    /// `{"id":…,"hash":…,"label":…,"added_ms":…}` per entry.
    Jsonl,
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Bank name.
    name: String,
    /// Write the valid lines even when some are bad (exit status 2).
    #[arg(long)]
    skip_invalid: bool,
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
            let mut w: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(&mut out),
            };
            if matches!(format, ExportFormat::Csv) {
                writeln!(w, "hash,label")?;
            }
            store.for_each_entry(&name, |e| {
                let r = match format {
                    ExportFormat::Csv => {
                        writeln!(w, "{},{}", e.hash.to_hex(), csv_field(e.label.as_deref().unwrap_or("")))
                    }
                    ExportFormat::Hex => writeln!(w, "{}", e.hash.to_hex()),
                    ExportFormat::Jsonl => writeln!(
                        w,
                        "{}",
                        serde_json::json!({"id": e.id, "hash": e.hash.to_hex(), "label": e.label, "added_ms": e.added_ms})
                    ),
                };
                r.map_err(pharos::Error::Io)
            })?;
            w.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(BufReader::new(std::io::stdin())))
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
    }
}

/// `add` (batch = None: one transaction) and `import` (commits every `batch` entries).
fn add(store: &Store, a: &AddArgs, batch: Option<usize>) -> anyhow::Result<ExitCode> {
    // The bank must exist (and tells us the kind) before the input is read.
    let info = store.bank(&a.name)?;
    let (entries, errors) = read_entries(open_input(&a.input)?, info.kind)?;
    let source =
        if a.input.as_os_str() == "-" { "<stdin>".to_string() } else { a.input.display().to_string() };
    for e in errors.iter().take(100) {
        eprintln!("{source}:{e}");
    }
    if errors.len() > 100 {
        eprintln!("{source}: … and {} more bad lines", errors.len() - 100);
    }
    if !errors.is_empty() && !a.skip_invalid {
        anyhow::bail!(
            "{} bad line(s) in {source}; nothing was written to bank '{}' (--skip-invalid writes the good lines)",
            errors.len(),
            a.name
        );
    }
    let first = write_entries(store, &a.name, &entries, batch)?;
    eprintln!(
        "added {} entries to '{}' (ids {}..{})",
        entries.len(),
        a.name,
        first,
        first + entries.len() as u64
    );
    Ok(if errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn write_entries(
    store: &Store,
    name: &str,
    entries: &[NewEntry],
    batch: Option<usize>,
) -> anyhow::Result<u64> {
    let Some(batch) = batch else {
        return Ok(store.add(name, entries)?);
    };
    let mut first = None;
    let mut done = 0usize;
    let stderr = std::io::stderr();
    for chunk in entries.chunks(batch) {
        let id = store.add(name, chunk)?;
        first.get_or_insert(id);
        done += chunk.len();
        // Printed only after the commit returned: every entry counted here is durable.
        let _ = writeln!(stderr.lock(), "committed {done}");
    }
    Ok(first.unwrap_or(0))
}

/// Used by `match` too: the hashes of a query line that a bank of `kind` can use.
pub(crate) fn kind_hashes(q: &pharos::store::formats::QueryLine, kind: Kind, dihedral: bool) -> Vec<AnyHash> {
    match kind {
        Kind::Pdq => {
            let mut v: Vec<AnyHash> = q.pdq.map(AnyHash::Pdq).into_iter().collect();
            if dihedral {
                v.extend(q.pdq_dihedral.iter().map(|h| AnyHash::Pdq(*h)));
            }
            v
        }
        Kind::Phash => q.phash.map(AnyHash::Phash).into_iter().collect(),
    }
}
