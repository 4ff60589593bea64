//! The data model hotlines work with (issue 11): a store written by the schema-1 code migrates and keeps
//! every entry; digest banks (MD5, SHA-1, SHA-256) match exactly the files they hold; disabled entries never
//! match, survive export and take effect without a restart; negative banks suppress planted collisions;
//! per-bank default radius and minimum quality.

use crate::common::server::TestServer;
use crate::common::{self, flipped, pharos_env, show};
use pharos::banks::{BankQuery, BankSet, SearchPolicy};
use pharos::hash::Hash256;
use pharos::matcher::{AnyHash, Kind};
use pharos::metrics::Metrics;
use pharos::server::config::ServeConfig;
use pharos::server::proto::banks_client::BanksClient;
use pharos::server::proto::matcher_client::MatcherClient;
use pharos::server::proto::{self, hash_and_match_response};
use pharos::store::{BankPolicy, EntryMeta, EntryState, EntryUpdate, NewEntry, Store};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs `pharos ARGS` on the data directory `dir`; panics unless it exits 0. Returns stdout.
fn cli(dir: &Path, args: &[&str]) -> String {
    let out = pharos_env(args, &[("PHAROS_DATA_DIR", dir.to_str().unwrap())]);
    assert!(out.status.success(), "pharos {args:?}: {}", show(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Acceptance 6: a bank file written by the schema-1 code (`tests/fixtures/store-v1`, see its README) opens,
/// migrates and keeps every bank, entry, label, time and removal; the migration happens once; new ids go on
/// from where the old ones stopped.
#[test]
fn a_store_written_by_schema_1_opens_migrates_and_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("store-v1/banks.redb"), dir.path().join("banks.redb")).unwrap();
    let want_banks = json_lines(&std::fs::read_to_string(fixture("store-v1/banks.jsonl")).unwrap());
    let want_entries = json_lines(&std::fs::read_to_string(fixture("store-v1/entries.jsonl")).unwrap());

    let got_banks = json_lines(&cli(dir.path(), &["bank", "list"]));
    assert_eq!(got_banks.len(), want_banks.len());
    for (got, want) in got_banks.iter().zip(&want_banks) {
        for key in ["name", "kind", "entries", "next_id", "created_ms"] {
            assert_eq!(got[key], want[key], "bank {} field {key}", want["name"]);
        }
    }
    let mut got_entries = Vec::new();
    for b in &want_banks {
        let name = b["name"].as_str().unwrap();
        for e in json_lines(&cli(dir.path(), &["bank", "export", name, "--format", "jsonl"])) {
            got_entries.push((name.to_string(), e));
        }
    }
    assert_eq!(got_entries.len(), want_entries.len(), "{got_entries:?}");
    for ((bank, got), want) in got_entries.iter().zip(&want_entries) {
        assert_eq!(want["bank"].as_str(), Some(bank.as_str()));
        for key in ["id", "hash", "label", "added_ms"] {
            assert_eq!(got[key], want[key], "{bank} entry {} field {key}", want["id"]);
        }
    }

    // Matching works on the migrated banks; the removed entry (partner id 1, all zeros) stays removed.
    let zero = "0".repeat(64);
    let q = dir.path().join("q.txt");
    std::fs::write(&q, format!("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22\n{zero}\n"))
        .unwrap();
    let m = json_lines(&cli(dir.path(), &["match", "--bank", "partner", "-r", "0", q.to_str().unwrap()]));
    assert_eq!(m[0]["matches"][0]["label"], "case 1");
    assert_eq!(m[0]["matches"][0]["id"], 0);
    assert_eq!(m[1]["matches"].as_array().unwrap().len(), 0, "entry 1 was removed before the migration");

    // Opened again: schema 2, nothing migrated twice; an add continues at id 6.
    let store = Store::open(dir.path()).unwrap();
    let first =
        store.add("partner", &[NewEntry::labelled(AnyHash::Pdq(Hash256::ZERO), Some("new".into()))]).unwrap();
    assert_eq!(first, 6);
    let metas = store.metas("partner", &[0, 2, 3, 6]).unwrap();
    let labels: Vec<_> = metas.iter().map(|m| m.label.as_deref()).collect();
    assert_eq!(labels, [Some("case 1"), Some("a, \"quoted\"\ntwo lines"), Some("ünïcödé 🙂"), Some("new")]);
}

/// A store written by a newer schema is refused with a message, not misread.
#[test]
fn a_store_of_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        let db = redb::Database::open(dir.path().join("banks.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("schema"))
            .unwrap()
            .insert("version", 3)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("schema 3, written by a newer pharos"), "{err}");
}

/// Acceptance 2: MD5, SHA-1 and SHA-256 banks built from 100 corpus files (half the fixture corpus when
/// `PHAROS_CORPUS` is not set) match exactly those files — any other file only if its bytes are identical
/// to a banked one — through `pharos hash --exact`, `bank import` and `pharos match`.
#[test]
fn digest_banks_match_exactly_the_files_they_hold() {
    let corpus = common::corpus_dir();
    let dir = tempfile::tempdir().unwrap();
    let hashed =
        cli(dir.path(), &["hash", "--backend", "cpu", "--exact", corpus.join("images").to_str().unwrap()]);
    let mut lines = json_lines(&hashed);
    lines.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    let n = 100.min(lines.len() / 2);
    assert!(n >= 10, "corpus too small: {}", lines.len());
    let bank_lines: String = lines[..n].iter().map(|v| format!("{v}\n")).collect();
    let bank_file = dir.path().join("bank.jsonl");
    std::fs::write(&bank_file, bank_lines).unwrap();
    let all_file = dir.path().join("all.jsonl");
    std::fs::write(&all_file, &hashed).unwrap();
    for kind in ["md5", "sha1", "sha256"] {
        cli(dir.path(), &["bank", "create", kind, "--kind", kind]);
        cli(dir.path(), &["bank", "import", kind, bank_file.to_str().unwrap()]);
        let banked: HashMap<&str, &str> =
            lines[..n].iter().map(|v| (v[kind].as_str().unwrap(), v["path"].as_str().unwrap())).collect();
        let out = json_lines(&cli(dir.path(), &["match", "--bank", kind, all_file.to_str().unwrap()]));
        assert_eq!(out.len(), lines.len());
        let mut matched = 0;
        for (q, v) in out.iter().zip(&lines) {
            let digest = v[kind].as_str().unwrap();
            assert_eq!(q["path"], v["path"], "answers in input order");
            let hits = q["matches"].as_array().unwrap();
            match banked.get(digest) {
                Some(path) => {
                    matched += 1;
                    assert!(!hits.is_empty(), "{kind}: {} not matched", v["path"]);
                    assert!(hits.iter().all(|h| h["distance"] == 0 && h["hash"] == digest), "{hits:?}");
                    assert!(hits.iter().any(|h| h["label"].as_str() == Some(path)), "{hits:?}");
                }
                None => assert!(hits.is_empty(), "{kind}: {} matched {hits:?}", v["path"]),
            }
        }
        assert!(matched >= n, "{kind}: {matched} of the {n} banked files matched");
    }
}

fn open_set(dir: &Path) -> BankSet {
    BankSet::open(Store::open(dir).unwrap(), Arc::new(Metrics::new()), SearchPolicy::default()).unwrap()
}

fn pdq(seed: u64) -> Hash256 {
    let mut rng = pharos::synth::SplitMix64::new(seed);
    Hash256 { limbs: std::array::from_fn(|_| rng.next_u64()) }
}

fn entry(h: Hash256, ext: &str) -> NewEntry {
    let mut e = NewEntry::new(AnyHash::Pdq(h));
    e.meta.external_id = Some(ext.to_string());
    e
}

fn ids(set: &BankSet, q: Hash256) -> Vec<(String, u64)> {
    set.search(&[], &BankQuery::of(&[AnyHash::Pdq(q)]), None)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.bank, h.id))
        .collect()
}

