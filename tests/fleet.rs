//! The fleet (issue 13): `pharos serve` replicas sharing banks through a real PostgreSQL (Debian's package,
//! a throwaway cluster per test from `scripts/setup-postgres.sh`, so one test's outage cannot touch another).
//!
//! - two replicas on one database: creates, adds, removals, disables, deletes and re-creates made through
//!   either reach the other, and the propagation time of 1,000 single-entry writes (ack on A → visible on
//!   B) is printed as p50/p99 (figures in BENCHMARKS.md; no timing is asserted beyond a generous bound);
//! - `kill -9` of a replica in the middle of `AddHashes` loses no acknowledged entry: every one is on the
//!   other replica, in the database, and on the killed one after it restarts;
//! - PostgreSQL stopped for 10 s under a steady `HashAndMatch` load: no match fails, writes answer
//!   UNAVAILABLE, the store's health name says NOT_SERVING while the server's stays SERVING, the audit of
//!   the matches made meanwhile reaches the database afterwards, and both replicas catch up;
//! - `pharos migrate` both ways, TLS to PostgreSQL with a verified certificate, replicas starting at once
//!   (migrations applied once), a replica behind a pruned change log.
//!
//! Skipped when PostgreSQL cannot be installed or started, except under CI or PHAROS_REQUIRE_POSTGRES=1.

use crate::common::daemon::Daemon;
use pharos::server::proto::{self, banks_client::BanksClient, matcher_client::MatcherClient};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

/// A throwaway PostgreSQL cluster, stopped and deleted on drop.
struct Pg {
    dir: String,
    url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-postgres.sh")
}

impl Pg {
    /// Starts one, or returns `None` (the test skips) when that is impossible and not required.
    fn start() -> Option<Pg> {
        let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
            || std::env::var("PHAROS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let out = Command::new("bash").arg(script()).arg("start").output().expect("run setup-postgres.sh");
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            assert!(!required, "PostgreSQL is required here and could not be started:\n{why}");
            eprintln!("fleet: skipped, no PostgreSQL: {why}");
            return None;
        }
        let text = String::from_utf8(out.stdout).unwrap();
        let var = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap().trim().to_string()
        };
        Some(Pg { dir: var("PHAROS_TEST_PGDIR"), url: var("PHAROS_TEST_DATABASE_URL") })
    }

    fn run(&self, what: &str) {
        let out = Command::new("bash").arg(script()).args([what, &self.dir]).output().unwrap();
        assert!(out.status.success(), "setup-postgres.sh {what}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// One number from the database (on a blocking thread: the sync client must not live on an async one).
    async fn count(&self, sql: &'static str) -> i64 {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query_one(sql, &[]).unwrap().get::<_, i64>(0)
        })
        .await
        .unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["stop", &self.dir]).output();
    }
}

/// A replica on `pg`, with its own data directory (the audit spool) and log.
fn replica(pg: &Pg, dir: &Path, name: &str) -> Daemon {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    Daemon::start_with(
        &dir.join(name),
        dir.join(format!("{name}.log")),
        ["--metrics", "127.0.0.1:0", "--database-url", &pg.url, "--max-batch", "4"],
        &[("PHAROS_LOG", "pharos=debug")],
    )
}

async fn channel(d: &Daemon) -> Channel {
    Channel::from_shared(format!("http://{}", d.addr)).unwrap().connect().await.unwrap()
}

/// A deterministic pseudo-random PDQ hash (random 256-bit hashes are ~128 bits apart: never near each other).
fn random_pdq(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

fn entry(hash: &str, label: &str) -> proto::NewEntry {
    proto::NewEntry { hash: hash.into(), label: label.into(), ..Default::default() }
}

async fn add(
    c: &mut BanksClient<Channel>,
    bank: &str,
    entries: Vec<proto::NewEntry>,
) -> Result<u64, tonic::Status> {
    let req = proto::AddHashesRequest { bank: bank.into(), entries };
    let r = c.add_hashes(tokio_stream::iter(vec![req])).await?.into_inner();
    Ok(r.first_id.unwrap_or(0))
}

/// The ids of `bank` matching `hash` exactly (radius 0) on one replica.
async fn ids_matching(m: &mut MatcherClient<Channel>, bank: &str, hash: &str) -> Vec<u64> {
    let req = proto::MatchRequest {
        hash: hash.into(),
        banks: vec![bank.into()],
        radius: Some(0),
        ..Default::default()
    };
    match m.r#match(req).await {
        Ok(r) => r.into_inner().matches.iter().map(|x| x.id).collect(),
        Err(s) if s.code() == Code::NotFound => Vec::new(), // the bank has not reached this replica yet
        Err(s) => panic!("Match failed: {s}"),
    }
}

