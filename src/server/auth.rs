//! The trust boundary: who is calling, what they may do, and how much (issue 12; DESIGN.md "Trust boundary").
//!
//! - [`AuthFile`]: the `--auth FILE` TOML, one `[[identity]]` table per caller. An identity is named by a
//!   bearer token (only its SHA-256 is stored) or by the subject CN / SAN of a client certificate (mutual
//!   TLS), and holds roles, an optional list of banks, and optional quotas.
//! - [`Auth`]: the identities in effect (swapped whole on SIGHUP: requests already running keep the
//!   identity they started with, connections stay open), the failed-authentication limit per peer address,
//!   and the per-identity quotas.
//! - [`AuthLayer`]: the tower layer in front of every gRPC service. It authenticates each call once,
//!   checks the role its method needs ([`required`]), charges the caller's request quota, and hands the
//!   [`Caller`] to the handlers in the request's extensions; the handlers only check bank grants
//!   ([`Caller::check_bank`]) since bank names live inside the messages.
//!
//! Without `--auth` every call runs as [`Caller::local`] (every role, every bank, no quota), which is why
//! the daemon then refuses to listen beyond loopback unless `--insecure` says so (see `check_exposure`).
//!
//! Secrets: a token is hashed on arrival and compared with every identity's digest in constant time (no
//! early exit, so the time does not tell which digest was near); it is never logged, counted or echoed.
//! Errors name the identity and the missing role, never the credential.

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tracing::Instrument as _;

/// What a caller may do. Roles do not imply one another: an `admin` that should also export banks has
/// `read` as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `Hasher`: images in, hashes out.
    Hash,
    /// `Matcher`: hashes or images in, matches out (entry id, external id, label, distance; never the bank's
    /// hash unless the caller also has `read` on that bank).
    Match,
    /// Export a bank; see the banks' hashes in matches.
    Read,
    /// Add, remove and update entries.
    Write,
    /// Create and delete banks, set their policy, read the audit.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [Role::Hash, Role::Match, Role::Read, Role::Write, Role::Admin];

    /// The role's name in the auth file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Hash => "hash",
            Role::Match => "match",
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `[[identity]]` table of the auth file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The caller's name: in logs, metrics, errors and the audit (letters, digits and `._@:-`, at most 64).
    pub name: String,
    /// Hex SHA-256 of the bearer token the caller sends (`authorization: Bearer TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// The subject common name or a subject alternative name (DNS, e-mail or URI) of the caller's client
    /// certificate (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_name: Option<String>,
    /// The roles granted.
    pub roles: Vec<Role>,
    /// The banks the caller may use; absent: every bank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banks: Option<Vec<String>>,
    /// Requests per second (each image and each other call is one), sustained; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_s: Option<u32>,
    /// Requests allowed at once above the rate [default: one second's worth].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Images this caller may have in flight at once; absent: only the server's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_images_in_flight: Option<u32>,
}

/// The `--auth FILE` document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// The callers.
    #[serde(default)]
    pub identity: Vec<IdentityConfig>,
}