/// Acceptance 4 (library level): a disabled entry never matches, keeps its fields, is exported with its
/// state, and is found again as soon as it is enabled — no restart; a time-limited disable ends by itself;
/// the state survives a reopen.
#[test]
fn disabled_entries_never_match_and_enabling_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let set = open_set(dir.path());
    set.create("b", Kind::Pdq).unwrap();
    let (a, b, c) = (pdq(1), pdq(2), pdq(3));
    let mut disabled_at_import = entry(c, "c");
    disabled_at_import.state = EntryState::Disabled { until_ms: None };
    set.add("b", &[entry(a, "a"), entry(b, "b"), disabled_at_import]).unwrap();
    assert_eq!(ids(&set, a), [("b".to_string(), 0)]);
    assert!(ids(&set, c).is_empty(), "imported disabled");

    let disable = EntryUpdate {
        add_tags: vec!["disputed".into()],
        state: Some(EntryState::Disabled { until_ms: None }),
        ..Default::default()
    };
    let after = set.update("b", &[(0, disable)]).unwrap();
    assert_eq!(after[0].0.tags, ["disputed"]);
    assert!(ids(&set, a).is_empty(), "disabled entries never match");
    assert_eq!(ids(&set, b), [("b".to_string(), 1)], "the other entries still match");

    // Exported with its state and fields.
    let mut exported = BTreeMap::new();
    set.export("b", |e| {
        exported.insert(e.id, (e.meta.external_id.clone(), e.meta.tags.clone(), e.state));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        exported[&0],
        (Some("a".into()), vec!["disputed".to_string()], EntryState::Disabled { until_ms: None })
    );
    assert_eq!(exported[&2].2, EntryState::Disabled { until_ms: None });

    // A disable that ended in the past does not hide the entry; one in the future does.
    let past = pharos::store::now_ms() - 1000;
    let future = pharos::store::now_ms() + 3_600_000;
    set.update(
        "b",
        &[(
            1,
            EntryUpdate { state: Some(EntryState::Disabled { until_ms: Some(past) }), ..Default::default() },
        )],
    )
    .unwrap();
    assert_eq!(ids(&set, b).len(), 1, "disabled until a time already passed");
    set.update(
        "b",
        &[(
            1,
            EntryUpdate {
                state: Some(EntryState::Disabled { until_ms: Some(future) }),
                ..Default::default()
            },
        )],
    )
    .unwrap();
    assert!(ids(&set, b).is_empty(), "disabled for another hour");

    // Re-enabled: found by the very next query.
    set.update("b", &[(0, EntryUpdate { state: Some(EntryState::Active), ..Default::default() })]).unwrap();
    assert_eq!(ids(&set, a), [("b".to_string(), 0)]);

    // Unknown and removed ids fail the whole update.
    set.remove("b", &[2]).unwrap();
    let tag = EntryUpdate { add_tags: vec!["x".into()], ..Default::default() };
    assert!(set.update("b", &[(0, tag.clone()), (2, tag.clone())]).is_err());
    assert!(set.update("b", &[(9, tag.clone())]).is_err());
    assert!(set
        .update("b", &[(0, EntryUpdate { add_tags: vec!["two words".into()], ..Default::default() })])
        .is_err());

    // The states survive a reopen.
    drop(set);
    let set = open_set(dir.path());
    assert_eq!(ids(&set, a), [("b".to_string(), 0)]);
    assert!(ids(&set, b).is_empty());
}

