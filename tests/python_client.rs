//! The Python example client (`examples/python/pharos_client.py`) against a real `pharos serve` process on
//! loopback (issue 5, acceptance 2), as a crawler author would run it:
//!
//! - over HashStream, every corpus image gives exactly the JSON `pharos hash --backend cpu` prints for the
//!   same folder, a file that is no image gets an in-band INVALID_ARGUMENT line, and the client exits 2;
//! - over HashAndMatch (`--bank`), an image whose PDQ was planted in a bank is reported at distance 0;
//! - the daemon exits 0 on SIGTERM, after which the client reports the connection error with exit status 1.
//!
//! The interpreter is `$PHAROS_PYTHON` (the venv `scripts/setup-python-example.sh` makes). Without it the test
//! says loudly that it was skipped, unless `PHAROS_REQUIRE_PYTHON=1`, which makes that a failure.

use crate::common;
use crate::common::daemon::Daemon;

use pharos::server::proto::banks_client::BanksClient;
use pharos::server::proto::{self, HashKind};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Python interpreter to run the client with, or `None` (after saying so) when the test is to be skipped.
fn python() -> Option<PathBuf> {
    crate::common::python_from_env(
        "PHAROS_PYTHON",
        "scripts/setup-python-example.sh",
        "the Python client test",
    )
}

/// Runs the example client with `args`, then the folder.
fn run_client(python: &Path, args: &[&str], folder: &Path) -> Output {
    run_client_env(python, args, &[], folder)
}

/// Runs the example client with `args` and `env`, then the folder.
fn run_client_env(python: &Path, args: &[&str], env: &[(&str, &str)], folder: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/pharos_client.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .envs(env.iter().copied())
        .arg(folder)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (PHAROS_PYTHON): {e}", python.display()));
    eprintln!("pharos_client.py {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim_end());
    out
}

/// Each JSON line of `stdout`, keyed by its `path`, in order.
fn json_lines(stdout: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            (v["path"].as_str().unwrap_or_else(|| panic!("no path: {l}")).to_string(), v)
        })
        .collect()
}