impl AuthFile {
    /// Reads and validates an auth file. Errors name the file and the identity, never a token.
    pub fn load(path: &Path) -> Result<AuthFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidInput(format!("auth file {}: {e}", path.display())))?;
        let file: AuthFile = toml::from_str(&text)
            .map_err(|e| Error::InvalidInput(format!("auth file {}: {}", path.display(), e.message())))?;
        file.validate().map_err(|e| Error::InvalidInput(format!("auth file {}: {e}", path.display())))?;
        Ok(file)
    }

    /// Checks every identity: a valid unique name, exactly one credential (unique), known roles, valid
    /// bank names, sane quotas.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut names = BTreeSet::new();
        let mut tokens = BTreeSet::new();
        let mut certs = BTreeSet::new();
        for (i, id) in self.identity.iter().enumerate() {
            let valid_name = !id.name.is_empty()
                && id.name.len() <= 64
                && id.name.chars().all(|c| c.is_ascii_alphanumeric() || "._@:-".contains(c));
            if !valid_name {
                return Err(format!(
                    "identity {}: name must be 1 to 64 letters, digits or ._@:- (it is shown in logs and metrics)",
                    i + 1
                ));
            }
            let who = format!("identity '{}'", id.name);
            if !names.insert(id.name.as_str()) {
                return Err(format!("{who} is defined twice"));
            }
            match (&id.token_sha256, &id.cert_name) {
                (Some(t), None) => {
                    let digest = parse_digest(t).ok_or_else(|| {
                        format!("{who}: token_sha256 must be 64 hex digits (the SHA-256 of the token)")
                    })?;
                    if !tokens.insert(digest) {
                        return Err(format!("{who}: the same token_sha256 as an earlier identity"));
                    }
                }
                (None, Some(c)) if !c.is_empty() => {
                    if !certs.insert(c.as_str()) {
                        return Err(format!("{who}: the same cert_name as an earlier identity"));
                    }
                }
                (None, Some(_)) => return Err(format!("{who}: cert_name is empty")),
                (Some(_), Some(_)) => return Err(format!("{who}: give token_sha256 or cert_name, not both")),
                (None, None) => return Err(format!("{who}: needs token_sha256 or cert_name")),
            }
            if id.roles.is_empty() {
                return Err(format!("{who}: no roles"));
            }
            for b in id.banks.iter().flatten() {
                crate::store::validate_name(b).map_err(|e| format!("{who}: {e}"))?;
            }
            if id.requests_per_s == Some(0) || id.burst == Some(0) || id.max_images_in_flight == Some(0) {
                return Err(format!(
                    "{who}: requests_per_s, burst and max_images_in_flight must be at least 1"
                ));
            }
            if id.burst.is_some() && id.requests_per_s.is_none() {
                return Err(format!("{who}: burst needs requests_per_s"));
            }
        }
        Ok(())
    }

    /// A summary safe to print (`pharos serve --print-config`): names, roles, banks, quotas, and only the
    /// first 8 digits of each token digest.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for id in &self.identity {
            let credential = match (&id.token_sha256, &id.cert_name) {
                (Some(t), _) => format!("token_sha256 {}…", t.get(..8).unwrap_or(t)),
                (_, Some(c)) => format!("cert_name {c}"),
                _ => String::new(),
            };
            let roles: Vec<&str> = id.roles.iter().map(|r| r.name()).collect();
            let banks = id.banks.as_ref().map_or("every bank".to_string(), |b| b.join(","));
            out += &format!("# identity {}: {credential}; roles {}; banks {banks}", id.name, roles.join(","));
            if let Some(r) = id.requests_per_s {
                out += &format!("; {r} requests/s (burst {})", id.burst.unwrap_or(r));
            }
            if let Some(n) = id.max_images_in_flight {
                out += &format!("; {n} images in flight");
            }
            out += "\n";
        }
        out
    }
}

/// A SHA-256 digest from its 64 hex digits (the one hex parser of the project).
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    crate::hash::exact::parse_hex::<32>(hex.trim(), "a SHA-256").ok()
}

/// The per-identity quotas: a GCRA token bucket for requests and a semaphore for images in flight.
pub struct CallerQuota {
    rate: Option<DefaultDirectRateLimiter>,
    images: Option<Arc<tokio::sync::Semaphore>>,
    /// The settings it was made from (a reload keeps the quota, and its state, when they did not change).
    settings: (Option<u32>, Option<u32>, Option<u32>),
}

impl fmt::Debug for CallerQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerQuota").field("settings", &self.settings).finish()
    }
}

impl CallerQuota {
    fn new(id: &IdentityConfig) -> CallerQuota {
        let rate = id.requests_per_s.and_then(NonZeroU32::new).map(|r| {
            let burst = id.burst.and_then(NonZeroU32::new).unwrap_or(r);
            governor::RateLimiter::direct(Quota::per_second(r).allow_burst(burst))
        });
        let images = id.max_images_in_flight.map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize)));
        CallerQuota { rate, images, settings: (id.requests_per_s, id.burst, id.max_images_in_flight) }
    }
}