/// Per-bank policy: the default radius applies when a query gives none (a query's own radius overrides it
/// within the kind's cap) and the minimum quality skips low-quality queries in that bank only.
#[test]
fn per_bank_default_radius_and_minimum_quality() {
    let dir = tempfile::tempdir().unwrap();
    let set = open_set(dir.path());
    let tight = BankPolicy { radius: Some(4), min_quality: Some(80), ..Default::default() };
    set.create_with("tight", Kind::Pdq, tight).unwrap();
    set.create("loose", Kind::Pdq).unwrap();
    let q = pdq(7);
    set.add("tight", &[entry(flipped(q, 10), "t")]).unwrap();
    set.add("loose", &[entry(flipped(q, 10), "l")]).unwrap();
    let banks_hit = |quality: Option<u32>, radius: Option<u32>| -> Vec<String> {
        let query = BankQuery { hashes: vec![AnyHash::Pdq(q)], quality, request_id: None, caller: None };
        set.search(&[], &query, radius).unwrap().hits.into_iter().map(|h| h.bank).collect()
    };
    assert_eq!(banks_hit(None, None), ["loose"], "tight's default radius 4 < distance 10");
    assert_eq!(banks_hit(None, Some(12)), ["loose", "tight"], "the query's radius overrides");
    assert_eq!(banks_hit(Some(79), Some(12)), ["loose"], "quality below tight's minimum");
    assert_eq!(banks_hit(Some(80), Some(12)), ["loose", "tight"]);
    assert!(set
        .create_with("bad", Kind::Pdq, BankPolicy { radius: Some(65), ..Default::default() })
        .is_err());
    let summary = set.set_policy("tight", BankPolicy::default()).unwrap();
    assert_eq!(summary.policy, BankPolicy::default());
    assert_eq!(banks_hit(Some(10), None), ["loose", "tight"]);
}

