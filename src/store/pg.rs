//! Banks in PostgreSQL: the store several `pharos serve` replicas share (`--database-url`).
//!
//! The schema is `migrations/V*.sql`, applied on open by [refinery](https://docs.rs/refinery) under a
//! PostgreSQL advisory lock, so replicas starting at once apply each migration once and the others wait
//! for it. Every write is one transaction that ends by appending a row to the **change log**
//! (`pharos_changes`): its sequence number comes from an `UPDATE` of the single `pharos_log_head` row,
//! the last statement before the commit, whose row lock is held until the commit, so sequence order is
//! commit order and a replica that applied change `n` has seen every change before it. The same
//! transaction sends a `NOTIFY pharos_changes` (delivered at commit) that wakes the replicas' followers;
//! they poll as well, so a lost notification only delays a change.
//!
//! Removed entries stay as rows without their fields (tombstones): a bank's matcher row is its entry id,
//! so a replica needs every hash to place the ones after it. Bulk paths use binary `COPY` both ways (an
//! add's rows, a replica's cold start), not row-at-a-time statements.
//!
//! Why the synchronous `postgres` client and a small pool written here: every store call already runs on
//! a blocking thread (the daemon's blocking pool, the CLI, the follower thread), and a sync client owns a
//! small runtime of its own, which must never be dropped on an async thread. A pool crate would drop
//! connections wherever it likes; this one drops them on a plain thread ([`discard`]), checks a
//! connection that sat idle before reusing it (a restarted server leaves only dead ones), and is 60 lines.

use super::{
    check_restored, hash_size, now_ms, validate_name, AuditFilter, AuditRecord, BankInfo, BankPolicy,
    BankStore, Change, ChangeOp, ChangeWatch, DumpRow, Entry, EntryMeta, EntryState, EntryUpdate, NewEntry,
    Rows, StoredBank, MAX_ENTRIES,
};
use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Kind};
use parking_lot::Mutex;
use postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutIter};
use postgres::config::Host;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, IsolationLevel, Row, Transaction};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres_rustls::MakeRustlsConnect;

/// `disabled_until` of an entry disabled until it is enabled again.
const FOREVER: i64 = i64::MAX;
/// The NOTIFY channel of the change log.
const CHANNEL: &str = "pharos_changes";
/// Advisory lock key held while migrations run ("pharos" in ASCII).
const MIGRATION_LOCK: i64 = 0x7068_6172_6f73;
/// Most idle connections kept.
const POOL_MAX: usize = 16;
/// A connection idle longer than this is checked (a round trip) before it is used again.
const CHECK_AFTER: Duration = Duration::from_secs(2);
/// The bank columns [`bank_of`] reads, in order.
const BANK_COLS: &str = "uid, name, kind, created_ms, next_id, removed, policy";

/// The migrations, in order: (refinery name `V{n}__{what}`, SQL).
const MIGRATIONS: &[(&str, &str)] = &[("V1__fleet", include_str!("migrations/V1__fleet.sql"))];

/// The PostgreSQL bank store.
pub struct PgStore {
    config: Config,
    /// TLS for `sslmode=require` (rustls, ring): the server's certificate is always verified, against
    /// `sslrootcert` when given, else the system's roots.
    tls: MakeRustlsConnect,
    describe: String,
    /// Idle connections and since when they are idle.
    pool: Mutex<Vec<(Client, Instant)>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("database", &self.describe).finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        discard(self.pool.get_mut().drain(..).map(|(c, _)| c).collect());
    }
}

/// Drops connections on a plain thread: each owns a runtime, and dropping a runtime on an async thread (the
/// daemon drops its bank set at the end of `run`) would panic.
fn discard(clients: Vec<Client>) {
    if clients.is_empty() {
        return;
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::spawn(move || drop(clients)).join();
    } else {
        drop(clients);
    }
}

/// Takes out of a URL the libpq options the Rust client does not parse: `sslrootcert=FILE` (the CA that
/// signed the server's certificate) and the `sslmode` values `verify-ca` / `verify-full`, which become
/// `require` (this client verifies the server's certificate and name whenever it uses TLS). Works on the
/// URL form (`?sslmode=verify-full&sslrootcert=/etc/ca.pem`) and the key=value form.
fn split_tls_options(url: &str) -> (String, Option<PathBuf>) {
    let mut root = None;
    let mut keep = |kv: &str| -> Option<String> {
        if let Some(v) = kv.strip_prefix("sslrootcert=") {
            root = Some(PathBuf::from(v));
            return None;
        }
        match kv {
            "sslmode=verify-full" | "sslmode=verify-ca" => Some("sslmode=require".into()),
            _ => Some(kv.to_string()),
        }
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
        let params: Vec<String> = query.split('&').filter_map(&mut keep).collect();
        let url = if params.is_empty() { base.to_string() } else { format!("{base}?{}", params.join("&")) };
        (url, root)
    } else {
        let url = url.split_whitespace().filter_map(&mut keep).collect::<Vec<_>>().join(" ");
        (url, root)
    }
}