/// Polls `cond` every millisecond until it holds (panics after `limit`); how long it took.
async fn until<F, Fut>(what: &str, limit: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn bank_sizes(c: &mut BanksClient<Channel>) -> HashMap<String, (u64, i32)> {
    let r = c.list_banks(proto::ListBanksRequest {}).await.unwrap().into_inner();
    r.banks.into_iter().map(|b| (b.name, (b.size, b.kind))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_every_kind_of_write_and_propagate_within_a_second() {
    let Some(pg) = tokio::task::spawn_blocking(Pg::start).await.unwrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&pg, dir.path(), "a"), replica(&pg, dir.path(), "b"));
    let (ca, cb) = (channel(&a).await, channel(&b).await);
    let (mut banks_a, mut banks_b) = (BanksClient::new(ca.clone()), BanksClient::new(cb.clone()));
    let (mut match_a, mut match_b) = (MatcherClient::new(ca), MatcherClient::new(cb));

    // A bank created on A appears on B.
    let create = |name: &str, kind: proto::HashKind| proto::CreateBankRequest {
        name: name.into(),
        kind: kind as i32,
        policy: None,
    };
    banks_a.create_bank(create("fleet", proto::HashKind::Pdq)).await.unwrap();
    until("the bank on B", Duration::from_secs(5), || {
        let mut c = banks_b.clone();
        async move { bank_sizes(&mut c).await.contains_key("fleet") }
    })
    .await;
    let err = banks_b.create_bank(create("fleet", proto::HashKind::Pdq)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Added on A → matches on B; removed on B → no longer matches on A.
    let (h1, h2) = (random_pdq(1), random_pdq(2));
    let id1 = add(&mut banks_a, "fleet", vec![entry(&h1, "one")]).await.unwrap();
    let id2 = add(&mut banks_b, "fleet", vec![entry(&h2, "two")]).await.unwrap();
    assert_eq!((id1, id2), (0, 1), "ids are assigned by the database, in order, whoever writes");
    for (m, h, id) in [(&mut match_b, &h1, id1), (&mut match_a, &h2, id2)] {
        let m2 = m.clone();
        let h = h.clone();
        until("an add on the other replica", Duration::from_secs(5), move || {
            let (mut m, h) = (m2.clone(), h.clone());
            async move { ids_matching(&mut m, "fleet", &h).await == vec![id] }
        })
        .await;
    }
    let r = match_b
        .r#match(proto::MatchRequest { hash: h1.clone(), radius: Some(0), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matches[0].label, "one", "the fields come from the database");
    banks_b.remove_hashes(proto::RemoveHashesRequest { bank: "fleet".into(), ids: vec![id1] }).await.unwrap();
    assert!(
        ids_matching(&mut match_b, "fleet", &h1).await.is_empty(),
        "the writer shows its own write at once"
    );
    until("a removal on the other replica", Duration::from_secs(5), || {
        let mut m = match_a.clone();
        let h = h1.clone();
        async move { ids_matching(&mut m, "fleet", &h).await.is_empty() }
    })
    .await;

    // Disabled on B → no match on A; enabled on A → matches on B again.
    let update = |state: proto::EntryState| proto::UpdateEntriesRequest {
        bank: "fleet".into(),
        ids: vec![id2],
        state: Some(state as i32),
        ..Default::default()
    };
    banks_b.update_entries(update(proto::EntryState::Disabled)).await.unwrap();
    until("a disable on the other replica", Duration::from_secs(5), || {
        let mut m = match_a.clone();
        let h = h2.clone();
        async move { ids_matching(&mut m, "fleet", &h).await.is_empty() }
    })
    .await;
    banks_a.update_entries(update(proto::EntryState::Active)).await.unwrap();
    until("an enable on the other replica", Duration::from_secs(5), || {
        let mut m = match_b.clone();
        let h = h2.clone();
        async move { ids_matching(&mut m, "fleet", &h).await == vec![id2] }
    })
    .await;

    // Deleted on A and created again on B with another kind: A follows the new incarnation.
    banks_a.create_bank(create("again", proto::HashKind::Pdq)).await.unwrap();
    add(&mut banks_a, "again", vec![entry(&random_pdq(3), "")]).await.unwrap();
    banks_a.delete_bank(proto::DeleteBankRequest { name: "again".into() }).await.unwrap();
    banks_b.create_bank(create("again", proto::HashKind::Phash)).await.unwrap();
    until("a re-created bank on the other replica", Duration::from_secs(5), || {
        let mut c = banks_a.clone();
        async move { bank_sizes(&mut c).await.get("again") == Some(&(0, proto::HashKind::Phash as i32)) }
    })
    .await;

    // 1,000 single-entry writes through A: from A's acknowledgement to a match on B.
    let mut delays = Vec::with_capacity(1000);
    for i in 0..1000u64 {
        let h = random_pdq(1000 + i);
        add(&mut banks_a, "fleet", vec![entry(&h, "")]).await.unwrap();
        let d = until("a write on the other replica", Duration::from_secs(10), || {
            let mut m = match_b.clone();
            let h = h.clone();
            async move { !ids_matching(&mut m, "fleet", &h).await.is_empty() }
        })
        .await;
        delays.push(d);
    }
    delays.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fleet: propagation A→B over 1000 writes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(delays[499]),
        ms(delays[989]),
        ms(delays[999])
    );

    // Both replicas and the database agree.
    let live = pg.count("SELECT count(*) FROM pharos_entries e JOIN pharos_banks b ON b.uid = e.bank WHERE b.name = 'fleet' AND removed_ms IS NULL").await;
    assert_eq!(live, 1001);
    assert_eq!(bank_sizes(&mut banks_a).await["fleet"].0, 1001);
    assert_eq!(bank_sizes(&mut banks_b).await["fleet"].0, 1001);
    let metrics = crate::trust::metrics_text(b.metrics_addr.as_deref().expect("metrics on")).await;
    assert!(metrics.contains("pharos_replication_delay_seconds_count"), "{metrics}");
    assert!(metrics.contains("pharos_store_available 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_the_middle_of_add_hashes_loses_no_acknowledged_entry() {
    let Some(pg) = tokio::task::spawn_blocking(Pg::start).await.unwrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = (replica(&pg, dir.path(), "a"), replica(&pg, dir.path(), "b"));
    let mut banks_a = BanksClient::new(channel(&a).await);
    let mut banks_b = BanksClient::new(channel(&b).await);
    banks_a
        .create_bank(proto::CreateBankRequest {
            name: "k9".into(),
            kind: proto::HashKind::Pdq as i32,
            policy: None,
        })
        .await
        .unwrap();

    // Four writers add batches of 50 through A until it dies; each keeps what was acknowledged.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let mut c = banks_a.clone();
        writers.push(tokio::spawn(async move {
            let mut acked: Vec<(u64, String)> = Vec::new();
            for batch in 0u64.. {
                let hashes: Vec<String> = (0..50).map(|i| random_pdq((w << 40) | (batch << 8) | i)).collect();
                let entries = hashes.iter().map(|h| entry(h, "k9")).collect();
                match add(&mut c, "k9", entries).await {
                    Ok(first) => {
                        acked.extend(hashes.into_iter().enumerate().map(|(i, h)| (first + i as u64, h)))
                    }
                    Err(_) => return acked,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    let mut acked: Vec<(u64, String)> = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() >= 200, "the writers got going before the kill ({} acknowledged)", acked.len());

    // Every acknowledged entry, with its hash, on B; then on A after its restart.
    async fn exported(c: &mut BanksClient<Channel>) -> HashMap<u64, String> {
        let mut s = c.export_bank(proto::ExportBankRequest { bank: "k9".into() }).await.unwrap().into_inner();
        let mut out = HashMap::new();
        while let Some(e) = s.message().await.unwrap() {
            out.insert(e.id, e.hash);
        }
        out
    }
    let check = |got: &HashMap<u64, String>, who: &str| {
        for (id, h) in &acked {
            assert_eq!(got.get(id), Some(h), "acknowledged entry {id} on {who}");
        }
    };
    let on_b = exported(&mut banks_b).await;
    check(&on_b, "B");
    let in_db = pg.count("SELECT count(*) FROM pharos_entries WHERE removed_ms IS NULL").await;
    assert_eq!(on_b.len() as i64, in_db, "B exports what the database holds");
    until("B's index holds every committed entry", Duration::from_secs(5), || {
        let mut c = banks_b.clone();
        async move { bank_sizes(&mut c).await["k9"].0 as i64 == in_db }
    })
    .await;
    let a = replica(&pg, dir.path(), "a");
    let mut banks_a = BanksClient::new(channel(&a).await);
    check(&exported(&mut banks_a).await, "A after its restart");
    assert_eq!(bank_sizes(&mut banks_a).await["k9"].0 as i64, in_db);
    println!("fleet: kill -9 during AddHashes: {} acknowledged, {in_db} committed, all present", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_for_10_s_under_load_fails_no_match_and_both_replicas_catch_up() {
    let Some(pg) = tokio::task::spawn_blocking(Pg::start).await.unwrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&pg, dir.path(), "a"), replica(&pg, dir.path(), "b"));
    let (ca, cb) = (channel(&a).await, channel(&b).await);
    let mut banks_a = BanksClient::new(ca.clone());
    let mut banks_b = BanksClient::new(cb.clone());

    // A bank holding the PDQ of a few corpus images, so the load's matches hit (and are audited).
    // The four smallest files of the corpus: the load is about the store, not about decoding.
    let mut paths: Vec<PathBuf> = crate::common::rows().iter().map(|r| r.path()).collect();
    paths.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(u64::MAX));
    let images: Vec<Vec<u8>> = paths.iter().take(4).map(|p| std::fs::read(p).unwrap()).collect();
    banks_a
        .create_bank(proto::CreateBankRequest {
            name: "out".into(),
            kind: proto::HashKind::Pdq as i32,
            policy: None,
        })
        .await
        .unwrap();
    let mut hasher = proto::hasher_client::HasherClient::new(ca.clone());
    let mut entries = Vec::new();
    for img in &images {
        let r = hasher
            .hash(proto::HashRequest { image: img.clone().into(), ..Default::default() })
            .await
            .unwrap();
        let Some(proto::hash_response::Outcome::Hashes(h)) = r.into_inner().outcome else {
            panic!("hash failed")
        };
        entries.push(entry(&h.pdq_hex, "corpus"));
    }
    add(&mut banks_a, "out", entries).await.unwrap();
    until("the bank on B", Duration::from_secs(5), || {
        let mut c = banks_b.clone();
        async move { bank_sizes(&mut c).await.get("out").is_some_and(|s| s.0 == 4) }
    })
    .await;

    // A steady HashAndMatch load on both replicas until told to stop: (answers, failures, matched).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for ch in [ca.clone(), cb.clone()] {
        let (stop, images) = (stop.clone(), images.clone());
        load.push(tokio::spawn(async move {
            let mut m = MatcherClient::new(ch);
            let (mut ok, mut failed, mut matched) = (0u64, Vec::new(), 0u64);
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = proto::HashAndMatchRequest {
                    id: i.to_string(),
                    image: images[i % images.len()].clone().into(),
                    banks: vec!["out".into()],
                    ..Default::default()
                };
                i += 1;
                match m.hash_and_match(tokio_stream::iter(vec![req])).await {
                    Ok(r) => {
                        let mut s = r.into_inner();
                        while let Some(item) = s.message().await.transpose() {
                            match item.map(|x| x.outcome) {
                                Ok(Some(proto::hash_and_match_response::Outcome::Result(r))) => {
                                    ok += 1;
                                    matched += u64::from(!r.matches.is_empty());
                                }
                                other => failed.push(format!("{other:?}")),
                            }
                        }
                    }
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed, matched)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The outage.
    let pg_dir = pg.dir.clone();
    tokio::task::spawn_blocking({
        let pg = Pg { dir: pg_dir.clone(), url: String::new() };
        move || {
            pg.run("pause");
            std::mem::forget(pg); // not dropped: that would delete the cluster
        }
    })
    .await
    .unwrap();
    let down = Instant::now();
    let mut health = HealthClient::new(ca.clone());
    let status = |h: &mut HealthClient<Channel>, service: &str| {
        let (mut h, service) = (h.clone(), service.to_string());
        async move { h.check(HealthCheckRequest { service }).await.unwrap().into_inner().status }
    };
    until("the store's health says NOT_SERVING", Duration::from_secs(8), || {
        let f = status(&mut health, pharos::server::STORE_HEALTH);
        async move { f.await == ServingStatus::NotServing as i32 }
    })
    .await;
    assert_eq!(
        status(&mut health, "").await,
        ServingStatus::Serving as i32,
        "the server itself keeps serving"
    );
    for c in [&mut banks_a, &mut banks_b] {
        let err = add(c, "out", vec![entry(&random_pdq(77), "")]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "a write while the database is down: {err:?}");
    }
    let sizes = bank_sizes(&mut banks_b).await;
    assert_eq!(sizes["out"].0, 4, "listing works from memory");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    tokio::task::spawn_blocking(move || {
        let pg = Pg { dir: pg_dir, url: String::new() };
        pg.run("resume");
        std::mem::forget(pg);
    })
    .await
    .unwrap();

    // Back: health recovers, writes work and reach the other replica, the load saw no failure.
    until("the store's health says SERVING again", Duration::from_secs(15), || {
        let f = status(&mut health, pharos::server::STORE_HEALTH);
        async move { f.await == ServingStatus::Serving as i32 }
    })
    .await;
    let h = random_pdq(78);
    let first = until("a write after the outage", Duration::from_secs(10), || {
        let (mut c, h) = (banks_b.clone(), h.clone());
        async move { add(&mut c, "out", vec![entry(&h, "after")]).await.is_ok() }
    })
    .await;
    let _ = first;
    let match_a = MatcherClient::new(ca.clone());
    until("the write after the outage on A", Duration::from_secs(5), || {
        let (mut m, h) = (match_a.clone(), h.clone());
        async move { !ids_matching(&mut m, "out", &h).await.is_empty() }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut matched_total = 0;
    for l in load {
        let (ok, failed, matched) = l.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} of {} matches failed: {:?}",
            failed.len(),
            ok + failed.len() as u64,
            &failed[..failed.len().min(3)]
        );
        assert!(ok >= 5 && matched > 0, "the load ran ({ok} answers, {matched} with a match)");
        matched_total += matched;
    }
    let in_db = pg.count("SELECT count(*) FROM pharos_entries WHERE removed_ms IS NULL").await;
    assert_eq!(in_db, 5);
    for c in [&mut banks_a, &mut banks_b] {
        assert_eq!(bank_sizes(c).await["out"].0 as i64, in_db, "caught up with the database");
    }
    // Every matched answer was audited (in the replica's spool while the database was down); the spools
    // reach the database once it is back.
    let mut got = 0;
    for _ in 0..100 {
        got = pg.count("SELECT count(*) FROM pharos_audit WHERE record->>'event' = 'match'").await;
        if got >= matched_total as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = crate::trust::metrics_text(a.metrics_addr.as_deref().expect("metrics on")).await;
    let spooled: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pharos_audit_spooled_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap());
    assert!(spooled > 0.0, "matches during the outage were audited in the spool:\n{metrics}");
    assert!(got >= matched_total as i64, "audit records {got}, matched answers {matched_total}");
    println!("fleet: outage of 10 s: {matched_total} matched answers, none failed; {spooled} audit records spooled on A");
}

/// TLS to PostgreSQL: with `sslmode=verify-full&sslrootcert=CA` the store connects only to a server whose
/// certificate that CA signed for the host dialled; another CA is refused with a message that says so.
#[test]
fn tls_to_postgres_verifies_the_server_certificate() {
    use std::os::unix::fs::MetadataExt;
    let Some(pg) = Pg::start() else { return };
    let dir = Path::new(&pg.dir);
    let (ca, other) = (crate::trust::Pki::new("db-ca"), crate::trust::Pki::new("rogue-ca"));
    let (cert, key) = ca.leaf(&["127.0.0.1"], -1, 30);
    let owner = std::fs::metadata(dir.join("data")).unwrap();
    for (name, text) in [("server.crt", &cert), ("server.key", &key)] {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", dir.join("server.crt").display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", dir.join("server.key").display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        c.batch_execute(&sql).unwrap();
    }
    drop(c);
    std::thread::sleep(Duration::from_millis(500));
    let (good, bad) = (dir.join("ca.pem"), dir.join("rogue.pem"));
    std::fs::write(&good, &ca.ca_pem).unwrap();
    std::fs::write(&bad, &other.ca_pem).unwrap();
    let pharos = |root: &Path, args: &[&str]| {
        let url = format!("{}?sslmode=verify-full&sslrootcert={}", pg.url, root.display());
        Command::new(env!("CARGO_BIN_EXE_pharos"))
            .args(["bank"])
            .args(args)
            .args(["--database-url", &url])
            .output()
            .unwrap()
    };
    let out = pharos(&good, &["create", "secure", "--kind", "pdq"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = pharos(&good, &["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"secure\""));
    // (sslmode=require: the client would not have talked to a server without TLS at all.)
    let out = pharos(&bad, &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a server certificate from another CA was accepted");
    assert!(err.to_lowercase().contains("certificate"), "the refusal says why: {err}");
}

/// `pharos migrate` copies a redb store into PostgreSQL and back: every bank's export (ids, hashes,
/// fields, states) and the audit come out the same, removed ids stay removed, and a second copy onto the
/// same banks is refused without touching them.
#[test]
fn migrate_copies_redb_to_postgres_and_back_with_every_id_and_field() {
    let Some(pg) = Pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, back) = (dir.path().join("src"), dir.path().join("back"));
    let pharos = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut c = Command::new(env!("CARGO_BIN_EXE_pharos"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let s = src.to_str().unwrap();
    let csv: String = std::iter::once("hash,external_id,source,tags\n".to_string())
        .chain((0..40u64).map(|i| format!("{},case-{i},ncmec,tag{}\n", random_pdq(500 + i), i % 3)))
        .collect();
    for args in [
        vec!["bank", "create", "--data-dir", s, "cases", "--kind", "pdq"],
        vec!["bank", "create", "--data-dir", s, "benign", "--kind", "md5", "--negative"],
    ] {
        let (ok, _, err) = pharos(&args, None);
        assert!(ok, "{err}");
    }
    let (ok, _, err) = pharos(&["bank", "add", "--data-dir", s, "cases", "--format", "csv", "-"], Some(&csv));
    assert!(ok, "{err}");
    let (ok, _, err) =
        pharos(&["bank", "add", "--data-dir", s, "benign", "-"], Some("d41d8cd98f00b204e9800998ecf8427e\n"));
    assert!(ok, "{err}");
    for args in [
        vec!["bank", "remove", "--data-dir", s, "cases", "3", "17"],
        vec!["bank", "update", "--data-dir", s, "cases", "5", "--disable", "--note", "disputed"],
    ] {
        let (ok, _, err) = pharos(&args, None);
        assert!(ok, "{err}");
    }
    let export = |store: &[&str], bank: &str| {
        let mut args = vec!["bank", "export", bank];
        args.extend_from_slice(store);
        let (ok, out, err) = pharos(&args, None);
        assert!(ok, "{err}");
        out
    };
    let audit = |store: &[&str]| {
        let mut args = vec!["audit", "list"];
        args.extend_from_slice(store);
        let (ok, out, err) = pharos(&args, None);
        assert!(ok, "{err}");
        // The copy itself adds bank_exported records on the way; compare the changes only.
        out.lines().filter(|l| !l.contains("bank_exported")).map(String::from).collect::<Vec<_>>()
    };
    let redb = ["--data-dir", s];
    let (cases, benign, audit_src) = (export(&redb, "cases"), export(&redb, "benign"), audit(&redb));
    assert_eq!(cases.lines().count(), 1 + 38, "38 live entries and a header:\n{cases}");

    let (ok, out, err) = pharos(&["migrate", "--from", s, "--database-url", &pg.url], None);
    assert!(ok, "{err}");
    assert!(out.contains(r#""bank":"cases","kind":"pdq","rows":40,"live":38"#), "{out}");
    assert!(err.contains("counts and checksums match"), "{err}");
    let postgres = ["--database-url", pg.url.as_str()];
    assert_eq!(export(&postgres, "cases"), cases);
    assert_eq!(export(&postgres, "benign"), benign);
    assert!(audit(&postgres).starts_with(&audit_src), "the audit was copied in order");

    // Ids continue after the removed ones in PostgreSQL too.
    let (ok, _, err) = pharos(
        &["bank", "add", "--database-url", &pg.url, "cases", "-"],
        Some(&format!("{}\n", random_pdq(999))),
    );
    assert!(ok && err.contains("ids 40..41"), "{err}");

    let (ok, _, err) = pharos(&["migrate", "--from", s, "--database-url", &pg.url], None);
    assert!(!ok && err.contains("already has a bank named"), "a second copy is refused: {err}");
    assert_eq!(export(&postgres, "benign"), benign, "and changed nothing");

    let (ok, _, err) = pharos(&["migrate", "--to", back.to_str().unwrap(), "--database-url", &pg.url], None);
    assert!(ok, "{err}");
    let redb_back = ["--data-dir", back.to_str().unwrap()];
    assert_eq!(export(&redb_back, "benign"), benign);
    let cases_back = export(&redb_back, "cases");
    assert_eq!(cases_back.lines().count(), 1 + 39);
    assert!(
        cases_back.starts_with(&cases),
        "the same entries, then the one added in PostgreSQL:\n{cases_back}"
    );
}

/// A replica further behind than the change log reaches (its changes were pruned) notices the gap and
/// reads every bank again, instead of skipping what it missed; one that is current applies changes one by
/// one. In-process, on the library, so the replica can be held still while another writer goes on.
#[test]
fn a_replica_behind_a_pruned_change_log_reads_every_bank_again() {
    use pharos::banks::{BankQuery, BankSet, SearchPolicy};
    use pharos::matcher::{AnyHash, Kind};
    use pharos::store::{BankStore, NewEntry, PgStore};
    use std::sync::Arc;
    let Some(pg) = Pg::start() else { return };
    let writer = PgStore::open(&pg.url).unwrap();
    writer.create_bank_with("kept", Kind::Pdq, Default::default()).unwrap();
    writer.create_bank_with("dropped", Kind::Pdq, Default::default()).unwrap();
    let hash = |i: u64| AnyHash::parse(Kind::Pdq, &random_pdq(i)).unwrap();
    writer.add("kept", &[NewEntry::new(hash(1))]).unwrap();
    let metrics = Arc::new(pharos::metrics::Metrics::new());
    let replica = BankSet::open_store(
        Arc::new(PgStore::open(&pg.url).unwrap()),
        None,
        None,
        metrics,
        SearchPolicy::default(),
    )
    .unwrap();
    let found = |set: &BankSet, i: u64| {
        !set.search(&["kept".to_string()], &BankQuery::of(&[hash(i)]), Some(0)).unwrap().hits.is_empty()
    };
    assert!(found(&replica, 1));

    // Current: one change applied as it comes.
    writer.add("kept", &[NewEntry::new(hash(2))]).unwrap();
    replica.catch_up().unwrap();
    assert!(found(&replica, 2));

    // Behind a pruned log: more writes, a bank deleted, then every change but the newest pruned.
    writer.add("kept", &[NewEntry::new(hash(3))]).unwrap();
    writer.delete_bank("dropped").unwrap();
    writer.add("kept", &[NewEntry::new(hash(4))]).unwrap();
    assert!(writer.prune_changes(u64::MAX).unwrap() >= 3);
    replica.catch_up().unwrap();
    assert!(found(&replica, 3) && found(&replica, 4), "the writes it never saw as changes");
    let names: Vec<String> = replica.list().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["kept"], "the deleted bank is gone too");
    writer.add("kept", &[NewEntry::new(hash(5))]).unwrap();
    replica.catch_up().unwrap();
    assert!(found(&replica, 5), "and it follows the log again");
}

/// Replicas starting at the same moment on an empty database: each opens the store (and so runs the
/// migrations) at once; all succeed and the schema is applied exactly once.
#[test]
fn replicas_starting_together_migrate_the_schema_once() {
    let Some(pg) = Pg::start() else { return };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let (url, barrier) = (pg.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                pharos::store::PgStore::open(&url).map(drop).map_err(|e| e.to_string())
            })
        })
        .collect();
    for t in opened {
        t.join().unwrap().expect("every replica opens the store");
    }
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let applied: i64 = c.query_one("SELECT count(*) FROM pharos_schema_history", &[]).unwrap().get(0);
    assert_eq!(applied, 1, "V1 applied once");
    let head: i64 = c.query_one("SELECT count(*) FROM pharos_log_head", &[]).unwrap().get(0);
    assert_eq!(head, 1);
}