/// Acceptance 3 (library and CLI): a negative bank's entry near a query withholds the query's matches in
/// the positive banks; they are reported as suppressed, with the negative entry's id, whether or not the
/// negative bank was named.
#[test]
fn a_negative_bank_suppresses_a_planted_collision_in_the_library_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    {
        let set = open_set(dir.path());
        set.create("partner", Kind::Pdq).unwrap();
        set.create_with("benign", Kind::Pdq, BankPolicy { negative: true, ..Default::default() }).unwrap();
        let (collides, other) = (pdq(11), pdq(12));
        set.add("partner", &[entry(collides, "case-1"), entry(other, "case-2")]).unwrap();
        set.add("benign", &[entry(flipped(collides, 3), "benign-7")]).unwrap();
        let r = set.search(&["partner".into()], &BankQuery::of(&[AnyHash::Pdq(collides)]), None).unwrap();
        assert!(r.hits.is_empty(), "{r:?}");
        assert_eq!(r.suppressed.len(), 1);
        let s = &r.suppressed[0];
        assert_eq!((s.hit.bank.as_str(), s.hit.external_id.as_deref()), ("partner", Some("case-1")));
        assert_eq!(
            (s.by.bank.as_str(), s.by.id, s.by.external_id.as_deref(), s.by.distance),
            ("benign", 0, Some("benign-7"), 3)
        );
        let r = set.search(&[], &BankQuery::of(&[AnyHash::Pdq(other)]), None).unwrap();
        assert_eq!((r.hits.len(), r.suppressed.len()), (1, 0), "an unrelated query is untouched");
        // Disabling the negative entry lifts the suppression.
        set.update(
            "benign",
            &[(
                0,
                EntryUpdate { state: Some(EntryState::Disabled { until_ms: None }), ..Default::default() },
            )],
        )
        .unwrap();
        let r = set.search(&["partner".into()], &BankQuery::of(&[AnyHash::Pdq(collides)]), None).unwrap();
        assert_eq!((r.hits.len(), r.suppressed.len()), (1, 0));
        set.update("benign", &[(0, EntryUpdate { state: Some(EntryState::Active), ..Default::default() })])
            .unwrap();
    }
    // The CLI: `pharos match` names only the positive bank; the negative bank still applies.
    let q = dir.path().join("q.txt");
    std::fs::write(&q, format!("{}\n{}\n", pdq(11).to_hex(), pdq(12).to_hex())).unwrap();
    let out = json_lines(&cli(dir.path(), &["match", "--bank", "partner", q.to_str().unwrap()]));
    assert_eq!(out[0]["matches"].as_array().unwrap().len(), 0, "{out:?}");
    let s = &out[0]["suppressed"][0];
    assert_eq!((s["bank"].as_str(), s["external_id"].as_str()), (Some("partner"), Some("case-1")), "{s}");
    assert_eq!(
        (s["by"]["bank"].as_str(), s["by"]["id"].as_u64(), s["by"]["external_id"].as_str()),
        (Some("benign"), Some(0), Some("benign-7"))
    );
    assert_eq!(out[1]["matches"][0]["external_id"], "case-2");
    assert!(out[1].get("suppressed").is_none());

    // The audit shows the suppressions and the match, with the query's hash and the input line; `--bank
    // benign` finds the suppressions by their negative bank.
    let audit = json_lines(&cli(dir.path(), &["audit", "list"]));
    let events: Vec<(&str, &str, Option<&str>)> = audit
        .iter()
        .map(|r| (r["event"].as_str().unwrap(), r["bank"].as_str().unwrap(), r["by"]["bank"].as_str()))
        .collect();
    // The library searches above come first (suppressed, then match, match after the negative entry was
    // disabled), then the CLI's.
    assert_eq!(
        events,
        [
            ("suppressed", "partner", Some("benign")),
            ("match", "partner", None),
            ("match", "partner", None),
            ("suppressed", "partner", Some("benign")),
            ("match", "partner", None),
        ],
        "{audit:?}"
    );
    let last_sup = &audit[3];
    assert_eq!(last_sup["external_id"], "case-1");
    assert_eq!(
        (last_sup["by"]["entry_id"].as_u64(), last_sup["by"]["external_id"].as_str()),
        (Some(0), Some("benign-7"))
    );
    assert_eq!(last_sup["query"]["pdq"].as_str(), Some(pdq(11).to_hex().as_str()));
    assert_eq!(last_sup["request_id"], "line 1");
    let by_negative = json_lines(&cli(dir.path(), &["audit", "list", "--bank", "benign"]));
    assert_eq!(by_negative.len(), 2);
    let csv = cli(dir.path(), &["audit", "list", "--format", "csv", "--since", "1h"]);
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(csv.starts_with("time_ms,event,bank,entry_id,external_id,distance,query,request_id"), "{csv}");
    let none = json_lines(&cli(dir.path(), &["audit", "list", "--until", "2020-01-01T00:00:00Z"]));
    assert!(none.is_empty());
}

