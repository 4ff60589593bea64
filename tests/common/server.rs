//! An in-process `pharos serve` on `127.0.0.1:0` for the gRPC tests.

use pharos::server::config::ServeConfig;
use pharos::server::Server;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A server running on a background task, stopped (and awaited) on drop of the sender.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<pharos::Result<()>>,
    pub(crate) metrics: Arc<pharos::metrics::Metrics>,
    /// The HTTP API's address, for servers started with [`TestServer::start_http`].
    pub(crate) http: Option<SocketAddr>,
    pub(crate) _dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start(cfg: ServeConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(cfg, dir).await
    }

    pub(crate) async fn start_in(cfg: ServeConfig, dir: tempfile::TempDir) -> TestServer {
        Self::start_with(cfg, dir, |_| {}).await
    }

    /// Starts a server after `setup` has seen it (to set test hooks on its pipeline or banks).
    pub(crate) async fn start_with(
        cfg: ServeConfig,
        dir: tempfile::TempDir,
        setup: impl FnOnce(&Server),
    ) -> TestServer {
        Self::start_full(cfg, dir, false, setup).await
    }

    /// Starts a server that also serves the HTTP API on `127.0.0.1:0`.
    pub(crate) async fn start_http(cfg: ServeConfig) -> TestServer {
        Self::start_full(cfg, tempfile::tempdir().unwrap(), true, |_| {}).await
    }

    async fn start_full(
        cfg: ServeConfig,
        dir: tempfile::TempDir,
        http: bool,
        setup: impl FnOnce(&Server),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = if http {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            Some(pharos::server::http::HttpServer::start(l, &cfg).expect("HTTP listener starts"))
        } else {
            None
        };
        let mut server = Server::new(cfg, dir.path().to_path_buf()).expect("server starts");
        let http_addr = http.as_ref().map(|h| h.local_addr());
        if let Some(h) = http {
            server.serve_http(h);
        }
        setup(&server);
        let metrics = server.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(listener, async { drop(stopped.await) }));
        if let Some(addr) = http_addr {
            // The HTTP API answers 503 until `run` has opened it.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let start = std::time::Instant::now();
            while !client.get(format!("http://{addr}/status")).send().await.is_ok_and(|r| r.status() == 200) {
                assert!(start.elapsed() < Duration::from_secs(30), "the HTTP API never became ready");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        TestServer { addr, stop: Some(stop), done, metrics, http: http_addr, _dir: dir }
    }

    /// `http://ADDR` of the HTTP API.
    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.http.expect("started with start_http"))
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.expect("connect")
    }

    /// Triggers shutdown and waits for `run` to return.
    pub(crate) async fn shutdown(mut self) -> pharos::Result<()> {
        drop(self.stop.take());
        tokio::time::timeout(Duration::from_secs(60), self.done).await.expect("server stops").unwrap()
    }
}
