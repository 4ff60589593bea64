//! `pharos migrate`: copies every bank (every row, removed ones included, so ids stay what partners and
//! the audit know) and the whole audit from the embedded store to PostgreSQL (`--from DIR`) or back
//! (`--to DIR`), then reads both sides again and compares counts and a SHA-256 of their contents.
//!
//! Output: one JSON line per bank (`bank`, `kind`, `rows`, `live`, `sha256`) and one for the audit
//! (`audit`, `records`, `sha256`), then a summary on stderr. Exit status 1, with the reason, when the
//! destination already has a bank of the same name (nothing is overwritten: drop it first) or when a
//! check fails.

use anyhow::{bail, Context as _};
use clap::Args;
use pharos::store::{describe_url, AuditFilter, BankInfo, BankStore, DumpRow, PgStore, Store};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Rows per destination transaction.
const BATCH: usize = 50_000;

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("direction").required(true).args(["from", "to"]))]
pub(crate) struct MigrateArgs {
    /// Copy the redb store of this data directory into PostgreSQL.
    #[arg(long, value_name = "DATA_DIR")]
    from: Option<PathBuf>,
    /// Copy PostgreSQL's banks and audit into a (new or bank-less) redb store in this data directory.
    #[arg(long, value_name = "DATA_DIR")]
    to: Option<PathBuf>,
    /// The PostgreSQL database.
    #[arg(long, env = "PHAROS_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database_url: String,
}

/// What was copied, per bank.
#[derive(Serialize)]
struct BankLine<'a> {
    bank: &'a str,
    kind: &'a str,
    rows: u64,
    live: u64,
    sha256: String,
}

/// The digest and counts of a bank's contents, over every row in id order: id, hash, time added, state,
/// time removed and fields (JSON) — what both stores must agree on.
#[derive(Default, PartialEq, Eq, Debug)]
struct Tally {
    rows: u64,
    live: u64,
    digest: Vec<u8>,
}

fn tally_bank(store: &dyn BankStore, name: &str) -> anyhow::Result<(BankInfo, Tally)> {
    let mut h = Sha256::new();
    let (mut rows, mut live) = (0u64, 0u64);
    let info = store.dump(name, &mut |r: DumpRow| {
        feed(&mut h, &r);
        rows += 1;
        live += u64::from(r.removed_ms.is_none());
        Ok(())
    })?;
    Ok((info, Tally { rows, live, digest: h.finalize().to_vec() }))
}

fn feed(h: &mut Sha256, r: &DumpRow) {
    let e = &r.entry;
    h.update(e.id.to_le_bytes());
    let mut b = Vec::with_capacity(32);
    e.hash.write_bytes(&mut b);
    h.update(&b);
    h.update(e.added_ms.to_le_bytes());
    h.update(match e.state {
        pharos::store::EntryState::Active => [0u8; 9],
        pharos::store::EntryState::Disabled { until_ms } => {
            let mut s = [1u8; 9];
            s[1..].copy_from_slice(&until_ms.unwrap_or(u64::MAX).to_le_bytes());
            s
        }
    });
    h.update(r.removed_ms.map_or([0u8; 8], |t| t.to_le_bytes()));
    h.update(serde_json::to_vec(&e.meta).expect("fields serialise"));
}

fn tally_audit(store: &dyn BankStore) -> anyhow::Result<(u64, Vec<u8>)> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    store.for_each_audit(&AuditFilter::default(), &mut |r| {
        h.update(serde_json::to_vec(&r).expect("audit records serialise"));
        n += 1;
        Ok(())
    })?;
    Ok((n, h.finalize().to_vec()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = &args.database_url;
    let pg = PgStore::open(url).with_context(|| format!("opening {}", describe_url(url)))?;
    let (src, dst, dst_name): (Box<dyn BankStore>, Box<dyn BankStore>, String) = match (&args.from, &args.to)
    {
        (Some(dir), None) => {
            let redb = Store::open(dir).with_context(|| format!("opening the store in {}", dir.display()))?;
            (Box::new(redb), Box::new(pg), describe_url(url))
        }
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let redb = Store::open(dir).with_context(|| format!("opening the store in {}", dir.display()))?;
            (Box::new(pg), Box::new(redb), dir.display().to_string())
        }
        _ => unreachable!("clap requires exactly one of --from and --to"),
    };
    let banks = src.list_banks()?;
    let taken: Vec<String> = dst.list_banks()?.into_iter().map(|b| b.name).collect();
    if let Some(b) = banks.iter().find(|b| taken.contains(&b.name)) {
        bail!("{dst_name} already has a bank named '{}': nothing was copied (delete it there first)", b.name);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut total_rows, started) = (0u64, std::time::Instant::now());
    for b in &banks {
        dst.restore_bank(b)?;
        let mut batch: Vec<DumpRow> = Vec::with_capacity(BATCH);
        let mut failed = None;
        src.dump(&b.name, &mut |r| {
            batch.push(r);
            if batch.len() == BATCH {
                if let Err(e) = dst.restore_rows(&b.name, &batch) {
                    failed = Some(e.to_string());
                    return Err(e);
                }
                batch.clear();
            }
            Ok(())
        })
        .with_context(|| {
            format!("copying bank '{}'{}", b.name, failed.map(|f| format!(" ({f})")).unwrap_or_default())
        })?;
        dst.restore_rows(&b.name, &batch).with_context(|| format!("copying bank '{}'", b.name))?;
        let (_, want) = tally_bank(src.as_ref(), &b.name)?;
        let (info, got) = tally_bank(dst.as_ref(), &b.name)?;
        if want != got || info.kind != b.kind || info.policy != b.policy || info.created_ms != b.created_ms {
            bail!(
                "bank '{}' differs after the copy: source {} rows / {} live / {}, destination {} / {} / {}",
                b.name,
                want.rows,
                want.live,
                hex(&want.digest),
                got.rows,
                got.live,
                hex(&got.digest)
            );
        }
        total_rows += got.rows;
        let line = BankLine {
            bank: &b.name,
            kind: b.kind.name(),
            rows: got.rows,
            live: got.live,
            sha256: hex(&got.digest),
        };
        serde_json::to_writer(&mut out, &line)?;
        writeln!(out)?;
    }
    // The audit, in order, in batches.
    let (dst_before, _) = tally_audit(dst.as_ref())?;
    let mut batch = Vec::with_capacity(10_000);
    src.for_each_audit(&AuditFilter::default(), &mut |r| {
        batch.push(r);
        if batch.len() == 10_000 {
            dst.append_audit(&batch)?;
            batch.clear();
        }
        Ok(())
    })?;
    dst.append_audit(&batch)?;
    let (n, want) = tally_audit(src.as_ref())?;
    let (got_n, got) = tally_audit(dst.as_ref())?;
    // A destination that had an audit of its own keeps it: then only the count can be compared.
    if got_n != dst_before + n || (dst_before == 0 && got != want) {
        bail!(
            "the audit differs after the copy: source {n} records / {}, destination {got_n} (had {dst_before}) / {}",
            hex(&want),
            hex(&got)
        );
    }
    writeln!(out, "{}", serde_json::json!({ "audit": true, "records": n, "sha256": hex(&want) }))?;
    eprintln!(
        "migrated {} banks ({total_rows} rows) and {n} audit records to {dst_name} in {:.1} s; counts and checksums match",
        banks.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