/// The TLS connector: rustls with ring, TLS 1.2 and 1.3, roots from `root` (PEM) or the system.
fn tls_connector(root: Option<&PathBuf>) -> Result<MakeRustlsConnect> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let bad = |e: String| Error::InvalidInput(format!("sslrootcert {}: {e}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate in it".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => {
            // Unreadable system roots leave the store empty: TLS connections then fail with a message that
            // names the certificate, and plaintext ones work as before.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Store(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `postgres://host:port/db` without user or password: what messages and logs may show.
pub fn describe_url(url: &str) -> String {
    match split_tls_options(url).0.parse::<Config>() {
        Ok(c) => describe(&c),
        Err(_) => "postgres (unparsable URL)".into(),
    }
}

/// The URL with its password replaced by `***` (URL form `user:password@` and key=value form
/// `password=…`), for `--print-config`.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{}{}:***{}", &url[..scheme_end + 3], &rest[..colon], &rest[at..]);
            }
        }
        // A password can also come as a query parameter.
        return match url.find("password=") {
            Some(p) => {
                let end = url[p..].find('&').map_or(url.len(), |e| p + e);
                format!("{}password=***{}", &url[..p], &url[end..])
            }
            None => url.to_string(),
        };
    }
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(c: &Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            Host::Tcp(h) => format!("{h}:{p}"),
            Host::Unix(d) => format!("{}:{p}", d.display()),
        })
        .collect();
    format!("postgres://{}/{}", hosts.join(","), c.get_dbname().unwrap_or(""))
}

/// Maps a client error: a lost or refused connection (or a server shutting down) is
/// [`Error::Unavailable`], so the daemon answers UNAVAILABLE and keeps matching; the rest is a store error.
fn pg_err(e: postgres::Error) -> Error {
    let code = e.code().map(|c| c.code().to_string());
    let transient = match &code {
        None => true, // I/O, connect, closed connection, timeouts: no SQL error code
        Some(c) => c.starts_with("08") || c.starts_with("57P") || c == "53300", // connection, shutdown, too many
    };
    // The source chain holds the server's message ("db error: ERROR: …" alone says little).
    let mut msg = e.to_string();
    if let Some(db) = e.as_db_error() {
        msg = format!("{}: {}", db.severity(), db.message());
    } else if let Some(src) = std::error::Error::source(&e) {
        msg = format!("{msg}: {src}");
    }
    if transient {
        Error::Unavailable(msg)
    } else {
        Error::Store(msg)
    }
}

fn bad_row(what: impl std::fmt::Display) -> Error {
    Error::Store(format!("PostgreSQL store: {what}"))
}

/// A bank row (columns [`BANK_COLS`]).
fn bank_of(r: &Row) -> Result<BankInfo> {
    let name: String = r.get(1);
    let kind: String = r.get(2);
    let kind = kind.parse().map_err(|e: Error| bad_row(format!("bank '{name}': {e}")))?;
    let policy: serde_json::Value = r.get(6);
    let policy: BankPolicy =
        serde_json::from_value(policy).map_err(|e| bad_row(format!("bank '{name}': policy: {e}")))?;
    Ok(BankInfo {
        uid: r.get::<_, i64>(0) as u64,
        kind,
        created_ms: r.get::<_, i64>(3) as u64,
        next_id: r.get::<_, i64>(4) as u64,
        removed: r.get::<_, i64>(5) as u64,
        policy,
        name,
    })
}

fn state_of(until: Option<i64>) -> EntryState {
    match until {
        None => EntryState::Active,
        Some(FOREVER) => EntryState::Disabled { until_ms: None },
        Some(t) => EntryState::Disabled { until_ms: Some(t as u64) },
    }
}

fn until_of(state: EntryState) -> Option<i64> {
    match state {
        EntryState::Active => None,
        EntryState::Disabled { until_ms: None } => Some(FOREVER),
        EntryState::Disabled { until_ms: Some(t) } => Some(t.min(FOREVER as u64 - 1) as i64),
    }
}

fn meta_json(meta: &EntryMeta) -> Option<serde_json::Value> {
    (!meta.is_empty()).then(|| serde_json::to_value(meta).expect("entry fields serialise"))
}

fn meta_of(bank: &str, id: i64, v: Option<serde_json::Value>) -> Result<EntryMeta> {
    match v {
        None => Ok(EntryMeta::default()),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| bad_row(format!("bank '{bank}': fields of entry {id} are corrupt: {e}"))),
    }
}

fn i64s(ids: &[u64]) -> Vec<i64> {
    ids.iter().map(|&i| i.min(i64::MAX as u64) as i64).collect()
}

