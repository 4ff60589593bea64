//! The HMA-compatible HTTP API (issue 15) against documented HMA answers: paths, status codes and JSON
//! shapes of HMA 1.1.7's blueprints (facebook/ThreatExchange `hasher-matcher-actioner/src/OpenMediaMatch/
//! blueprints/`), quirks included, plus Pharos's additions, auth, the URL fetcher's allow-list and the
//! rule that image bytes never reach a log or the disk.

use crate::common;
use crate::common::daemon::Daemon;
use crate::common::server::TestServer;
use pharos::server::config::ServeConfig;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn cfg() -> ServeConfig {
    ServeConfig { backend: "cpu".into(), metrics: String::new(), ..ServeConfig::default() }
}

fn client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (the daemon hands it a ring configuration).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An answer: status, content type, body (JSON when it parses, else the text as a JSON string).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.expect("request answered");
    let status = r.status().as_u16();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (content_type, retry_after) = (header("content-type").unwrap_or_default(), header("retry-after"));
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, content_type, retry_after, body }
}

async fn get(base: &str, path: &str) -> Answer {
    send(client().get(format!("{base}{path}"))).await
}

async fn post_json(base: &str, path: &str, body: Value) -> Answer {
    send(client().post(format!("{base}{path}")).json(&body)).await
}

async fn put_json(base: &str, path: &str, body: Value) -> Answer {
    send(client().put(format!("{base}{path}")).json(&body)).await
}