/// Who is calling: what the handlers read from the request's extensions.
#[derive(Debug)]
pub struct Caller {
    /// The identity's name; `None` for [`Caller::local`].
    name: Option<String>,
    roles: BTreeSet<Role>,
    banks: Option<BTreeSet<String>>,
    quota: Option<Arc<CallerQuota>>,
}

/// Held while an image of a caller with an in-flight quota is being hashed.
pub type ImagePermit = Option<tokio::sync::OwnedSemaphorePermit>;

impl Caller {
    /// The caller of a daemon without `--auth`: every role and bank, no quota, no name (one shared value:
    /// every call of such a daemon gets it).
    pub fn local() -> Arc<Caller> {
        static LOCAL: std::sync::OnceLock<Arc<Caller>> = std::sync::OnceLock::new();
        LOCAL
            .get_or_init(|| {
                Arc::new(Caller {
                    name: None,
                    roles: Role::ALL.into_iter().collect(),
                    banks: None,
                    quota: None,
                })
            })
            .clone()
    }

    /// The identity's name, for the audit (`None` without `--auth`).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The name for logs and metric labels ("-" without `--auth`).
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("-")
    }

    /// Whether the caller has a role.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the caller may use a bank.
    pub fn may_use(&self, bank: &str) -> bool {
        self.banks.as_ref().is_none_or(|b| b.contains(bank))
    }

    /// Whether the caller may see the hashes of a bank (`read` and the bank granted).
    pub fn may_read(&self, bank: &str) -> bool {
        self.has(Role::Read) && self.may_use(bank)
    }

    /// PERMISSION_DENIED unless the caller may use the bank. Checked before the bank's existence, so a
    /// caller learns nothing of banks outside its grant.
    pub fn check_bank(&self, bank: &str) -> std::result::Result<(), Status> {
        if self.may_use(bank) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "caller '{}' is not granted bank '{}'",
            self.label(),
            bank.chars().take(80).collect::<String>()
        )))
    }

    /// The banks a request may search: the ones it names (each must be granted), or when it names none,
    /// every bank the caller is granted (an empty list meaning every bank, for an unrestricted caller).
    pub fn banks_to_search(&self, named: Vec<String>) -> std::result::Result<Vec<String>, Status> {
        if named.is_empty() {
            return Ok(self.banks.as_ref().map(|b| b.iter().cloned().collect()).unwrap_or_default());
        }
        for b in &named {
            self.check_bank(b)?;
        }
        Ok(named)
    }

    /// The banks this caller is restricted to (`None`: every bank).
    pub fn granted_banks(&self) -> Option<&BTreeSet<String>> {
        self.banks.as_ref()
    }

    /// Charges one request against the caller's rate; RESOURCE_EXHAUSTED with a retry hint beyond it.
    pub fn charge(&self, metrics: &Metrics) -> std::result::Result<(), Status> {
        let Some(limiter) = self.quota.as_ref().and_then(|q| q.rate.as_ref()) else { return Ok(()) };
        match limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics.quota_rejections.with_label_values(&[self.label(), "rate"]).inc();
                Err(retry_status(
                    format!("caller '{}' is over its request rate; retry in {} ms", self.label(), ms(wait)),
                    wait,
                ))
            }
        }
    }

    /// Takes one of the caller's image slots (with the request quota); RESOURCE_EXHAUSTED when all are in
    /// use. The slot is freed when the permit drops.
    pub fn admit_image(&self, metrics: &Metrics) -> std::result::Result<ImagePermit, Status> {
        self.charge(metrics)?;
        let Some(sem) = self.quota.as_ref().and_then(|q| q.images.clone()) else { return Ok(None) };
        match sem.try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => {
                metrics.quota_rejections.with_label_values(&[self.label(), "images_in_flight"]).inc();
                let wait = Duration::from_millis(100);
                Err(retry_status(
                    format!(
                        "caller '{}' has its quota of images in flight; retry in {} ms",
                        self.label(),
                        ms(wait)
                    ),
                    wait,
                ))
            }
        }
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail (what gRPC clients read as the retry hint) and
/// the same delay in the message.
pub fn retry_status(message: String, wait: Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(wait.max(Duration::from_millis(1)))),
    )
}

