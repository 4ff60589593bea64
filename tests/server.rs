//! The gRPC daemon against its contract (DESIGN.md §3, issue 5): an in-process server on `127.0.0.1:0`,
//! called with the generated Rust client.
//!
//! - Hash and HashStream give exactly what `pharos hash` prints, on the whole corpus;
//! - a stream of 1,000 items with bad ones mixed in answers every item, in order, bad ones in-band;
//! - bank CRUD over gRPC, and HashAndMatch finds planted matches (dihedral ones too);
//! - overload answers RESOURCE_EXHAUSTED and the pipeline's bounds hold;
//! - a slow reader is throttled (backpressure), not buffered without bound;
//! - deadlines answer DEADLINE_EXCEEDED;
//! - shutdown answers every request the server accepted before it stops;
//! - health, reflection and the metrics endpoint answer.

use crate::common;

use pharos::server::config::ServeConfig;
use pharos::server::proto::banks_client::BanksClient;
use pharos::server::proto::hasher_client::HasherClient;
use pharos::server::proto::matcher_client::MatcherClient;
use pharos::server::proto::{self, hash_and_match_response, hash_response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use common::server::TestServer;

fn cpu_config() -> ServeConfig {
    ServeConfig { backend: "cpu".into(), metrics: String::new(), ..ServeConfig::default() }
}

/// Every image of the corpus in use (path relative to the corpus, bytes).
fn corpus_images() -> Vec<(String, Vec<u8>)> {
    common::rows().iter().map(|r| (r.get("path").to_string(), std::fs::read(r.path()).unwrap())).collect()
}

/// What `pharos hash --dihedral` prints for each file of the corpus, keyed by path relative to the corpus.
fn cli_hashes() -> HashMap<String, serde_json::Value> {
    cli_hashes_with(&[])
}

/// [`cli_hashes`] with more flags (`--exact`).
fn cli_hashes_with(flags: &[&str]) -> HashMap<String, serde_json::Value> {
    let dir = common::corpus_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pharos"))
        .args(["hash", "--backend", "cpu", "--dihedral"])
        .args(flags)
        .arg(dir.join("images"))
        .output()
        .unwrap();
    assert!(out.status.success(), "pharos hash failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let path = PathBuf::from(v["path"].as_str().unwrap());
            let rel = path.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
            (rel, v)
        })
        .collect()
}

/// The gRPC hashes as the JSON object `pharos hash` prints (without the path).
fn as_cli_json(h: &proto::Hashes) -> serde_json::Value {
    let mut v = serde_json::json!({
        "width": h.width, "height": h.height, "pdq": h.pdq_hex, "quality": h.quality, "phash": h.phash_hex,
    });
    if let Some(d) = &h.dihedral {
        v["dihedral"] = serde_json::json!({
            "rot90": d.rot90, "rot180": d.rot180, "rot270": d.rot270, "flipx": d.flipx, "flipy": d.flipy,
            "flipplus1": d.flipplus1, "flipminus1": d.flipminus1,
        });
    }
    for (key, hex) in [("md5", &h.md5), ("sha1", &h.sha1), ("sha256", &h.sha256)] {
        if !hex.is_empty() {
            v[key] = hex.as_str().into();
        }
    }
    v
}

fn strip_path(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("path");
    v
}

/// Streams `requests` through `HashStream` and checks every answer against `expected` (what `pharos hash`
/// printed for that id); returns how many answers came.
async fn stream_equals_cli(
    client: &mut HasherClient<Channel>,
    requests: Vec<proto::HashRequest>,
    expected: &HashMap<String, serde_json::Value>,
    what: &str,
) -> usize {
    let mut responses = client.hash_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(resp) = responses.message().await.unwrap() {
        let Some(hash_response::Outcome::Hashes(h)) = resp.outcome else { panic!("{resp:?}") };
        assert_eq!(as_cli_json(&h), strip_path(expected[&resp.id].clone()), "{} {what}", resp.id);
        n += 1;
    }
    n
}