/// A folder holding a copy of every corpus image (same relative paths) plus `garbage.jpg`, which is no image.
fn make_folder(root: &Path) -> PathBuf {
    let folder = root.join("crawl");
    for row in common::rows() {
        let dest = folder.join(row.get("path"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(row.path(), &dest).unwrap();
    }
    std::fs::write(folder.join("garbage.jpg"), b"this is not an image, whatever its name says").unwrap();
    folder
}

/// Creates the PDQ bank `name` in the daemon at `addr` holding `pdq` (labelled `label`); returns its entry id.
fn plant(addr: &str, name: &str, pdq: &str, label: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut banks =
            BanksClient::connect(format!("http://{addr}")).await.expect("connect to pharos serve");
        banks
            .create_bank(proto::CreateBankRequest {
                name: name.into(),
                kind: HashKind::Pdq as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        let add = proto::AddHashesRequest {
            bank: name.into(),
            entries: vec![proto::NewEntry { hash: pdq.into(), label: label.into(), ..Default::default() }],
        };
        let added = banks.add_hashes(tokio_stream::iter(vec![add])).await.unwrap().into_inner();
        assert_eq!(added.added, 1);
        added.first_id.expect("first_id")
    })
}

#[test]
fn python_client_against_pharos_serve() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let folder = make_folder(tmp.path());
    let garbage = folder.join("garbage.jpg").display().to_string();

    // What the CLI prints for the same folder: the reference for every good image.
    let cli = Command::new(env!("CARGO_BIN_EXE_pharos"))
        .args(["hash", "--backend", "cpu"])
        .arg(&folder)
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2), "pharos hash: {}", String::from_utf8_lossy(&cli.stderr));
    let expected: HashMap<String, Value> = json_lines(&cli.stdout).into_iter().collect();
    let n_images = common::rows().len();
    assert_eq!(expected.len(), n_images + 1, "pharos hash prints one line per file");

    let data_dir = tmp.path().join("data");
    let mut daemon = Daemon::start(&data_dir, tmp.path().join("serve.stderr"));
    let addr = daemon.addr.clone();

    // 1. HashStream over the whole folder, after a health check.
    let out = run_client(&python, &["--target", &addr, "--check-health", "--timeout", "120"], &folder);
    let lines = json_lines(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "one bad file: exit status 2; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let order: Vec<&str> = lines.iter().map(|(p, _)| p.as_str()).collect();
    let cli_order: Vec<String> = json_lines(&cli.stdout).into_iter().map(|(p, _)| p).collect();
    assert_eq!(order, cli_order, "the client walks the folder in the order `pharos hash` does");
    let mut good = 0;
    for (path, got) in &lines {
        if *path == garbage {
            assert_eq!(got["code"], "INVALID_ARGUMENT", "{got}");
            assert!(got["error"].as_str().is_some_and(|m| !m.is_empty()), "{got}");
            assert!(expected[path].get("error").is_some(), "pharos hash also refuses {path}");
        } else {
            assert_eq!(*got, expected[path], "{path}: the Python client differs from `pharos hash`");
            good += 1;
        }
    }
    assert_eq!(good, n_images);
    eprintln!(
        "HashStream from Python: {good}/{n_images} images equal `pharos hash`, garbage.jpg INVALID_ARGUMENT"
    );

    // 2. HashAndMatch: plant one image's PDQ in a bank; the client must find it at distance 0.
    let (planted_path, planted) = lines
        .iter()
        .find(|(p, v)| *p != garbage && v["quality"].as_u64().is_some_and(|q| q >= 50))
        .expect("an image of quality ≥ 50");
    let pdq = planted["pdq"].as_str().unwrap();
    let entry_id = plant(&addr, "planted", pdq, "case-42");
    let out = run_client(&python, &["--target", &addr, "--bank", "planted", "--timeout", "120"], &folder);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), n_images + 1);
    let mut found = false;
    for (path, got) in &lines {
        if *path == garbage {
            assert_eq!(got["code"], "INVALID_ARGUMENT", "{got}");
            continue;
        }
        let mut hashes = got.clone();
        let matches = hashes.as_object_mut().unwrap().remove("matches").unwrap_or_else(|| panic!("{got}"));
        assert_eq!(hashes, expected[path], "{path}: HashAndMatch hashes differ from `pharos hash`");
        for m in matches.as_array().unwrap() {
            assert_eq!(m["bank"], "planted");
            assert_eq!(m["hash"], pdq);
            assert_eq!(m["id"].as_u64(), Some(entry_id));
            assert_eq!(m["label"], "case-42");
            if path == planted_path {
                assert_eq!(m["distance"], 0, "{got}");
                found = true;
            }
        }
    }
    assert!(found, "{planted_path} (PDQ planted in bank `planted`) was not matched");
    eprintln!("HashAndMatch from Python: {planted_path} matched at distance 0");

    // 3. SIGTERM: the daemon drains and exits 0; then the client cannot connect (exit status 1).
    let status = daemon.terminate();
    assert!(
        status.success(),
        "pharos serve exited with {status} after SIGTERM; stderr:\n{}",
        daemon.stderr()
    );
    let out = run_client(&python, &["--target", &addr, "--timeout", "2"], &folder);
    assert_eq!(out.status.code(), Some(1), "no daemon: exit status 1");
    assert!(out.stdout.is_empty(), "no daemon: nothing on stdout");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// The client over TLS with a bearer token (issue 12, acceptance 3): a daemon with `--tls-cert/--tls-key` and