/// The flood guard: an entry that matches more often than its bank allows within the window is reported in
/// the audit and the metrics and, with auto-disable, disabled (kept, no longer matching); other banks and
/// entries are untouched. Audit records past their retention are pruned, newer ones kept.
#[test]
fn the_flood_guard_disables_an_entry_that_matches_too_often_and_the_audit_is_pruned_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let set =
        BankSet::open(Store::open(dir.path()).unwrap(), metrics.clone(), SearchPolicy::default()).unwrap();
    let guard = pharos::store::FloodGuard { max_matches: 2, window_s: 3600, auto_disable: true };
    set.create_with("guarded", Kind::Pdq, BankPolicy { flood: Some(guard), ..Default::default() }).unwrap();
    let (hot, calm) = (pdq(21), pdq(22));
    set.add("guarded", &[entry(hot, "hot"), entry(calm, "calm")]).unwrap();
    for i in 0..2 {
        assert_eq!(ids(&set, hot).len(), 1, "match {i} is within the limit");
    }
    assert_eq!(ids(&set, hot).len(), 1, "the third match is still reported, then the entry is disabled");
    assert!(ids(&set, hot).is_empty(), "disabled by the flood guard");
    assert_eq!(ids(&set, calm).len(), 1, "other entries are untouched");
    assert!(
        metrics.render().contains("pharos_flood_trips_total{bank=\"guarded\"} 1"),
        "{}",
        metrics.render()
    );
    let mut events = Vec::new();
    set.audit(&Default::default(), |r| {
        events.push((r.event, r.entry.external_id.clone()));
        Ok(())
    })
    .unwrap();
    use pharos::store::AuditEvent::{FloodDisabled, Match};
    let hot_id = Some("hot".to_string());
    assert_eq!(
        events,
        [
            (Match, hot_id.clone()),
            (Match, hot_id.clone()),
            (Match, hot_id.clone()),
            (FloodDisabled, hot_id.clone()),
            (Match, Some("calm".to_string()))
        ]
    );
    let mut state = None;
    set.export("guarded", |e| {
        if e.id == 0 {
            state = Some(e.state);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(state, Some(EntryState::Disabled { until_ms: None }), "kept, disabled");

    // Retention: two old records (planted 100 days ago) go, the five recent ones stay.
    drop(set);
    let store = Store::open(dir.path()).unwrap();
    let old = pharos::store::AuditRecord {
        time_ms: pharos::store::now_ms() - 100 * 86_400_000,
        event: Match,
        entry: pharos::store::AuditEntry { bank: "guarded".into(), entry_id: 1, external_id: None },
        distance: 0,
        query: Default::default(),
        request_id: None,
        caller: None,
        by: None,
        count: None,
    };
    store.append_audit(&[old.clone(), old]).unwrap();
    let set = BankSet::open(store, Arc::new(Metrics::new()), SearchPolicy::default()).unwrap();
    assert_eq!(set.prune_audit(std::time::Duration::from_secs(90 * 86_400)).unwrap(), 2);
    let mut n = 0;
    set.audit(&Default::default(), |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 5);
}

fn cpu_config() -> ServeConfig {
    ServeConfig { backend: "cpu".into(), metrics: String::new(), ..ServeConfig::default() }
}

/// Acceptance 3 and 4 over gRPC: a real image planted in a positive bank and (as a near copy) in a negative
/// bank comes back from HashAndMatch as suppressed; UpdateEntries by external id disables a match and
/// enables it again, effective for the next request; the export carries every field and the state; digest
/// banks are searched by HashAndMatch without the client asking for digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_negative_banks_suppress_and_entry_updates_take_effect_at_once() {
    let rows = common::rows();
    let row = &rows[0];
    let image = std::fs::read(row.path()).unwrap();
    let pdq_hex = row.get("pdq_hex_cpp").to_string();
    let server = TestServer::start(cpu_config()).await;
    let channel = server.channel().await;
    let (mut banks, mut matcher) = (BanksClient::new(channel.clone()), MatcherClient::new(channel));
    let create = |name: &str, kind: proto::HashKind, negative: bool| proto::CreateBankRequest {
        name: name.into(),
        kind: kind as i32,
        policy: Some(proto::BankPolicy { negative, ..Default::default() }),
    };
    banks.create_bank(create("partner", proto::HashKind::Pdq, false)).await.unwrap();
    let neg = banks.create_bank(create("benign", proto::HashKind::Pdq, true)).await.unwrap().into_inner();
    assert!(neg.policy.unwrap().negative);
    banks.create_bank(create("files", proto::HashKind::Sha256, false)).await.unwrap();
    let add =
        |bank: &str, entries: Vec<proto::NewEntry>| proto::AddHashesRequest { bank: bank.into(), entries };
    let planted = proto::NewEntry {
        hash: pdq_hex.clone(),
        external_id: "case-1".into(),
        source: "ncmec".into(),
        tags: vec!["csam".into(), "a1".into()],
        quality: Some(90),
        note: "planted".into(),
        metadata: [("member".to_string(), "7".to_string())].into(),
        ..Default::default()
    };
    banks.add_hashes(tokio_stream::iter([add("partner", vec![planted])])).await.unwrap();
    let sha = common::sha256_hex(&image);
    let file_entry =
        proto::NewEntry { hash: sha.clone(), external_id: "file-1".into(), ..Default::default() };
    banks.add_hashes(tokio_stream::iter([add("files", vec![file_entry])])).await.unwrap();

    let hash_and_match = |banks: Vec<String>| proto::HashAndMatchRequest {
        id: "q".into(),
        image: image.clone().into(),
        banks,
        ..Default::default()
    };
    let ask = |m: &mut MatcherClient<_>, req: proto::HashAndMatchRequest| {
        let mut m = m.clone();
        async move {
            let mut s = m.hash_and_match(tokio_stream::iter([req])).await.unwrap().into_inner();
            match s.message().await.unwrap().unwrap().outcome.unwrap() {
                hash_and_match_response::Outcome::Result(r) => r,
                o => panic!("{o:?}"),
            }
        }
    };
    // Matches in both the PDQ bank and the SHA-256 bank (digests computed because a digest bank is searched).
    let r = ask(&mut matcher, hash_and_match(vec![])).await;
    let found: HashSet<(String, String)> =
        r.matches.iter().map(|m| (m.bank.clone(), m.external_id.clone())).collect();
    assert_eq!(
        found,
        HashSet::from([("partner".into(), "case-1".into()), ("files".into(), "file-1".into())])
    );
    let m = r.matches.iter().find(|m| m.bank == "partner").unwrap();
    assert_eq!(m.tags, ["csam", "a1"]);
    assert_eq!(r.hashes.unwrap().sha256, sha);

    // A near copy planted in the negative bank suppresses the PDQ match and the digest match.
    let mut near = Hash256::from_hex(&pdq_hex).unwrap();
    near.limbs[0] ^= 0b111;
    let benign =
        proto::NewEntry { hash: near.to_hex(), external_id: "benign-7".into(), ..Default::default() };
    banks.add_hashes(tokio_stream::iter([add("benign", vec![benign])])).await.unwrap();
    let r = ask(&mut matcher, hash_and_match(vec!["partner".into(), "files".into()])).await;
    assert!(r.matches.is_empty(), "{r:?}");
    let sup: HashSet<(String, String, String, u64)> = r
        .suppressed
        .iter()
        .map(|s| {
            let m = s.r#match.clone().unwrap();
            (m.bank, m.external_id, s.by_bank.clone(), s.by_id)
        })
        .collect();
    assert_eq!(
        sup,
        HashSet::from([
            ("partner".into(), "case-1".into(), "benign".into(), 0),
            ("files".into(), "file-1".into(), "benign".into(), 0)
        ])
    );
    assert!(r.suppressed.iter().all(|s| s.by_external_id == "benign-7"));

    // Disable the negative entry by its external id: the matches come back at once.
    let upd = |bank: &str, ext: &str, state: proto::EntryState| proto::UpdateEntriesRequest {
        bank: bank.into(),
        external_ids: vec![ext.into()],
        state: Some(state as i32),
        ..Default::default()
    };
    let u = banks
        .update_entries(upd("benign", "benign-7", proto::EntryState::Disabled))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.entries[0].state, proto::EntryState::Disabled as i32);
    let r = ask(&mut matcher, hash_and_match(vec![])).await;
    assert_eq!((r.matches.len(), r.suppressed.len()), (2, 0), "{r:?}");

    // Disable the positive entry, with a tag: no match; the export shows it disabled with every field.
    let mut req = upd("partner", "case-1", proto::EntryState::Disabled);
    req.add_tags = vec!["disputed".into()];
    banks.update_entries(req).await.unwrap();
    let r = ask(&mut matcher, hash_and_match(vec!["partner".into()])).await;
    assert!(r.matches.is_empty() && r.suppressed.is_empty(), "{r:?}");
    let mut export =
        banks.export_bank(proto::ExportBankRequest { bank: "partner".into() }).await.unwrap().into_inner();
    let e = export.message().await.unwrap().unwrap();
    assert_eq!(
        (e.external_id.as_str(), e.source.as_str(), e.note.as_str(), e.quality),
        ("case-1", "ncmec", "planted", Some(90))
    );
    assert_eq!(e.tags, ["csam", "a1", "disputed"]);
    assert_eq!(e.state, proto::EntryState::Disabled as i32);
    assert_eq!(e.metadata.get("member").map(String::as_str), Some("7"));

    // Re-imported as exported (state included) into another bank: still disabled there.
    banks.create_bank(create("copy", proto::HashKind::Pdq, false)).await.unwrap();
    let again = proto::NewEntry {
        hash: e.hash.clone(),
        external_id: e.external_id.clone(),
        tags: e.tags.clone(),
        state: e.state,
        added_ms: e.added_ms,
        ..Default::default()
    };
    banks.add_hashes(tokio_stream::iter([add("copy", vec![again])])).await.unwrap();
    let r = ask(&mut matcher, hash_and_match(vec!["copy".into()])).await;
    assert!(r.matches.is_empty(), "{r:?}");
    let mut export =
        banks.export_bank(proto::ExportBankRequest { bank: "copy".into() }).await.unwrap().into_inner();
    let c = export.message().await.unwrap().unwrap();
    assert_eq!((c.added_ms, c.state), (e.added_ms, e.state), "the partner's time and the state are kept");

    // Enabled again: the next request matches.
    banks.update_entries(upd("partner", "case-1", proto::EntryState::Active)).await.unwrap();
    let r = ask(&mut matcher, hash_and_match(vec!["partner".into()])).await;
    assert_eq!(r.matches.len(), 1);

    // Errors: an unknown external id is NOT_FOUND; nothing to change is INVALID_ARGUMENT.
    let err = banks.update_entries(upd("partner", "nope", proto::EntryState::Active)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = banks
        .update_entries(proto::UpdateEntriesRequest {
            bank: "partner".into(),
            ids: vec![0],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // The audit over gRPC: the suppressions of request "q" name the negative entry.
    let mut audit = pharos::server::proto::audit_client::AuditClient::new(server.channel().await);
    let mut stream = audit
        .list_audit(proto::ListAuditRequest { banks: vec!["benign".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let (mut sup, mut changes) = (Vec::new(), Vec::new());
    while let Some(r) = stream.message().await.unwrap() {
        if r.event != "suppressed" {
            // The bank's own history (issue 12): its creation and the entries added.
            changes.push((r.event, r.count));
            continue;
        }
        assert_eq!(
            (r.event.as_str(), r.request_id.as_str(), r.by_external_id.as_str()),
            ("suppressed", "q", "benign-7")
        );
        assert!(!r.query["pdq"].is_empty());
        sup.push(r.bank);
    }
    sup.sort();
    assert_eq!(sup, ["files", "partner"]);
    assert_eq!(changes[0], ("bank_created".to_string(), 0), "{changes:?}");
    assert!(changes.iter().any(|(e, n)| e == "entries_added" && *n > 0), "{changes:?}");

    // Match with a SHA-256 query names its kind (64 digits would read as PDQ).
    let r = matcher
        .r#match(proto::MatchRequest {
            hash: sha.clone(),
            kind: proto::HashKind::Sha256 as i32,
            banks: vec!["files".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matches.len(), 1);
    assert_eq!(r.matches[0].distance, 0);
}

/// The entries' fields are validated: tags without whitespace, quality 0–100, no control characters.
#[test]
fn entry_fields_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let set = open_set(dir.path());
    set.create("b", Kind::Pdq).unwrap();
    let bad = |f: &dyn Fn(&mut EntryMeta)| {
        let mut e = NewEntry::new(AnyHash::Pdq(pdq(1)));
        f(&mut e.meta);
        set.add("b", &[e]).unwrap_err().to_string()
    };
    assert!(bad(&|m| m.tags = vec!["two words".into()]).contains("tag 'two words'"));
    assert!(bad(&|m| m.quality = Some(101)).contains("quality 101"));
    assert!(bad(&|m| m.external_id = Some("a\u{7}".into())).contains("external id"));
    assert_eq!(set.list()[0].size, 0, "nothing was written");
}

/// `bank export -o FILE` replaces the file whole or not at all: an export that fails partway (here an entry
/// whose label the `pdq-cli` format cannot carry: a line break) leaves an existing file as it was and
/// creates none where there was none; a complete export replaces it.
#[test]
fn a_failed_export_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cli(d, &["bank", "create", "b"]);
    let input = d.join("in.csv");
    std::fs::write(&input, format!("{},ok.jpg\n{},\"two\nlines\"\n", pdq(1).to_hex(), pdq(2).to_hex()))
        .unwrap();
    cli(d, &["bank", "add", "b", input.to_str().unwrap()]);
    let env = [("PHAROS_DATA_DIR", d.to_str().unwrap())];
    let fresh = d.join("fresh.txt");
    let out = pharos_env(["bank", "export", "b", "--format", "pdq-cli", "-o", fresh.to_str().unwrap()], &env);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(!fresh.exists(), "no partial file");
    let old = d.join("old.txt");
    std::fs::write(&old, "previous export\n").unwrap();
    let out = pharos_env(["bank", "export", "b", "--format", "pdq-cli", "-o", old.to_str().unwrap()], &env);
    assert!(!out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "previous export\n", "left as it was");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files removed: {leftovers:?}");
    let out = pharos_env(["bank", "export", "b", "--format", "jsonl", "-o", old.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&old).unwrap().lines().count(), 2, "replaced whole");
}