fn hash_request(id: impl Into<String>, image: Vec<u8>, dihedral: bool) -> proto::HashRequest {
    proto::HashRequest { id: id.into(), image: image.into(), dihedral, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_and_hash_stream_equal_pharos_hash_on_the_corpus() {
    let images = corpus_images();
    let expected = cli_hashes();
    let server = TestServer::start(cpu_config()).await;
    let mut client = HasherClient::new(server.channel().await);

    // Unary, one by one.
    for (path, bytes) in &images {
        let resp = client.hash(hash_request(path.clone(), bytes.clone(), true)).await.unwrap().into_inner();
        assert_eq!(resp.id, *path);
        let Some(hash_response::Outcome::Hashes(h)) = resp.outcome else { panic!("{path}: no hashes") };
        assert_eq!(as_cli_json(&h), strip_path(expected[path].clone()), "{path} over Hash");
        assert_eq!(h.pdq.len(), 32);
        assert_eq!(hex(&h.pdq), h.pdq_hex, "{path}: pdq bytes spell pdq_hex");
        assert_eq!(hex(&h.phash), h.phash_hex, "{path}: phash bytes spell phash_hex");
    }

    // One stream with everything: one response per request, same ids, request order.
    let requests: Vec<_> = images.iter().map(|(p, b)| hash_request(p.clone(), b.clone(), true)).collect();
    let mut responses = client.hash_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(resp) = responses.message().await.unwrap() {
        let (path, _) = &images[n];
        assert_eq!(resp.id, *path, "response {n} out of order");
        let Some(hash_response::Outcome::Hashes(h)) = resp.outcome else {
            panic!("{path}: {:?}", resp.outcome)
        };
        assert_eq!(as_cli_json(&h), strip_path(expected[path].clone()), "{path} over HashStream");
        n += 1;
    }
    assert_eq!(n, images.len());
    eprintln!("Hash and HashStream equal `pharos hash` on {n}/{n} images");
    server.shutdown().await.unwrap();
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bad inputs of every kind, each with the code it must get.
fn bad_items() -> Vec<(Vec<u8>, Code, &'static str)> {
    let png = std::fs::read(common::corpus_dir().join(common::rows()[0].get("path"))).unwrap();
    let mut truncated = png.clone();
    truncated.truncate(png.len() / 3);
    vec![
        (Vec::new(), Code::InvalidArgument, "empty"),
        (b"definitely not an image".to_vec(), Code::InvalidArgument, "unsupported"),
        (truncated, Code::InvalidArgument, ""),
        // A GIF header claiming 60000×60000: refused from the header (limits) before any pixel exists.
        (
            b"GIF89a\x60\xea\x60\xea\x80\x00\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x60\xea\x60\xea\x00\x02\x02D\x01\x00;"
                .to_vec(),
            Code::InvalidArgument,
            "",
        ),
    ]
}

/// `exact` asks for MD5, SHA-1 and SHA-256 of the bytes, in `Hash`, `HashStream` and `HashAndMatch` alike,
/// equal to what `pharos hash --exact` prints; without it the fields stay empty (not computed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_hashes_are_returned_when_asked_for() {
    let images: Vec<_> = corpus_images().into_iter().take(24).collect();
    let expected = cli_hashes_with(&["--exact"]);
    let server = TestServer::start(cpu_config()).await;
    let mut hasher = HasherClient::new(server.channel().await);
    let mut matcher = MatcherClient::new(server.channel().await);
    let exact = |p: &str, b: &[u8]| proto::HashRequest { exact: true, ..hash_request(p, b.to_vec(), true) };
    for (path, bytes) in &images {
        let resp = hasher.hash(exact(path, bytes)).await.unwrap().into_inner();
        let Some(hash_response::Outcome::Hashes(h)) = resp.outcome else { panic!("{resp:?}") };
        assert_eq!(as_cli_json(&h), strip_path(expected[path].clone()), "{path}");
        assert_eq!(h.md5.len(), 32, "{path}");
        let plain = hasher.hash(hash_request(path.as_str(), bytes.clone(), true)).await.unwrap().into_inner();
        let Some(hash_response::Outcome::Hashes(h)) = plain.outcome else { panic!("{plain:?}") };
        assert!(h.md5.is_empty() && h.sha1.is_empty() && h.sha256.is_empty(), "not asked for: {h:?}");
    }
    let requests: Vec<_> = images.iter().map(|(p, b)| exact(p, b)).collect();
    let n = stream_equals_cli(&mut hasher, requests, &expected, "(stream)").await;
    assert_eq!(n, images.len());
    let (path, bytes) = &images[0];
    let req = proto::HashAndMatchRequest {
        id: path.clone(),
        image: bytes.clone().into(),
        exact: true,
        ..Default::default()
    };
    let mut results = matcher.hash_and_match(tokio_stream::iter([req])).await.unwrap().into_inner();
    let resp = results.message().await.unwrap().unwrap();
    let Some(hash_and_match_response::Outcome::Result(r)) = resp.outcome else { panic!("{resp:?}") };
    let want = &expected[path];
    let h = r.hashes.unwrap();
    assert_eq!(
        (h.md5.as_str(), h.sha1.as_str(), h.sha256.as_str()),
        (want["md5"].as_str().unwrap(), want["sha1"].as_str().unwrap(), want["sha256"].as_str().unwrap())
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_1000_items_with_bad_ones_answers_every_item_in_order() {
    let images = corpus_images();
    let good: Vec<&(String, Vec<u8>)> = images.iter().filter(|(_, b)| b.len() < 300_000).take(20).collect();
    assert!(!good.is_empty());
    let expected: HashMap<&str, proto::Hashes> = {
        let server = TestServer::start(cpu_config()).await;
        let mut c = HasherClient::new(server.channel().await);
        let mut m = HashMap::new();
        for (p, b) in &good {
            let r = c.hash(hash_request(p.clone(), b.clone(), false)).await.unwrap().into_inner();
            let Some(hash_response::Outcome::Hashes(h)) = r.outcome else { panic!() };
            m.insert(p.as_str(), h);
        }
        server.shutdown().await.unwrap();
        m
    };
    let bad = bad_items();
    // Every 7th item is bad; the rest cycle through the good images.
    let plan: Vec<(String, Option<usize>, Option<&str>)> = (0..1000)
        .map(|i| {
            if i % 7 == 3 {
                (format!("bad-{i}"), Some(i % bad.len()), None)
            } else {
                (format!("good-{i}"), None, Some(good[i % good.len()].0.as_str()))
            }
        })
        .collect();
    let requests: Vec<proto::HashRequest> = plan
        .iter()
        .map(|(id, b, g)| {
            let bytes = match (b, g) {
                (Some(b), _) => bad[*b].0.clone(),
                (_, Some(g)) => good.iter().find(|(p, _)| p == g).unwrap().1.clone(),
                _ => unreachable!(),
            };
            hash_request(id.clone(), bytes, false)
        })
        .collect();

    let server = TestServer::start(ServeConfig { max_in_flight_per_stream: 16, ..cpu_config() }).await;
    let mut client = HasherClient::new(server.channel().await);
    let mut stream = client.hash_stream(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let (mut ok, mut failed, mut i) = (0, 0, 0);
    while let Some(resp) = stream.message().await.expect("the stream survives bad items") {
        let (id, b, g) = &plan[i];
        assert_eq!(&resp.id, id, "response {i} out of order");
        match (resp.outcome.expect("an outcome"), b, g) {
            (hash_response::Outcome::Hashes(h), None, Some(g)) => {
                assert_eq!(h, expected[g], "{id}");
                ok += 1;
            }
            (hash_response::Outcome::Error(e), Some(b), None) => {
                let (_, code, needle) = &bad[*b];
                assert_eq!(e.code, *code as u32, "{id}: {e:?}");
                assert_eq!(e.code_name, "INVALID_ARGUMENT");
                assert!(e.message.contains(needle), "{id}: {e:?}");
                assert!(!e.message.is_empty());
                failed += 1;
            }
            (o, _, _) => panic!("{id}: unexpected {o:?}"),
        }
        i += 1;
    }
    assert_eq!(i, 1000, "one response per request");
    assert_eq!((ok, failed), (857, 143));
    let text = server.metrics.render();
    assert!(text.contains("pharos_errors_total{code=\"INVALID_ARGUMENT\"} 143"), "{text}");
    assert!(text.contains("pharos_requests_total{method=\"HashStream\"} 1000"), "{text}");
    eprintln!("1000-item stream: {ok} hashed, {failed} in-band errors, order kept");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_bad_input_is_invalid_argument_and_the_server_keeps_serving() {
    let server = TestServer::start(cpu_config()).await;
    let mut client = HasherClient::new(server.channel().await);
    for (bytes, code, needle) in bad_items() {
        let err = client.hash(hash_request("x", bytes, false)).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(needle) && !err.message().is_empty(), "{err:?}");
    }
    let (_, good) = &corpus_images()[0];
    assert!(client.hash(hash_request("ok", good.clone(), false)).await.is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_crud_and_hash_and_match_find_planted_matches() {
    let images = corpus_images();
    let server = TestServer::start(cpu_config()).await;
    let channel = server.channel().await;
    let (mut hasher, mut banks, mut matcher) =
        (HasherClient::new(channel.clone()), BanksClient::new(channel.clone()), MatcherClient::new(channel));

    // Hash a few distinct base images.
    let picks: Vec<&(String, Vec<u8>)> = {
        let mut seen = std::collections::HashSet::new();
        images.iter().filter(|(p, _)| seen.insert(p.split('/').nth(1).unwrap().to_string())).take(6).collect()
    };
    assert!(picks.len() >= 3, "need at least 3 distinct base images");
    let mut hashes = Vec::new();
    for (p, b) in &picks {
        let r = hasher.hash(hash_request(p.clone(), b.clone(), true)).await.unwrap().into_inner();
        let Some(hash_response::Outcome::Hashes(h)) = r.outcome else { panic!() };
        hashes.push(h);
    }

    // Create banks; a duplicate name, a bad name and an unspecified kind are refused.
    let create = |name: &str, kind: proto::HashKind| proto::CreateBankRequest {
        name: name.into(),
        kind: kind as i32,
        ..Default::default()
    };
    let bank = banks.create_bank(create("known", proto::HashKind::Pdq)).await.unwrap().into_inner();
    assert_eq!((bank.name.as_str(), bank.size, bank.kind), ("known", 0, proto::HashKind::Pdq as i32));
    banks.create_bank(create("known-ph", proto::HashKind::Phash)).await.unwrap();
    assert_eq!(
        banks.create_bank(create("known", proto::HashKind::Pdq)).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    assert_eq!(
        banks.create_bank(create("bad name!", proto::HashKind::Pdq)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        banks.create_bank(create("x", proto::HashKind::Unspecified)).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Plant: image 0's PDQ, image 1's rot90 dihedral variant (only a dihedral query finds it), image 2's
    // pHash in the pHash bank; plus 1,000 random PDQ decoys, over two messages of one AddHashes stream.
    let entry = |hash: &str, label: &str| proto::NewEntry {
        hash: hash.into(),
        label: label.into(),
        ..Default::default()
    };
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut decoys: Vec<proto::NewEntry> = (0..1000)
        .map(|_| {
            let h: String = (0..4)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    format!("{rng:016x}")
                })
                .collect();
            entry(&h, "")
        })
        .collect();
    decoys.insert(0, entry(&hashes[0].pdq_hex, "case-0"));
    decoys.push(entry(&hashes[1].dihedral.as_ref().unwrap().rot90, "case-1-rotated"));
    let second = decoys.split_off(600);
    let msgs = vec![
        proto::AddHashesRequest { bank: "known".into(), entries: decoys },
        proto::AddHashesRequest { bank: "known".into(), entries: second },
    ];
    let added = banks.add_hashes(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    assert_eq!((added.added, added.first_id), (1002, Some(0)));
    let ph = vec![proto::AddHashesRequest {
        bank: "known-ph".into(),
        entries: vec![entry(&hashes[2].phash_hex, "ph-2")],
    }];
    assert_eq!(banks.add_hashes(tokio_stream::iter(ph)).await.unwrap().into_inner().added, 1);

    // Bad AddHashes: bad hex, wrong kind, unknown bank, a second message naming another bank — each refused
    // with a message; the first message of the last one was committed and says so.
    let bad = |bank: &str, hash: &str| {
        vec![proto::AddHashesRequest { bank: bank.into(), entries: vec![entry(hash, "")] }]
    };
    let e = banks.add_hashes(tokio_stream::iter(bad("known", "zz"))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = banks.add_hashes(tokio_stream::iter(bad("known", &hashes[0].phash_hex))).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("phash"), "{e:?}");
    let e = banks.add_hashes(tokio_stream::iter(bad("nope", &hashes[0].pdq_hex))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut two = bad("known", &hashes[3].pdq_hex);
    two.extend(bad("known-ph", &hashes[3].phash_hex));
    let e = banks.add_hashes(tokio_stream::iter(two)).await.unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument
            && e.message().contains("1 entries of earlier messages were committed"),
        "{e:?}"
    );

    let list = banks.list_banks(proto::ListBanksRequest {}).await.unwrap().into_inner().banks;
    let sizes: Vec<(String, u64)> = list.iter().map(|b| (b.name.clone(), b.size)).collect();
    assert_eq!(sizes, vec![("known".into(), 1003), ("known-ph".into(), 1)]);

    // HashAndMatch over every pick: the planted ones are found with distance 0 and their labels.
    let req = |i: usize, dihedral: bool| proto::HashAndMatchRequest {
        id: format!("q{i}"),
        image: picks[i].1.clone().into(),
        banks: vec![],
        radius: None,
        dihedral,
        exif_orientation: false,
        min_quality: None,
        ..Default::default()
    };
    let mut reqs: Vec<_> = (0..picks.len()).map(|i| req(i, false)).collect();
    reqs.push(req(1, true));
    reqs.push(proto::HashAndMatchRequest { banks: vec!["nope".into()], ..req(0, false) });
    reqs.push(proto::HashAndMatchRequest { min_quality: Some(101), ..req(0, false) });
    let n = reqs.len();
    let mut stream = matcher.hash_and_match(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    let mut results = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        results.push(r.outcome.unwrap());
    }
    assert_eq!(results.len(), n);
    let result = |i: usize| match &results[i] {
        hash_and_match_response::Outcome::Result(r) => r.clone(),
        o => panic!("item {i}: {o:?}"),
    };
    let labels = |r: &proto::HashAndMatchResult| -> Vec<(String, String, u32)> {
        r.matches
            .iter()
            .filter(|m| !m.label.is_empty())
            .map(|m| (m.bank.clone(), m.label.clone(), m.distance))
            .collect()
    };
    assert_eq!(labels(&result(0)), vec![("known".into(), "case-0".into(), 0)]);
    assert_eq!(result(0).matches[0].hash, hashes[0].pdq_hex);
    assert_eq!(result(0).matches[0].id, 0);
    assert!(labels(&result(1)).is_empty(), "the rotated plant needs a dihedral query: {:?}", result(1));
    assert_eq!(labels(&result(2)), vec![("known-ph".into(), "ph-2".into(), 0)]);
    assert_eq!(labels(&result(picks.len())), vec![("known".into(), "case-1-rotated".into(), 0)]);
    assert!(result(picks.len()).hashes.unwrap().dihedral.is_some());
    match &results[picks.len() + 1] {
        hash_and_match_response::Outcome::Error(e) => assert_eq!(e.code, Code::NotFound as u32, "{e:?}"),
        o => panic!("unknown bank: {o:?}"),
    }
    let skipped = result(picks.len() + 2);
    assert!(skipped.matches.is_empty() && skipped.skipped.contains("min_quality"), "{skipped:?}");

    // Unary Match with a hex query (and its errors).
    let m = |hash: &str, banks: Vec<String>, radius: Option<u32>| proto::MatchRequest {
        id: "m".into(),
        hash: hash.into(),
        variants: vec![],
        banks,
        radius,
        ..Default::default()
    };
    let r = matcher.r#match(m(&hashes[0].pdq_hex, vec![], None)).await.unwrap().into_inner();
    assert_eq!(r.matches.iter().map(|m| m.label.as_str()).collect::<Vec<_>>(), vec!["case-0"]);
    assert_eq!(matcher.r#match(m("xyz", vec![], None)).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(
        matcher.r#match(m(&hashes[0].pdq_hex, vec!["nope".into()], None)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        matcher.r#match(m(&hashes[0].pdq_hex, vec!["known-ph".into()], None)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        matcher.r#match(m(&hashes[0].pdq_hex, vec!["known".into()], Some(300))).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Export returns what was added; remove takes the plant out (all or none); delete drops the bank.
    let mut export =
        banks.export_bank(proto::ExportBankRequest { bank: "known".into() }).await.unwrap().into_inner();
    let mut exported = Vec::new();
    while let Some(e) = export.message().await.unwrap() {
        exported.push(e);
    }
    assert_eq!(exported.len(), 1003);
    assert_eq!(
        (exported[0].id, exported[0].hash.as_str(), exported[0].label.as_str()),
        (0, hashes[0].pdq_hex.as_str(), "case-0")
    );
    let e = banks
        .remove_hashes(proto::RemoveHashesRequest { bank: "known".into(), ids: vec![0, 99_999] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    banks.remove_hashes(proto::RemoveHashesRequest { bank: "known".into(), ids: vec![0] }).await.unwrap();
    assert!(matcher
        .r#match(m(&hashes[0].pdq_hex, vec![], None))
        .await
        .unwrap()
        .into_inner()
        .matches
        .is_empty());
    assert_eq!(
        banks.export_bank(proto::ExportBankRequest { bank: "nope".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    banks.delete_bank(proto::DeleteBankRequest { name: "known".into() }).await.unwrap();
    assert_eq!(
        banks.delete_bank(proto::DeleteBankRequest { name: "known".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    let list = banks.list_banks(proto::ListBanksRequest {}).await.unwrap().into_inner().banks;
    assert_eq!(list.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), vec!["known-ph"]);
    let text = server.metrics.render();
    assert!(text.contains("pharos_matches_total{bank=\"known\"}"), "{text}");
    assert!(text.contains("pharos_bank_entries{bank=\"known-ph\"} 1"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_bank_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let server = TestServer::start_in(cpu_config(), dir).await;
    let mut banks = BanksClient::new(server.channel().await);
    banks
        .create_bank(proto::CreateBankRequest {
            name: "b".into(),
            kind: proto::HashKind::Phash as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let entries = (0..100u64)
        .map(|i| proto::NewEntry {
            hash: format!("{:016x}", i * 0x0101_0101),
            label: format!("l{i}"),
            ..Default::default()
        })
        .collect();
    let msgs = vec![proto::AddHashesRequest { bank: "b".into(), entries }];
    banks.add_hashes(tokio_stream::iter(msgs)).await.unwrap();
    // Keep the directory alive across the restart.
    let TestServer { stop, done, _dir, .. } = server;
    drop(stop);
    done.await.unwrap().unwrap();
    let server = TestServer::start_in(cpu_config(), _dir).await;
    assert_eq!(server._dir.path(), path);
    let mut banks = BanksClient::new(server.channel().await);
    let list = banks.list_banks(proto::ListBanksRequest {}).await.unwrap().into_inner().banks;
    assert_eq!((list[0].name.as_str(), list[0].size), ("b", 100));
    let mut matcher = MatcherClient::new(server.channel().await);
    let r = matcher
        .r#match(proto::MatchRequest {
            id: String::new(),
            hash: format!("{:016x}", 7 * 0x0101_0101u64),
            variants: vec![],
            banks: vec![],
            radius: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.matches.iter().map(|m| m.label.as_str()).collect::<Vec<_>>(), vec!["l7"]);
    server.shutdown().await.unwrap();
}

/// A large, slow-to-decode PNG (noise does not compress, so decoding is real work).
fn big_png(w: u32, h: u32) -> Vec<u8> {
    let pixels = pharos::synth::synthetic_rgb(w as usize, h as usize);
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_raw(w, h, pixels).unwrap().write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_resource_exhausted_and_stays_bounded() {
    let max_in_flight = 4;
    let cfg = ServeConfig { max_in_flight, decode_threads: 1, max_batch: 2, ..cpu_config() };
    let server = TestServer::start(cfg).await;
    let png = big_png(1600, 1200);
    let channel = server.channel().await;
    let mut calls = Vec::new();
    for i in 0..64 {
        let mut c = HasherClient::new(channel.clone());
        let req = hash_request(format!("{i}"), png.clone(), false);
        calls.push(tokio::spawn(async move { c.hash(req).await }));
    }
    // While they run, the pipeline never holds more than its bound.
    let metrics = server.metrics.clone();
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..200 {
            peak = peak.max(metrics.queue_depth.get());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    });
    let (mut ok, mut exhausted) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(s.message().contains("in flight"), "{s:?}");
                exhausted += 1;
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    let peak = watcher.await.unwrap();
    eprintln!("overload: {ok} hashed, {exhausted} RESOURCE_EXHAUSTED, peak queue depth {peak} (limit {max_in_flight})");
    assert!(exhausted > 0, "64 concurrent calls against a limit of 4 must see RESOURCE_EXHAUSTED");
    assert!(ok >= 1);
    assert!(peak <= max_in_flight as i64, "queue depth {peak} > {max_in_flight}");
    // Everything answered: nothing is left in flight, and the server still serves.
    assert_eq!(server.metrics.queue_depth.get(), 0);
    assert_eq!(server.metrics.queue_bytes.get(), 0);
    let mut c = HasherClient::new(server.channel().await);
    assert!(c.hash(hash_request("after", png, false)).await.is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_throttled_not_buffered() {
    let per_stream = 8;
    let server =
        TestServer::start(ServeConfig { max_in_flight_per_stream: per_stream, ..cpu_config() }).await;
    let (_, img) = corpus_images().into_iter().min_by_key(|(_, b)| b.len()).unwrap();
    // HTTP/2 flow-control windows are the other buffers between a client and the server: keep the
    // client's small (64 KiB, the protocol's default) so the test sees the server's own bound quickly.
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = HasherClient::new(channel);
    // An endless request stream, counted as the transport pulls it.
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    // Dihedral responses are ~600 bytes: h2 clients count DATA frames under 256 bytes that the application
    // has not read against a budget of half their window and hang up ("too_many_data_frames") when a
    // stream's window fills with them, which is the client's own guard, not what this test is about.
    let requests = tokio_stream::StreamExt::map(tokio_stream::iter(0..), move |i: usize| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        hash_request(format!("{i}"), img.clone(), true)
    });
    let mut responses = client.hash_stream(requests).await.unwrap().into_inner();
    // Read nothing: once the response window, the response buffer and the per-stream window are full, the
    // server stops reading, the request window fills, and the client's stream is no longer pulled.
    let mut pulled = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pulled.push(sent.load(std::sync::atomic::Ordering::SeqCst));
        assert!(server.metrics.queue_depth.get() <= per_stream as i64);
    }
    eprintln!("unread stream: requests pulled every 0.5 s: {pulled:?}");
    assert_eq!(
        pulled[4], pulled[5],
        "the stream kept being read while nobody read the responses: {pulled:?}"
    );
    assert!(pulled[5] < 100_000, "{pulled:?}");
    // Reading resumes the flow, in order.
    for i in 0..pulled[5] + 100 {
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!(r.id, i.to_string());
    }
    drop(responses);
    server.shutdown().await.unwrap();
}

/// A PNG that is small on the wire but large in pixels (one flat colour): slow to decode and hash, quick
/// to send, so a deadline passes while the server works rather than while the request is in transit.
fn flat_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_pixel(w, h, image::Luma([77]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_answer_deadline_exceeded() {
    let server = TestServer::start(ServeConfig { decode_threads: 1, ..cpu_config() }).await;
    let channel = server.channel().await;
    let png = flat_png(12_000, 8_000);
    eprintln!("deadline test image: {} bytes on the wire, 96 MP", png.len());
    // Keep the only worker busy with three of them (no deadline), then ask for one more within 300 ms: it
    // waits behind the others, however fast the machine.
    let mut busy = Vec::new();
    for i in 0..3 {
        let mut c = HasherClient::new(channel.clone());
        let req = hash_request(format!("busy-{i}"), png.clone(), false);
        busy.push(tokio::spawn(async move { c.hash(req).await }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut client = HasherClient::new(channel);
    let mut req = tonic::Request::new(hash_request("late", png.clone(), false));
    req.set_timeout(Duration::from_millis(300));
    let err = client.hash(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    for b in busy {
        assert!(b.await.unwrap().is_ok(), "requests without a deadline are answered");
    }
    // A generous deadline is met.
    let mut req = tonic::Request::new(hash_request("ok", png, false));
    req.set_timeout(Duration::from_secs(120));
    assert!(client.hash(req).await.is_ok());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_accepted_request() {
    let server =
        TestServer::start(ServeConfig { max_in_flight_per_stream: 32, decode_threads: 1, ..cpu_config() })
            .await;
    let images = corpus_images();
    let mut client = HasherClient::new(server.channel().await);
    // A stream that never ends by itself: the client keeps its side open.
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    for i in 0..300 {
        tx.send(hash_request(format!("{i}"), images[i % images.len()].1.clone(), false)).await.unwrap();
    }
    let mut responses =
        client.hash_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.id, "0");
    // A unary call in flight at the same time.
    let mut unary = HasherClient::new(server.channel().await);
    let big = big_png(3000, 2000);
    let in_flight = tokio::spawn(async move { unary.hash(hash_request("unary", big, false)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let metrics = server.metrics.clone();
    // A load balancer's health watch sees the server go NOT_SERVING as soon as the drain starts.
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let watch_req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let mut watch = health.watch(watch_req).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(server.shutdown());
    let changed = tokio::time::timeout(Duration::from_secs(10), watch.message()).await;
    let status = changed.expect("health changes within 10 s of the shutdown signal").unwrap().unwrap().status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    drop(watch); // an open watch is a request in flight too: the drain would wait for it
                 // The stream ends cleanly once everything the server read is answered, in order.
    let mut n = 1;
    while let Some(r) = responses.message().await.expect("stream ends with OK") {
        assert_eq!(r.id, n.to_string());
        assert!(matches!(r.outcome, Some(hash_response::Outcome::Hashes(_))), "{r:?}");
        n += 1;
    }
    let unary = in_flight.await.unwrap().expect("the unary call in flight is answered");
    assert_eq!(unary.into_inner().id, "unary");
    stopping.await.unwrap().expect("run returns Ok");
    let text = metrics.render();
    let processed: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("pharos_requests_total{method=\"HashStream\"} "))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("shutdown: {n} stream responses delivered, {processed} stream items processed; unary answered");
    assert_eq!(processed, n, "every item the server accepted was delivered");
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let server = TestServer::start(cpu_config()).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "pharos.v1.Hasher", "pharos.v1.Matcher", "pharos.v1.Banks"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "health of '{service}'");
    }

    // Reflection lists our services (what grpcurl asks first).
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(server.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        resp.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in ["pharos.v1.Hasher", "pharos.v1.Matcher", "pharos.v1.Banks", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == s), "{s} not in {names:?}");
    }

    // The metrics endpoint, over HTTP.
    let mut client = HasherClient::new(server.channel().await);
    client.hash(hash_request("m", corpus_images()[0].1.clone(), false)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let http = tokio::spawn(pharos::server::serve_metrics(listener, server.metrics.clone(), async {
        drop(stopped.await)
    }));
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for needle in [
        "pharos_images_hashed_total{backend=\"cpu\"} 1",
        "pharos_backend_info{backend=\"cpu\"} 1",
        "pharos_stage_seconds_bucket{stage=\"decode\"",
        "pharos_stage_seconds_bucket{stage=\"hash\"",
        "pharos_request_seconds_bucket{method=\"Hash\"",
        "pharos_batch_size_count 1",
        "pharos_queue_depth 0",
    ] {
        assert!(body.contains(needle), "metrics lack {needle}:\n{body}");
    }
    drop(stop);
    http.await.unwrap().unwrap();
    server.shutdown().await.unwrap();
}

#[test]
fn bench_grpc_measures_grpc_against_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("grpc.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pharos"))
        .args(["bench", "grpc", "--backend", "cpu", "--size", "96x64", "--seconds", "0.3", "--reps", "1"])
        .args(["--concurrency", "2", "--window", "4", "--secure", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("grpc / in-process"), "{stdout}");
    assert!(stdout.contains("grpc-tls-auth / grpc"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let modes: Vec<&str> =
        v["modes"].as_array().unwrap().iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["in-process", "grpc", "grpc-tls-auth", "direct"]);
    assert!(v["tls_auth_vs_grpc"].as_f64().is_some_and(|r| r.is_finite() && r > 0.0), "{v}");
    for m in v["modes"].as_array().unwrap() {
        let rate = m["median_images_per_sec"].as_f64().unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{m}");
        assert_eq!(m["runs"][0]["errors"], 0, "{m}");
        assert!(m["median_p99_ms"].as_f64().unwrap() >= m["median_p50_ms"].as_f64().unwrap(), "{m}");
    }
    let ratio = v["grpc_vs_in_process"].as_f64().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0);
    // A bad target is a clear error, exit 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pharos"))
        .args(["bench", "grpc", "--target", "http://127.0.0.1:1", "--seconds", "0.1", "--reps", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pharos serve --print-config` with the given arguments and environment.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    common::pharos_env(["serve", "--print-config"].iter().chain(args), env)
}

#[test]
fn config_file_env_and_flags_layer_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pharos.toml");
    std::fs::write(&file, "max_batch = 8\nmax_in_flight = 100\nbackend = \"cpu\"\n").unwrap();
    let f = file.to_str().unwrap();
    let get = |out: &std::process::Output, key: &str| -> String {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        v[key].to_string()
    };
    let out = print_config(&["--config", f], &[]);
    assert_eq!(
        (get(&out, "max_batch"), get(&out, "max_in_flight"), get(&out, "max_delay_ms")),
        ("8".into(), "100".into(), "2".into())
    );
    let out = print_config(&["--config", f], &[("PHAROS_MAX_BATCH", "16")]);
    assert_eq!(get(&out, "max_batch"), "16");
    let out = print_config(&["--config", f, "--max-batch", "4"], &[("PHAROS_MAX_BATCH", "16")]);
    assert_eq!((get(&out, "max_batch"), get(&out, "max_in_flight")), ("4".into(), "100".into()));
    // The shipped example is valid and states the defaults.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pharos.toml");
    let defaults = print_config(&[], &[]);
    assert_eq!(print_config(&["--config", example], &[]).stdout, defaults.stdout);

    // Mistakes are exit 1 with a message naming the problem.
    std::fs::write(&file, "max_bacth = 8\n").unwrap();
    let out = print_config(&["--config", f], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_bacth"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = print_config(&["--max-in-flight", "0"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_in_flight must be at least 1"));
    let out = print_config(&["--backend", "tpu"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backend"));
    let out = print_config(&["--config", "/nonexistent/pharos.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
async fn the_gpu_backend_serves_the_same_hashes() {
    // An adapter is there, or the test fails here.
    common::gpu();
    let images: Vec<_> = corpus_images().into_iter().take(64).collect();
    let expected = cli_hashes_with(&["--exact"]);
    let server =
        TestServer::start(ServeConfig { backend: "gpu".into(), max_batch: 16, ..cpu_config() }).await;
    let mut client = HasherClient::new(server.channel().await);
    // With the exact hashes, which the decode workers compute and the batcher attaches.
    let requests: Vec<_> = images
        .iter()
        .map(|(p, b)| proto::HashRequest { exact: true, ..hash_request(p.clone(), b.clone(), true) })
        .collect();
    let n = stream_equals_cli(&mut client, requests, &expected, "on the GPU").await;
    assert_eq!(n, images.len());
    let text = server.metrics.render();
    assert!(text.contains("pharos_backend_info{backend=\"gpu: "), "{text}");
    assert!(text.contains(&format!("pharos_images_hashed_total{{backend=\"gpu\"}} {n}")), "{text}");
    eprintln!("GPU backend over gRPC: {n}/{n} equal to `pharos hash --backend cpu`");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_at_trace_level_never_contain_image_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // A `Daemon`, so that a failing assertion below kills the process rather than leave it logging.
    let mut daemon = common::daemon::Daemon::start_with(
        &dir.path().join("data"),
        dir.path().join("stderr"),
        ["--metrics", "", "--log-format", "json"],
        &[("PHAROS_LOG", "trace")],
    );
    let addr = daemon.addr.clone();
    // A marker inside a real image (after its end, where decoders ignore it) and inside garbage.
    const MARKER: &str = "PHAROS-IMAGE-BYTES-MUST-NOT-BE-LOGGED";
    let mut image = corpus_images()[0].1.clone();
    image.extend_from_slice(MARKER.as_bytes());
    let garbage = format!("xx{MARKER}{MARKER}").into_bytes();
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = HasherClient::new(channel);
    client.hash(hash_request("a", image.clone(), false)).await.unwrap();
    assert_eq!(
        client.hash(hash_request("b", garbage.clone(), false)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let reqs = vec![hash_request("c", image, false), hash_request("d", garbage, false)];
    let mut s = client.hash_stream(tokio_stream::iter(reqs)).await.unwrap().into_inner();
    while s.message().await.unwrap().is_some() {}
    assert!(daemon.terminate().success());
    let text = daemon.stderr();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 20, "trace logging produced only {} lines", lines.len());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{l}");
    }
    assert!(!text.contains(MARKER), "image bytes reached the logs");
    assert!(!text.contains("PHAROS-IMAGE"), "image bytes reached the logs");
    eprintln!("{} JSON log lines at trace level, none with image bytes", lines.len());
}