/// What a method needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks (load balancers and probes carry no credentials).
    Nothing,
    /// Any identity: listing banks (filtered to the grant), reflection, unknown methods (which then answer
    /// UNIMPLEMENTED, but only to callers known to the server).
    Identity,
    /// A role.
    Role(Role),
}

/// The table of what each gRPC method needs (the one place roles are assigned to RPCs).
pub fn required(path: &str) -> Need {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Need::Nothing;
    }
    match path {
        "/pharos.v1.Hasher/Hash" | "/pharos.v1.Hasher/HashStream" => Need::Role(Role::Hash),
        "/pharos.v1.Matcher/Match" | "/pharos.v1.Matcher/HashAndMatch" => Need::Role(Role::Match),
        "/pharos.v1.Banks/ExportBank" => Need::Role(Role::Read),
        "/pharos.v1.Banks/AddHashes" | "/pharos.v1.Banks/RemoveHashes" | "/pharos.v1.Banks/UpdateEntries" => {
            Need::Role(Role::Write)
        }
        "/pharos.v1.Banks/CreateBank"
        | "/pharos.v1.Banks/DeleteBank"
        | "/pharos.v1.Banks/SetBankPolicy"
        | "/pharos.v1.Audit/ListAudit" => Need::Role(Role::Admin),
        _ => Need::Identity,
    }
}

/// Methods whose quota is charged per image by the handlers instead of per call by the layer.
fn charged_per_image(path: &str) -> bool {
    matches!(
        path,
        "/pharos.v1.Hasher/Hash" | "/pharos.v1.Hasher/HashStream" | "/pharos.v1.Matcher/HashAndMatch"
    )
}

/// The method's name for metric labels: known methods only (an unknown path is caller-controlled text).
fn method_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Hash",
        "HashStream",
        "Match",
        "HashAndMatch",
        "CreateBank",
        "ListBanks",
        "AddHashes",
        "RemoveHashes",
        "ExportBank",
        "UpdateEntries",
        "SetBankPolicy",
        "DeleteBank",
        "ListAudit",
    ];
    if !path.starts_with("/pharos.v1.") {
        return "other";
    }
    let method = path.rsplit('/').next().unwrap_or("");
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// The identities in effect: one swap on reload.
struct Identities {
    configs: Vec<IdentityConfig>,
    digests: Vec<Option<[u8; 32]>>,
    callers: Vec<Arc<Caller>>,
}

impl Identities {
    fn build(file: &AuthFile, old: Option<&Identities>) -> Identities {
        let mut out = Identities { configs: Vec::new(), digests: Vec::new(), callers: Vec::new() };
        for id in &file.identity {
            let settings = (id.requests_per_s, id.burst, id.max_images_in_flight);
            let kept = old.and_then(|o| {
                o.callers
                    .iter()
                    .find(|c| c.name.as_deref() == Some(id.name.as_str()))
                    .and_then(|c| c.quota.clone())
            });
            let quota = match kept {
                Some(q) if q.settings == settings => Some(q),
                _ if settings == (None, None, None) => None,
                _ => Some(Arc::new(CallerQuota::new(id))),
            };
            out.callers.push(Arc::new(Caller {
                name: Some(id.name.clone()),
                roles: id.roles.iter().copied().collect(),
                banks: id.banks.as_ref().map(|b| b.iter().cloned().collect()),
                quota,
            }));
            out.digests.push(id.token_sha256.as_deref().and_then(parse_digest));
            out.configs.push(id.clone());
        }
        out
    }

