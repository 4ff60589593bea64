//! `pharos audit`: list or export the match audit (every match and suppression `pharos match` and the
//! daemon reported, and flood-guard events) by time and bank, and delete records past their retention.
//!
//! Output is JSON lines (one record per line, the store's own form) or CSV with one column per field.

use super::bank::DataDir;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use pharos::banks::{BankSet, SearchPolicy};
use pharos::metrics::Metrics;
use pharos::store::{AuditFilter, AuditRecord};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    data_dir: DataDir,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// List records, oldest first.
    List(ListArgs),
    /// Delete the records older than the retention.
    Prune {
        /// Keep this much (e.g. `90d`); older records are deleted.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "90d")]
        retention: Duration,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AuditFormat {
    /// One JSON object per record.
    Jsonl,
    /// A header row, then one row per record.
    Csv,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// From this time on: RFC 3339 (`2026-12-01T00:00:00Z`) or a duration back from now (`24h`).
    #[arg(long, value_name = "TIME|DURATION")]
    since: Option<String>,
    /// Before this time (same forms).
    #[arg(long, value_name = "TIME|DURATION")]
    until: Option<String>,
    /// Only this bank (repeat for several); a suppression counts for its negative bank too.
    #[arg(long, value_name = "NAME")]
    bank: Vec<String>,
    /// At most this many records.
    #[arg(long)]
    limit: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: AuditFormat,
}

/// A time given as RFC 3339, or as a duration back from now; ms since the Unix epoch.
fn parse_time(flag: &str, s: &str) -> anyhow::Result<u64> {
    let t = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let d = humantime::parse_duration(s)
                .map_err(|_| anyhow::anyhow!("{flag} '{s}': neither an RFC 3339 time nor a duration"))?;
            SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH)
        }
    };
    Ok(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

const CSV_HEADER: [&str; 13] = [
    "time_ms",
    "event",
    "bank",
    "entry_id",
    "external_id",
    "distance",
    "query",
    "request_id",
    "caller",
    "by_bank",
    "by_entry_id",
    "by_external_id",
    "count",
];

fn csv_row(r: &AuditRecord) -> [String; 13] {
    let by = r.by.as_ref();
    [
        r.time_ms.to_string(),
        r.event.name().to_string(),
        r.entry.bank.clone(),
        r.entry.entry_id.to_string(),
        r.entry.external_id.clone().unwrap_or_default(),
        r.distance.to_string(),
        r.query.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" "),
        r.request_id.clone().unwrap_or_default(),
        r.caller.clone().unwrap_or_default(),
        by.map(|b| b.bank.clone()).unwrap_or_default(),
        by.map(|b| b.entry_id.to_string()).unwrap_or_default(),
        by.and_then(|b| b.external_id.clone()).unwrap_or_default(),
        r.count.map(|c| c.to_string()).unwrap_or_default(),
    ]
}

pub(crate) fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let store = args.data_dir.open()?;
    // No bank is loaded: the audit is read and pruned from the store alone.
    let banks =
        BankSet::open_store(store, Some(&[]), None, Arc::new(Metrics::new()), SearchPolicy::default())?;
    match args.command {
        AuditCommand::Prune { retention } => {
            let n = banks.prune_audit(retention)?;
            eprintln!("deleted {n} audit records older than {}", humantime::format_duration(retention));
        }
        AuditCommand::List(l) => {
            let filter = AuditFilter {
                since_ms: l.since.as_deref().map(|s| parse_time("--since", s)).transpose()?,
                until_ms: l.until.as_deref().map(|s| parse_time("--until", s)).transpose()?,
                banks: l.bank.clone(),
                limit: l.limit,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match l.format {
                AuditFormat::Jsonl => banks.audit(&filter, |r| {
                    serde_json::to_writer(&mut out, &r).map_err(|e| pharos::Error::Io(e.into()))?;
                    writeln!(out).map_err(pharos::Error::Io)
                })?,
                AuditFormat::Csv => {
                    let mut w = csv::Writer::from_writer(&mut out);
                    w.write_record(CSV_HEADER).context("writing the audit")?;
                    banks.audit(&filter, |r| {
                        w.write_record(csv_row(&r)).map_err(|e| pharos::Error::Io(e.into()))
                    })?;
                    w.flush()?;
                }
            }
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
