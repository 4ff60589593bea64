//! `pharos serve`: runs the gRPC daemon until SIGTERM or SIGINT, then drains and exits 0.
//!
//! Settings come from defaults, then `--config FILE` (TOML, keys as in [`ServeConfig`]), then `PHAROS_*`
//! environment variables, then flags. On start it prints one line on stdout,
//! `pharos: serving gRPC on ADDR; metrics on http://ADDR/metrics[; health on ADDR][; HTTP API on http://ADDR]`,
//! with the bound addresses (so
//! `--listen 127.0.0.1:0` can be used by scripts and tests).

use super::bank::DataDir;
use anyhow::Context as _;
use clap::Args;
use pharos::server::config::ServeConfig;
use pharos::server::{serve_metrics, Server};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// TOML file with any of the settings below (flag names with `_` for `-`); flags and PHAROS_*
    /// variables override it.
    #[arg(long, env = "PHAROS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings in effect (as TOML) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    data_dir: DataDir,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "PHAROS_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Prometheus metrics listen address; "" disables [default: 127.0.0.1:9464].
    #[arg(long, env = "PHAROS_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// Plaintext gRPC health-only listener (for Kubernetes' gRPC probes when the main port speaks TLS); ""
    /// disables [default: ""].
    #[arg(long, env = "PHAROS_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<String>,
    /// Hashing backend: auto (a real GPU if there is one, else the CPU), cpu, or gpu [default: auto].
    #[arg(long, env = "PHAROS_BACKEND")]
    backend: Option<String>,
    /// Largest gRPC message, bytes [default: max-image-bytes + 64 KiB].
    #[arg(long, env = "PHAROS_MAX_MESSAGE_BYTES", value_name = "N")]
    max_message_bytes: Option<usize>,
    /// Largest encoded image, bytes [default: 67108864].
    #[arg(long, env = "PHAROS_MAX_IMAGE_BYTES", value_name = "N")]
    max_image_bytes: Option<u64>,
    /// Largest image width or height, pixels [default: 32768].
    #[arg(long, env = "PHAROS_MAX_IMAGE_SIDE", value_name = "N")]
    max_image_side: Option<u32>,
    /// Largest image area, pixels [default: 100000000].
    #[arg(long, env = "PHAROS_MAX_IMAGE_PIXELS", value_name = "N")]
    max_image_pixels: Option<u64>,
    /// Images in flight, all clients together; beyond it requests get RESOURCE_EXHAUSTED [default: 1024].
    #[arg(long, env = "PHAROS_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: Option<usize>,
    /// Encoded bytes in flight; beyond it RESOURCE_EXHAUSTED [default: 1 GiB].
    #[arg(long, env = "PHAROS_MAX_IN_FLIGHT_BYTES", value_name = "N")]
    max_in_flight_bytes: Option<u64>,
    /// Decoded pixel bytes waiting for the backend; decoders wait beyond it [default: 2 GiB].
    #[arg(long, env = "PHAROS_MAX_DECODED_BYTES", value_name = "N")]
    max_decoded_bytes: Option<u64>,
    /// Unanswered items per stream; the server stops reading the stream beyond it [default: 64].
    #[arg(long, env = "PHAROS_MAX_IN_FLIGHT_PER_STREAM", value_name = "N")]
    max_in_flight_per_stream: Option<usize>,
    /// Concurrent streams per connection [default: 256].
    #[arg(long, env = "PHAROS_MAX_CONCURRENT_STREAMS", value_name = "N")]
    max_concurrent_streams: Option<u32>,
    /// Images per backend submission [default: 32].
    #[arg(long, env = "PHAROS_MAX_BATCH", value_name = "N")]
    max_batch: Option<usize>,
    /// Decoded pixel bytes after which a GPU batch closes [default: 64 MiB].
    #[arg(long, env = "PHAROS_MAX_BATCH_BYTES", value_name = "N")]
    max_batch_bytes: Option<u64>,
    /// Milliseconds a batch waits to fill [default: 2].
    #[arg(long, env = "PHAROS_MAX_DELAY_MS", value_name = "MS")]
    max_delay_ms: Option<u64>,
    /// Decoder threads (on the cpu backend they hash too); 0 = one per CPU [default: 0].
    #[arg(long, env = "PHAROS_DECODE_THREADS", value_name = "N")]
    decode_threads: Option<usize>,
    /// Seconds to drain in-flight work after SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "PHAROS_SHUTDOWN_GRACE_S", value_name = "S")]
    shutdown_grace_s: Option<u64>,
    /// Days the match audit is kept; 0 keeps it forever [default: 90].
    #[arg(long, env = "PHAROS_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    audit_retention_days: Option<u32>,
    /// TLS certificate chain, PEM (with --tls-key: gRPC over TLS 1.2/1.3 only).
    #[arg(long, env = "PHAROS_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert, PEM.
    #[arg(long, env = "PHAROS_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// CA for client certificates, PEM: mutual TLS (a client certificate is required; its subject CN or SAN
    /// names the caller).
    #[arg(long, env = "PHAROS_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Auth file (TOML, [[identity]] tables: token_sha256 or cert_name, roles, banks, quotas); reloaded on
    /// SIGHUP. Without it every caller may do everything, so only loopback is served.
    #[arg(long, env = "PHAROS_AUTH", value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Serve an address beyond loopback without TLS and --auth (logs a warning).
    #[arg(long, env = "PHAROS_INSECURE")]
    insecure: bool,
    /// Failed authentications per peer address and minute before the address is refused a while [default: 10].
    #[arg(long, env = "PHAROS_AUTH_FAILURES_PER_MINUTE", value_name = "N")]
    auth_failures_per_minute: Option<u32>,
    /// HTTP listen address of the HMA-compatible JSON API (same TLS and auth as gRPC); "" disables
    /// [default: ""].
    #[arg(long, env = "PHAROS_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// Hosts the HTTP API may download media from for `?url=` (comma-separated; a host or its parent
    /// domain, `*` for any) [default: none: URL downloads refused].
    #[arg(long, env = "PHAROS_HTTP_FETCH_HOSTS", value_name = "HOSTS", value_delimiter = ',')]
    http_fetch_hosts: Option<Vec<String>>,
    /// Let URL downloads reach loopback and private addresses.
    #[arg(long, env = "PHAROS_HTTP_FETCH_PRIVATE")]
    http_fetch_private: bool,
    /// Milliseconds for a whole URL download [default: 30000].
    #[arg(long, env = "PHAROS_HTTP_FETCH_TIMEOUT_MS", value_name = "MS")]
    http_fetch_timeout_ms: Option<u64>,
}

