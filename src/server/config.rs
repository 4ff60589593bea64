//! The daemon's configuration: every limit in one place, with defaults that run on a laptop.
//!
//! Sources, lowest precedence first: these defaults, a TOML file (`pharos serve --config pharos.toml`,
//! keys named as the fields below), `PHAROS_*` environment variables, command-line flags. The CLI does the
//! last two (clap) and calls [`ServeConfig::apply`]; `pharos serve --print-config` shows the result.

use crate::banks::SearchPolicy;
use crate::engine::Backend;
use crate::error::{Error, Result};
use crate::image::Limits;
use crate::pipeline::PipelineConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `pharos serve` settings. Field names are the TOML keys; `PHAROS_<NAME>` (upper case) the environment
/// variables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// gRPC listen address.
    pub listen: String,
    /// Prometheus metrics listen address (`GET /metrics`); empty to disable.
    pub metrics: String,
    /// Plaintext gRPC listener serving only `grpc.health.v1.Health`, without credentials (for Kubernetes'
    /// gRPC probes, which cannot speak TLS); empty to disable.
    pub health_listen: String,
    /// Hashing backend: auto, cpu or gpu.
    pub backend: String,
    /// Data directory of the bank store [default: the platform's data location, as for `pharos bank`].
    /// With `database_url` it holds only the audit spool (records waiting while the database is down).
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL of a bank store shared by several daemons (`postgres://user:password@host:5432/db`);
    /// without it, the embedded redb store in `data_dir`. Never printed with its password.
    pub database_url: Option<String>,
    /// Milliseconds between polls of a shared store's change log (changes also wake replicas at once
    /// through LISTEN/NOTIFY; the poll bounds the delay when a notification is lost).
    pub database_poll_ms: u64,
    /// Largest gRPC message accepted, bytes (a bigger message ends its stream: it is a transport error).
    pub max_message_bytes: usize,
    /// Largest encoded image, bytes.
    pub max_image_bytes: u64,
    /// Largest image width or height, pixels.
    pub max_image_side: u32,
    /// Largest image area, pixels.
    pub max_image_pixels: u64,
    /// Images admitted and not yet answered, all connections together; beyond it, RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// Encoded bytes admitted and not yet answered; beyond it, RESOURCE_EXHAUSTED.
    pub max_in_flight_bytes: u64,
    /// Decoded pixel bytes waiting for the backend; beyond it, decoders wait.
    pub max_decoded_bytes: u64,
    /// Items one stream may have in flight; beyond it the server stops reading that stream (HTTP/2 flow
    /// control then slows the client down) instead of failing items.
    pub max_in_flight_per_stream: usize,
    /// Concurrent gRPC streams per connection.
    pub max_concurrent_streams: u32,
    /// Images per backend submission.
    pub max_batch: usize,
    /// Decoded pixel bytes after which a GPU batch closes.
    pub max_batch_bytes: u64,
    /// Milliseconds the first image of a batch waits for more.
    pub max_delay_ms: u64,
    /// Decoder threads [0: one per CPU]; on the CPU backend each also hashes what it decoded.
    pub decode_threads: usize,
    /// Seconds to drain in-flight work on SIGTERM/SIGINT before exiting anyway.
    pub shutdown_grace_s: u64,
    /// Most matches one query returns (nearest first); beyond it the answer says `truncated`.
    pub max_matches: usize,
    /// Days the match audit is kept (older records are deleted hourly); 0 keeps it forever.
    pub audit_retention_days: u32,
    /// TLS certificate chain (PEM) of the gRPC listener; with `tls_key`, the daemon speaks only TLS.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) for client certificates: mutual TLS, a client certificate is required and
    /// its subject CN or SAN names the caller (`cert_name` in the auth file).
    pub tls_client_ca: Option<PathBuf>,
    /// The auth file (TOML, `[[identity]]` tables): callers, roles, bank grants, quotas. Reloaded on SIGHUP.
    pub auth: Option<PathBuf>,
    /// Serve a non-loopback address without TLS and auth (refused otherwise).
    pub insecure: bool,
    /// Failed authentications allowed per peer address and minute; beyond it the address is refused
    /// (RESOURCE_EXHAUSTED) until its allowance refills.
    pub auth_failures_per_minute: u32,
    /// HTTP listen address of the HMA-compatible JSON API; empty to disable. It uses the gRPC listener's
    /// TLS settings and the same auth file.
    pub http: String,
    /// Hosts the HTTP API may download media from (`?url=…`): a host matches an entry equal to it or a
    /// parent domain of it; `*` is any host. Empty: URL downloads are refused.
    pub http_fetch_hosts: Vec<String>,
    /// Let URL downloads reach loopback, private and link-local addresses (refused otherwise, whatever the
    /// host list says).
    pub http_fetch_private: bool,
    /// Milliseconds for a whole URL download (connect, redirects, body).
    pub http_fetch_timeout_ms: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let limits = Limits::default();
        let batch = PipelineConfig::default();
        ServeConfig {
            listen: "127.0.0.1:50051".into(),
            metrics: "127.0.0.1:9464".into(),
            health_listen: String::new(),
            backend: "auto".into(),
            data_dir: None,
            database_url: None,
            database_poll_ms: 1000,
            // The largest image plus room for the other fields of its message.
            max_message_bytes: limits.max_bytes as usize + (64 << 10),
            max_image_bytes: limits.max_bytes,
            max_image_side: limits.max_width,
            max_image_pixels: limits.max_pixels,
            max_in_flight: batch.max_in_flight,
            max_in_flight_bytes: batch.max_in_flight_bytes,
            max_decoded_bytes: batch.max_decoded_bytes,
            max_in_flight_per_stream: 64,
            max_concurrent_streams: 256,
            max_batch: batch.max_batch,
            max_batch_bytes: batch.max_batch_bytes,
            max_delay_ms: batch.max_delay.as_millis() as u64,
            decode_threads: 0,
            shutdown_grace_s: 30,
            max_matches: SearchPolicy::default().max_matches,
            audit_retention_days: 90,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth: None,
            insecure: false,
            auth_failures_per_minute: 10,
            http: String::new(),
            http_fetch_hosts: Vec::new(),
            http_fetch_private: false,
            http_fetch_timeout_ms: 30_000,
        }
    }
}