/// `--auth`; the client trusts the test CA (`--ca`) and takes its token from `$PHAROS_TOKEN`. A `match`-only
/// identity gets its matches without the bank's hash; no token, or a CA that did not sign the daemon's
/// certificate, is a connection-level failure (exit 1) with a clear message.
#[test]
fn python_client_over_tls_with_a_token() {
    use crate::trust::{sha256_hex, tls_args, Pki};
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("crawl");
    std::fs::create_dir_all(&folder).unwrap();
    let rows = common::rows();
    for row in rows.iter().take(3) {
        std::fs::copy(row.path(), folder.join(row.path().file_name().unwrap())).unwrap();
    }
    let pki = Pki::new("pharos test CA");
    let (crawler, admin) = ("crawler-token-4f2a9c", "admin-token-7d1e3b");
    let auth = tmp.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[[identity]]\nname = \"crawler\"\ntoken_sha256 = \"{}\"\nroles = [\"hash\", \"match\"]\n\n\
             [[identity]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\nroles = [\"admin\", \"write\"]\n",
            sha256_hex(crawler),
            sha256_hex(admin)
        ),
    )
    .unwrap();
    let mut args = tls_args(tmp.path(), &pki);
    args.extend(["--auth".into(), auth.display().to_string(), "--metrics".into(), String::new()]);
    let daemon = Daemon::start_with(&tmp.path().join("data"), tmp.path().join("serve.stderr"), &args, &[]);
    std::fs::write(tmp.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let ca = tmp.path().join("ca.pem").display().to_string();

    // Plant the first image's PDQ over TLS as the admin.
    let pdq = rows[0].get("pdq_hex").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig};
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost");
        let ch = Channel::from_shared(format!("https://{}", daemon.addr)).unwrap().tls_config(tls).unwrap();
        let mut banks = BanksClient::new(ch.connect().await.unwrap());
        let with_token = |msg| {
            let mut r = tonic::Request::new(msg);
            r.metadata_mut().insert("authorization", format!("Bearer {admin}").parse().unwrap());
            r
        };
        let create = proto::CreateBankRequest {
            name: "planted".into(),
            kind: HashKind::Pdq as i32,
            ..Default::default()
        };
        banks.create_bank(with_token(create)).await.unwrap();
        let add = proto::AddHashesRequest {
            bank: "planted".into(),
            entries: vec![proto::NewEntry { hash: pdq.clone(), label: "known".into(), ..Default::default() }],
        };
        let mut r = tonic::Request::new(tokio_stream::iter(vec![add]));
        r.metadata_mut().insert("authorization", format!("Bearer {admin}").parse().unwrap());
        banks.add_hashes(r).await.unwrap();
    });

    let target = ["--target", daemon.addr.as_str(), "--ca", ca.as_str(), "--server-name", "localhost"];
    let mut with_bank = target.to_vec();
    with_bank.extend(["--bank", "planted", "--timeout", "120", "--check-health"]);
    let out = run_client_env(&python, &with_bank, &[("PHAROS_TOKEN", crawler)], &folder);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3);
    let first = rows[0].path().file_name().unwrap().to_string_lossy().to_string();
    let (_, hit) = lines.iter().find(|(p, _)| p.ends_with(&first)).expect("the planted image");
    assert_eq!(hit["matches"][0]["distance"], 0, "{hit}");
    assert_eq!(hit["matches"][0]["label"], "known", "{hit}");
    assert_eq!(hit["matches"][0]["hash"], "", "a match-only caller never sees the bank's hash: {hit}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(crawler), "the token is never printed");

    // Without the token: UNAUTHENTICATED, exit 1.
    let mut plain = target.to_vec();
    plain.extend(["--timeout", "60"]);
    let out = run_client_env(&python, &plain, &[("PHAROS_TOKEN", "")], &folder);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNAUTHENTICATED") && err.contains("no credentials"), "{err}");
    // A CA that did not sign the daemon's certificate: the connection fails, exit 1.
    let other = Pki::new("another CA");
    std::fs::write(tmp.path().join("other.pem"), &other.ca_pem).unwrap();
    let other_ca = tmp.path().join("other.pem").display().to_string();
    let args = [
        "--target",
        daemon.addr.as_str(),
        "--ca",
        other_ca.as_str(),
        "--server-name",
        "localhost",
        "--timeout",
        "5",
    ];
    let out = run_client_env(&python, &args, &[("PHAROS_TOKEN", crawler)], &folder);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
}