impl ServeArgs {
    /// Defaults ← config file ← environment and flags.
    fn config(&self) -> anyhow::Result<ServeConfig> {
        let mut cfg = match &self.config {
            Some(path) => ServeConfig::from_file(path)?,
            None => ServeConfig::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => {
                $(if let Some(v) = &self.$field { cfg.$field = v.clone(); })*
            };
        }
        overlay!(
            listen,
            metrics,
            health_listen,
            backend,
            max_message_bytes,
            max_image_bytes,
            max_image_side,
            max_image_pixels,
            max_in_flight,
            max_in_flight_bytes,
            max_decoded_bytes,
            max_in_flight_per_stream,
            max_concurrent_streams,
            max_batch,
            max_batch_bytes,
            max_delay_ms,
            decode_threads,
            shutdown_grace_s,
            audit_retention_days,
            auth_failures_per_minute,
            http,
            http_fetch_timeout_ms
        );
        if let Some(hosts) = &self.http_fetch_hosts {
            cfg.http_fetch_hosts =
                hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
        }
        cfg.http_fetch_private |= self.http_fetch_private;
        macro_rules! overlay_path {
            ($($field:ident),*) => {
                $(if let Some(v) = &self.$field { cfg.$field = Some(v.clone()); })*
            };
        }
        overlay_path!(tls_cert, tls_key, tls_client_ca, auth);
        cfg.insecure |= self.insecure;
        if let Some(dir) = self.data_dir.explicit() {
            cfg.data_dir = Some(dir.to_path_buf());
        }
        if let Some(url) = self.data_dir.database_url() {
            cfg.database_url = Some(url.to_string());
        }
        // An image limit raised without the message limit would be unreachable: keep room for it.
        if self.max_message_bytes.is_none()
            && cfg.max_message_bytes < cfg.max_image_bytes as usize + (64 << 10)
        {
            cfg.max_message_bytes = cfg.max_image_bytes as usize + (64 << 10);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.config()?;
    if args.print_config {
        // The database URL without its password.
        let shown = ServeConfig {
            database_url: cfg.database_url.as_deref().map(pharos::store::redact_url),
            ..cfg.clone()
        };
        print!("{}", toml::to_string(&shown).context("printing the config")?);
        // The identities in effect, without their secrets (token digests shortened to a prefix).
        if let Some(path) = &cfg.auth {
            print!("{}", pharos::server::auth::AuthFile::load(path)?.summary());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let data_dir = match &cfg.data_dir {
        Some(d) => d.clone(),
        None => args.data_dir.resolve()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pharos-rt")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let metrics_listener = bind_unless_empty(&cfg.metrics).await?;
        cfg.check_exposure(listener.local_addr()?, true)?;
        let health_listener = bind_unless_empty(&cfg.health_listen).await?;
        // The HTTP API answers from now on: 503 (and `/status` INDEX-NOT-LOADED) until the banks are loaded.
        let http = match bind_unless_empty(&cfg.http).await? {
            Some(l) => Some(pharos::server::http::HttpServer::start(l, &cfg)?),
            None => None,
        };
        let shutdown = shutdown_signal();
        let cfg_tls = cfg.tls();
        let mut server = Server::new(cfg, data_dir.clone())
            .with_context(|| format!("starting the server (data directory {})", data_dir.display()))?;
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut line = format!("pharos: serving gRPC on {}", listener.local_addr()?);
        if let Some(l) = metrics_listener {
            line += &format!("; metrics on http://{}/metrics", l.local_addr()?);
            let metrics = server.metrics();
            tokio::spawn(async move {
                if let Err(e) = serve_metrics(l, metrics, async { drop(metrics_stopped.await) }).await {
                    tracing::error!("metrics endpoint failed: {e}");
                }
            });
        }
        if let Some(l) = health_listener {
            line += &format!("; health on {}", l.local_addr()?);
            server.serve_health_on(l);
        }
        if let Some(h) = http {
            let scheme = if cfg_tls { "https" } else { "http" };
            line += &format!("; HTTP API on {scheme}://{}", h.local_addr());
            server.serve_http(h);
        }
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
        tracing::info!("{line}");
        server.run(listener, shutdown).await?;
        let _ = stop_metrics.send(());
        Ok(ExitCode::SUCCESS)
    })
}

/// A listener on `addr`, or none for "" (a disabled endpoint).
async fn bind_unless_empty(addr: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    Ok(Some(l))
}

/// A future resolving on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled: a SIGTERM sent as soon as the "serving" line appears must drain and exit
/// 0, not kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::error!("cannot listen for {name}: {e}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = wait(int, "SIGINT") => tracing::info!("SIGINT received"),
                _ = wait(term, "SIGTERM") => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!("cannot listen for Ctrl-C: {e}");
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C received");
        }
    }
}