/// The bank named `name`, locked for the rest of the transaction when `lock` (writes to one bank take
/// turns on its row).
fn bank_row(c: &mut impl GenericClient, name: &str, lock: bool) -> Result<BankInfo> {
    let sql = format!(
        "SELECT {BANK_COLS} FROM pharos_banks WHERE name = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    match c.query_opt(sql.as_str(), &[&name]).map_err(pg_err)? {
        Some(r) => bank_of(&r),
        None => Err(Error::UnknownBank(name.to_string())),
    }
}

/// Inserts an empty bank (`BankExists` when the name is taken) and logs its creation: for creates and for
/// `pharos migrate`, which keeps the creation time.
fn insert_bank(
    t: &mut Transaction<'_>,
    name: &str,
    kind: Kind,
    created_ms: u64,
    policy: BankPolicy,
) -> Result<BankInfo> {
    validate_name(name)?;
    policy.validate(kind)?;
    let policy_json = serde_json::to_value(policy).expect("a policy serialises");
    let r = t
        .query_opt(
            format!(
                "INSERT INTO pharos_banks (name, kind, created_ms, policy) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO NOTHING RETURNING {BANK_COLS}"
            )
            .as_str(),
            &[&name, &kind.name(), &(created_ms.min(i64::MAX as u64) as i64), &policy_json],
        )
        .map_err(pg_err)?;
    let Some(r) = r else { return Err(Error::BankExists(name.to_string())) };
    let info = bank_of(&r)?;
    log_change(t, &info, "created", None, None, None)?;
    Ok(info)
}

/// Appends a change to the log and announces it: the last statement of every write transaction (see the
/// module doc for why that makes sequence order commit order).
fn log_change(
    t: &mut Transaction<'_>,
    bank: &BankInfo,
    op: &str,
    first: Option<u64>,
    count: Option<u64>,
    ids: Option<&[u64]>,
) -> Result<()> {
    let (first, count) = (first.map(|v| v as i64), count.map(|v| v as i64));
    let ids = ids.map(i64s);
    t.execute(
        "WITH h AS (UPDATE pharos_log_head SET seq = seq + 1 RETURNING seq),
              i AS (INSERT INTO pharos_changes (seq, time_ms, bank_uid, bank, op, first_id, count, ids)
                    SELECT h.seq, $1, $2, $3, $4, $5, $6, $7 FROM h RETURNING seq)
         SELECT pg_notify('pharos_changes', i.seq::text) FROM i",
        &[&(now_ms() as i64), &(bank.uid as i64), &bank.name, &op, &first, &count, &ids],
    )
    .map_err(pg_err)?;
    Ok(())
}