    /// The identity of a bearer token: every digest is compared, in constant time, whatever matches.
    fn by_token(&self, token: &str) -> Option<Arc<Caller>> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (i, d) in self.digests.iter().enumerate() {
            if let Some(d) = d {
                if bool::from(d.ct_eq(&presented)) {
                    found = Some(i);
                }
            }
        }
        found.map(|i| self.callers[i].clone())
    }

    /// The identity of a client certificate, by any of its names.
    fn by_cert(&self, names: &[String]) -> Option<Arc<Caller>> {
        self.configs
            .iter()
            .position(|c| c.cert_name.as_ref().is_some_and(|n| names.iter().any(|m| m == n)))
            .map(|i| self.callers[i].clone())
    }
}

/// The subject common names and subject alternative names (DNS, e-mail, URI) of a DER certificate.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    names.push((*s).to_string())
                }
                _ => {}
            }
        }
    }
    names
}

/// Failed authentications allowed per peer address and minute before the address is refused for a while.
const PEER_TABLE_MAX: usize = 100_000;

/// Caller identities, their quotas and the failed-authentication limit; shared by every connection.
pub struct Auth {
    path: Option<PathBuf>,
    identities: RwLock<Arc<Identities>>,
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses refused until a time (they used up their failures): checked before any credential is.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("path", &self.path).finish()
    }
}