impl ServeConfig {
    /// The defaults overlaid with a TOML file (unknown keys are an error: a typo must not pass silently).
    pub fn from_file(path: &Path) -> Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidInput(format!("config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::InvalidInput(format!("config file {}: {e}", path.display())))
    }

    /// Checks values that would otherwise fail later or make no sense.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("max_message_bytes", self.max_message_bytes as u64),
            ("max_image_bytes", self.max_image_bytes),
            ("max_image_side", u64::from(self.max_image_side)),
            ("max_image_pixels", self.max_image_pixels),
            ("max_in_flight", self.max_in_flight as u64),
            ("max_in_flight_bytes", self.max_in_flight_bytes),
            ("max_decoded_bytes", self.max_decoded_bytes),
            ("max_in_flight_per_stream", self.max_in_flight_per_stream as u64),
            ("max_concurrent_streams", u64::from(self.max_concurrent_streams)),
            ("max_batch", self.max_batch as u64),
            ("max_batch_bytes", self.max_batch_bytes),
            ("max_matches", self.max_matches as u64),
            ("auth_failures_per_minute", u64::from(self.auth_failures_per_minute)),
            ("database_poll_ms", self.database_poll_ms),
            ("http_fetch_timeout_ms", self.http_fetch_timeout_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::InvalidInput(format!("{name} must be at least 1")));
        }
        self.backend()?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::InvalidInput(
                    "tls_cert and tls_key go together: give both or neither".into(),
                ))
            }
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(Error::InvalidInput("tls_client_ca (mutual TLS) needs tls_cert and tls_key".into()));
        }
        Ok(())
    }

    /// Whether the gRPC listener speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// What an address would be served without: `None` when it is loopback or TLS and auth protect it.
    fn exposure(&self, addr: std::net::SocketAddr) -> Option<&'static str> {
        if addr.ip().is_loopback() || (self.tls() && self.auth.is_some()) {
            return None;
        }
        Some(match (self.tls(), self.auth.is_some()) {
            (false, false) => "TLS (--tls-cert/--tls-key) and authentication (--auth)",
            (false, true) => "TLS (--tls-cert/--tls-key): bearer tokens would cross the network in clear",
            _ => "authentication (--auth): anyone reaching the port could read and change the banks",
        })
    }

    /// Refuses an address beyond loopback unless TLS and auth protect it, or `insecure` accepts the risk
    /// (then it warns when `warn`). `addr` is the bound address, so a host name or 0.0.0.0 is judged by what
    /// it became.
    pub fn check_exposure(&self, addr: std::net::SocketAddr, warn: bool) -> Result<()> {
        let Some(missing) = self.exposure(addr) else { return Ok(()) };
        if !self.insecure {
            return Err(Error::InvalidInput(format!(
                "refusing to serve {addr} beyond loopback without {missing}; configure them, or pass --insecure \
                 to accept the risk"
            )));
        }
        if warn {
            tracing::warn!(%addr, "serving beyond loopback without {missing} (--insecure)");
        }
        Ok(())
    }

    /// The backend asked for.
    pub fn backend(&self) -> Result<Backend> {
        self.backend.parse()
    }

    /// Per-image decode limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_image_bytes,
            max_width: self.max_image_side,
            max_height: self.max_image_side,
            max_pixels: self.max_image_pixels,
        }
    }

    /// The search bounds.
    pub fn search_policy(&self) -> SearchPolicy {
        SearchPolicy { max_matches: self.max_matches }
    }

    /// The pipeline's settings.
    pub fn pipeline(&self) -> PipelineConfig {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        PipelineConfig {
            max_batch: self.max_batch,
            max_batch_bytes: self.max_batch_bytes,
            max_delay: Duration::from_millis(self.max_delay_ms),
            decode_threads: if self.decode_threads == 0 { cpus } else { self.decode_threads },
            max_in_flight: self.max_in_flight,
            max_in_flight_bytes: self.max_in_flight_bytes,
            max_decoded_bytes: self.max_decoded_bytes,
        }
    }
}