/// Reads `COPY … TO STDOUT (FORMAT binary)` of `(id, hash, disabled_until, removed_ms)` rows in id order
/// into a [`StoredBank`] whose row 0 is id `first`.
fn read_rows(t: &mut Transaction<'_>, info: BankInfo, first: u64) -> Result<StoredBank> {
    let n = info.next_id.saturating_sub(first) as usize;
    let mut rows = Rows::with_capacity(info.kind, n);
    let (mut removed, mut disabled) = (Vec::new(), Vec::new());
    let sql = format!(
        "COPY (SELECT id, hash, disabled_until, removed_ms FROM pharos_entries \
         WHERE bank = {} AND id >= {} ORDER BY id) TO STDOUT (FORMAT binary)",
        info.uid as i64, first as i64
    );
    let reader = t.copy_out(sql.as_str()).map_err(pg_err)?;
    let mut it = BinaryCopyOutIter::new(reader, &[Type::INT8, Type::BYTEA, Type::INT8, Type::INT8]);
    let (size, mut expect) = (hash_size(info.kind), first);
    while let Some(row) = it.next().map_err(pg_err)? {
        let id = row.get::<i64>(0) as u64;
        let hash: &[u8] = row.get(1);
        if id != expect || hash.len() != size || id >= info.next_id {
            return Err(bad_row(format!(
                "bank '{}': row {id} ({} bytes) where id {expect} ({size} bytes) was due",
                info.name,
                hash.len()
            )));
        }
        rows.push_bytes(hash);
        if row.get::<Option<i64>>(3).is_some() {
            removed.push(id);
        } else if let Some(u) = row.get::<Option<i64>>(2) {
            disabled.push((id, state_of(Some(u))));
        }
        expect += 1;
    }
    if expect != info.next_id.max(first) {
        return Err(bad_row(format!(
            "bank '{}': {} rows stored from id {first}, the bank record says {n}",
            info.name,
            expect - first
        )));
    }
    Ok(StoredBank { info, rows, removed, disabled })
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?…`, libpq's key=value form works too) and
    /// brings the schema up to date. The URL's password never appears in messages.
    pub fn open(url: &str) -> Result<PgStore> {
        let (url, root) = split_tls_options(url);
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            Error::InvalidInput(format!("database URL: {e} (expected postgres://user@host:port/database)"))
        })?;
        let tls = tls_connector(root.as_ref())?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("pharos");
        }
        let store = PgStore { describe: describe(&config), config, tls, pool: Mutex::new(Vec::new()) };
        store.with(migrate)?;
        Ok(store)
    }

    fn connect(&self) -> Result<Client> {
        self.config.connect(self.tls.clone()).map_err(|e| match pg_err(e) {
            Error::Unavailable(m) => Error::Unavailable(format!("{}: {m}", self.describe)),
            e => e,
        })
    }

    /// Runs `f` on a pooled connection (a new one when none is idle or the idle one is dead).
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = None;
        while let Some((mut c, idle_since)) = self.pool.lock().pop() {
            if idle_since.elapsed() < CHECK_AFTER || c.is_valid(Duration::from_secs(2)).is_ok() {
                client = Some(c);
                break;
            }
            discard(vec![c]);
        }
        let mut c = match client {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&mut c);
        if c.is_closed() || matches!(out, Err(Error::Unavailable(_))) {
            discard(vec![c]);
        } else {
            let mut pool = self.pool.lock();
            if pool.len() < POOL_MAX {
                pool.push((c, Instant::now()));
            } else {
                drop(pool);
                discard(vec![c]);
            }
        }
        out
    }

    /// Runs `f` in one read-write transaction and commits it.
    fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|c| {
            let mut t = c.transaction().map_err(pg_err)?;
            let out = f(&mut t)?;
            t.commit().map_err(pg_err)?;
            Ok(out)
        })
    }

    /// Runs `f` in one read-only snapshot (REPEATABLE READ: every statement sees the same data).
    fn read<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|c| {
            let mut t = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(pg_err)?;
            let out = f(&mut t)?;
            t.commit().map_err(pg_err)?;
            Ok(out)
        })
    }
}

/// Applies the migrations this build knows that the database lacks, holding the migration lock (a replica
/// starting at the same time waits here, then finds nothing to do). A database migrated by a newer build
/// is accepted (rolling upgrades run old and new replicas side by side).
fn migrate(c: &mut Client) -> Result<()> {
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).map_err(pg_err)?;
    let mut run = || -> Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(name, sql)| refinery::Migration::unapplied(name, sql))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Store(format!("migrations: {e}")))?;
        let mut runner = refinery::Runner::new(&migrations).set_abort_missing(false);
        runner.set_migration_table_name("pharos_schema_history");
        let report = runner.run(c).map_err(|e| match e.kind() {
            refinery::error::Kind::Connection(_, _) => Error::Unavailable(format!("migrating: {e}")),
            _ => Error::Store(format!("migrating the PostgreSQL schema: {e}")),
        })?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m.name(), version = m.version(), "applied a PostgreSQL migration");
        }
        Ok(())
    };
    let out = run();
    let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    out?; // the migration's own error first
    unlocked.map_err(pg_err)?;
    Ok(())
}

impl ChangeWatch for PgWatchInner {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let client = self.client.as_mut().expect("the watch holds its client until dropped");
        let got = {
            let mut n = client.notifications();
            let got = n.timeout_iter(timeout).next().map_err(pg_err)?.is_some();
            // Several writes in a row announce themselves several times: one wake-up is enough.
            while n.iter().next().map_err(pg_err)?.is_some() {}
            got
        };
        if client.is_closed() {
            return Err(Error::Unavailable("the connection listening for changes was closed".into()));
        }
        Ok(got)
    }
}

/// A connection that LISTENs on the change channel, held in an `Option` so `Drop` can move it to a plain
/// thread (see [`discard`]).
struct PgWatchInner {
    client: Option<Client>,
}

impl Drop for PgWatchInner {
    fn drop(&mut self) {
        discard(self.client.take().into_iter().collect());
    }
}

impl BankStore for PgStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn create_bank_with(&self, name: &str, kind: Kind, policy: BankPolicy) -> Result<BankInfo> {
        self.write(|t| insert_bank(t, name, kind, now_ms(), policy))
    }

    fn set_policy(&self, name: &str, policy: BankPolicy) -> Result<BankInfo> {
        let policy_json = serde_json::to_value(policy).expect("a policy serialises");
        self.write(|t| {
            let mut info = bank_row(t, name, true)?;
            policy.validate(info.kind)?;
            t.execute(
                "UPDATE pharos_banks SET policy = $2 WHERE uid = $1",
                &[&(info.uid as i64), &policy_json],
            )
            .map_err(pg_err)?;
            info.policy = policy;
            log_change(t, &info, "policy", None, None, None)?;
            Ok(info)
        })
    }

    fn delete_bank(&self, name: &str) -> Result<()> {
        self.write(|t| {
            let info = bank_row(t, name, true)?;
            t.execute("DELETE FROM pharos_banks WHERE uid = $1", &[&(info.uid as i64)]).map_err(pg_err)?;
            log_change(t, &info, "deleted", None, None, None)
        })
    }

    fn list_banks(&self) -> Result<Vec<BankInfo>> {
        self.with(|c| {
            let rows = c
                .query(format!("SELECT {BANK_COLS} FROM pharos_banks ORDER BY name").as_str(), &[])
                .map_err(pg_err)?;
            rows.iter().map(bank_of).collect()
        })
    }

    fn bank(&self, name: &str) -> Result<BankInfo> {
        self.with(|c| bank_row(c, name, false))
    }

    fn add(&self, name: &str, entries: &[NewEntry]) -> Result<u64> {
        self.write(|t| {
            let mut info = bank_row(t, name, true)?;
            if let Some(e) = entries.iter().find(|e| e.hash.kind() != info.kind) {
                return Err(Error::KindMismatch { expected: info.kind.name(), found: e.hash.kind().name() });
            }
            let first = info.next_id;
            if entries.is_empty() {
                return Ok(first);
            }
            let n = entries.len() as u64;
            if first + n > MAX_ENTRIES {
                return Err(Error::InvalidInput(format!("bank '{name}' would exceed {MAX_ENTRIES} entries")));
            }
            t.execute(
                "UPDATE pharos_banks SET next_id = next_id + $2 WHERE uid = $1",
                &[&(info.uid as i64), &(n as i64)],
            )
            .map_err(pg_err)?;
            let uid = info.uid as i64;
            let now = now_ms() as i64;
            let sink = t
                .copy_in("COPY pharos_entries (bank, id, hash, added_ms, meta, disabled_until) FROM STDIN (FORMAT binary)")
                .map_err(pg_err)?;
            let mut w = BinaryCopyInWriter::new(
                sink,
                &[Type::INT8, Type::INT8, Type::BYTEA, Type::INT8, Type::JSONB, Type::INT8],
            );
            let mut hash = Vec::with_capacity(32);
            for (i, e) in entries.iter().enumerate() {
                hash.clear();
                e.hash.write_bytes(&mut hash);
                let id = (first + i as u64) as i64;
                let added = e.added_ms.map_or(now, |t| t.min(i64::MAX as u64) as i64);
                let meta = meta_json(&e.meta);
                let until = until_of(e.state);
                w.write(&[&uid, &id, &hash, &added, &meta, &until]).map_err(pg_err)?;
            }
            w.finish().map_err(pg_err)?;
            info.next_id = first + n;
            log_change(t, &info, "added", Some(first), Some(n), None)?;
            Ok(first)
        })
    }

    fn remove(&self, name: &str, ids: &[u64]) -> Result<()> {
        self.write(|t| {
            let info = bank_row(t, name, true)?;
            let rows = t
                .query(
                    "UPDATE pharos_entries SET removed_ms = $3, meta = NULL, disabled_until = NULL \
                     WHERE bank = $1 AND id = ANY($2) AND removed_ms IS NULL RETURNING id",
                    &[&(info.uid as i64), &i64s(ids), &(now_ms() as i64)],
                )
                .map_err(pg_err)?;
            let mut done: HashMap<u64, bool> =
                rows.iter().map(|r| (r.get::<_, i64>(0) as u64, false)).collect();
            // Every id must name a live entry, once: the first that does not fails the whole call.
            for &id in ids {
                match done.get_mut(&id) {
                    Some(seen @ false) => *seen = true,
                    _ => return Err(Error::UnknownEntry { bank: name.to_string(), id }),
                }
            }
            t.execute(
                "UPDATE pharos_banks SET removed = removed + $2 WHERE uid = $1",
                &[&(info.uid as i64), &(ids.len() as i64)],
            )
            .map_err(pg_err)?;
            log_change(t, &info, "removed", None, None, Some(ids))
        })
    }

    fn update(&self, name: &str, updates: &[(u64, EntryUpdate)]) -> Result<Vec<(EntryMeta, EntryState)>> {
        self.write(|t| {
            let info = bank_row(t, name, true)?;
            let ids: Vec<u64> = updates.iter().map(|(id, _)| *id).collect();
            let rows = t
                .query(
                    "SELECT id, meta, disabled_until FROM pharos_entries \
                     WHERE bank = $1 AND id = ANY($2) AND removed_ms IS NULL FOR UPDATE",
                    &[&(info.uid as i64), &i64s(&ids)],
                )
                .map_err(pg_err)?;
            let mut now: HashMap<u64, (EntryMeta, EntryState)> = HashMap::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = r.get(0);
                now.insert(id as u64, (meta_of(name, id, r.get(1))?, state_of(r.get(2))));
            }
            let mut out = Vec::with_capacity(updates.len());
            for (id, u) in updates {
                let Some((meta, state)) = now.get_mut(id) else {
                    return Err(Error::UnknownEntry { bank: name.to_string(), id: *id });
                };
                u.apply(meta);
                if let Some(s) = u.state {
                    *state = s;
                }
                out.push((meta.clone(), *state));
            }
            let mut changed: Vec<u64> = now.keys().copied().collect();
            changed.sort_unstable();
            let metas: Vec<Option<serde_json::Value>> =
                changed.iter().map(|id| meta_json(&now[id].0)).collect();
            let untils: Vec<Option<i64>> = changed.iter().map(|id| until_of(now[id].1)).collect();
            t.execute(
                "UPDATE pharos_entries e SET meta = u.meta, disabled_until = u.until \
                 FROM unnest($2::bigint[], $3::jsonb[], $4::bigint[]) AS u(id, meta, until) \
                 WHERE e.bank = $1 AND e.id = u.id",
                &[&(info.uid as i64), &i64s(&changed), &metas, &untils],
            )
            .map_err(pg_err)?;
            log_change(t, &info, "updated", None, None, Some(&changed))?;
            Ok(out)
        })
    }

    fn load(&self, name: &str) -> Result<StoredBank> {
        self.load_from(name, 0)
    }

    fn load_from(&self, name: &str, first: u64) -> Result<StoredBank> {
        self.read(|t| {
            let info = bank_row(t, name, false)?;
            read_rows(t, info, first)
        })
    }

    fn entry_states(&self, name: &str, ids: &[u64]) -> Result<Vec<Option<EntryState>>> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT e.id, e.disabled_until FROM pharos_entries e JOIN pharos_banks b ON b.uid = e.bank \
                     WHERE b.name = $1 AND e.id = ANY($2) AND e.removed_ms IS NULL",
                    &[&name, &i64s(ids)],
                )
                .map_err(pg_err)?;
            let states: HashMap<u64, EntryState> =
                rows.iter().map(|r| (r.get::<_, i64>(0) as u64, state_of(r.get(1)))).collect();
            Ok(ids.iter().map(|id| states.get(id).copied()).collect())
        })
    }

    fn metas(&self, name: &str, ids: &[u64]) -> Result<Vec<EntryMeta>> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT e.id, e.meta FROM pharos_entries e JOIN pharos_banks b ON b.uid = e.bank \
                     WHERE b.name = $1 AND e.id = ANY($2) AND e.meta IS NOT NULL",
                    &[&name, &i64s(ids)],
                )
                .map_err(pg_err)?;
            let mut found = HashMap::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = r.get(0);
                found.insert(id as u64, meta_of(name, id, r.get(1))?);
            }
            Ok(ids.iter().map(|id| found.get(id).cloned().unwrap_or_default()).collect())
        })
    }

    fn ids_by_external_id(&self, name: &str, external_ids: &[String]) -> Result<Vec<(String, Vec<u64>)>> {
        self.read(|t| {
            let info = bank_row(t, name, false)?;
            let rows = t
                .query(
                    "SELECT meta ->> 'external_id', id FROM pharos_entries \
                     WHERE bank = $1 AND removed_ms IS NULL AND meta ? 'external_id' \
                     AND meta ->> 'external_id' = ANY($2) ORDER BY id",
                    &[&(info.uid as i64), &external_ids],
                )
                .map_err(pg_err)?;
            let mut out: Vec<(String, Vec<u64>)> =
                external_ids.iter().map(|e| (e.clone(), Vec::new())).collect();
            for r in &rows {
                let (ext, id): (String, i64) = (r.get(0), r.get(1));
                for (want, ids) in out.iter_mut() {
                    if *want == ext {
                        ids.push(id as u64);
                    }
                }
            }
            Ok(out)
        })
    }

    fn for_each_entry(&self, name: &str, f: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
        // The dump without the removed rows (their tombstones are small: a hash and two times).
        self.dump(name, &mut |r| if r.removed_ms.is_none() { f(r.entry) } else { Ok(()) }).map(drop)
    }

    fn append_audit(&self, records: &[AuditRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let times: Vec<i64> = records.iter().map(|r| r.time_ms.min(i64::MAX as u64) as i64).collect();
        let json: Vec<serde_json::Value> =
            records.iter().map(|r| serde_json::to_value(r).expect("audit records serialise")).collect();
        self.with(|c| {
            c.execute(
                "INSERT INTO pharos_audit (time_ms, record) SELECT * FROM unnest($1::bigint[], $2::jsonb[])",
                &[&times, &json],
            )
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn for_each_audit(
        &self,
        filter: &AuditFilter,
        f: &mut dyn FnMut(AuditRecord) -> Result<()>,
    ) -> Result<()> {
        let since = filter.since_ms.unwrap_or(0).min(i64::MAX as u64) as i64;
        let until = filter.until_ms.unwrap_or(u64::MAX).min(i64::MAX as u64) as i64;
        self.read(|t| {
            let params: [&(dyn ToSql + Sync); 2] = [&since, &until];
            let mut rows = t
                .query_raw(
                    "SELECT seq, record::text FROM pharos_audit WHERE time_ms >= $1 AND time_ms < $2 \
                     ORDER BY time_ms, seq",
                    params,
                )
                .map_err(pg_err)?;
            let mut n = 0usize;
            while let Some(r) = rows.next().map_err(pg_err)? {
                if filter.limit.is_some_and(|l| n >= l) {
                    break;
                }
                let (seq, text): (i64, &str) = (r.get(0), r.get(1));
                let rec: AuditRecord = serde_json::from_str(text)
                    .map_err(|e| bad_row(format!("audit record {seq} is corrupt: {e}")))?;
                if filter.wants(&rec) {
                    n += 1;
                    f(rec)?;
                }
            }
            Ok(())
        })
    }

    fn prune_audit(&self, before_ms: u64, max: usize) -> Result<usize> {
        let before = before_ms.min(i64::MAX as u64) as i64;
        self.with(|c| {
            let n = c
                .execute(
                    "DELETE FROM pharos_audit WHERE seq IN \
                     (SELECT seq FROM pharos_audit WHERE time_ms < $1 ORDER BY time_ms, seq LIMIT $2)",
                    &[&before, &(max as i64)],
                )
                .map_err(pg_err)?;
            Ok(n as usize)
        })
    }

    fn dump(&self, name: &str, f: &mut dyn FnMut(DumpRow) -> Result<()>) -> Result<BankInfo> {
        self.read(|t| {
            let info = bank_row(t, name, false)?;
            let sql = format!(
                "COPY (SELECT id, hash, added_ms, meta::text, disabled_until, removed_ms FROM pharos_entries \
                 WHERE bank = {} ORDER BY id) TO STDOUT (FORMAT binary)",
                info.uid as i64
            );
            let reader = t.copy_out(sql.as_str()).map_err(pg_err)?;
            let types = [Type::INT8, Type::BYTEA, Type::INT8, Type::TEXT, Type::INT8, Type::INT8];
            let mut it = BinaryCopyOutIter::new(reader, &types);
            let (size, mut expect) = (hash_size(info.kind), 0u64);
            while let Some(row) = it.next().map_err(pg_err)? {
                let id = row.get::<i64>(0) as u64;
                let hash: &[u8] = row.get(1);
                if id != expect || hash.len() != size {
                    return Err(bad_row(format!("bank '{name}': row {id} where id {expect} was due")));
                }
                let meta = match row.get::<Option<&str>>(3) {
                    None => EntryMeta::default(),
                    Some(s) => serde_json::from_str(s).map_err(|e| {
                        bad_row(format!("bank '{name}': fields of entry {id} are corrupt: {e}"))
                    })?,
                };
                let entry = Entry {
                    id,
                    hash: AnyHash::from_bytes(info.kind, hash),
                    meta,
                    added_ms: row.get::<i64>(2) as u64,
                    state: state_of(row.get(4)),
                };
                f(DumpRow { entry, removed_ms: row.get::<Option<i64>>(5).map(|t| t as u64) })?;
                expect += 1;
            }
            if expect != info.next_id {
                return Err(bad_row(format!(
                    "bank '{name}': {expect} rows, the bank record says {}",
                    info.next_id
                )));
            }
            Ok(info)
        })
    }

    fn restore_bank(&self, info: &BankInfo) -> Result<()> {
        self.write(|t| insert_bank(t, &info.name, info.kind, info.created_ms, info.policy)).map(drop)
    }

    fn restore_rows(&self, name: &str, rows: &[DumpRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(|t| {
            let mut info = bank_row(t, name, true)?;
            let first = info.next_id;
            let n = rows.len() as u64;
            if first + n > MAX_ENTRIES {
                return Err(Error::InvalidInput(format!("bank '{name}' would exceed {MAX_ENTRIES} entries")));
            }
            let sink = t
                .copy_in(
                    "COPY pharos_entries (bank, id, hash, added_ms, meta, disabled_until, removed_ms) \
                     FROM STDIN (FORMAT binary)",
                )
                .map_err(pg_err)?;
            let types =
                [Type::INT8, Type::INT8, Type::BYTEA, Type::INT8, Type::JSONB, Type::INT8, Type::INT8];
            let mut w = BinaryCopyInWriter::new(sink, &types);
            let (uid, mut removed, mut hash) = (info.uid as i64, 0i64, Vec::with_capacity(32));
            for (i, r) in rows.iter().enumerate() {
                let id = first + i as u64;
                check_restored(name, r, id, info.kind)?;
                hash.clear();
                r.entry.hash.write_bytes(&mut hash);
                let removed_ms = r.removed_ms.map(|t| t.min(i64::MAX as u64) as i64);
                removed += i64::from(removed_ms.is_some());
                let (added, meta, until) = (
                    r.entry.added_ms.min(i64::MAX as u64) as i64,
                    meta_json(&r.entry.meta),
                    until_of(r.entry.state),
                );
                w.write(&[&uid, &(id as i64), &hash, &added, &meta, &until, &removed_ms]).map_err(pg_err)?;
            }
            w.finish().map_err(pg_err)?;
            t.execute(
                "UPDATE pharos_banks SET next_id = next_id + $2, removed = removed + $3 WHERE uid = $1",
                &[&uid, &(n as i64), &removed],
            )
            .map_err(pg_err)?;
            info.next_id = first + n;
            log_change(t, &info, "added", Some(first), Some(n), None)
        })
    }

    fn log_position(&self) -> Result<Option<u64>> {
        self.with(|c| {
            let r = c.query_one("SELECT seq FROM pharos_log_head", &[]).map_err(pg_err)?;
            Ok(Some(r.get::<_, i64>(0) as u64))
        })
    }

    fn changes_after(&self, seq: u64, max: usize) -> Result<Vec<Change>> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT seq, time_ms, bank_uid, bank, op, first_id, count, ids FROM pharos_changes \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&(seq as i64), &(max as i64)],
                )
                .map_err(pg_err)?;
            rows.iter()
                .map(|r| {
                    let seq = r.get::<_, i64>(0) as u64;
                    let op: &str = r.get(4);
                    let ids = || -> Vec<u64> {
                        r.get::<_, Option<Vec<i64>>>(7)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|i| i as u64)
                            .collect()
                    };
                    let op = match op {
                        "created" => ChangeOp::Created,
                        "deleted" => ChangeOp::Deleted,
                        "policy" => ChangeOp::PolicySet,
                        "added" => ChangeOp::Added {
                            first: r.get::<_, Option<i64>>(5).unwrap_or(0) as u64,
                            count: r.get::<_, Option<i64>>(6).unwrap_or(0) as u64,
                        },
                        "removed" => ChangeOp::Removed { ids: ids() },
                        "updated" => ChangeOp::Updated { ids: ids() },
                        other => return Err(bad_row(format!("change {seq} has an unknown op '{other}'"))),
                    };
                    Ok(Change {
                        seq,
                        time_ms: r.get::<_, i64>(1) as u64,
                        bank_uid: r.get::<_, i64>(2) as u64,
                        bank: r.get(3),
                        op,
                    })
                })
                .collect()
        })
    }

    fn prune_changes(&self, before_ms: u64) -> Result<usize> {
        let before = before_ms.min(i64::MAX as u64) as i64;
        self.with(|c| {
            let n = c
                .execute(
                    "DELETE FROM pharos_changes WHERE time_ms < $1 AND seq < (SELECT seq FROM pharos_log_head)",
                    &[&before],
                )
                .map_err(pg_err)?;
            Ok(n as usize)
        })
    }

    fn watch(&self) -> Result<Option<Box<dyn ChangeWatch>>> {
        let mut client = self.connect()?;
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            discard(vec![client]);
            return Err(pg_err(e));
        }
        Ok(Some(Box::new(PgWatchInner { client: Some(client) })))
    }
}

#[cfg(test)]
mod tests {
    use super::{describe_url, redact_url};

    #[test]
    fn passwords_never_show() {
        let u = "postgres://pharos:s3cret@db.example:5433/banks?sslmode=disable";
        assert_eq!(redact_url(u), "postgres://pharos:***@db.example:5433/banks?sslmode=disable");
        assert_eq!(describe_url(u), "postgres://db.example:5433/banks");
        assert_eq!(
            redact_url("postgres://db/banks?user=a&password=s3cret&x=1"),
            "postgres://db/banks?user=a&password=***&x=1"
        );
        assert_eq!(
            redact_url("host=db user=a password=s3cret dbname=b"),
            "host=db user=a password=*** dbname=b"
        );
        assert_eq!(redact_url("postgres://pharos@db/banks"), "postgres://pharos@db/banks");
        assert!(!describe_url("host=db password=s3cret dbname=b").contains("s3cret"));
    }

    #[test]
    fn libpq_tls_options_the_client_lacks_are_taken_out() {
        use super::split_tls_options;
        use std::path::PathBuf;
        assert_eq!(
            split_tls_options(
                "postgres://u@db/b?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=3"
            ),
            (
                "postgres://u@db/b?sslmode=require&connect_timeout=3".into(),
                Some(PathBuf::from("/etc/ca.pem"))
            )
        );
        assert_eq!(
            split_tls_options("postgres://u@db/b?sslrootcert=/ca"),
            ("postgres://u@db/b".into(), Some("/ca".into()))
        );
        assert_eq!(split_tls_options("postgres://u@db/b"), ("postgres://u@db/b".into(), None));
        assert_eq!(
            split_tls_options("host=db sslmode=verify-ca sslrootcert=/ca dbname=b"),
            ("host=db sslmode=require dbname=b".into(), Some("/ca".into()))
        );
    }
}