impl Auth {
    /// No authentication: every call is [`Caller::local`].
    pub fn disabled(metrics: Arc<Metrics>) -> Auth {
        Auth {
            path: None,
            identities: RwLock::new(Arc::new(Identities::build(&AuthFile::default(), None))),
            failures: None,
            blocked: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Identities from an auth file; `failures_per_minute` failed authentications per peer address.
    pub fn from_file(path: &Path, failures_per_minute: u32, metrics: Arc<Metrics>) -> Result<Auth> {
        let file = AuthFile::load(path)?;
        let per_minute = NonZeroU32::new(failures_per_minute)
            .ok_or_else(|| Error::InvalidInput("auth_failures_per_minute must be at least 1".into()))?;
        let auth = Auth {
            path: Some(path.to_path_buf()),
            identities: RwLock::new(Arc::new(Identities::build(&file, None))),
            failures: Some(governor::RateLimiter::keyed(Quota::per_minute(per_minute))),
            blocked: Mutex::new(HashMap::new()),
            metrics,
        };
        tracing::info!(file = %path.display(), identities = file.identity.len(), "auth file loaded");
        Ok(auth)
    }

    /// Whether callers are authenticated.
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Reads the auth file again and swaps the identities in (calls already admitted keep theirs; open
    /// connections stay open and their next call is checked against the new file). A file that does not
    /// load leaves the identities as they were.
    pub fn reload(&self) -> Result<usize> {
        let Some(path) = &self.path else { return Ok(0) };
        let file = AuthFile::load(path)?;
        let next = Identities::build(&file, Some(&self.identities.read()));
        *self.identities.write() = Arc::new(next);
        Ok(file.identity.len())
    }

    /// Authenticates a call and checks its method's role: the caller, or the status to answer.
    pub fn authorize<B>(&self, req: &http::Request<B>) -> std::result::Result<Arc<Caller>, Status> {
        let path = req.uri().path();
        self.check(req, required(path), !charged_per_image(path), path)
    }

    /// Authenticates a request (gRPC or HTTP) and checks that its caller has what `need` says; charges one
    /// request to the caller's rate when `charge` (calls that carry images are charged per image by their
    /// handlers instead). `what` names the method or route in the permission message.
    pub fn check<B>(
        &self,
        req: &http::Request<B>,
        need: Need,
        charge: bool,
        what: &str,
    ) -> std::result::Result<Arc<Caller>, Status> {
        let path = what;
        if !self.enabled() {
            return Ok(Caller::local());
        }
        if need == Need::Nothing {
            return Ok(Caller::local_unnamed_for_health());
        }
        let peer = peer_of(req);
        if let Some(ip) = peer.map(|p| p.ip()) {
            if let Some(until) = self.blocked.lock().get(&ip).copied() {
                let now = Instant::now();
                if until > now {
                    self.metrics.auth_failures.with_label_values(&["peer_blocked"]).inc();
                    return Err(retry_status(
                        format!(
                            "too many failed authentications from this address; retry in {} ms",
                            ms(until - now)
                        ),
                        until - now,
                    ));
                }
            }
        }
        let identities = self.identities.read().clone();
        let token = req.headers().get(http::header::AUTHORIZATION).map(|v| bearer(v.as_bytes()));
        let caller = match token {
            Some(Some(token)) => identities.by_token(token).ok_or((
                "bad_token",
                "the bearer token is not known to this server (revoked, or never issued)",
            )),
            Some(None) => Err(("malformed", "the authorization metadata must be 'Bearer <token>'")),
            None => match peer_certificate_names(req) {
                Some(names) => identities.by_cert(&names).ok_or((
                    "unknown_certificate",
                    "the client certificate names no identity known to this server",
                )),
                None => Err((
                    "missing",
                    "no credentials: send 'authorization: Bearer <token>' metadata (or a client certificate)",
                )),
            },
        };
        let caller = match caller {
            Ok(c) => c,
            Err((reason, message)) => {
                self.metrics.auth_failures.with_label_values(&[reason]).inc();
                if let Some(ip) = peer.map(|p| p.ip()) {
                    self.failed_from(ip);
                }
                return Err(Status::unauthenticated(message));
            }
        };
        if let Need::Role(role) = need {
            if !caller.has(role) {
                self.metrics.auth_failures.with_label_values(&["permission"]).inc();
                return Err(Status::permission_denied(format!(
                    "caller '{}' lacks the '{role}' role needed by {}",
                    caller.label(),
                    path.trim_start_matches('/')
                )));
            }
        }
        if charge {
            caller.charge(&self.metrics)?;
        }
        Ok(caller)
    }

    /// Counts a failed authentication from `ip`; once over the limit the address is refused until its
    /// bucket refills (without looking at what it sends, so guessing stays slow even with a right guess).
    fn failed_from(&self, ip: IpAddr) {
        let Some(limiter) = &self.failures else { return };
        if let Err(not_until) = limiter.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut blocked = self.blocked.lock();
            let now = Instant::now();
            if blocked.len() >= PEER_TABLE_MAX {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < PEER_TABLE_MAX {
                blocked.insert(ip, now + wait);
            }
            drop(blocked);
            tracing::warn!(peer = %ip, "too many failed authentications; address refused for a while");
        }
        if limiter.len() > PEER_TABLE_MAX {
            limiter.retain_recent();
        }
    }
}

impl Caller {
    /// The caller of a health check on a daemon with `--auth`: no roles at all (health needs none).
    fn local_unnamed_for_health() -> Arc<Caller> {
        static HEALTH: std::sync::OnceLock<Arc<Caller>> = std::sync::OnceLock::new();
        HEALTH
            .get_or_init(|| {
                Arc::new(Caller {
                    name: None,
                    roles: BTreeSet::new(),
                    banks: Some(BTreeSet::new()),
                    quota: None,
                })
            })
            .clone()
    }
}

/// The token of an `authorization` value `Bearer TOKEN` (scheme case-insensitive), `None` when malformed.
fn bearer(value: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn peer_of<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| ext.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr()))
}

/// The names of an HTTPS client's certificate (subject CN and SANs, as [`cert_names`]): what the HTTP
/// listener puts in each request's extensions, as tonic does with its `TlsConnectInfo`.
#[derive(Clone, Debug)]
pub struct PeerCertNames(pub Vec<String>);

fn peer_certificate_names<B>(req: &http::Request<B>) -> Option<Vec<String>> {
    if let Some(names) = req.extensions().get::<PeerCertNames>() {
        return Some(names.0.clone());
    }
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certs.first().map(|leaf| cert_names(leaf.as_ref()))
}

/// The tower layer that puts [`Auth`] in front of every service.
#[derive(Clone, Debug)]
pub struct AuthLayer(pub Arc<Auth>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { auth: self.0.clone(), inner }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    auth: Arc<Auth>,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The service that was polled ready is the one to call (tower's clone-and-swap idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path().to_string();
        let method = method_label(&path);
        match self.auth.authorize(&req) {
            Ok(caller) => {
                let span = tracing::info_span!("grpc", path = %path, caller = %caller.label());
                if self.auth.enabled() && caller.name().is_some() {
                    self.auth.metrics.caller_requests.with_label_values(&[caller.label(), method]).inc();
                }
                req.extensions_mut().insert(caller);
                Box::pin(inner.call(req).instrument(span))
            }
            Err(status) => {
                tracing::debug!(path = %path, code = ?status.code(), "call refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The caller of a request (set by [`AuthLayer`]; [`Caller::local`] when the layer is not there, as in
/// in-process use).
pub fn caller_of<T>(req: &tonic::Request<T>) -> Arc<Caller> {
    req.extensions().get::<Arc<Caller>>().cloned().unwrap_or_else(Caller::local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, token: &str, roles: &[Role]) -> IdentityConfig {
        IdentityConfig {
            name: name.into(),
            token_sha256: Some(hex(&Sha256::digest(token.as_bytes()))),
            cert_name: None,
            roles: roles.to_vec(),
            banks: None,
            requests_per_s: None,
            burst: None,
            max_images_in_flight: None,
        }
    }

    use crate::hash::exact::hex;

    #[test]
    fn every_path_of_the_proto_has_its_role() {
        assert_eq!(required("/pharos.v1.Banks/CreateBank"), Need::Role(Role::Admin));
        assert_eq!(required("/pharos.v1.Banks/ExportBank"), Need::Role(Role::Read));
        assert_eq!(required("/pharos.v1.Banks/ListBanks"), Need::Identity);
        assert_eq!(required("/grpc.health.v1.Health/Check"), Need::Nothing);
        assert_eq!(required("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Need::Identity);
        assert_eq!(method_label("/pharos.v1.Banks/Nope"), "other");
        assert_eq!(method_label("/x/y"), "other");
    }

    #[test]
    fn tokens_are_found_by_digest_and_the_file_is_validated() {
        let file =
            AuthFile { identity: vec![id("a", "tok-a", &[Role::Hash]), id("b", "tok-b", &[Role::Admin])] };
        file.validate().unwrap();
        let ids = Identities::build(&file, None);
        assert_eq!(ids.by_token("tok-b").unwrap().name(), Some("b"));
        assert!(ids.by_token("tok-c").is_none());
        assert_eq!(bearer(b"bearer  tok-a "), Some("tok-a"));
        assert_eq!(bearer(b"Basic xyz"), None);

        let mut twice = file.clone();
        twice.identity.push(id("c", "tok-a", &[Role::Hash]));
        assert!(twice.validate().unwrap_err().contains("same token_sha256"));
        let mut bad = file.clone();
        bad.identity[0].name = "a b".into();
        assert!(bad.validate().is_err());
        let summary = file.summary();
        assert!(!summary.contains(&hex(&Sha256::digest(b"tok-a"))), "{summary}");
        assert!(summary.contains(&hex(&Sha256::digest(b"tok-a"))[..8]));
    }

    #[test]
    fn images_in_flight_are_a_quota_and_a_reload_keeps_unchanged_quotas() {
        let mut cfg = id("crawler", "tok", &[Role::Hash]);
        cfg.max_images_in_flight = Some(2);
        let file = AuthFile { identity: vec![cfg] };
        let ids = Identities::build(&file, None);
        let caller = ids.by_token("tok").unwrap();
        let metrics = Metrics::new();
        let a = caller.admit_image(&metrics).unwrap();
        let _b = caller.admit_image(&metrics).unwrap();
        let e = caller.admit_image(&metrics).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.message().contains("quota of images in flight"), "{e:?}");
        drop(a);
        let _c = caller.admit_image(&metrics).expect("a slot came free");
        // A reload with the same settings keeps the semaphore (and so the images in flight it counts).
        let again = Identities::build(&file, Some(&ids));
        assert!(again.by_token("tok").unwrap().admit_image(&metrics).is_err());
        assert_eq!(metrics.quota_rejections.with_label_values(&["crawler", "images_in_flight"]).get(), 2);
    }
}
