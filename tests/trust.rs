//! The trust boundary (issue 12) against real `pharos serve` processes over TLS, with certificates made here
//! (rcgen) and tokens only the test knows:
//!
//! - every RPC × every role (plus no credentials and a wrong token) answers the exact status, and a token
//!   removed from the auth file stops working after SIGHUP while the connection stays up;
//! - a `match`-only caller never receives a bank hash (Match, HashAndMatch, errors, audit), `read` does;
//!   bank grants restrict what a caller searches, lists and changes; bank changes are audited with the caller;
//! - quotas: a caller over its rate gets RESOURCE_EXHAUSTED with a RetryInfo while another is served, and an
//!   address that keeps failing authentication is refused for a while, even with a right token;
//! - mutual TLS: a client certificate names the caller; another CA's, an expired one, or none is refused at
//!   the handshake;
//! - no token appears in the trace-level logs, the metrics or any error message of the run, and
//!   `--print-config` shows only digest prefixes;
//! - a daemon without TLS and auth refuses a non-loopback address unless `--insecure`.

use crate::common::daemon::Daemon;
use pharos::server::proto::{self, audit_client::AuditClient, banks_client::BanksClient};
use pharos::server::proto::{hasher_client::HasherClient, matcher_client::MatcherClient};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};

/// A CA and what it signed, as PEM.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki { ca_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf for `names` (first is the CN), valid from `from` to `to` days from now: (cert PEM, key PEM).
    pub(crate) fn leaf(&self, names: &[&str], from: i64, to: i64) -> (String, String) {
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub(crate) fn sha256_hex(s: &str) -> String {
    crate::common::sha256_hex(s.as_bytes())
}

/// The test's tokens: one per role, one with read + match, one restricted to bank `pdq`.
const TOKENS: &[(&str, &str, &str)] = &[
    ("hasher", "tok-hash-3b1f0c9e7d", r#"roles = ["hash"]"#),
    ("match-only", "tok-match-8e2a4d6c1b", r#"roles = ["match"]"#),
    ("reader", "tok-read-5c7e9a1f3d", r#"roles = ["read", "match"]"#),
    ("writer", "tok-write-2d4f6b8a0c", r#"roles = ["write"]"#),
    ("admin", "tok-admin-9f1e3d5b7a", r#"roles = ["admin"]"#),
    ("eu-matcher", "tok-eu-6a8c0e2f4b", "roles = [\"match\", \"read\"]\nbanks = [\"pdq\"]"),
];

fn token(name: &str) -> &'static str {
    TOKENS.iter().find(|t| t.0 == name).unwrap().1
}

fn auth_file(dir: &Path, skip: &[&str], extra: &str) -> PathBuf {
    let mut text = String::new();
    for (name, tok, rest) in TOKENS.iter().filter(|t| !skip.contains(&t.0)) {
        text +=
            &format!("[[identity]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n{rest}\n\n", sha256_hex(tok));
    }
    text += extra;
    let path = dir.join("auth.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes the server's certificate and key, and returns the CLI arguments for TLS.
pub(crate) fn tls_args(dir: &Path, pki: &Pki) -> Vec<String> {
    let (cert, key) = pki.leaf(&["localhost", "127.0.0.1"], -1, 30);
    std::fs::write(dir.join("server.pem"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key).unwrap();
    vec![
        "--tls-cert".into(),
        dir.join("server.pem").display().to_string(),
        "--tls-key".into(),
        dir.join("server.key").display().to_string(),
    ]
}

async fn connect(addr: &str, ca_pem: &str, identity: Option<(String, String)>) -> Result<Channel, String> {
    let mut tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// A request carrying `token` as its bearer credential (none for `None`).
fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r.set_timeout(Duration::from_secs(60));
    r
}

fn image() -> Vec<u8> {
    let row = crate::common::rows().into_iter().next().unwrap();
    std::fs::read(row.path()).unwrap()
}

/// The corpus' first image's PDQ, as the server computes it.
fn image_pdq() -> String {
    crate::common::rows().into_iter().next().unwrap().get("pdq_hex").to_string()
}

/// Every error message seen in the run (checked for tokens at the end).
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn code<T>(&mut self, r: Result<T, Status>) -> Code {
        match r {
            Ok(_) => Code::Ok,
            Err(s) => {
                self.0.push(s.message().to_string());
                s.code()
            }
        }
    }
}

/// Admin-side setup: bank `pdq` holding the first corpus image's PDQ, bank `other` holding it too, and a
/// scratch bank for writes.
async fn setup(ch: &Channel) {
    let mut banks = BanksClient::new(ch.clone());
    let admin = Some(token("admin"));
    for name in ["pdq", "other", "scratch"] {
        let create = proto::CreateBankRequest {
            name: name.into(),
            kind: proto::HashKind::Pdq as i32,
            ..Default::default()
        };
        banks.create_bank(req(create, admin)).await.unwrap();
    }
    let mut writer = BanksClient::new(ch.clone());
    for name in ["pdq", "other", "scratch"] {
        let add = proto::AddHashesRequest {
            bank: name.into(),
            entries: vec![proto::NewEntry {
                hash: image_pdq(),
                label: "planted".into(),
                external_id: "ext-1".into(),
                ..Default::default()
            }],
        };
        writer.add_hashes(req(tokio_stream::iter(vec![add]), Some(token("writer")))).await.unwrap();
    }
}

/// One call of `rpc` with `token`: its status code. Requests are valid, so OK means the call was allowed.
async fn call(ch: &Channel, rpc: &str, token: Option<&str>, n: usize, seen: &mut Seen) -> Code {
    let mut banks = BanksClient::new(ch.clone());
    let admin = Some(self::token("admin"));
    match rpc {
        "Hash" => {
            let r = proto::HashRequest { image: image().into(), ..Default::default() };
            seen.code(HasherClient::new(ch.clone()).hash(req(r, token)).await)
        }
        "HashStream" => {
            let r = proto::HashRequest { image: image().into(), ..Default::default() };
            let res =
                HasherClient::new(ch.clone()).hash_stream(req(tokio_stream::iter(vec![r]), token)).await;
            match res {
                Ok(s) => {
                    let mut s = s.into_inner();
                    let first = s.message().await;
                    seen.code(first.map(|m| m.expect("one response")))
                }
                Err(e) => seen.code::<()>(Err(e)),
            }
        }
        "Match" => {
            let r =
                proto::MatchRequest { hash: image_pdq(), banks: vec!["pdq".into()], ..Default::default() };
            seen.code(MatcherClient::new(ch.clone()).r#match(req(r, token)).await)
        }
        "HashAndMatch" => {
            let r = proto::HashAndMatchRequest { image: image().into(), ..Default::default() };
            let res =
                MatcherClient::new(ch.clone()).hash_and_match(req(tokio_stream::iter(vec![r]), token)).await;
            match res {
                Ok(s) => seen.code(s.into_inner().message().await.map(|m| m.expect("one response"))),
                Err(e) => seen.code::<()>(Err(e)),
            }
        }
        "ListBanks" => seen.code(banks.list_banks(req(proto::ListBanksRequest {}, token)).await),
        "CreateBank" => {
            let r = proto::CreateBankRequest {
                name: format!("made-{n}"),
                kind: proto::HashKind::Pdq as i32,
                ..Default::default()
            };
            seen.code(banks.create_bank(req(r, token)).await)
        }
        "AddHashes" => {
            let add = proto::AddHashesRequest {
                bank: "scratch".into(),
                entries: vec![proto::NewEntry { hash: image_pdq(), ..Default::default() }],
            };
            seen.code(banks.add_hashes(req(tokio_stream::iter(vec![add]), token)).await)
        }
        "RemoveHashes" => {
            let add = proto::AddHashesRequest {
                bank: "scratch".into(),
                entries: vec![proto::NewEntry { hash: image_pdq(), ..Default::default() }],
            };
            let w = Some(self::token("writer"));
            let id =
                banks.add_hashes(req(tokio_stream::iter(vec![add]), w)).await.unwrap().into_inner().first_id;
            let r = proto::RemoveHashesRequest { bank: "scratch".into(), ids: vec![id.unwrap()] };
            seen.code(banks.remove_hashes(req(r, token)).await)
        }
        "ExportBank" => {
            let r = proto::ExportBankRequest { bank: "pdq".into() };
            match banks.export_bank(req(r, token)).await {
                Ok(s) => {
                    let mut s = s.into_inner();
                    let mut n = 0;
                    loop {
                        match s.message().await {
                            Ok(Some(_)) => n += 1,
                            Ok(None) => break,
                            Err(e) => return seen.code::<()>(Err(e)),
                        }
                    }
                    assert_eq!(n, 1, "bank pdq holds one entry");
                    Code::Ok
                }
                Err(e) => seen.code::<()>(Err(e)),
            }
        }
        "UpdateEntries" => {
            let r = proto::UpdateEntriesRequest {
                bank: "pdq".into(),
                ids: vec![0],
                add_tags: vec![format!("t{n}")],
                ..Default::default()
            };
            seen.code(banks.update_entries(req(r, token)).await)
        }
        "SetBankPolicy" => {
            let r = proto::SetBankPolicyRequest { name: "scratch".into(), policy: Some(Default::default()) };
            seen.code(banks.set_bank_policy(req(r, token)).await)
        }
        "DeleteBank" => {
            let name = format!("doomed-{n}");
            let create = proto::CreateBankRequest {
                name: name.clone(),
                kind: proto::HashKind::Pdq as i32,
                ..Default::default()
            };
            banks.create_bank(req(create, admin)).await.unwrap();
            seen.code(banks.delete_bank(req(proto::DeleteBankRequest { name }, token)).await)
        }
        "ListAudit" => {
            let r = proto::ListAuditRequest { limit: 1, ..Default::default() };
            match AuditClient::new(ch.clone()).list_audit(req(r, token)).await {
                Ok(s) => seen.code(s.into_inner().message().await),
                Err(e) => seen.code::<()>(Err(e)),
            }
        }
        other => panic!("no such RPC in the table: {other}"),
    }
}

/// The role each RPC needs (`None`: any identity).
const RPCS: &[(&str, Option<&str>)] = &[
    ("Hash", Some("hasher")),
    ("HashStream", Some("hasher")),
    ("Match", Some("match-only")),
    ("HashAndMatch", Some("match-only")),
    ("ListBanks", None),
    ("CreateBank", Some("admin")),
    ("AddHashes", Some("writer")),
    ("RemoveHashes", Some("writer")),
    ("ExportBank", Some("reader")),
    ("UpdateEntries", Some("writer")),
    ("SetBankPolicy", Some("admin")),
    ("DeleteBank", Some("admin")),
    ("ListAudit", Some("admin")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_by_every_role_over_tls_then_a_revoked_token_after_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("pharos test CA");
    let auth = auth_file(tmp.path(), &[], "");
    let mut args = tls_args(tmp.path(), &pki);
    args.extend(["--auth".into(), auth.display().to_string(), "--metrics".into(), "127.0.0.1:0".into()]);
    args.extend(["--auth-failures-per-minute".into(), "1000".into()]);
    args.extend(["--health-listen".into(), "127.0.0.1:0".into()]);
    let data = tmp.path().join("data");
    let mut daemon =
        Daemon::start_with(&data, tmp.path().join("serve.log"), &args, &[("PHAROS_LOG", "trace")]);
    let ch = connect(&daemon.addr, &pki.ca_pem, None).await.expect("TLS connection");
    setup(&ch).await;
    let mut seen = Seen::default();

    // The table: every RPC with no credentials, a wrong token, and each role's token.
    let creds: Vec<(&str, Option<&str>)> = [("(none)", None), ("(wrong)", Some("tok-guess-0000000000"))]
        .into_iter()
        .chain(["hasher", "match-only", "writer", "admin"].iter().map(|n| (*n, Some(token(n)))))
        .chain([("reader", Some(token("reader")))])
        .collect();
    let mut n = 0;
    let mut failures = Vec::new();
    for (rpc, needs) in RPCS {
        for (who, tok) in &creds {
            n += 1;
            let expected = match (who, needs) {
                (&"(none)" | &"(wrong)", _) => Code::Unauthenticated,
                (_, None) => Code::Ok,
                (w, Some(role_holder)) if w == role_holder => Code::Ok,
                // reader holds read and match.
                (&"reader", Some("match-only")) => Code::Ok,
                _ => Code::PermissionDenied,
            };
            let got = call(&ch, rpc, *tok, n, &mut seen).await;
            if got != expected {
                failures.push(format!("{rpc} as {who}: {got:?}, expected {expected:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Health needs no credentials (probes and load balancers have none).
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(h.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // …also on the plaintext health-only port (Kubernetes' gRPC probes cannot speak TLS), which serves
    // nothing else.
    let plain = Channel::from_shared(format!("http://{}", daemon.health_addr.as_deref().unwrap())).unwrap();
    let plain = plain.connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain.clone());
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: "pharos.v1.Matcher".into() }).await;
    assert_eq!(
        h.unwrap().into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let r = proto::HashRequest { image: image().into(), ..Default::default() };
    let e = HasherClient::new(plain).hash(req(r, Some(token("hasher")))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    // A denial names the identity and the role, never the credential.
    let denied = seen.0.iter().find(|m| m.contains("lacks the 'admin' role")).expect("a role denial");
    assert!(denied.contains("caller '"), "{denied}");

    // No bank hash reaches a match-only caller; `read` sees it.
    no_bank_hash_without_read(&ch, &mut seen).await;
    // Bank grants.
    grants_restrict_banks(&ch, &mut seen).await;
    // The audit holds the changes, with who made them.
    let mut audit = AuditClient::new(ch.clone());
    let r = proto::ListAuditRequest::default();
    let mut s = audit.list_audit(req(r, Some(token("admin")))).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        events.push((r.event, r.caller, r.bank, r.count));
    }
    for (event, caller) in [
        ("bank_created", "admin"),
        ("entries_added", "writer"),
        ("entries_removed", "writer"),
        ("entries_updated", "writer"),
        ("policy_set", "admin"),
        ("bank_deleted", "admin"),
        ("bank_exported", "reader"),
        ("match", "match-only"),
        ("match", "reader"),
    ] {
        assert!(events.iter().any(|e| e.0 == event && e.1 == caller), "no {event} by {caller} in {events:?}");
    }
    assert!(events.iter().any(|e| e.0 == "bank_exported" && e.3 == 1), "the export counts its entries");

    // `pharos bench grpc` measures a daemon behind TLS and auth (token from the environment).
    std::fs::write(tmp.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let ca = tmp.path().join("ca.pem");
    let target = format!("https://{}", daemon.addr);
    let bench = |tok: &str| {
        crate::common::pharos_env(
            [
                "bench",
                "grpc",
                "--target",
                &target,
                "--ca",
                ca.to_str().unwrap(),
                "--server-name",
                "localhost",
                "--size",
                "96x64",
                "--seconds",
                "0.3",
                "--reps",
                "1",
                "--concurrency",
                "1",
                "--window",
                "2",
            ],
            &[("PHAROS_TOKEN", tok)],
        )
    };
    let out = bench(token("hasher"));
    assert!(out.status.success(), "{}", crate::common::show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = stdout.lines().find(|l| l.starts_with("grpc ")).expect("a grpc row");
    assert!(row.ends_with(" 0"), "no errors: {row}");
    let out = bench("");
    assert_eq!(out.status.code(), Some(1), "{}", crate::common::show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"), "{}", crate::common::show(&out));

    // Revocation: the hasher's identity leaves the file; after SIGHUP its token is refused on the same
    // connection, which keeps serving the others.
    auth_file(tmp.path(), &["hasher"], "");
    daemon.hangup();
    let mut revoked = false;
    for _ in 0..100 {
        if call(&ch, "Hash", Some(token("hasher")), 0, &mut seen).await == Code::Unauthenticated {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(revoked, "the removed token still works after SIGHUP:\n{}", daemon.stderr());
    assert_eq!(call(&ch, "Match", Some(token("match-only")), 0, &mut seen).await, Code::Ok);
    // A broken file on SIGHUP keeps the identities in effect.
    std::fs::write(&auth, "[[identity]]\nname = 1\n").unwrap();
    daemon.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&ch, "Match", Some(token("match-only")), 0, &mut seen).await, Code::Ok);

    // Nothing secret in what the run left: trace logs, metrics, error messages.
    let metrics = metrics_text(daemon.metrics_addr.as_deref().unwrap()).await;
    assert!(metrics.contains("pharos_caller_requests_total{caller=\"match-only\""), "{metrics}");
    assert!(metrics.contains("pharos_auth_failures_total{reason=\"bad_token\"}"), "{metrics}");
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    let logs = daemon.stderr();
    assert!(logs.contains("TRACE"), "the daemon logged at trace level");
    assert!(logs.contains("SIGHUP: auth file reloaded"), "{logs}");
    assert!(logs.contains("auth file not reloaded"), "{logs}");
    for (name, tok, _) in TOKENS.iter().copied().chain([("(wrong)", "tok-guess-0000000000", "")]) {
        let digest = sha256_hex(tok);
        for (what, text) in [("logs", &logs), ("metrics", &metrics)] {
            assert!(!text.contains(tok), "{name}'s token appears in the {what}");
            assert!(!text.contains(&digest), "{name}'s token digest appears in the {what}");
        }
        for m in &seen.0 {
            assert!(!m.contains(tok) && !m.contains(&digest), "{name}'s token in an error: {m}");
        }
    }

    // --print-config shows the identities with digest prefixes only.
    let auth = auth_file(tmp.path(), &[], "");
    let out = crate::common::pharos(["serve", "--print-config", "--auth", auth.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", crate::common::show(&out));
    assert!(text.contains("# identity admin: token_sha256 "), "{text}");
    for (_, tok, _) in TOKENS {
        assert!(!text.contains(&sha256_hex(tok)) && !text.contains(tok), "{text}");
        assert!(text.contains(&sha256_hex(tok)[..8]), "{text}");
    }
}

pub(crate) async fn metrics_text(addr: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Match and HashAndMatch as `match-only` carry ids, external ids and labels but no hash; as `reader`
/// (read + match) the hash too. A match-only caller cannot list the audit or export.
async fn no_bank_hash_without_read(ch: &Channel, seen: &mut Seen) {
    let pdq = image_pdq();
    for (who, shows) in [("match-only", false), ("reader", true)] {
        let r = proto::MatchRequest { hash: pdq.clone(), ..Default::default() };
        let m = MatcherClient::new(ch.clone()).r#match(req(r, Some(token(who)))).await.unwrap().into_inner();
        assert!(m.matches.len() >= 3, "{who}: {m:?}");
        for hit in m.matches.iter().filter(|h| h.bank == "pdq" || h.bank == "other") {
            assert_eq!((hit.label.as_str(), hit.external_id.as_str()), ("planted", "ext-1"), "{who}");
        }
        for hit in &m.matches {
            assert_eq!(hit.hash == pdq, shows, "{who}: {hit:?}");
            assert!(shows || hit.hash.is_empty(), "{who}: {hit:?}");
        }
        let r = proto::HashAndMatchRequest { image: image().into(), ..Default::default() };
        let mut s = MatcherClient::new(ch.clone())
            .hash_and_match(req(tokio_stream::iter(vec![r]), Some(token(who))))
            .await
            .unwrap()
            .into_inner();
        let Some(proto::hash_and_match_response::Outcome::Result(res)) =
            s.message().await.unwrap().unwrap().outcome
        else {
            panic!("{who}: no result")
        };
        assert!(!res.matches.is_empty(), "{who}");
        for hit in &res.matches {
            assert_eq!(hit.hash == pdq, shows, "{who}: {hit:?}");
            assert!(shows || hit.hash.is_empty(), "{who}: {hit:?}");
        }
    }
    // Errors a match-only caller can provoke carry no bank hash.
    let mut m = MatcherClient::new(ch.clone());
    for r in [
        proto::MatchRequest { hash: "zz".into(), ..Default::default() },
        proto::MatchRequest { hash: pdq.clone(), banks: vec!["nope".into()], ..Default::default() },
        proto::MatchRequest { hash: pdq.clone(), radius: Some(999), ..Default::default() },
    ] {
        let e = m.r#match(req(r, Some(token("match-only")))).await.unwrap_err();
        seen.0.push(e.message().to_string());
        assert!(!e.message().contains(&pdq[..16]), "{e:?}");
    }
    let r = proto::ListAuditRequest::default();
    let e = AuditClient::new(ch.clone()).list_audit(req(r, Some(token("match-only")))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

/// `eu-matcher` is granted bank `pdq` only: it searches, lists and exports that bank alone.
async fn grants_restrict_banks(ch: &Channel, seen: &mut Seen) {
    let eu = Some(token("eu-matcher"));
    let pdq = image_pdq();
    let r = proto::MatchRequest { hash: pdq.clone(), ..Default::default() };
    let m = MatcherClient::new(ch.clone()).r#match(req(r, eu)).await.unwrap().into_inner();
    let banks: Vec<&str> = m.matches.iter().map(|h| h.bank.as_str()).collect();
    assert_eq!(banks, ["pdq"], "an unnamed search covers the granted banks only");
    let r = proto::MatchRequest { hash: pdq.clone(), banks: vec!["other".into()], ..Default::default() };
    let e = MatcherClient::new(ch.clone()).r#match(req(r, eu)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    seen.0.push(e.message().to_string());
    // A bank that does not exist is denied the same way (a caller learns nothing of banks beyond its grant).
    let r = proto::MatchRequest { hash: pdq, banks: vec!["no-such-bank".into()], ..Default::default() };
    let e = MatcherClient::new(ch.clone()).r#match(req(r, eu)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let list = BanksClient::new(ch.clone()).list_banks(req(proto::ListBanksRequest {}, eu)).await.unwrap();
    let names: Vec<String> = list.into_inner().banks.into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["pdq"]);
    let r = proto::ExportBankRequest { bank: "other".into() };
    let e = BanksClient::new(ch.clone()).export_bank(req(r, eu)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_per_identity_and_failed_authentications_per_address() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("pharos test CA");
    let extra = format!(
        "[[identity]]\nname = \"limited\"\ntoken_sha256 = \"{}\"\nroles = [\"match\"]\nrequests_per_s = 1\nburst = 3\n\n\
         [[identity]]\nname = \"free\"\ntoken_sha256 = \"{}\"\nroles = [\"match\"]\n",
        sha256_hex("tok-limited-1234"),
        sha256_hex("tok-free-5678")
    );
    let auth = auth_file(tmp.path(), &[], &extra);
    let mut args = tls_args(tmp.path(), &pki);
    args.extend(["--auth".into(), auth.display().to_string(), "--metrics".into(), "".into()]);
    args.extend(["--auth-failures-per-minute".into(), "3".into()]);
    let daemon = Daemon::start_with(&tmp.path().join("data"), tmp.path().join("serve.log"), &args, &[]);
    let ch = connect(&daemon.addr, &pki.ca_pem, None).await.unwrap();
    let call = |tok: &'static str| {
        let ch = ch.clone();
        async move {
            let r = proto::MatchRequest { hash: image_pdq(), ..Default::default() };
            MatcherClient::new(ch).r#match(req(r, Some(tok))).await
        }
    };
    // `limited` may burst 3 then 1/s: of 10 quick calls at most 4 pass; `free`, interleaved, always does.
    let (mut ok, mut exhausted) = (0, None);
    for _ in 0..10 {
        match call("tok-limited-1234").await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                exhausted = Some(e);
            }
        }
        call("tok-free-5678").await.expect("another identity is served normally");
    }
    assert!((3..=5).contains(&ok), "{ok} calls of 10 passed a quota of 3 + 1/s");
    let e = exhausted.expect("the quota was hit");
    assert!(e.message().contains("caller 'limited' is over its request rate; retry in"), "{e:?}");
    use tonic_types::StatusExt as _;
    let retry = e.get_details_retry_info().expect("a google.rpc.RetryInfo detail");
    assert!(
        retry.retry_delay.is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(1)),
        "{retry:?}"
    );

    // Failed authentications: 3 per minute from one address, then the address is refused for a while,
    // whatever it sends (a right token too), with a retry hint.
    for _ in 0..3 {
        assert_eq!(call("tok-wrong").await.unwrap_err().code(), Code::Unauthenticated);
    }
    let e = call("tok-wrong").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "the 4th failure is still answered: {e:?}");
    let e = call("tok-free-5678").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("too many failed authentications from this address"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_names_the_caller_and_refuses_other_cas_expired_and_missing_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("pharos test CA");
    let clients = Pki::new("pharos client CA");
    let stranger_ca = Pki::new("somebody else's CA");
    std::fs::write(tmp.path().join("clients.pem"), &clients.ca_pem).unwrap();
    let extra =
        "[[identity]]\nname = \"crawler-cert\"\ncert_name = \"crawler.example.org\"\nroles = [\"hash\"]\n";
    let auth = auth_file(tmp.path(), &[], extra);
    let mut args = tls_args(tmp.path(), &pki);
    args.extend(["--tls-client-ca".into(), tmp.path().join("clients.pem").display().to_string()]);
    args.extend(["--auth".into(), auth.display().to_string(), "--metrics".into(), "".into()]);
    let daemon = Daemon::start_with(&tmp.path().join("data"), tmp.path().join("serve.log"), &args, &[]);

    let hash = |ch: Channel, tok: Option<&'static str>| async move {
        let r = proto::HashRequest { image: image().into(), ..Default::default() };
        HasherClient::new(ch).hash(req(r, tok)).await
    };
    // A certificate whose SAN names an identity: that identity, with its roles.
    let good = clients.leaf(&["crawler-01", "crawler.example.org"], -1, 30);
    let ch = connect(&daemon.addr, &pki.ca_pem, Some(good)).await.expect("mTLS handshake");
    hash(ch.clone(), None).await.expect("the certificate's identity has the hash role");
    let r = proto::MatchRequest { hash: image_pdq(), ..Default::default() };
    let e = MatcherClient::new(ch.clone()).r#match(req(r, None)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("caller 'crawler-cert' lacks the 'match' role"), "{e:?}");
    // A bearer token on an mTLS connection names its own identity.
    let r = proto::MatchRequest { hash: image_pdq(), ..Default::default() };
    MatcherClient::new(ch).r#match(req(r, Some(token("match-only")))).await.expect("token identity");

    // A valid certificate of the right CA that names no identity: UNAUTHENTICATED.
    let unknown = clients.leaf(&["stranger.example.org"], -1, 30);
    let ch = connect(&daemon.addr, &pki.ca_pem, Some(unknown)).await.expect("handshake");
    assert_eq!(hash(ch, None).await.unwrap_err().code(), Code::Unauthenticated);

    // Refused at the handshake: another CA's certificate, an expired one, none.
    let refused = [
        ("another CA", Some(stranger_ca.leaf(&["crawler.example.org"], -1, 30))),
        ("expired", Some(clients.leaf(&["crawler.example.org"], -30, -1))),
        ("no certificate", None),
    ];
    for (what, identity) in refused {
        // The client sends its certificate after the server's Finished under TLS 1.3, so the refusal may
        // surface at connect or at the first call; either way no call succeeds.
        match connect(&daemon.addr, &pki.ca_pem, identity).await {
            Err(_) => {}
            Ok(ch) => {
                let e = hash(ch, Some(token("hasher"))).await.expect_err(what);
                assert!(
                    matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled),
                    "{what}: {e:?}"
                );
            }
        }
    }
}

#[test]
fn a_daemon_without_tls_and_auth_refuses_to_serve_beyond_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = crate::common::pharos([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--metrics",
        "",
        "--backend",
        "cpu",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", crate::common::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve 0.0.0.0:") && err.contains("--insecure"), "{err}");
    // With --insecure it starts (and warns).
    let mut daemon = Daemon::start_with(
        &data,
        tmp.path().join("serve.log"),
        ["--listen", "0.0.0.0:0", "--metrics", "", "--insecure"],
        &[],
    );
    assert!(daemon.addr.starts_with("0.0.0.0:"), "{}", daemon.addr);
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.stderr());
    assert!(daemon.stderr().contains("serving beyond loopback without TLS"), "{}", daemon.stderr());
    // Half a TLS configuration, or a broken auth file, stops the start with a message naming it.
    let out = crate::common::pharos(["serve", "--tls-cert", "x.pem", "--print-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_cert and tls_key go together"));
    std::fs::write(tmp.path().join("bad.toml"), "[[identity]]\nname = \"x\"\nroles = [\"root\"]\n").unwrap();
    let out = crate::common::pharos([
        "serve",
        "--print-config",
        "--auth",
        tmp.path().join("bad.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown variant `root`"),
        "{}",
        crate::common::show(&out)
    );
}

/// Bank changes made with the local CLI are audited too, by `cli:$USER`, in the same store.
#[test]
fn cli_bank_changes_are_audited_with_the_local_user() {
    use crate::common::{pharos_env, show};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let env = [("USER", "operator7")];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--data-dir", dir]);
        let out = pharos_env(all, &env);
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        out
    };
    run(&["bank", "create", "known", "--kind", "pdq"]);
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, format!("{}\n{}\n", image_pdq(), "0".repeat(64))).unwrap();
    run(&["bank", "add", "known", "--format", "hex", input.to_str().unwrap()]);
    run(&["bank", "update", "known", "0", "--tag", "reviewed"]);
    run(&["bank", "export", "known", "--format", "hex"]);
    run(&["bank", "remove", "known", "1"]);
    run(&["bank", "delete", "known"]);
    let out = run(&["audit", "list"]);
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(String, Option<u64>)> = events
        .iter()
        .inspect(|e| assert_eq!(e["caller"], "cli:operator7", "{e}"))
        .map(|e| (e["event"].as_str().unwrap().to_string(), e["count"].as_u64()))
        .collect();
    let want = [
        ("bank_created", None),
        ("entries_added", Some(2)),
        ("entries_updated", Some(1)),
        ("bank_exported", Some(2)),
        ("entries_removed", Some(1)),
        ("bank_deleted", None),
    ];
    let want: Vec<(String, Option<u64>)> = want.iter().map(|(e, n)| (e.to_string(), *n)).collect();
    assert_eq!(got, want);
}