/// A multipart/form-data body: `(field, file name (a file) or none (a text field), bytes)`.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "pharos-test-boundary-7c1e";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_multipart(
    base: &str,
    path: &str,
    parts: &[(&str, Option<&str>, &[u8])],
    token: Option<&str>,
) -> Answer {
    let (ct, body) = multipart(parts);
    let mut rb = client().post(format!("{base}{path}")).header("content-type", ct).body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

fn msg(a: &Answer) -> &str {
    a.body["message"].as_str().unwrap_or_else(|| panic!("no message in {a:?}"))
}

/// A corpus row with a good PDQ quality, its file bytes and its PDQ as `pharos hash` computes it.
fn good_image() -> (Vec<u8>, String) {
    let row = common::rows()
        .into_iter()
        .find(|r| r.get("pdq_quality").parse::<u32>().unwrap_or(0) >= 80 && r.get("path").ends_with(".png"))
        .or_else(|| {
            common::rows().into_iter().find(|r| r.get("pdq_quality").parse::<u32>().unwrap_or(0) >= 80)
        })
        .unwrap();
    let out = common::pharos(["hash", row.path().to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (std::fs::read(row.path()).unwrap(), v["pdq"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curation_answers_as_hma_does() {
    let server = TestServer::start_http(cfg()).await;
    let b = server.http_url();
    // Banks: create (201), duplicate (403), bad name (400), no body or no name (422 arrays).
    let a = post_json(&b, "/c/banks", json!({"name": "TEST_BANK"})).await;
    assert_eq!((a.status, &a.body), (201, &json!({"matching_enabled_ratio": 1.0, "name": "TEST_BANK"})));
    let a = post_json(&b, "/c/banks", json!({"name": "TEST_BANK"})).await;
    assert_eq!((a.status, msg(&a)), (403, "Bank already exists"));
    let a = post_json(&b, "/c/banks", json!({"name": "lower-case"})).await;
    assert_eq!((a.status, msg(&a)), (400, "Bank names must be UPPER_WITH_UNDERSCORE"));
    let a = post_json(&b, "/c/banks", json!({"enabled_ratio": 1})).await;
    assert_eq!(a.status, 422);
    assert_eq!(a.body[0]["loc"], json!(["name"]), "{a:?}");
    assert_eq!(a.body[0]["type"], "missing");
    // pydantic's detail, as HMA answers it: the input and the error's page.
    assert_eq!(a.body[0]["input"], json!({"enabled_ratio": 1}));
    assert_eq!(a.body[0]["url"], "https://errors.pydantic.dev/2.14/v/missing");
    let a = send(client().post(format!("{b}/c/banks")).body("x")).await;
    assert_eq!(a.status, 422);
    assert_eq!(a.body[0]["type"], "model_type", "{a:?}");
    // HMA's quirk: `enabled` alone is ignored at creation; `enabled_ratio` is not.
    let a = post_json(&b, "/c/banks", json!({"name": "OFF_BANK", "enabled": false})).await;
    assert_eq!(a.body["matching_enabled_ratio"], json!(1.0));
    let a = post_json(
        &b,
        "/c/banks",
        json!({"name": "MD5_BANK", "signal_type": "video_md5", "enabled_ratio": 0.25}),
    )
    .await;
    assert_eq!((a.status, &a.body), (201, &json!({"matching_enabled_ratio": 0.25, "name": "MD5_BANK"})));
    let a = post_json(&b, "/c/banks", json!({"name": "X_BANK", "enabled_ratio": 2})).await;
    assert_eq!(a.status, 400, "{a:?}");
    let a = get(&b, "/c/banks").await;
    let names: Vec<&str> = a.body.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["MD5_BANK", "OFF_BANK", "TEST_BANK"]);
    let a = get(&b, "/c/bank/TEST_BANK").await;
    assert_eq!((a.status, &a.body), (200, &json!({"matching_enabled_ratio": 1.0, "name": "TEST_BANK"})));
    let a = get(&b, "/c/bank/NO_SUCH").await;
    assert_eq!((a.status, msg(&a)), (404, "bank 'NO_SUCH' not found"));
    // PUT: `enabled` prints the ratio as an integer; a rename is refused (501); unknown bank 404.
    let a = put_json(&b, "/c/bank/OFF_BANK", json!({"enabled": false})).await;
    assert_eq!((a.status, &a.body), (200, &json!({"matching_enabled_ratio": 0, "name": "OFF_BANK"})));
    let a = put_json(&b, "/c/bank/OFF_BANK", json!({"name": "NEW_NAME"})).await;
    assert_eq!(a.status, 501, "{a:?}");
    let a = put_json(&b, "/c/bank/NO_SUCH", json!({"enabled": true})).await;
    assert_eq!((a.status, msg(&a)), (404, "Bank not found"));

    // Signals: 200 {id, signals}; HMA's errors.
    let (image, pdq) = good_image();
    let a = post_json(&b, "/c/bank/TEST_BANK/signal", json!({"pdq": pdq, "note": "first"})).await;
    assert_eq!((a.status, &a.body), (200, &json!({"id": 0, "signals": {"pdq": pdq}})));
    let a = post_json(&b, "/c/bank/TEST_BANK/signal", json!({"pdq": pdq.to_uppercase()})).await;
    assert_eq!((a.status, msg(&a)), (400, "Invalid pdq signal: invalid PDQ hash"));
    let a = post_json(&b, "/c/bank/TEST_BANK/signal", json!({"nope": "x"})).await;
    assert_eq!((a.status, msg(&a)), (400, "No such signal type nope"));
    let a = post_json(&b, "/c/bank/TEST_BANK/signal", json!({})).await;
    assert_eq!((a.status, msg(&a)), (400, "No signals given"));
    let a = post_json(&b, "/c/bank/TEST_BANK/signal", json!({"pdq": pdq, "note": "x".repeat(256)})).await;
    assert_eq!((a.status, msg(&a)), (400, "note must be at most 255 characters"));
    let a = post_json(&b, "/c/bank/NO_SUCH/signal", json!({"pdq": pdq})).await;
    assert_eq!((a.status, msg(&a)), (404, "bank 'NO_SUCH' not found"));
    let a = send(client().post(format!("{b}/c/bank/TEST_BANK/signal")).body("{}")).await;
    assert_eq!(a.status, 415, "{a:?}");
    let a =
        post_json(&b, "/c/bank/MD5_BANK/signal", json!({"video_md5": " D41D8CD98F00B204E9800998ECF8427E "}))
            .await;
    assert_eq!(
        (a.status, &a.body),
        (200, &json!({"id": 0, "signals": {"video_md5": "d41d8cd98f00b204e9800998ecf8427e"}}))
    );
    let a = post_json(&b, "/c/bank/MD5_BANK/signal", json!({"pdq": pdq})).await;
    assert_eq!(a.status, 400, "a PDQ in an MD5 bank: {a:?}");

    // Content: a multipart upload with metadata and a note, then read, changed and deleted.
    let meta = br#"{"content_id": "case-17", "content_uri": "https://example.org/x", "json": {"k": [1, 2]}}"#;
    let a = post_multipart(
        &b,
        "/c/bank/TEST_BANK/content",
        &[("photo", Some("a.png"), &image), ("metadata", None, meta), ("note", None, b"seen twice")],
        None,
    )
    .await;
    assert_eq!((a.status, &a.body), (200, &json!({"id": 1, "signals": {"pdq": pdq}})));
    let a = post_multipart(
        &b,
        "/c/bank/TEST_BANK/content",
        &[("photo", Some("a.png"), &image), ("metadata", None, br#"{"other": 1}"#)],
        None,
    )
    .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(msg(&a).starts_with("Invalid metadata: "), "{a:?}");
    let a = send(client().post(format!("{b}/c/bank/TEST_BANK/content"))).await;
    assert_eq!((a.status, msg(&a)), (400, "Neither `url` nor multipart file upload was received"));
    let a = get(&b, "/c/bank/TEST_BANK/content/1?include_signals=true").await;
    assert_eq!(
        a.body,
        json!({
            "id": 1, "disable_until_ts": 1, "original_media_uri": null,
            "bank": {"matching_enabled_ratio": 1.0, "name": "TEST_BANK"},
            "signals": {"pdq": pdq},
            "metadata": {"content_id": "case-17", "content_uri": "https://example.org/x", "json": {"k": [1, 2]}, "collab": null},
            "note": "seen twice"
        })
    );
    let a = get(&b, "/c/bank/TEST_BANK/content/0?include_metadata=false").await;
    assert_eq!(
        a.body,
        json!({"id": 0, "disable_until_ts": 1, "original_media_uri": null, "bank": {"matching_enabled_ratio": 1.0, "name": "TEST_BANK"}, "note": "first"})
    );
    let a = get(&b, "/c/bank/TEST_BANK/content/99").await;
    assert_eq!((a.status, msg(&a)), (404, "content '99' not found"));
    let a = get(&b, "/c/bank/TEST_BANK/content/abc").await;
    assert_eq!(a.status, 404);
    assert!(a.content_type.starts_with("text/html"), "Flask's routing 404 is HTML: {a:?}");
    let a = put_json(&b, "/c/bank/TEST_BANK/content/1", json!({"disable_until_ts": "0", "note": ""})).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!((&a.body["disable_until_ts"], &a.body["note"]), (&json!(0), &Value::Null));
    assert_eq!(a.body["user_metadata"]["content_id"], "case-17");
    let a = put_json(&b, "/c/bank/TEST_BANK/content/1", json!({"disable_until_ts": "soon"})).await;
    assert_eq!((a.status, msg(&a)), (400, "Invalid int: 'soon'"));
    let a = put_json(&b, "/c/bank/TEST_BANK/content/1", json!({"disable_until_ts": -5})).await;
    assert_eq!((a.status, msg(&a)), (400, "disable_until_ts must be a non-negative integer"));
    let a = put_json(&b, "/c/bank/TEST_BANK/content/1", json!({"disable_until_ts": 4_000_000_000i64})).await;
    assert_eq!((a.status, msg(&a)), (400, "disable_until_ts must be less than 5 years in the future"));
    let a = send(client().delete(format!("{b}/c/bank/TEST_BANK/content/0"))).await;
    assert_eq!((a.status, &a.body), (200, &json!({"deleted": 1})));
    let a = send(client().delete(format!("{b}/c/bank/TEST_BANK/content/0"))).await;
    assert_eq!((a.status, &a.body), (200, &json!({"deleted": 0})));
    let a = get(&b, "/c/bank/TEST_BANK/content/0").await;
    assert_eq!((a.status, msg(&a)), (404, "content '0' not found"), "a deleted item is gone");

    // Pharos's batch add: one transaction, ids in order.
    let many: Vec<Value> =
        (0..5).map(|i| json!({"pdq": format!("{:064x}", i + 1), "note": format!("n{i}")})).collect();
    let a = post_json(&b, "/c/bank/TEST_BANK/signals", json!({"signals": many})).await;
    assert_eq!(a.status, 200, "{a:?}");
    let ids: Vec<u64> = a.body.as_array().unwrap().iter().map(|x| x["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 3, 4, 5, 6]);
    let a = post_json(&b, "/c/bank/TEST_BANK/signals", json!({"signals": [{"pdq": "00"}]})).await;
    assert_eq!((a.status, msg(&a)), (400, "signals[0]: Invalid pdq signal: invalid PDQ hash"));

    // Types, index status, what is not served.
    let a = get(&b, "/c/signal_type").await;
    assert_eq!(&a.body[0], &json!({"enabled_ratio": 1.0, "name": "pdq"}));
    assert_eq!(&a.body[1], &json!({"enabled_ratio": 1.0, "name": "video_md5"}));
    let a = get(&b, "/c/content_type").await;
    assert_eq!(a.body, json!([{"enabled": true, "name": "photo"}, {"enabled": true, "name": "video"}]));
    let a = get(&b, "/c/signal_type/index?signal_type=pdq").await;
    assert_eq!(a.body["pdq"]["db_size"], json!(6), "{a:?}");
    assert_eq!(a.body["pdq"]["index_out_of_date"], json!(false));
    let a = get(&b, "/c/signal_type/index?signal_type=nope").await;
    assert_eq!((a.status, msg(&a)), (400, "No such signal type 'nope'"));
    let a =
        send(client().post(format!("{b}/c/exchanges")).json(&json!({"bank": "X", "api": "sample"}))).await;
    assert_eq!(a.status, 501, "{a:?}");
    let a = send(client().patch(format!("{b}/c/banks"))).await;
    assert_eq!(a.status, 405);
    let a = get(&b, "/no/such/route").await;
    assert_eq!(a.status, 404);
    // DELETE is {"message": "Done"}, also for a bank that does not exist.
    for _ in 0..2 {
        let a = send(client().delete(format!("{b}/c/bank/OFF_BANK"))).await;
        assert_eq!((a.status, &a.body), (200, &json!({"message": "Done"})));
    }
    let text = server.metrics.render();
    assert!(text.contains("pharos_http_requests_total{route=\"/c/banks\",status=\"201\"} 3"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_as_hma_does_with_pharos_batches() {
    let server = TestServer::start_http(cfg()).await;
    let b = server.http_url();
    let (image, pdq) = good_image();
    let near = {
        let h = pharos::hash::Hash256::from_hex(&pdq).unwrap();
        common::flipped(h, 12).to_hex()
    };
    for (name, ratio) in [("BANK_A", 1.0), ("BANK_B", 1.0), ("BANK_OFF", 0.0)] {
        let a = post_json(&b, "/c/banks", json!({"name": name, "enabled_ratio": ratio})).await;
        assert_eq!(a.status, 201);
    }
    post_json(&b, "/c/bank/BANK_A/signal", json!({"pdq": pdq})).await;
    post_json(&b, "/c/bank/BANK_A/signal", json!({"pdq": near})).await;
    post_json(&b, "/c/bank/BANK_B/signal", json!({"pdq": near})).await;
    post_json(&b, "/c/bank/BANK_OFF/signal", json!({"pdq": pdq})).await;

    // raw_lookup: ids, or objects with the distance as a string; every bank whatever its ratio.
    let a = get(&b, &format!("/m/raw_lookup?signal_type=pdq&signal={pdq}")).await;
    assert_eq!(a.body, json!({"matches": [0, 0, 0, 1]}), "{a:?}");
    let a =
        get(&b, &format!("/m/raw_lookup?signal_type=pdq&signal={pdq}&include_distance=true&banks=BANK_B"))
            .await;
    assert_eq!(a.body, json!({"matches": [{"bank_content_id": 0, "distance": "12"}]}));
    let a = get(&b, &format!("/m/raw_lookup?signal_type=pdq&signal={pdq}&banks=NO_SUCH")).await;
    assert_eq!((a.status, &a.body), (200, &json!({"matches": []})));
    let a = get(&b, &format!("/m/raw_lookup?signal_type=pdq&signal={pdq}&include_distance=maybe")).await;
    assert_eq!(a.status, 422);
    let a = get(&b, "/m/raw_lookup?signal_type=pdq").await;
    assert_eq!((a.status, &a.body[0]["loc"]), (422, &json!(["signal"])));
    let a = get(&b, "/m/raw_lookup?signal_type=nope&signal=00").await;
    assert_eq!((a.status, msg(&a)), (400, "No such SignalType 'nope'"));
    let a = get(&b, "/m/raw_lookup?signal_type=pdq&signal=00").await;
    assert_eq!((a.status, msg(&a)), (400, "invalid signal: invalid PDQ hash"));

    // lookup: by bank, a bank with ratio 0 left out (no coin flip reaches it), banks filter.
    let a = get(&b, &format!("/m/lookup?signal_type=pdq&signal={pdq}")).await;
    assert_eq!(
        a.body,
        json!({"BANK_A": [{"bank_content_id": 0, "distance": "0"}, {"bank_content_id": 1, "distance": "12"}],
               "BANK_B": [{"bank_content_id": 0, "distance": "12"}]})
    );
    let a = get(&b, &format!("/m/lookup?signal_type=pdq&signal={pdq}&banks=BANK_B,BANK_OFF&seed=x")).await;
    assert_eq!(a.body, json!({"BANK_B": [{"bank_content_id": 0, "distance": "12"}]}));
    let a = get(&b, "/m/lookup?signal_type=pdq").await;
    assert_eq!((a.status, msg(&a)), (400, "Either url or both signal and signal_type are required"));
    let a = get(&b, &format!("/m/lookup?signal_type=pdq&signal={}", "0".repeat(64))).await;
    assert_eq!((a.status, &a.body), (200, &json!({})));
    // A half-enabled bank: about half of the seeds take it, and a seed always decides the same way.
    put_json(&b, "/c/bank/BANK_B", json!({"enabled_ratio": 0.5})).await;
    let mut taken = 0;
    for seed in 0..200 {
        let path = format!("/m/lookup?signal_type=pdq&signal={pdq}&banks=BANK_B&seed={seed}");
        let first = get(&b, &path).await.body;
        assert_eq!(first, get(&b, &path).await.body, "seed {seed}");
        taken += usize::from(first.get("BANK_B").is_some());
    }
    assert!((60..140).contains(&taken), "ratio 0.5 took the bank for {taken} of 200 seeds");

    // POST lookup: by signal type then bank; bypass_coinflip=true reaches the bank with ratio 0.
    let a = post_multipart(&b, "/m/lookup?banks=BANK_OFF", &[("photo", Some("x"), &image)], None).await;
    assert_eq!((a.status, &a.body), (200, &json!({"pdq": {}})));
    let a = post_multipart(
        &b,
        "/m/lookup?banks=BANK_OFF&bypass_coinflip=true",
        &[("photo", Some("x"), &image)],
        None,
    )
    .await;
    assert_eq!(a.body, json!({"pdq": {"BANK_OFF": [{"bank_content_id": 0, "distance": "0"}]}}));
    // Pharos: hashes and matches in one call, and many signals in one call.
    let a = post_multipart(&b, "/m/hash_lookup?banks=BANK_A", &[("photo", Some("x"), &image)], None).await;
    assert_eq!(a.body["hashes"], json!({"pdq": pdq}));
    assert_eq!(a.body["matches"]["pdq"]["BANK_A"][0], json!({"bank_content_id": 0, "distance": "0"}));
    let a = post_json(
        &b,
        "/m/lookup_batch",
        json!({"signal_type": "pdq", "signals": [pdq, "f".repeat(64), near], "banks": ["BANK_A"]}),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let r = a.body["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[1], json!({}));
    assert_eq!(
        r[2]["BANK_A"],
        json!([{"bank_content_id": 0, "distance": "12"}, {"bank_content_id": 1, "distance": "0"}])
    );
    let a = post_json(&b, "/m/lookup_batch", json!({"signal_type": "pdq", "signals": [pdq, "zz"]})).await;
    assert_eq!((a.status, msg(&a)), (400, "invalid signal at signals[1]: invalid PDQ hash"));

    // compare: [match, {distance}] with an integer distance; HMA's errors.
    let a = post_json(&b, "/m/compare", json!({"pdq": [pdq, near]})).await;
    assert_eq!(a.body, json!({"pdq": [true, {"distance": 12}]}));
    let a = post_json(&b, "/m/compare", json!({"pdq": [pdq]})).await;
    assert_eq!((a.status, msg(&a)), (400, "Comparison hash list length must be exactly 2"));
    let a = post_json(&b, "/m/compare", json!({"pdq": "x"})).await;
    assert_eq!((a.status, msg(&a)), (400, "Comparison hashes for pdq was not a list"));
    let a = post_json(&b, "/m/compare", json!([1])).await;
    assert_eq!((a.status, msg(&a)), (400, "Request input was not a dict"));
    let a = post_json(&b, "/m/compare", json!({"pdq": [pdq, "x"]})).await;
    assert_eq!((a.status, msg(&a)), (400, "Invalid pdq hash: invalid PDQ hash"));
    let a = post_json(
        &b,
        "/m/compare",
        json!({"video_md5": ["d41d8cd98f00b204e9800998ecf8427e", "D41D8CD98F00B204E9800998ECF8427E"]}),
    )
    .await;
    assert_eq!(a.body, json!({"video_md5": [true, {}]}));

    let a = get(&b, "/m/index/status?signal_type=pdq").await;
    assert_eq!((&a.body["pdq"]["present"], &a.body["pdq"]["size"]), (&json!(true), &json!(4)));
    assert!(a.body["pdq"]["built_to"].as_i64().unwrap() > 1_700_000_000);
    let a = get(&b, "/m/index/status?signal_type=video_md5").await;
    assert_eq!(a.body, json!({"video_md5": {"present": true, "built_to": -1, "size": 0}}));
    let a = get(&b, "/status").await;
    assert_eq!((a.status, a.body.as_str()), (200, Some("I-AM-ALIVE")));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_equals_the_cli_and_refuses_bad_uploads_as_hma_does() {
    let server = TestServer::start_http(cfg()).await;
    let b = server.http_url();
    // Every image of the corpus in use: /h/hash equals `pharos hash` (PDQ "" below quality 50, as HMA).
    let out = common::pharos(["hash", common::corpus_dir().to_str().unwrap()]);
    let mut cli: HashMap<String, Value> = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        cli.insert(v["path"].as_str().unwrap().to_string(), v);
    }
    let rows = common::rows();
    let step = (rows.len() / 60).max(1);
    let (mut n, mut low) = (0, 0);
    for row in rows.iter().step_by(step) {
        let bytes = std::fs::read(row.path()).unwrap();
        let a =
            post_multipart(&b, "/h/hash?types=pdq,phash,md5", &[("photo", Some("f"), &bytes)], None).await;
        let want = &cli[row.path().to_str().unwrap()];
        assert_eq!(a.status, 200, "{}: {a:?}", row.get("path"));
        let quality = want["quality"].as_u64().unwrap();
        let pdq = if quality < 50 {
            low += 1;
            ""
        } else {
            want["pdq"].as_str().unwrap()
        };
        assert_eq!(a.body["pdq"], json!(pdq), "{}", row.get("path"));
        assert_eq!(a.body["phash"], want["phash"], "{}", row.get("path"));
        assert_eq!(a.body["md5"], json!(common::md5_hex(&bytes)), "{}", row.get("path"));
        n += 1;
    }
    eprintln!("/h/hash equal to `pharos hash` on {n} corpus images ({low} below quality 50 answered \"\")");
    let (image, _) = good_image();
    // A video is hashed as the MD5 of its bytes; types select, HMA's messages for the rest.
    let a = post_multipart(&b, "/h/hash", &[("video", Some("v.mp4"), b"not really a video")], None).await;
    assert_eq!(a.body, json!({"video_md5": common::md5_hex(b"not really a video")}));
    let a = post_multipart(&b, "/h/hash?types=video_md5", &[("photo", Some("p"), &image)], None).await;
    assert_eq!((a.status, msg(&a)), (400, "signal type 'video_md5' doesn't exist or is disabled"));
    let a = post_multipart(&b, "/h/hash?types=,", &[("photo", Some("p"), &image)], None).await;
    assert_eq!((a.status, msg(&a)), (400, "empty signal type selection"));
    let a = post_multipart(&b, "/h/hash", &[("file", Some("p"), &image)], None).await;
    assert_eq!((a.status, msg(&a)), (400, "no such content_type: 'file'"));
    let a =
        post_multipart(&b, "/h/hash", &[("photo", Some("a"), &image), ("photo", Some("b"), &image)], None)
            .await;
    assert_eq!((a.status, msg(&a)), (400, "Only one file allowed per request"));
    let a = post_multipart(&b, "/h/hash", &[("note", None, b"no file")], None).await;
    assert_eq!((a.status, msg(&a)), (400, "Missing multipart/form-data file upload"));
    let a = send(client().post(format!("{b}/h/hash")).body("plain")).await;
    assert_eq!((a.status, msg(&a)), (400, "Missing multipart/form-data file upload"));
    // Not an image: 400 with the decoder's reason (HMA answers a bare 500), and the server goes on.
    let a = post_multipart(&b, "/h/hash", &[("photo", Some("p"), b"GIF89a\x01\x00garbage")], None).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(msg(&a).contains("gif") || msg(&a).contains("GIF"), "{a:?}");
    let a = get(&b, "/h/hash").await;
    assert_eq!((a.status, &a.body[0]["loc"]), (422, &json!(["url"])));
    let a = post_multipart(&b, "/h/hash", &[("photo", Some("p"), &image)], None).await;
    assert_eq!(a.status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_grants_and_quotas_apply_to_http_as_to_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.toml");
    let ids = [
        ("admin", "tok-http-admin-1", r#"roles = ["admin", "write", "read", "match", "hash"]"#),
        ("matcher", "tok-http-match-2", r#"roles = ["match"]"#),
        ("eu", "tok-http-eu-3", "roles = [\"match\", \"read\", \"write\"]\nbanks = [\"EU_BANK\"]"),
        ("slow", "tok-http-slow-4", "roles = [\"match\"]\nrequests_per_s = 1\nburst = 2"),
    ];
    let mut text = String::new();
    for (name, tok, rest) in ids {
        text += &format!(
            "[[identity]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n{rest}\n\n",
            common::sha256_hex(tok.as_bytes())
        );
    }
    std::fs::write(&auth, text).unwrap();
    let server = TestServer::start_http(ServeConfig { auth: Some(auth), ..cfg() }).await;
    let b = server.http_url();
    let as_ = |rb: reqwest::RequestBuilder, t: &str| rb.bearer_auth(t);
    let c = client();
    // Health needs nothing; everything else needs a known token.
    assert_eq!(get(&b, "/status").await.status, 200);
    assert_eq!(get(&b, "/openapi.json").await.status, 200);
    let a = get(&b, "/c/banks").await;
    assert_eq!(a.status, 401, "{a:?}");
    assert!(msg(&a).contains("no credentials"), "{a:?}");
    let a = send(as_(c.get(format!("{b}/c/banks")), "wrong-token")).await;
    assert_eq!(a.status, 401);
    let (_, pdq) = good_image();
    for name in ["EU_BANK", "US_BANK"] {
        let a =
            send(as_(c.post(format!("{b}/c/banks")).json(&json!({"name": name})), "tok-http-admin-1")).await;
        assert_eq!(a.status, 201, "{a:?}");
        let a = send(as_(
            c.post(format!("{b}/c/bank/{name}/signal")).json(&json!({"pdq": pdq})),
            "tok-http-admin-1",
        ))
        .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    // Roles: a matcher looks up but cannot create, add or read content.
    let a =
        send(as_(c.post(format!("{b}/c/banks")).json(&json!({"name": "MINE"})), "tok-http-match-2")).await;
    assert_eq!(a.status, 403, "{a:?}");
    assert!(msg(&a).contains("lacks the 'admin' role"), "{a:?}");
    let a = send(as_(
        c.post(format!("{b}/c/bank/US_BANK/signal")).json(&json!({"pdq": pdq})),
        "tok-http-match-2",
    ))
    .await;
    assert_eq!(a.status, 403);
    let a =
        send(as_(c.get(format!("{b}/c/bank/US_BANK/content/0?include_signals=true")), "tok-http-match-2"))
            .await;
    assert_eq!(a.status, 403);
    let a = send(as_(c.get(format!("{b}/m/lookup?signal_type=pdq&signal={pdq}")), "tok-http-match-2")).await;
    assert_eq!(
        a.body,
        json!({"EU_BANK": [{"bank_content_id": 0, "distance": "0"}], "US_BANK": [{"bank_content_id": 0, "distance": "0"}]})
    );
    // Grants: the EU caller sees, searches and changes only its bank.
    let a = send(as_(c.get(format!("{b}/c/banks")), "tok-http-eu-3")).await;
    assert_eq!(a.body, json!([{"matching_enabled_ratio": 1.0, "name": "EU_BANK"}]));
    let a = send(as_(
        c.get(format!("{b}/m/raw_lookup?signal_type=pdq&signal={pdq}&include_distance=true")),
        "tok-http-eu-3",
    ))
    .await;
    assert_eq!(a.body, json!({"matches": [{"bank_content_id": 0, "distance": "0"}]}));
    let a = send(as_(c.get(format!("{b}/c/bank/US_BANK")), "tok-http-eu-3")).await;
    assert_eq!(a.status, 403, "{a:?}");
    let a =
        send(as_(c.get(format!("{b}/m/lookup?signal_type=pdq&signal={pdq}&banks=US_BANK")), "tok-http-eu-3"))
            .await;
    assert_eq!(a.status, 403);
    let a =
        send(as_(c.get(format!("{b}/c/bank/EU_BANK/content/0?include_signals=true")), "tok-http-eu-3")).await;
    assert_eq!((a.status, &a.body["signals"]), (200, &json!({"pdq": pdq})));
    // Quotas: 429 with Retry-After once the burst is spent.
    let mut limited = None;
    for _ in 0..6 {
        let a = send(as_(c.get(format!("{b}/c/banks")), "tok-http-slow-4")).await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
    }
    let a = limited.expect("the slow caller was limited");
    assert!(a.retry_after.is_some(), "{a:?}");
    assert!(msg(&a).contains("over its request rate"), "{a:?}");
    server.shutdown().await.unwrap();
}

/// A loopback HTTP server that counts its requests and answers each with `answer(path)`.
async fn counting_server(
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let (h, answer) = (hits.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = s.write_all(&answer(&path)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, hits)
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_fetcher_reaches_only_allowed_public_hosts() {
    let (image, pdq) = good_image();
    // The server that must never be hit, and one that serves the image (and redirects to the first).
    let (forbidden, forbidden_hits) =
        counting_server(|_| http_response("200 OK", &[("content-type", "image/png")], b"x")).await;
    let img = image.clone();
    let target = forbidden.clone();
    let (allowed, allowed_hits) = counting_server(move |path| match path {
        "/redirect" => http_response("302 Found", &[("location", &format!("http://{target}/x.png"))], b""),
        "/big" => http_response("200 OK", &[("content-type", "image/png")], &vec![0u8; 4096]),
        "/text" => http_response("200 OK", &[("content-type", "text/plain")], b"hello"),
        _ => http_response("200 OK", &[("content-type", "image/png")], &img),
    })
    .await;
    let allowed_port = allowed.rsplit(':').next().unwrap().to_string();
    let forbidden_url = format!("http://{forbidden}/x.png");
    let url = |path: &str| format!("http://localhost:{allowed_port}{path}");

    // Off by default.
    let server = TestServer::start_http(cfg()).await;
    let a = get(&server.http_url(), &format!("/h/hash?url={forbidden_url}")).await;
    assert_eq!(a.status, 400);
    assert!(msg(&a).starts_with("Invalid or unsafe URL provided"), "{a:?}");
    server.shutdown().await.unwrap();

    // Allowed hosts but private addresses not allowed: an IP literal and a name resolving to loopback are
    // both refused; so is every host outside the list.
    let strict = ServeConfig { http_fetch_hosts: vec!["localhost".into(), "127.0.0.1".into()], ..cfg() };
    let server = TestServer::start_http(strict).await;
    let b = server.http_url();
    let a = get(&b, &format!("/h/hash?url={forbidden_url}")).await;
    assert_eq!((a.status, msg(&a)), (400, "Invalid or unsafe URL provided"));
    let a = get(&b, &format!("/h/hash?url={}", url("/x.png"))).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(msg(&a).starts_with("Failed to fetch URL") && msg(&a).contains("loopback or private"), "{a:?}");
    let a = get(&b, "/h/hash?url=file:///etc/passwd").await;
    assert_eq!((a.status, msg(&a)), (400, "Invalid or unsafe URL provided"));
    server.shutdown().await.unwrap();

    // Private addresses allowed, only `localhost` listed: the image is fetched; a redirect to an address
    // outside the list is not followed; size cap; content type from the response.
    let open = ServeConfig {
        http_fetch_hosts: vec!["localhost".into()],
        http_fetch_private: true,
        max_image_bytes: 4000.max(image.len() as u64),
        ..cfg()
    };
    let server = TestServer::start_http(open).await;
    let b = server.http_url();
    let a = get(&b, &format!("/h/hash?url={}", url("/x.png"))).await;
    assert_eq!((a.status, &a.body), (200, &json!({"pdq": pdq})));
    let a = get(&b, &format!("/m/lookup?url={}", url("/x.png"))).await;
    assert_eq!((a.status, &a.body), (200, &json!({"pdq": {}})));
    post_json(&b, "/c/banks", json!({"name": "FROM_URL"})).await;
    let a = send(
        client()
            .post(format!("{b}/c/bank/FROM_URL/content?url={}", url("/x.png")))
            .json(&json!({"note": "fetched"})),
    )
    .await;
    assert_eq!((a.status, &a.body), (200, &json!({"id": 0, "signals": {"pdq": pdq}})));
    let a = get(&b, "/c/bank/FROM_URL/content/0").await;
    assert_eq!((&a.body["original_media_uri"], &a.body["note"]), (&json!(url("/x.png")), &json!("fetched")));
    let a = get(&b, &format!("/h/hash?url={}", url("/redirect"))).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(msg(&a).contains("outside the allowed hosts"), "{a:?}");
    let a = get(&b, &format!("/h/hash?url={}", url("/text"))).await;
    assert_eq!(a.status, 400);
    assert!(msg(&a).starts_with("unsupported url ContentType: 'text/plain'"), "{a:?}");
    let a = get(&b, &format!("/h/hash?url={}&content_type=video", url("/text"))).await;
    assert_eq!(a.body, json!({"video_md5": common::md5_hex(b"hello")}));
    server.shutdown().await.unwrap();
    let small = ServeConfig {
        http_fetch_hosts: vec!["localhost".into()],
        http_fetch_private: true,
        max_image_bytes: 1000,
        ..cfg()
    };
    let server = TestServer::start_http(small).await;
    let a = get(&server.http_url(), &format!("/h/hash?url={}", url("/big"))).await;
    assert_eq!((a.status, msg(&a)), (413, "Content too large"));
    server.shutdown().await.unwrap();

    assert_eq!(forbidden_hits.load(Ordering::SeqCst), 0, "a host outside the allow-list was reached");
    assert!(allowed_hits.load(Ordering::SeqCst) >= 5);
}

#[test]
fn the_openapi_document_lists_every_route_and_each_is_served() {
    let doc = pharos::server::http::openapi::document();
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<String> = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    let mut expected = vec![
        "GET /status",
        "GET /status/live",
        "GET /h/hash",
        "POST /h/hash",
        "GET /m/raw_lookup",
        "GET /m/lookup",
        "POST /m/lookup",
        "POST /m/lookup_batch",
        "GET /m/hash_lookup",
        "POST /m/hash_lookup",
        "POST /m/compare",
        "GET /m/index/status",
        "GET /c/banks",
        "POST /c/banks",
        "GET /c/bank/{name}",
        "PUT /c/bank/{name}",
        "DELETE /c/bank/{name}",
        "POST /c/bank/{name}/signal",
        "POST /c/bank/{name}/signals",
        "POST /c/bank/{name}/content",
        "GET /c/bank/{name}/content/{id}",
        "PUT /c/bank/{name}/content/{id}",
        "DELETE /c/bank/{name}/content/{id}",
        "GET /c/signal_type",
        "GET /c/signal_type/index",
        "GET /c/content_type",
    ];
    expected.sort();
    assert_eq!(listed, expected);
    // And the router serves each (answers anything but the 404 of an unknown route).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = TestServer::start_http(cfg()).await;
        let b = server.http_url();
        for op in &listed {
            let (method, path) = op.split_once(' ').unwrap();
            let path = path.replace("{name}", "SOME_BANK").replace("{id}", "0");
            let a = send(client().request(method.parse().unwrap(), format!("{b}{path}"))).await;
            assert!(
                !(a.status == 404 && a.content_type.starts_with("text/html")),
                "{op} is not routed: {a:?}"
            );
        }
        server.shutdown().await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_bytes_reach_neither_the_logs_nor_the_disk_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = Daemon::start_with(
        &data,
        dir.path().join("stderr"),
        ["--metrics", "", "--http", "127.0.0.1:0", "--log-format", "json"],
        &[("PHAROS_LOG", "trace")],
    );
    let b = d.http_url.clone().expect("the HTTP API's address is announced");
    const MARKER: &str = "PHAROS-HTTP-IMAGE-BYTES-MUST-NOT-BE-LOGGED";
    let (mut image, _) = good_image();
    image.extend_from_slice(MARKER.as_bytes());
    let garbage = format!("xx{MARKER}{MARKER}").into_bytes();
    assert_eq!(post_json(&b, "/c/banks", json!({"name": "MARKED"})).await.status, 201);
    for bytes in [&image, &garbage] {
        post_multipart(&b, "/h/hash?types=pdq,md5", &[("photo", Some(MARKER), bytes)], None).await;
        post_multipart(&b, "/m/lookup", &[("photo", Some(MARKER), bytes)], None).await;
        post_multipart(&b, "/m/hash_lookup", &[("photo", Some(MARKER), bytes)], None).await;
        post_multipart(
            &b,
            "/c/bank/MARKED/content",
            &[("photo", Some(MARKER), bytes), ("note", None, b"n")],
            None,
        )
        .await;
        post_multipart(&b, "/h/hash", &[("video", Some(MARKER), bytes)], None).await;
    }
    assert!(d.terminate().success());
    let text = d.stderr();
    let requests = text.lines().filter(|l| l.contains("HTTP request")).count();
    assert!(requests >= 10, "each request is logged at debug level; found {requests}: {text}");
    assert!(!text.contains("PHAROS-HTTP-IMAGE"), "image bytes reached the logs");
    let mut files = 0;
    for entry in
        walkdir::WalkDir::new(&data).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file())
    {
        let bytes = std::fs::read(entry.path()).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "image bytes in {}",
            entry.path().display()
        );
        files += 1;
    }
    assert!(files > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_uses_the_grpc_certificate_and_client_certificates_name_callers() {
    use crate::trust::{tls_args, Pki};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tmp = tempfile::tempdir().unwrap();
    let (pki, clients) = (Pki::new("pharos test CA"), Pki::new("pharos client CA"));
    std::fs::write(tmp.path().join("clients.pem"), &clients.ca_pem).unwrap();
    let token = "tok-https-writer-5";
    let auth = tmp.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[identity]]\nname = \"reviewer\"\ncert_name = \"reviewer.example.org\"\nroles = [\"admin\"]\n\n\
             [[identity]]\nname = \"writer\"\ntoken_sha256 = \"{}\"\nroles = [\"write\"]\n",
            common::sha256_hex(token.as_bytes())
        ),
    )
    .unwrap();
    let mut args = tls_args(tmp.path(), &pki);
    args.extend(["--tls-client-ca".into(), tmp.path().join("clients.pem").display().to_string()]);
    args.extend(["--auth".into(), auth.display().to_string(), "--metrics".into(), "".into()]);
    args.extend(["--http".into(), "127.0.0.1:0".into()]);
    let mut daemon = Daemon::start_with(&tmp.path().join("data"), tmp.path().join("serve.log"), &args, &[]);
    let base = daemon.http_url.clone().unwrap();
    assert!(base.starts_with("https://"), "{base}");
    let https = |client_cert: Option<(String, String)>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let tls = match client_cert {
            Some((cert, key)) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        reqwest::Client::builder().use_preconfigured_tls(tls).no_proxy().build().unwrap()
    };
    let base = base.replace("127.0.0.1", "localhost");
    // No client certificate: the handshake is refused (mutual TLS), as on gRPC.
    assert!(https(None).get(format!("{base}/status")).send().await.is_err());
    // The certificate names the caller: admin may create a bank, and the writer's token adds to it.
    let reviewer = https(Some(clients.leaf(&["reviewer", "reviewer.example.org"], -1, 30)));
    let a = send(reviewer.post(format!("{base}/c/banks")).json(&json!({"name": "VIA_HTTPS"}))).await;
    assert_eq!(a.status, 201, "{a:?}");
    let a =
        send(reviewer.post(format!("{base}/c/bank/VIA_HTTPS/signal")).json(&json!({"pdq": "f".repeat(64)})))
            .await;
    assert_eq!(a.status, 403, "admin alone may not write entries: {a:?}");
    let a = send(
        reviewer
            .post(format!("{base}/c/bank/VIA_HTTPS/signal"))
            .bearer_auth(token)
            .json(&json!({"pdq": "f".repeat(64)})),
    )
    .await;
    assert_eq!((a.status, &a.body["id"]), (200, &json!(0)), "{a:?}");
    // Plain HTTP on the TLS port is not served.
    let plain = base.replace("https://", "http://");
    assert!(client().get(format!("{plain}/status")).send().await.is_err());
    assert!(daemon.terminate().success());
    assert!(!daemon.stderr().contains(token), "a token reached the logs");
}
